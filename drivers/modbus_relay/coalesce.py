"""Merge the commands that queue for one board into one transaction, each answered on its own.

A board's link carries one request at a time. Commands that arrive while a transaction is on
the wire (or in the same event-loop turn as the first) wait in one queue; the next holder of
the board takes the whole queue as a batch, so 32 separate door commands cost two FC15
writes, not 32 writes and 64 reads. Batches run in arrival order and each command gets its
own result, or its own error.

There is no task of its own: the caller whose command is queued first while nobody leads
runs the batches. After its own command is answered it goes on with what queued meanwhile
(the board stays with commands, a waiting poll does not slip in between), for at most
:data:`EXTRA_BATCHES` more, then hands the lead to the next waiter.
A leader that is cancelled fails only the batch on the wire (its writes may or may not have
reached the board); commands queued behind it get a new leader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from gatewayd.kernel.errors import DeviceError

#: Batches a leader runs for others after its own command was answered.
EXTRA_BATCHES = 4

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class Queued(Generic[T, R]):
    """One command waiting for its batch, and the future of its own result."""

    item: T
    queued_ns: int
    future: asyncio.Future[R] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class QueueFull(DeviceError):
    """More commands queued for a board than it can be expected to carry out."""


class Coalescer(Generic[T, R]):
    """Runs queued items in batches through ``run_batch``, which answers every item."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[Queued[T, R]]], Awaitable[None]],
        hold: Callable[[], AbstractAsyncContextManager[None]],
        max_queued: int,
    ) -> None:
        self._run_batch = run_batch
        #: Held by a leader for all its batches (the board's lane).
        self._hold = hold
        #: Beyond this many queued commands a new one is refused at once.
        self.max_queued = max_queued
        self._queue: list[Queued[T, R]] = []
        #: Resolved when the current leader stops leading; None while nobody leads.
        self._term: asyncio.Future[None] | None = None
        self.batches = 0
        self.merged = 0
        self.largest = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, item: T, queued_ns: int) -> R:
        """Queue ``item`` and return its own result once its batch ran."""
        if len(self._queue) >= self.max_queued:
            raise QueueFull(f"{len(self._queue)} commands already queued")
        entry: Queued[T, R] = Queued(item, queued_ns)
        self._queue.append(entry)
        try:
            while not entry.future.done():
                if self._term is None:
                    await self._lead(entry)
                else:
                    await asyncio.wait(
                        (entry.future, self._term), return_when=asyncio.FIRST_COMPLETED
                    )
        except BaseException:
            if entry in self._queue:
                self._queue.remove(entry)
            raise
        return entry.future.result()

    async def _lead(self, own: Queued[T, R]) -> None:
        term = self._term = asyncio.get_running_loop().create_future()
        try:
            async with self._hold():
                await self._batches(own)
        finally:
            self._term = None
            term.set_result(None)

    async def _batches(self, own: Queued[T, R]) -> None:
        # Commands sent in the same loop turn as this one ride along in its batch.
        await asyncio.sleep(0)
        extra = 0
        while self._queue and extra <= EXTRA_BATCHES:
            if own.future.done():
                extra += 1
            batch, self._queue = self._queue, []
            self.batches += 1
            self.merged += len(batch) - 1
            self.largest = max(self.largest, len(batch))
            try:
                await self._run_batch(batch)
            except DeviceError as exc:
                # The batch's own failure, answered to each of its commands; the lead goes on.
                self._fail(batch, exc)
            except BaseException as exc:
                # Cancelled (or a bug): its writes may or may not have reached the board.
                self._fail(batch, DeviceError(f"interrupted ({type(exc).__name__})"))
                raise
            finally:
                for entry in batch:
                    # Nobody else awaits a cancelled caller's future: mark it retrieved.
                    if entry.future.done() and not entry.future.cancelled():
                        entry.future.exception()

    @staticmethod
    def _fail(batch: Sequence[Queued[T, R]], error: Exception) -> None:
        for entry in batch:
            if not entry.future.done():
                entry.future.set_exception(error)
