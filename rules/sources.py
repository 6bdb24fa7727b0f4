"""Sources: the things that hold doors (an SRP state on a scope, an override, an alarm)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gatewayd.campus import Scope
from gatewayd.config import DoorKind
from rules.arbitration import Claim, Priority


@dataclass(frozen=True, slots=True)
class Source:
    """One active source over a scope, persisted as is."""

    #: Stable key, e.g. ``srp:building/A``; a new source with the same key replaces it.
    key: str
    scope: Scope
    priority: Priority
    locked: bool
    #: Short name shown as the door's reason, e.g. ``lockdown``.
    name: str
    actor: str
    #: Wall-clock start, epoch seconds.
    since: float
    #: Door kinds it applies to; empty means every kind.
    kinds: frozenset[DoorKind] = field(default_factory=frozenset)
    #: Wall-clock end for bounded overrides, epoch seconds.
    expires_at: float | None = None
    drill: bool = False

    def applies_to(self, kind: DoorKind) -> bool:
        return not self.kinds or kind in self.kinds

    def claim(self) -> Claim:
        return Claim(self.key, self.priority, self.locked, f"{self.name} ({self.scope})")

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "scope": str(self.scope),
            "priority": int(self.priority),
            "locked": self.locked,
            "name": self.name,
            "actor": self.actor,
            "since": self.since,
            "kinds": sorted(self.kinds),
            "expires_at": self.expires_at,
            "drill": self.drill,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Source:
        return cls(
            key=str(body["key"]),
            scope=Scope.parse(str(body["scope"])),
            priority=Priority(int(body["priority"])),
            locked=bool(body["locked"]),
            name=str(body["name"]),
            actor=str(body["actor"]),
            since=float(body["since"]),
            kinds=frozenset(DoorKind(k) for k in body.get("kinds", ())),
            expires_at=None if body.get("expires_at") is None else float(body["expires_at"]),
            drill=bool(body.get("drill", False)),
        )
