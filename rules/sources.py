"""Sources: the things that hold doors (an SRP state on a scope, an override, an alarm)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gatewayd.kernel.scope import Scope
from gatewayd.kernel.site import DoorKind
from gatewayd.rules.arbitration import Claim, Priority


@dataclass(frozen=True, slots=True)
class Effect:
    """What a source does to doors of some kinds."""

    #: Door kinds affected; empty means every kind.
    kinds: frozenset[DoorKind]
    locked: bool
    #: Strictness inside the source's priority level, lower wins.
    rank: int = 0

    def covers(self, kind: DoorKind) -> bool:
        return not self.kinds or kind in self.kinds


@dataclass(frozen=True, slots=True)
class Source:
    """One active source over a scope, persisted as is."""

    #: Stable key, e.g. ``srp:building/A``; a new source with the same key replaces it.
    key: str
    scope: Scope
    priority: Priority
    #: Effects on door kinds, first match wins; none (a dry-run drill) holds no door.
    effects: tuple[Effect, ...]
    #: Short name shown as the door's reason, e.g. ``lockdown``.
    name: str
    #: Who caused it: an MQTT actor, ``input:<id>`` or ``rule:<id>``.
    actor: str
    #: Wall-clock start, epoch seconds.
    since: float
    #: Wall-clock end for bounded overrides and drills, epoch seconds.
    expires_at: float | None = None
    drill: bool = False
    #: SRP state name for SRP sources and drills (``lockdown``, ``shelter``...).
    state: str | None = None
    hazard: str | None = None
    #: A dry-run drill: decisions published, nothing actuated.
    dry_run: bool = False
    #: Persisted with the source; a volatile one (a fire alarm) is re-derived from its input.
    durable: bool = field(default=True, compare=False)

    def effect_for(self, kind: DoorKind) -> Effect | None:
        for effect in self.effects:
            if effect.covers(kind):
                return effect
        return None

    def claim_for(self, kind: DoorKind) -> Claim | None:
        effect = self.effect_for(kind)
        if effect is None:
            return None
        return Claim(self.key, self.priority, effect.locked, self.reason, effect.rank)

    @property
    def reason(self) -> str:
        label = f"{self.name}:{self.hazard}" if self.hazard else self.name
        return f"{'DRILL ' if self.drill else ''}{label} ({self.scope})"

    @property
    def kinds(self) -> frozenset[DoorKind]:
        """Every kind any effect touches; empty when one effect covers every kind."""
        if any(not e.kinds for e in self.effects):
            return frozenset()
        return frozenset().union(*(e.kinds for e in self.effects))

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "scope": str(self.scope),
            "priority": int(self.priority),
            "effects": [
                {"kinds": sorted(e.kinds), "locked": e.locked, "rank": e.rank} for e in self.effects
            ],
            "name": self.name,
            "actor": self.actor,
            "since": self.since,
            "expires_at": self.expires_at,
            "drill": self.drill,
            "state": self.state,
            "hazard": self.hazard,
            "dry_run": self.dry_run,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Source:
        if "effects" in body:
            effects = tuple(
                Effect(
                    frozenset(DoorKind(k) for k in e["kinds"]),
                    bool(e["locked"]),
                    int(e.get("rank", 0)),
                )
                for e in body["effects"]
            )
        else:
            # The walking skeleton stored one ``locked`` flag over ``kinds``.
            kinds = frozenset(DoorKind(k) for k in body.get("kinds", ()))
            effects = (Effect(kinds, bool(body["locked"])),)
        return cls(
            key=str(body["key"]),
            scope=Scope.parse(str(body["scope"])),
            priority=Priority(int(body["priority"])),
            effects=effects,
            name=str(body["name"]),
            actor=str(body["actor"]),
            since=float(body["since"]),
            expires_at=None if body.get("expires_at") is None else float(body["expires_at"]),
            drill=bool(body.get("drill", False)),
            state=body.get("state"),
            hazard=body.get("hazard"),
            dry_run=bool(body.get("dry_run", False)),
            # A fire source is only a best-effort copy; its input decides at start-up.
            durable=not str(body["key"]).startswith("fire:"),
        )
