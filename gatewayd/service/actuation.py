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
        targets = {
            d: Target(dec.locked, dec.reason, int(dec.priority)) for d, dec in decisions.items()
        }
        detail: dict[str, dict[str, Any]] = {}
        for door_id, dec in decisions.items():
            held_by = self._engine.get(dec.claim.source) if dec.claim else None
            if held_by is None:
                continue
            if held_by.name == "responder" and held_by.expires_at is not None:
                detail[door_id] = {
                    "override": {"actor": held_by.actor, "until": utc_iso(held_by.expires_at)}
                }
            elif held_by.drill:
                detail[door_id] = {"drill": True}
        return await self._doors.actuate(targets, trigger_ns=trigger_ns, detail=detail)
