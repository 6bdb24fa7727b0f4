"""The one event recorder: keeps what a callback was given and lets a test await an item."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from tests.support.waiting import describe

__all__ = ["Recorder"]

T = TypeVar("T")
K = TypeVar("K")

#: How many of the last items a failure shows.
SHOWN = 8


class Recorder(Generic[T]):
    """Call it with each item (a driver's ``emit``, a message handler); await what a test needs.

    ``wait_for`` looks from an index (``since``, taken with ``mark()``); ``next`` reads on from
    the recorder's own cursor, so a test can step through what arrived, one awaited item at a
    time. Both fail with what was awaited and the last items seen.
    """

    def __init__(self, what: str = "items") -> None:
        #: What the items are, for failure messages ("driver events", "messages on site/#").
        self.what = what
        #: Every item, in arrival order.
        self.items: list[T] = []
        #: Where ``next`` looks from: one past the last item it returned.
        self.cursor = 0
        self._changed = asyncio.Event()

    def __call__(self, item: T) -> None:
        self.items.append(item)
        self._changed.set()

    def __len__(self) -> int:
        return len(self.items)

    def notify(self) -> None:
        """Wake the waiters: state they check besides the items has changed."""
        self._changed.set()

    def mark(self) -> int:
        """The index the next item will have: pass it as ``since`` to ignore what came before."""
        return len(self.items)

    def matching(self, predicate: Callable[[T], bool], *, since: int = 0) -> list[T]:
        return [item for item in self.items[since:] if predicate(item)]

    async def wait_for(
        self, predicate: Callable[[T], bool], timeout_s: float = 5.0, *, since: int = 0
    ) -> T:
        """The first item from index ``since`` on that matches ``predicate``, waiting if needed."""
        index = await self._first(predicate, since, timeout_s)
        return self.items[index]

    @overload
    async def next(
        self, kind: type[K], where: Callable[[K], bool] | None = None, *, timeout_s: float = 5.0
    ) -> K: ...

    @overload
    async def next(
        self, kind: None = None, where: Callable[[T], bool] | None = None, *, timeout_s: float = 5.0
    ) -> T: ...

    async def next(
        self,
        kind: type[Any] | None = None,
        where: Callable[[Any], bool] | None = None,
        *,
        timeout_s: float = 5.0,
    ) -> Any:
        """The next item after the cursor of type ``kind`` for which ``where`` holds."""

        def wanted(item: T) -> bool:
            return (kind is None or isinstance(item, kind)) and (where is None or where(item))

        wanted.__qualname__ = (
            " and ".join(
                part
                for part in (
                    kind.__name__ if kind is not None else "",
                    describe(where) if where is not None else "",
                )
                if part
            )
            or "any item"
        )
        index = await self._first(wanted, self.cursor, timeout_s)
        self.cursor = index + 1
        return self.items[index]

    async def wait_count(
        self, predicate: Callable[[T], bool], count: int, timeout_s: float = 5.0, *, since: int = 0
    ) -> list[T]:
        """The first ``count`` items from ``since`` on that match, once that many have come."""
        await self.wait_until(
            lambda: len(self.matching(predicate, since=since)) >= count,
            timeout_s,
            f"{count} x {describe(predicate)}",
        )
        return self.matching(predicate, since=since)[:count]

    async def wait_until(
        self, check: Callable[[], bool], timeout_s: float = 5.0, what: str | None = None
    ) -> None:
        """Wait until ``check()`` holds, testing it again on each item or ``notify()``."""
        try:
            async with asyncio.timeout(timeout_s):
                while not check():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(self._failure(what or describe(check), timeout_s)) from None

    async def _first(self, predicate: Callable[[T], bool], since: int, timeout_s: float) -> int:
        index = since
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    # Items only arrive between awaits, so each is looked at once.
                    while index < len(self.items):
                        if predicate(self.items[index]):
                            return index
                        index += 1
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                self._failure(f"{describe(predicate)} (from #{since})", timeout_s)
            ) from None

    def _failure(self, what: str, timeout_s: float) -> str:
        last = self.items[-SHOWN:]
        return (
            f"no {what} within {timeout_s} s among {len(self.items)} {self.what};"
            f" the last {len(last)}: {last!r}"
        )
