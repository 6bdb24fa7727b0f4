"""A priority lock: the next holder is the waiter with the lowest priority number, then the
earliest arrival.

A driver whose one connection carries both door commands and routine polling holds the lane
for each transaction on its own, commands at :data:`COMMAND` and polls at :data:`POLL`, so a
command waits for at most the one transaction in flight, never for a queue of polls. Drivers
whose requests are independent on the wire (BACnet datagrams matched by invoke id) need none.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

#: Priorities used by the drivers: lower goes first.
COMMAND = 0
POLL = 1


class LaneFull(RuntimeError):
    """Too many waiters: the caller is producing work faster than the device can take it."""


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class PriorityLane:
    """Mutual exclusion where waiters are served by (priority, arrival), not arrival alone."""

    def __init__(self, max_waiters: int = 256) -> None:
        #: Beyond this many waiters :meth:`acquire` raises :class:`LaneFull` at once, so a
        #: stuck device turns into errors instead of an unbounded queue.
        self.max_waiters = max_waiters
        self._held = False
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._calls = 0
        self._contended = 0

    @property
    def locked(self) -> bool:
        return self._held

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.future.done())

    @asynccontextmanager
    async def hold(self, priority: int) -> AsyncIterator[None]:
        """Hold the lane for the body of an ``async with``."""
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, priority: int) -> None:
        """Wait until this caller holds the lane; cancellation leaves no trace."""
        self._calls += 1
        if not self._held and not self._waiters:
            self._held = True
            return
        if len(self._waiters) >= self.max_waiters:
            self._calls -= 1
            raise LaneFull(f"{len(self._waiters)} waiters already queued")
        self._contended += 1
        waiter = _Waiter(priority, next(self._seq), asyncio.get_running_loop().create_future())
        heapq.heappush(self._waiters, waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                # Granted and cancelled in the same tick: we own the lane, pass it on.
                self.release()
            raise

    def release(self) -> None:
        """Hand the lane straight to the best live waiter, or free it."""
        if not self._held:
            raise RuntimeError("release of a lane that is not held")
        while self._waiters:
            waiter = heapq.heappop(self._waiters)
            if not waiter.future.done():
                # Ownership passes directly: no newcomer can barge in between.
                waiter.future.set_result(None)
                return
        self._held = False

    def statistics(self) -> dict[str, int]:
        return {
            "acquired": self._calls,
            "contended": self._contended,
            "waiting": self.waiting,
            "held": int(self._held),
        }
