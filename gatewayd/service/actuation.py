"""From decisions to doors: what the engine decides now, written by the door service."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gatewayd.rules.engine import Engine
from gatewayd.service.doors import ActuationReport, DoorService, Target
from gatewayd.service.publisher import utc_iso


class Actuator:
    """Decides the given doors and actuates them; every trigger's last step."""

    def __init__(self, engine: Engine, doors: DoorService) -> None:
        self._engine = engine
        self._doors = doors
        self._listeners: list[Callable[[], None]] = []

    def listen(self, listener: Callable[[], None]) -> None:
        """Be told (synchronously, never awaited) that the sources may have changed."""
        self._listeners.append(listener)

    async def apply(self, doors: Iterable[str], trigger_ns: int) -> ActuationReport:
        """Actuate what the engine decides now; the door topic names override and drill."""
        for listener in self._listeners:
            listener()
        decisions = self._engine.decide_all(doors)
        # Doors alike share one decision: build its target once.
        made: dict[int, Target] = {}
        targets = {}
        for door_id, dec in decisions.items():
            target = made.get(id(dec))
            if target is None:
                target = made[id(dec)] = Target(dec.locked, dec.reason, int(dec.priority))
            targets[door_id] = target
        detail: dict[str, dict[str, Any]] = {}
        # A thousand doors held by one lockdown share its claim: look each source up once.
        extra: dict[str, dict[str, Any] | None] = {}
        for door_id, dec in decisions.items():
            if dec.claim is None:
                continue
            source = dec.claim.source
            if source not in extra:
                extra[source] = self._detail(source)
            if (found := extra[source]) is not None:
                detail[door_id] = found
        return await self._doors.actuate(targets, trigger_ns=trigger_ns, detail=detail)

    def _detail(self, source: str) -> dict[str, Any] | None:
        """What a door's topic says of the source holding it: an override, a drill."""
        held_by = self._engine.get(source)
        if held_by is None:
            return None
        if held_by.name == "responder" and held_by.expires_at is not None:
            return {"override": {"actor": held_by.actor, "until": utc_iso(held_by.expires_at)}}
        if held_by.drill:
            return {"drill": True}
        return None
