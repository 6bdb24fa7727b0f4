"""Who may do what: actors with Ed25519 keys and roles, signed commands, the authorizer.

The signed bytes and the role policy are specified in docs/security.md; keep both in step.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gatewayd.kernel.errors import CommandError
from gatewayd.security.canonical import CanonicalError, canonical
from gatewayd.security.keys import is_demo_key
from gatewayd.security.replay import ReplayCache

if TYPE_CHECKING:
    # Only for types: config.py imports this module for SecurityConfig, and commands.py
    # imports config.py, so a runtime import here would be circular.
    from gatewayd.kernel.command import Command

#: Actor ids: what a person types after ``--actor`` and what the audit log records.
ACTOR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
#: Ed25519 signatures are 64 bytes: 88 characters of padded base64.
SIGNATURE_BYTES = 64


class Role(StrEnum):
    OPERATOR = "operator"
    ADMINISTRATOR = "administrator"
    RESPONDER = "responder"
    #: The rules engine on the box; never accepted from outside.
    SYSTEM = "system"
    #: District operations: administrator rights on the sites listed in ``Actor.sites``.
    DISTRICT = "district"


# Action names as strings (``commands.Action`` is a StrEnum, equal to them): see the
# TYPE_CHECKING import above for why the enum itself is not imported.
_TRIGGERS = frozenset({
    "hold", "secure", "lockdown", "evacuate", "shelter", "drill", "lock", "status",
})
#: What each role may do on its site, whatever the parameters (responders are handled apart).
ROLE_ACTIONS: Mapping[Role, frozenset[str]] = {
    Role.OPERATOR: _TRIGGERS,
    Role.ADMINISTRATOR: _TRIGGERS | {"release", "unlock"},
    Role.DISTRICT: _TRIGGERS | {"release", "unlock"},
}
#: Roles whose actors may co-sign a two-person campus release.
RELEASE_ROLES = frozenset({Role.ADMINISTRATOR, Role.DISTRICT})


class Actor(BaseModel):
    """A person or system that signs commands: ``[[security.actors]]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ACTOR_ID_PATTERN)
    #: Ed25519 public key: the raw 32 bytes, standard base64 (what ``gatewayd keygen`` prints).
    public_key: str
    roles: frozenset[Role] = Field(min_length=1)
    #: For district actors: the site ids this actor may act on.
    sites: frozenset[str] = frozenset()
    name: str = ""

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        public_key(value)
        return value

    @model_validator(mode="after")
    def _district_sites(self) -> Actor:
        if (Role.DISTRICT in self.roles) != bool(self.sites):
            raise ValueError("district actors list their sites, and only they have sites")
        if Role.DISTRICT in self.roles and len(self.roles) > 1:
            # A district person who is also local staff gets a second actor (and key).
            raise ValueError("the district role is not combined with other roles")
        return self

    @property
    def key(self) -> Ed25519PublicKey:
        return public_key(self.public_key)


@lru_cache(maxsize=1024)
def public_key(text: str) -> Ed25519PublicKey:
    """Decode a base64 raw Ed25519 public key; ``ValueError`` says what is wrong."""
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"public key is not base64: {exc}") from exc
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


class SecurityConfig(BaseModel):
    """``[security]`` of the campus file. Demo keys are allowed only when ``site.demo`` is on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actors: tuple[Actor, ...] = ()
    #: A command's ``ts`` may differ from the gateway clock by at most this, either way.
    timestamp_window_s: float = Field(default=30.0, gt=0.0, le=600.0)
    #: A ``release`` of scope ``campus`` needs a second administrator's co-signature.
    require_two_person_campus_release: bool = False
    #: Replay cache and audit log, relative to the state directory.
    replay_db: str = "replay.sqlite"
    audit_log: str = "audit.log"
    #: Folder of server-held private keys, ``<actor>.key``, with which the operator console
    #: signs for its signed-in users (relative to the campus file). In demo mode the
    #: console falls back to the DEMO keys of the demo actors.
    console_keys: str | None = None

    @model_validator(mode="after")
    def _unique(self) -> SecurityConfig:
        ids = [a.id for a in self.actors]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"actor ids used twice: {', '.join(dupes)}")
        return self

    def actor(self, actor_id: str) -> Actor | None:
        return next((a for a in self.actors if a.id == actor_id), None)


# --- the signed bytes -------------------------------------------------------------------------


def signing_bytes(body: Mapping[str, Any], site: str) -> bytes:
    """What ``sig`` and ``params.cosig`` sign: the body without them, bound to ``site``.

    The destination site is part of the signed object even when the envelope does not carry
    it, so a command signed for one school cannot be replayed onto another school's topic.
    """
    signed = {k: v for k, v in body.items() if k != "sig"}
    params = signed.get("params")
    if isinstance(params, Mapping) and "cosig" in params:
        signed["params"] = {k: v for k, v in params.items() if k != "cosig"}
    signed["site"] = site
    return canonical(signed)


def sign(body: Mapping[str, Any], private_key: Ed25519PrivateKey, *, site: str) -> str:
    """The base64 ``sig`` (or ``params.cosig``) of a command body for ``site``."""
    return base64.b64encode(private_key.sign(signing_bytes(body, site))).decode("ascii")


def signed(body: Mapping[str, Any], private_key: Ed25519PrivateKey, *, site: str) -> dict[str, Any]:
    """A copy of ``body`` with its ``sig`` set."""
    return {**body, "sig": sign(body, private_key, site=site)}


def _verify(key: Ed25519PublicKey, sig: object, message: bytes, what: str) -> None:
    if not isinstance(sig, str) or not sig:
        raise CommandError("bad_signature", f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CommandError("bad_signature", f"{what} is not valid base64") from exc
    if len(raw) != SIGNATURE_BYTES:
        raise CommandError("bad_signature", f"{what} is {len(raw)} bytes, not {SIGNATURE_BYTES}")
    try:
        key.verify(raw, message)
    except InvalidSignature as exc:
        raise CommandError("bad_signature", f"{what} does not verify") from exc


def _raw_body(payload: bytes) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            # Two parsers could keep different copies; a signature over either is ambiguous.
            raise CommandError("bad_request", "command repeats a member name")
        return dict(pairs)

    try:
        body = json.loads(payload.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError("bad_request", "command is not a UTF-8 JSON object") from exc
    if not isinstance(body, dict):
        raise CommandError("bad_request", "command must be a JSON object")
    return body


# --- the authorizer ---------------------------------------------------------------------------


class Authorizer:
    """Decides whether one site accepts a parsed command: signature, window, role, replay."""

    def __init__(
        self,
        security: SecurityConfig,
        *,
        state_dir: Path | str,
        demo: bool,
        responder_max_s: float,
    ) -> None:
        self.security = security
        self.responder_max_s = responder_max_s
        # Belt and braces: start-up refuses demo keys outside demo mode (refuse_unsafe), and
        # should one slip through, its actor is simply unknown here.
        self._actors = {
            a.id: a for a in security.actors if demo or not is_demo_key(a.public_key)
        }
        self.replay = ReplayCache(Path(state_dir) / security.replay_db, security.timestamp_window_s)
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
            raise CommandError("unsigned", "command has no sig; every command must be signed")
        actor = self._actor(command.actor)
        body = _raw_body(payload)
        if body.get("id") != command.id:
            raise CommandError("bad_request", "payload is not the body of this command")
        addressed = body.get("site", site)
        if not isinstance(addressed, str):
            raise CommandError("bad_request", "site must be a string")
        try:
            message = signing_bytes(body, addressed)
        except CanonicalError as exc:
            raise CommandError("bad_request", f"command has no canonical form: {exc}") from exc
        _verify(actor.key, command.sig, message, "sig")
        if addressed != site:
            raise CommandError("wrong_site", f"command is addressed to site {addressed!r}")
        window = self.security.timestamp_window_s
        if abs(command.ts - now) > window:
            skew = command.ts - now
            raise CommandError("expired", f"ts is {skew:+.1f} s off the clock (max {window:g} s)")
        self._authorize(actor, command, site)
        self._cosigned(actor, command, body, site, message)
        self.replay.record(command.id, command.ts, now)
        return actor

    def _actor(self, actor_id: str) -> Actor:
        actor = self._actors.get(actor_id)
        if actor is None:
            raise CommandError("unknown_actor", f"no actor {actor_id!r} on this site")
        return actor

    def _authorize(self, actor: Actor, command: Command, site: str) -> None:
        if Role.DISTRICT in actor.roles and site not in actor.sites:
            raise CommandError("wrong_site", f"district actor {actor.id} does not act on {site}")
        if any(command.action in ROLE_ACTIONS.get(role, ()) for role in actor.roles):
            return
        if Role.RESPONDER in actor.roles and command.action == "unlock":
            self._responder_bounds(command)
            return
        roles = ", ".join(sorted(actor.roles))
        raise CommandError("forbidden", f"{actor.id} ({roles}) may not {command.action}")

    def _responder_bounds(self, command: Command) -> None:
        duration = command.params.get("duration_s")
        momentary = command.params.get("momentary") is True
        bounded = (
            isinstance(duration, int | float)
            and not isinstance(duration, bool)
            and 0 < duration <= self.responder_max_s
        )
        if command.door is None or command.scope is not None:
            raise CommandError("forbidden", "a responder unlocks one door, named by door")
        if not (momentary or bounded):
            raise CommandError(
                "forbidden",
                f"a responder unlock needs params.momentary or params.duration_s"
                f" <= {self.responder_max_s:g} s",
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
                "cosign_required",
                "a campus release needs params.cosigner and params.cosig from a second actor",
            )
        cosigner = self._actor(cosigner_id)
        if cosigner.id == actor.id or cosigner.public_key == actor.public_key:
            raise CommandError("cosign_required", "the co-signer must be a different person")
        _verify(cosigner.key, cosig, message, "params.cosig")
        may_release = any(
            "release" in ROLE_ACTIONS.get(role, ()) for role in cosigner.roles
        )
        if not may_release or (Role.DISTRICT in cosigner.roles and site not in cosigner.sites):
            raise CommandError("forbidden", f"co-signer {cosigner.id} may not release")

    def close(self) -> None:
        self.replay.close()

    def statistics(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "refused": dict(self.refused),
                "replay": self.replay.statistics()}
