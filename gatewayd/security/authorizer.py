"""The authorizer: whether one site accepts a parsed command (signature, window, role, replay)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatewayd.kernel.command import Command
from gatewayd.kernel.errors import CommandError, ErrorCode
from gatewayd.kernel.scope import CAMPUS, Scope
from gatewayd.security.actors import Actor, SecurityConfig
from gatewayd.security.canonical import CanonicalError
from gatewayd.security.keys import is_demo_key
from gatewayd.security.replay import ReplayCache
from gatewayd.security.roles import Authority, Role, may_release, permit
from gatewayd.security.signing import raw_body, signing_bytes, verify

#: Checked against when a command names an actor this site does not know, so that an unknown
#: actor costs the same verification and answers the same ``bad_signature`` as a wrong key:
#: nobody can list a site's actors by asking.
_NOBODY = Ed25519PrivateKey.generate().public_key()  # its private half is thrown away


class Authorizer:
    """Decides whether one site accepts a parsed command: signature, window, role, replay."""

    def __init__(
        self,
        security: SecurityConfig,
        *,
        demo: bool,
        responder_max_s: float,
    ) -> None:
        self.security = security
        self.responder_max_s = responder_max_s
        # Belt and braces: start-up refuses demo keys outside demo mode (refuse_unsafe), and
        # should one slip through, its actor is simply unknown here.
        self._actors = {a.id: a for a in security.actors if demo or not is_demo_key(a.public_key)}
        #: Ids of the commands carried out; the journal hands back those of the last run.
        self.replay = ReplayCache(security.timestamp_window_s)
        #: Accepted commands, and refusals by code, since start.
        self.accepted = 0
        self.refused: dict[str, int] = {}

    def check(self, command: Command, *, payload: bytes, site: str, now: float) -> Authority:
        """The :class:`Authority` behind the command; else raise :class:`CommandError`.

        ``payload`` is the exact body ``command`` was parsed from: the signature covers the
        JSON as sent (``ts`` as written), not a re-serialisation of the parsed model.
        """
        try:
            actor = self._check(command, payload, site, now)
        except CommandError as exc:
            self.refused[exc.code] = self.refused.get(exc.code, 0) + 1
            raise
        self.accepted += 1
        return actor

    def _check(self, command: Command, payload: bytes, site: str, now: float) -> Authority:
        if not command.sig:
            raise CommandError(
                ErrorCode.UNSIGNED, "command has no sig; every command must be signed"
            )
        actor = self._actors.get(command.actor)
        body = raw_body(payload)
        if body.get("id") != command.id:
            raise CommandError(ErrorCode.BAD_REQUEST, "payload is not the body of this command")
        addressed = body.get("site", site)
        if not isinstance(addressed, str):
            raise CommandError(ErrorCode.BAD_REQUEST, "site must be a string")
        try:
            message = signing_bytes(body, addressed)
        except CanonicalError as exc:
            raise CommandError(
                ErrorCode.BAD_REQUEST, f"command has no canonical form: {exc}"
            ) from exc
        self._verify(actor, command.sig, message, "sig")
        assert actor is not None  # _verify refuses an unknown actor
        if addressed != site:
            raise CommandError(ErrorCode.WRONG_SITE, f"command is addressed to site {addressed!r}")
        window = self.security.timestamp_window_s
        if abs(command.ts - now) > window:
            skew = command.ts - now
            raise CommandError(
                ErrorCode.EXPIRED, f"ts is {skew:+.1f} s off the clock (max {window:g} s)"
            )
        self._authorize(actor, command, site)
        cosigner = self._cosigned(actor, command, body, site, message)
        self.replay.check(command.id)
        self.replay.note(command.id)
        return Authority(actor.id, actor.roles, cosigner.id if cosigner else None)

    def _verify(self, actor: Actor | None, sig: object, message: bytes, what: str) -> None:
        """Verify ``sig`` by ``actor``; an unknown actor fails exactly like a wrong key."""
        key: Ed25519PublicKey = actor.key if actor is not None else _NOBODY
        try:
            verify(key, sig, message, what)
        except CommandError:
            raise CommandError(ErrorCode.BAD_SIGNATURE, f"{what} does not verify") from None
        if actor is None:  # nobody holds _NOBODY's private key; refuse even so
            raise CommandError(ErrorCode.BAD_SIGNATURE, f"{what} does not verify")

    def _authorize(self, actor: Actor, command: Command, site: str) -> None:
        if Role.DISTRICT in actor.roles and site not in actor.sites:
            raise CommandError(
                ErrorCode.WRONG_SITE, f"district actor {actor.id} does not act on {site}"
            )
        permit(
            actor.roles,
            command.action,
            door=command.door,
            scope=command.scope,
            params=command.params,
            responder_max_s=self.responder_max_s,
            who=actor.id,
        )

    def _cosigned(
        self, actor: Actor, command: Command, body: Mapping[str, Any], site: str, message: bytes
    ) -> Actor | None:
        """The verified co-signer, if the command carries one; refuse a bad or missing one."""
        params = body.get("params")
        params = params if isinstance(params, Mapping) else {}
        cosigner_id, cosig = params.get("cosigner"), params.get("cosig")
        required = (
            self.security.require_two_person_campus_release
            and command.action == "release"
            and command.door is None
            and _is_campus(command.scope)
        )
        if cosigner_id is None and cosig is None and not required:
            return None
        if not isinstance(cosigner_id, str) or cosig is None:
            raise CommandError(
                ErrorCode.COSIGN_REQUIRED,
                "a campus release needs params.cosigner and params.cosig from a second actor",
            )
        cosigner = self._actors.get(cosigner_id)
        self._verify(cosigner, cosig, message, "params.cosig")
        assert cosigner is not None  # _verify refuses an unknown co-signer
        if cosigner.id == actor.id or cosigner.public_key == actor.public_key:
            raise CommandError(
                ErrorCode.COSIGN_REQUIRED, "the co-signer must be a different person"
            )
        if not may_release(cosigner.roles) or (
            Role.DISTRICT in cosigner.roles and site not in cosigner.sites
        ):
            raise CommandError(ErrorCode.FORBIDDEN, f"co-signer {cosigner.id} may not release")
        return cosigner

    def statistics(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "refused": dict(self.refused),
            "replay": self.replay.statistics(),
        }


def _is_campus(scope: str | None) -> bool:
    """Whether a command's scope is the campus, however it is spelt (a bad one is refused later)."""
    if scope is None:
        return False
    try:
        return Scope.parse(scope) == CAMPUS
    except CommandError:
        return False
