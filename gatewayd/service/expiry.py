"""Bounded sources end on time: responder overrides and drills, and the doors they held relock.

Deadlines run on the monotonic clock. A source carries its wall-clock ``expires_at`` (so a
restart knows it), but once the gateway holds it, it ends after at most its duration whatever
the wall clock does: a clock stepped back an hour cannot keep a door open an hour longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from gatewayd.kernel.events import now_ns
from gatewayd.rules.engine import Change
from gatewayd.rules.sources import Source
from gatewayd.security.audit import AuditKind
from gatewayd.service.core import Core

log = structlog.get_logger(__name__)


def remaining_s(source: Source, wall_now: float) -> float:
    """Seconds a bounded source has left: by the wall clock, never more than its duration."""
    assert source.expires_at is not None
    duration_s = max(0.0, source.expires_at - source.since)
    return min(max(0.0, source.expires_at - wall_now), duration_s)


class Expiry:
    """Sleeps until the next source ends; :meth:`changed` wakes it when a new one begins."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._wake = asyncio.Event()
        #: Source key -> monotonic deadline, for every bounded source in force.
        self._deadlines: dict[str, float] = {}
        #: The ``since`` each deadline was computed for (a re-put source starts again).
        self._since: dict[str, float] = {}

    def changed(self) -> None:
        """A bounded source was added or removed: look at the deadlines again."""
        self._wake.set()

    def drop_expired(self) -> list[Source]:
        """At start-up: what ran out while the daemon was down ends before anything is written,
        so a restart never re-opens a door whose override has expired."""
        wall_now = time.time()
        ended = [s for s in self._core.engine.sources.values()
                 if s.expires_at is not None and remaining_s(s, wall_now) <= 0]  # fmt: skip
        if ended:
            self._core.commit_now(
                Change(remove=tuple(s.key for s in ended)),
                kind=AuditKind.STATE,
                actor="system:expiry",
                data={"ended": "expired while stopped", "keys": [s.key for s in ended]},
            )
        return ended

    def deadline_of(self, key: str) -> float | None:
        return self._deadlines.get(key)

    def _sync(self) -> None:
        wall_now, mono_now = time.time(), time.monotonic()
        bounded = {k: s for k, s in self._core.engine.sources.items() if s.expires_at is not None}
        for key in list(self._deadlines):
            if key not in bounded:
                del self._deadlines[key]
        for key, source in bounded.items():
            # A replaced source (same key, new expiry) gets a new deadline.
            if key not in self._deadlines or self._since.get(key) != source.since:
                self._deadlines[key] = mono_now + remaining_s(source, wall_now)
                self._since[key] = source.since

    async def run(self) -> None:
        """End responder overrides and drills at their time, and relock what they held."""
        while True:
            self._sync()
            due = min(self._deadlines.values(), default=None)
            timeout_s = None if due is None else max(0.0, due - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._wake.wait()
            self._wake.clear()
            self._sync()
            mono_now = time.monotonic()
            for key in [k for k, d in self._deadlines.items() if d <= mono_now]:
                source = self._core.engine.get(key)
                del self._deadlines[key]
                if source is not None:
                    await self._end(source)

    async def _end(self, source: Source) -> None:
        core = self._core
        trigger_ns = now_ns()
        responder = source.name == "responder"
        doors, _ = core.commit_now(
            Change(remove=(source.key,)),
            kind=AuditKind.OVERRIDE if responder else AuditKind.STATE,
            actor="system:expiry",
            data={"ended": "expired", "key": source.key, "by": source.actor,
                  "scope": str(source.scope)},
        )  # fmt: skip
        core.publisher.mark_dirty(source.scope)
        log.warning("source.expired", key=source.key, actor=source.actor, doors=len(doors))
        core.publisher.event(
            "door" if responder else "state",
            source.actor,
            {"ended": "expired", "key": source.key, "scope": str(source.scope)},
            life_safety=True,
            drill=source.drill,
        )
        report = await core.actuator.apply(doors, trigger_ns)
        core.reporting.record(report, trigger=f"expiry {source.key}", drill=source.drill)
