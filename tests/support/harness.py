"""The one driver harness: a driver against a simulated device, and every event it emitted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import pytest

from gatewayd.kernel.driver import Driver, Emit
from gatewayd.kernel.events import DeviceFault, DeviceHealth, DriverEvent, Health, PointChanged
from tests.support.recorder import Recorder

__all__ = ["DriverHarness", "Harnesses", "changed", "harnesses", "health", "is_fault"]

D = TypeVar("D", bound="Driver[Any]")
S = TypeVar("S")


class DriverHarness(Generic[D, S]):
    """``make(emit)`` builds the driver; ``sim`` is what it talks to (a simulator or a rig)."""

    def __init__(self, make: Callable[[Emit], D], sim: S) -> None:
        #: The simulated device (or contract rig) the driver runs against.
        self.sim = sim
        #: Every event the driver emitted.
        self.recorder: Recorder[DriverEvent] = Recorder("driver events")
        self.driver = make(self.recorder)
        #: The driver's ``run`` while it runs; None before start and after stop.
        self.task: asyncio.Task[None] | None = None

    @property
    def events(self) -> list[DriverEvent]:
        return self.recorder.items

    def mark(self) -> int:
        return self.recorder.mark()

    async def wait_for(
        self, predicate: Callable[[DriverEvent], bool], timeout_s: float = 5.0, *, since: int = 0
    ) -> DriverEvent:
        return await self.recorder.wait_for(predicate, timeout_s, since=since)

    def reported_every_point(self) -> bool:
        """The driver has reported each point it watches: its first picture of the device is in."""
        reported = {e.point for e in self.events if isinstance(e, PointChanged)}
        return self.driver.points <= reported

    def stat(self, name: str) -> int | float | str:
        return self.driver.statistics()[name]

    async def start(self, timeout_s: float = 5.0) -> DriverHarness[D, S]:
        """Run the driver until it signals started; a run that fails first raises its error."""
        started = asyncio.Event()
        task = asyncio.create_task(
            self.driver.run(started.set), name=f"harness:{self.driver.device_id}"
        )
        self.task = task
        # A run that ends early wakes the wait too. Nothing else may come between the handshake
        # and the caller: a cancel that lands inside pymodbus's first read can be lost (see
        # asyncio.wait_for on 3.11), and the callers stop drivers right after start.
        task.add_done_callback(lambda _: started.set())
        async with asyncio.timeout(timeout_s):
            await started.wait()
        if task.done():
            # Its error is raised here, once; stop() has nothing left to wait for.
            self.task = None
            task.result()
            raise AssertionError(f"{self.driver.device_id} ended before it signalled started")
        return self

    async def stop(self) -> None:
        """Cancel the run and wait for it to end (idempotent); a run that crashed raises."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Harnesses:
    """Starts driver harnesses for one test and stops every one at its end."""

    def __init__(self) -> None:
        self._running: list[DriverHarness[Any, Any]] = []

    async def start(
        self, make: Callable[[Emit], D], sim: S, *, timeout_s: float = 5.0
    ) -> DriverHarness[D, S]:
        harness = DriverHarness(make, sim)
        self._running.append(harness)
        return await harness.start(timeout_s)

    async def stop_all(self) -> None:
        for harness in self._running:
            await harness.stop()


@pytest.fixture
async def harnesses() -> AsyncIterator[Harnesses]:
    """``await harnesses.start(lambda emit: Driver(config, points, emit), sim)``; stopped after."""
    running = Harnesses()
    try:
        yield running
    finally:
        await running.stop_all()


def health(value: Health, containing: str = "") -> Callable[[DriverEvent], bool]:
    """A device-health event of ``value`` whose detail contains ``containing``."""
    return _named(
        lambda e: isinstance(e, DeviceHealth) and e.health is value and containing in e.detail,
        f"health {value.name}" + (f" containing {containing!r}" if containing else ""),
    )


def changed(point: str, value: object) -> Callable[[DriverEvent], bool]:
    """A change of ``point`` to ``value``."""
    return _named(
        lambda e: isinstance(e, PointChanged) and e.point == point and e.value == value,
        f"{point} changed to {value!r}",
    )


def is_fault(event: DriverEvent) -> bool:
    return isinstance(event, DeviceFault)


def _named(predicate: Callable[[DriverEvent], bool], name: str) -> Callable[[DriverEvent], bool]:
    """``predicate`` under a name that failure messages show (see ``describe``)."""
    predicate.__qualname__ = name
    return predicate
