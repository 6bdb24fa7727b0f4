"""Cards and PINs: who holds which credential, and what it opens. ``[access]`` of the campus file.

A card number is never stored: a credential holds ``HMAC-SHA256(site_key, "card:" + number)``
(and for a PIN, ``HMAC-SHA256(site_key, "pin:" + number + ":" + pin)``, so a PIN belongs to its
card), hex. The site key is secret; without it the file says nothing about the cards. The
digests are made with ``python -m gatewayd.security.credentials --site-key HEX CARD [PIN]``.

Whether a credential may open a door *now* is :func:`refusal`: validity dates, its doors and
its allowed hours. Hours are the seam for door schedules: :data:`HoursCheck` is what the
access service asks, and a schedule module can supply a richer one.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator

from gatewayd.kernel.driver import ID_PATTERN
from gatewayd.kernel.validation import Model, read_toml, validated

DIGEST = r"^[0-9a-f]{64}$"
#: Shortest site key: 32 bytes (64 hex digits).
MIN_SITE_KEY_BYTES = 32
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: The DEMO site key of configs/demo-campus.toml (ASCII "demo-site-key-not-for-use-on-a-real-
#: site"): public, so refused outside demo mode.
DEMO_SITE_KEY = "64656d6f2d736974652d6b65792d6e6f742d666f722d7573652d6f6e2d612d7265616c2d73697465"


class CredentialRole(StrEnum):
    #: Police, fire, EMS: during a lockdown, a bounded responder unlock of the door.
    RESPONDER = "responder"
    #: Staff: a momentary unlock in normal state, where the credential's hours allow.
    STAFF = "staff"


class Credential(Model):
    """One card (with an optional PIN), its holder, role, validity and doors."""

    #: Names the credential in events and the audit log (never the card number).
    id: str = Field(pattern=ID_PATTERN)
    holder: str = Field(min_length=1, max_length=80)
    role: CredentialRole
    #: HMAC-SHA256 of ``"card:" + number`` under the site key, 64 hex digits.
    card: str = Field(pattern=DIGEST)
    #: HMAC-SHA256 of ``"pin:" + number + ":" + pin``; set, the card needs its PIN.
    pin: str | None = Field(default=None, pattern=DIGEST)
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    #: Door ids it opens; ``["*"]``: every door with a reader.
    doors: tuple[str, ...] = ("*",)
    #: Allowed hours, local time, ``"07:00-18:00"`` (None: any hour); with ``days``.
    hours: str | None = Field(default=None, pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$")
    days: frozenset[str] = frozenset(WEEKDAYS)

    @field_validator("valid_from", "valid_until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a time zone (e.g. 2026-09-01T00:00:00Z)")
        return value

    @field_validator("days")
    @classmethod
    def _weekdays(cls, days: frozenset[str]) -> frozenset[str]:
        unknown = sorted(days - set(WEEKDAYS))
        if unknown:
            raise ValueError(f"unknown days {', '.join(unknown)} (expected {', '.join(WEEKDAYS)})")
        return days

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if self.hours is not None:
            start, end = self.window
            if end <= start:
                raise ValueError(f"hours {self.hours!r}: the end must be after the start")
        return self

    @property
    def window(self) -> tuple[time, time]:
        """The allowed hours as (start, end); any hour when ``hours`` is unset."""
        if self.hours is None:
            return time(0, 0), time(23, 59, 59)
        start, end = self.hours.split("-")
        try:
            return time.fromisoformat(start), time.fromisoformat(end)
        except ValueError as exc:
            raise ValueError(f"hours {self.hours!r}: {exc}") from exc


class CredentialFile(Model):
    """A credentials file: ``[[credentials]]`` tables."""

    credentials: tuple[Credential, ...] = ()


class AccessConfig(Model):
    """``[access]``: the site key, where the credentials are, and how long doors open."""

    #: Keys card and PIN digests, 64 or more hex digits; secret.
    site_key: SecretStr
    #: A credentials file (TOML, ``[[credentials]]``), relative to the campus file.
    credentials_file: str | None = None
    #: Credentials written in the campus file itself.
    credentials: tuple[Credential, ...] = ()
    #: The zone the ``hours`` of credentials are in.
    timezone: str = "UTC"
    #: How long a staff credential unlocks a door in normal state.
    staff_unlock_s: float = Field(default=5.0, gt=0, le=30)
    #: How long a responder credential unlocks a door held by a lockdown (<= responder_max_s).
    responder_unlock_s: float = Field(default=60.0, gt=0, le=3600)
    #: How long a card that needs its PIN waits for it at the same reader.
    pin_timeout_s: float = Field(default=10.0, gt=0, le=120)

    @field_validator("site_key")
    @classmethod
    def _key(cls, key: SecretStr) -> SecretStr:
        try:
            raw = bytes.fromhex(key.get_secret_value())
        except ValueError as exc:
            raise ValueError("site_key must be hex digits") from exc
        if len(raw) < MIN_SITE_KEY_BYTES:
            raise ValueError(f"site_key must be at least {MIN_SITE_KEY_BYTES} bytes"
                             f" ({2 * MIN_SITE_KEY_BYTES} hex digits), got {len(raw)}")  # fmt: skip
        return key

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r} (e.g. America/Chicago)") from exc
        return name

    @property
    def key(self) -> bytes:
        return bytes.fromhex(self.site_key.get_secret_value())

    @property
    def is_demo(self) -> bool:
        return hmac.compare_digest(self.site_key.get_secret_value().lower(), DEMO_SITE_KEY)


def card_digest(key: bytes, number: str) -> str:
    return hmac.new(key, b"card:" + number.encode(), hashlib.sha256).hexdigest()


def pin_digest(key: bytes, number: str, pin: str) -> str:
    return hmac.new(key, f"pin:{number}:{pin}".encode(), hashlib.sha256).hexdigest()


#: Whether a credential's hours allow it at a door at a local time (the schedules seam).
HoursCheck = Callable[[Credential, str, datetime], bool]


def within_hours(credential: Credential, door: str, local: datetime) -> bool:
    """The credential's own ``hours`` and ``days``: the default :data:`HoursCheck`."""
    if WEEKDAYS[local.weekday()] not in credential.days:
        return False
    start, end = credential.window
    return start <= local.time().replace(tzinfo=None) <= end


def refusal(
    credential: Credential, door: str, now: datetime, hours: HoursCheck = within_hours
) -> str | None:
    """Why ``credential`` may not open ``door`` at ``now`` (aware), or None if it may.

    The reasons are stable words: ``not_yet_valid``, ``expired``, ``door``, ``hours``.
    """
    if credential.valid_from is not None and now < credential.valid_from:
        return "not_yet_valid"
    if credential.valid_until is not None and now >= credential.valid_until:
        return "expired"
    if "*" not in credential.doors and door not in credential.doors:
        return "door"
    if not hours(credential, door, now):
        return "hours"
    return None


class CredentialStore:
    """Credentials by card digest; a card number is looked up and then forgotten."""

    def __init__(self, config: AccessConfig, credentials: Iterable[Credential]) -> None:
        self.config = config
        self._key = config.key
        self.zone = ZoneInfo(config.timezone)
        self._by_card: dict[str, Credential] = {}
        for credential in credentials:
            self._by_card[credential.card] = credential

    def __len__(self) -> int:
        return len(self._by_card)

    def digest(self, number: str) -> str:
        return card_digest(self._key, number)

    def card(self, number: str) -> tuple[str, Credential | None]:
        """The card's digest and its credential (None: unknown card)."""
        digest = self.digest(number)
        return digest, self._by_card.get(digest)

    def pin_matches(self, credential: Credential, number: str, pin: str) -> bool:
        if credential.pin is None:
            return True
        return hmac.compare_digest(credential.pin, pin_digest(self._key, number, pin))


def load_credentials(config: AccessConfig, base: Path | None) -> tuple[Credential, ...]:
    """The campus file's credentials plus those of ``credentials_file``; ConfigError if bad."""
    found = list(config.credentials)
    if config.credentials_file is not None:
        path = Path(config.credentials_file)
        if base is not None and not path.is_absolute():
            path = base / path
        found.extend(validated(CredentialFile, read_toml(path), str(path)).credentials)
    return tuple(found)


def duplicate_problems(credentials: Sequence[Credential], doors: Iterable[str]) -> list[str]:
    """Two credentials with one id or one card; a door that is not in the campus."""
    problems: list[str] = []
    known = set(doors)
    ids: set[str] = set()
    cards: dict[str, str] = {}
    for c in credentials:
        if c.id in ids:
            problems.append(f"access.credentials({c.id}).id: duplicate credential id")
        ids.add(c.id)
        other = cards.setdefault(c.card, c.id)
        if other != c.id:
            problems.append(f"access.credentials({c.id}).card: the same card as {other!r}")
        for door in c.doors:
            if door != "*" and door not in known:
                problems.append(f"access.credentials({c.id}).doors: unknown door {door!r}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Print the digests of a card number (and PIN) for a credentials file."""
    parser = argparse.ArgumentParser(
        prog="python -m gatewayd.security.credentials",
        description="Card and PIN digests for a credentials file",
    )
    parser.add_argument("--site-key", required=True, help="the [access] site_key, hex")
    parser.add_argument("card", help="the card number, decimal")
    parser.add_argument("pin", nargs="?", help="the PIN, if the card needs one")
    args = parser.parse_args(argv)
    try:
        config = AccessConfig(site_key=SecretStr(args.site_key))
    except ValueError as exc:
        print(f"site key: {exc}", file=sys.stderr)
        return 2
    out: dict[str, Any] = {"card": card_digest(config.key, args.card)}
    if args.pin:
        out["pin"] = pin_digest(config.key, args.card, args.pin)
    for name, value in out.items():
        print(f'{name} = "{value}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
