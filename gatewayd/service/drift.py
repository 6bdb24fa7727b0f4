"""Doors hold what they are told: a door that drifts from its command is written again.

Someone else's Modbus write re-locks an egress door during a fire, or a controller reboots a
classroom into unlocked during a lockdown: the read-back differs from the command outside any
actuation. The door is re-asserted (what the engine decides now), at most once a second at
first and backing off to every 30 s while it keeps drifting, and each episode raises one
high-severity ``door`` event.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from gatewayd.kernel.events import now_ns
from gatewayd.service.core import Core
from gatewayd.service.doors import DoorService
from gatewayd.service.tasks import Tasks

log = structlog.get_logger(__name__)

#: Re-asserts of one door: the first after this, then doubling up to the max while it drifts.
FIRST_REASSERT_S = 0.0
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 30.0
#: A door that held its command this long starts a new episode when it drifts again.
EPISODE_S = 60.0


class DriftGuard:
    """Re-asserts drifted doors, rate-limited per door."""

    def __init__(self, core: Core, doors: DoorService, tasks: Tasks) -> None:
        self._core = core
        self._doors = doors
        self._tasks = tasks
        #: door -> (monotonic time of the last re-assert, the interval before the next).
        self._last: dict[str, tuple[float, float]] = {}
        self._scheduled: set[str] = set()
        self.reasserts = 0
        self.episodes = 0

    def drifted(self, door_id: str) -> None:
        if door_id in self._scheduled:
            return
        now = time.monotonic()
        last, interval = self._last.get(door_id, (float("-inf"), MIN_INTERVAL_S))
        if now - last > EPISODE_S:
            interval = MIN_INTERVAL_S
            self._episode(door_id)
            wait_s = FIRST_REASSERT_S
        else:
            wait_s = max(0.0, last + interval - now)
            interval = min(interval * 2, MAX_INTERVAL_S)
        self._last[door_id] = (now + wait_s, interval)
        self._scheduled.add(door_id)
        self._tasks.spawn(self._reassert(door_id, wait_s), f"drift:{door_id}")

    def _episode(self, door_id: str) -> None:
        self.episodes += 1
        state = self._doors.doors[door_id]
        door = self._core.campus.doors[door_id]
        self._core.publisher.event(
            "door",
            door_id,
            {"door": door_id, "severity": "high", "fault": state.fault,
             "commanded": state.commanded, "locked": state.locked, "reason": state.reason,
             "action": "re-asserting"},
            life_safety=True,
            location={"building": door.building, "floor": door.floor, "room": door.room},
        )  # fmt: skip

    async def _reassert(self, door_id: str, wait_s: float) -> None:
        try:
            if wait_s:
                await asyncio.sleep(wait_s)
            self.reasserts += 1
            report = await self._core.actuator.apply([door_id], now_ns())
            log.warning("door.reasserted", door=door_id, confirmed=bool(report.confirmed),
                        failed=report.failed.get(door_id))  # fmt: skip
        finally:
            self._scheduled.discard(door_id)

    def statistics(self) -> dict[str, int]:
        return {"reasserts": self.reasserts, "episodes": self.episodes}
