"""Door schedules in force: windows begin and end by the wall clock, reloads take effect live.

The calendar (``gatewayd.rules.schedules``) says which windows hold at a wall-clock moment; the
scheduler makes the engine agree, through :meth:`Core.commit` like any other change (an unlock
waits for its audit record, a relock never does), and actuates the doors it moved. It looks
at the wall clock every :data:`TICK_S` and compares it with the next transition it computed,
so a wall clock that steps (forwards or back) moves a door at most one tick off the calendar;
a step the clock watch reports wakes it at once. Schedule sources are not restored from the
journal: the config and the clock re-derive them before the doors are first written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog

from gatewayd.kernel.errors import CommandError
from gatewayd.kernel.events import now_ns
from gatewayd.rules.engine import Change
from gatewayd.rules.schedules import ACTOR, KEY_PREFIX, Calendar, SchedulesConfig
from gatewayd.rules.sources import Source
from gatewayd.security.audit import AuditKind
from gatewayd.service.core import Core

log = structlog.get_logger(__name__)

#: Longest sleep between two looks at the wall clock.
TICK_S = 1.0
#: Upcoming transitions shown per window (``gatewayd check``, the console).
SHOWN = 4

WallClock = Callable[[], float]


class Scheduler:
    """Keeps the engine's schedule sources equal to what the calendar says now."""

    def __init__(
        self, core: Core, config: SchedulesConfig | None, *, clock: WallClock = time.time
    ) -> None:
        self._core = core
        self._clock = clock
        self.calendar = Calendar(config)
        self._wake = asyncio.Event()
        #: One evaluation at a time (the loop, a reload, a clock step).
        self._lock = asyncio.Lock()
        #: Wall-clock time of the next begin or end, and of the last evaluation.
        self._next: float | None = None
        self._last_wall = float("-inf")
        #: Keys of the last run the journal still lists (removed at the first evaluation).
        self._stale: set[str] = set()
        self.evaluations = 0
        self.transitions = 0
        self.refused = 0
        self.reloads = 0

    def forget(self, keys: list[str]) -> None:
        """Schedule keys the journal had in force: not restored, removed from the record."""
        self._stale.update(k for k in keys if k.startswith(KEY_PREFIX))

    async def prime(self) -> None:
        """Put what the calendar holds now in the engine, before any door is written."""
        await self._evaluate(actuate=False, why="start")

    def clock_stepped(self, step_s: float) -> None:
        """The clock watch saw the wall clock step: look at the calendar again now."""
        log.warning("schedule.clock_step", step_s=round(step_s, 3))
        self._next = None
        self._wake.set()

    async def reload(self, config: SchedulesConfig | None, *, actor: str) -> dict[str, Any]:
        """Take new schedules; what they hold now is in force when this returns."""
        before = set(self.calendar.windows)
        old = {i: w.config for i, w in self.calendar.windows.items()}
        calendar = Calendar(config)
        # Expanding the rules takes tens of milliseconds per window: never on the loop.
        await asyncio.to_thread(calendar.prepare, self._clock())
        self.calendar = calendar
        new = {i: w.config for i, w in self.calendar.windows.items()}
        self.reloads += 1
        summary = {
            "added": sorted(set(new) - before),
            "removed": sorted(before - set(new)),
            "changed": sorted(i for i in set(new) & before if new[i] != old[i]),
        }
        log.warning("schedule.reloaded", actor=actor, **summary)
        self._next = None
        await self._evaluate(actuate=True, why=f"reload by {actor}")
        return summary

    async def run(self) -> None:
        """Follow the calendar until cancelled."""
        while True:
            wall = self._clock()
            due = self._next is None or wall >= self._next or wall < self._last_wall
            if due:
                await self._evaluate(actuate=True, why="calendar")
                wall = self._clock()
            left_s = TICK_S if self._next is None else max(0.0, self._next - wall)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(TICK_S, left_s)):
                    await self._wake.wait()
            self._wake.clear()

    async def _evaluate(self, *, actuate: bool, why: str) -> None:
        async with self._lock:
            await self._reconcile(actuate=actuate, why=why)

    async def _reconcile(self, *, actuate: bool, why: str) -> None:
        wall = self._clock()
        if self.calendar.stale(wall):
            # At start-up, after a clock step, about once a year: off the loop.
            await asyncio.to_thread(self.calendar.prepare, wall)
        self.evaluations += 1
        wanted = self.calendar.sources(wall)
        held = {k: s for k, s in self._core.engine.sources.items() if k.startswith(KEY_PREFIX)}
        put = tuple(s for k, s in wanted.items() if held.get(k) != s)
        remove = tuple(sorted((set(held) - set(wanted)) | (self._stale - set(wanted))))
        self._last_wall = wall
        self._next = self.calendar.next_change(wall)
        if not put and not remove:
            self._stale.clear()
            return
        change = Change(put=put, remove=remove)
        trigger_ns = now_ns()
        try:
            doors = await self._core.commit(
                change,
                kind=AuditKind.STATE,
                actor=ACTOR,
                data=_record(put, remove, why),
            )
        except CommandError as exc:
            # An unlock that cannot be recorded does not happen; it is tried again next tick.
            self.refused += 1
            self._next = wall + TICK_S
            log.critical("schedule.refused", error=str(exc), code=exc.code, why=why)
            self._core.publisher.event("alarm", "schedule",
                                       {"type": "schedule_refused", "error": exc.code,
                                        "message": str(exc)},
                                       life_safety=True)  # fmt: skip
            return
        self._stale.clear()
        self.transitions += 1
        log.info("schedule.changed", why=why, begun=sorted({s.name for s in put}),
                 ended=list(remove), doors=len(doors))  # fmt: skip
        if actuate and doors:
            report = await self._core.actuator.apply(doors, trigger_ns)
            self._core.reporting.record(report, trigger=f"schedule ({why})")

    def upcoming(self, count: int = SHOWN) -> list[dict[str, Any]]:
        """Each window with its next transitions, for the console and status."""
        wall = self._clock()
        active = self.calendar.active(wall)
        return [
            {
                "id": ident,
                "name": window.config.name,
                "action": window.config.action,
                "doors": list(window.config.doors),
                "active": ident in active,
                "next": [t.to_json() for t in window.transitions(wall, count)],
            }
            for ident, window in self.calendar.windows.items()
        ]

    def statistics(self) -> dict[str, int]:
        return {
            "windows": len(self.calendar.windows),
            "evaluations": self.evaluations,
            "transitions": self.transitions,
            "refused": self.refused,
            "reloads": self.reloads,
        }


def _record(put: tuple[Source, ...], remove: tuple[str, ...], why: str) -> dict[str, Any]:
    return {
        "schedule": why,
        "begun": sorted({s.name for s in put}),
        "ended": sorted({k.removeprefix(KEY_PREFIX).rsplit(":", 1)[0] for k in remove}),
        "doors": sorted({s.scope.ident for s in put}),
    }
