"""In-process event bus: non-blocking publish, one bounded queue per subscriber.

When a subscriber's queue is full the *oldest* event is dropped and counted (the newest state
is worth more than a stale one), and the drop is logged. Queues are sized so that this only
happens when a consumer is stuck, which the statistics make visible.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

import structlog

T = TypeVar("T")
log = structlog.get_logger(__name__)


class Subscription(Generic[T]):
    """One consumer's bounded queue; iterate it with ``async for``."""

    def __init__(self, name: str, maxlen: int) -> None:
        self.name = name
        self._items: deque[T] = deque()
        self._maxlen = maxlen
        self._ready = asyncio.Event()
        #: Events dropped because this consumer fell behind.
        self.dropped = 0
        self.delivered = 0

    def _put(self, item: T) -> None:
        if len(self._items) >= self._maxlen:
            self._items.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("bus.overflow", subscriber=self.name, dropped=self.dropped)
        self._items.append(item)
        self._ready.set()

    async def get(self) -> T:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        self.delivered += 1
        return self._items.popleft()

    def take(self, limit: int) -> list[T]:
        """Up to ``limit`` queued items at once, oldest first; never waits."""
        items = self._items
        out = [items.popleft() for _ in range(min(limit, len(items)))]
        self.delivered += len(out)
        return out

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            yield await self.get()

    def __len__(self) -> int:
        return len(self._items)


class Bus(Generic[T]):
    """Fan-out of events to every subscriber."""

    def __init__(self) -> None:
        self._subs: list[Subscription[T]] = []
        self.published = 0

    def subscribe(self, name: str, maxlen: int = 65_536) -> Subscription[T]:
        sub: Subscription[T] = Subscription(name, maxlen)
        self._subs.append(sub)
        return sub

    def publish(self, item: T) -> None:
        """Never blocks; see the module docstring for the overflow policy."""
        self.published += 1
        for sub in self._subs:
            sub._put(item)

    def statistics(self) -> dict[str, int]:
        stats = {"published": self.published}
        for sub in self._subs:
            stats[f"{sub.name}.queued"] = len(sub)
            stats[f"{sub.name}.dropped"] = sub.dropped
        return stats
