"""The authorizer: whether one site accepts a parsed command (signature, window, role, replay)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gatewayd.kernel.command import Command
from gatewayd.kernel.errors import CommandError, ErrorCode
from gatewayd.security.actors import Actor, SecurityConfig
from gatewayd.security.canonical import CanonicalError
from gatewayd.security.keys import is_demo_key
from gatewayd.security.replay import ReplayCache
from gatewayd.security.roles import Role, may_release, permit
from gatewayd.security.signing import raw_body, signing_bytes, verify


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

    def check(self, command: Command, *, payload: bytes, site: str, now: float) -> Actor:
        """Return the acting :class:`Actor` or raise :class:`CommandError` with a stable code.

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

    def _check(self, command: Command, payload: bytes, site: str, now: float) -> Actor:
        if not command.sig:
            raise CommandError(
                ErrorCode.UNSIGNED, "command has no sig; every command must be signed"
            )
        actor = self._actor(command.actor)
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
        verify(actor.key, command.sig, message, "sig")
        if addressed != site:
            raise CommandError(ErrorCode.WRONG_SITE, f"command is addressed to site {addressed!r}")
        window = self.security.timestamp_window_s
        if abs(command.ts - now) > window:
            skew = command.ts - now
            raise CommandError(
                ErrorCode.EXPIRED, f"ts is {skew:+.1f} s off the clock (max {window:g} s)"
            )
        self._authorize(actor, command, site)
        self._cosigned(actor, command, body, site, message)
        self.replay.check(command.id)
        self.replay.note(command.id)
        return actor

    def _actor(self, actor_id: str) -> Actor:
        actor = self._actors.get(actor_id)
        if actor is None:
            raise CommandError(ErrorCode.UNKNOWN_ACTOR, f"no actor {actor_id!r} on this site")
        return actor

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
    ) -> None:
        params = body.get("params")
        params = params if isinstance(params, Mapping) else {}
        cosigner_id, cosig = params.get("cosigner"), params.get("cosig")
        required = (
            self.security.require_two_person_campus_release
            and command.action == "release"
            and command.door is None
            and command.scope == "campus"
        )
        if cosigner_id is None and cosig is None and not required:
            return
        if not isinstance(cosigner_id, str) or cosig is None:
            raise CommandError(
                ErrorCode.COSIGN_REQUIRED,
                "a campus release needs params.cosigner and params.cosig from a second actor",
            )
        cosigner = self._actor(cosigner_id)
        if cosigner.id == actor.id or cosigner.public_key == actor.public_key:
            raise CommandError(
                ErrorCode.COSIGN_REQUIRED, "the co-signer must be a different person"
            )
        verify(cosigner.key, cosig, message, "params.cosig")
        if not may_release(cosigner.roles) or (
            Role.DISTRICT in cosigner.roles and site not in cosigner.sites
        ):
            raise CommandError(ErrorCode.FORBIDDEN, f"co-signer {cosigner.id} may not release")

    def statistics(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "refused": dict(self.refused),
            "replay": self.replay.statistics(),
        }
