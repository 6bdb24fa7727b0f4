"""``[security]`` of the campus file: actors with their Ed25519 public keys and roles."""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gatewayd.security.roles import Role

#: Actor ids: what a person types after ``--actor`` and what the audit log records.
ACTOR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"


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
    #: The audit log (the durable record of every command and safety change) and the
    #: journal's index of it (active sources, recent command ids), in the state directory.
    audit_log: str = "audit.log"
    journal_index: str = "journal.sqlite"
    #: The audit log rotates at this size and keeps this many older files: its cap on disk.
    audit_file_mb: float = Field(default=32.0, ge=0.01, le=4096.0)
    audit_keep_files: int = Field(default=8, ge=1, le=1000)
    #: How often the signed head of the audit chain is published (``event/audit``, type
    #: ``audit_head``), when records were added since: the chain's anchor off the box.
    head_interval_s: float = Field(default=60.0, ge=0.5, le=3600.0)
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
