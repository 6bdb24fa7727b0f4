"""Bounded sources end on time: responder overrides and drills, and the doors they held relock."""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from gatewayd.kernel.events import now_ns
from gatewayd.security.audit import AuditKind
from gatewayd.service.core import Core

log = structlog.get_logger(__name__)


class Expiry:
    """Sleeps until the next source ends; :meth:`changed` wakes it when a new one begins."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._wake = asyncio.Event()

    def changed(self) -> None:
        """A bounded source was added: look at the deadline again."""
        self._wake.set()

    def drop_expired(self) -> None:
        """At start-up: what ran out while the daemon was down ends before anything is written,
        so a restart never re-opens a door whose override has expired."""
        for source in self._core.engine.expired(time.time()):
            self._core.engine.remove(source.key, force=True)

    async def run(self) -> None:
        """End responder overrides and drills at their time, and relock what they held."""
        while True:
            due = self._core.engine.next_expiry()
            timeout_s = None if due is None else max(0.0, due - time.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._wake.wait()
            self._wake.clear()
            for source in self._core.engine.expired(time.time()):
                trigger_ns = now_ns()
                doors = self._core.engine.remove(source.key, force=True)
                self._core.publisher.mark_dirty(source.scope)
                log.warning("source.expired", key=source.key, actor=source.actor, doors=len(doors))
                responder = source.name == "responder"
                self._core.guard.note(
                    AuditKind.OVERRIDE if responder else AuditKind.STATE,
                    "system:expiry",
                    {
                        "ended": "expired",
                        "key": source.key,
                        "by": source.actor,
                        "scope": str(source.scope),
                        "doors": len(doors),
                    },
                )
                self._core.publisher.event(
                    "door" if responder else "state",
                    source.actor,
                    {"ended": "expired", "key": source.key, "scope": str(source.scope)},
                    life_safety=True,
                    drill=source.drill,
                )
                report = await self._core.actuator.apply(doors, trigger_ns)
                self._core.reporting.record(
                    report, trigger=f"expiry {source.key}", drill=source.drill
                )
