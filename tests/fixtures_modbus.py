"""Fixtures for the Modbus relay board simulator and driver tests (real sockets, no mocks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from gatewayd.drivers.modbus_relay import ModbusRelayConfig, ModbusRelayDriver
from gatewayd.kernel.events import DriverEvent
from gatewayd.simulators.relay_board import RelayBoardSim

__all__ = [
    "DriverHarness",
    "EventRecorder",
    "board_points",
    "eventually",
    "no_leaked_tasks",
    "relay_board",
    "start_driver",
]

DOORS = 8
SPARE_INPUTS = 4


class EventRecorder:
    """The ``emit`` callback of a driver under test: keeps events, lets tests wait for one."""

    def __init__(self) -> None:
        self.events: list[DriverEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: DriverEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[DriverEvent], bool], timeout_s: float = 3.0, *, since: int = 0
    ) -> DriverEvent:
        """First event from index ``since`` matching ``predicate``, waiting if needed."""
        async with asyncio.timeout(timeout_s):
            while True:
                for event in self.events[since:]:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()


@dataclass
class DriverHarness:
    """A running driver against a simulated board, with every event it emitted."""

    sim: RelayBoardSim
    driver: ModbusRelayDriver
    recorder: EventRecorder
    task: asyncio.Task[None] | None = None

    @property
    def events(self) -> list[DriverEvent]:
        return self.recorder.events

    async def wait_for(
        self, predicate: Callable[[DriverEvent], bool], timeout_s: float = 3.0, *, since: int = 0
    ) -> DriverEvent:
        return await self.recorder.wait_for(predicate, timeout_s, since=since)

    async def stop(self) -> None:
        """Cancel the run task and wait for it (idempotent)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None


async def eventually(check: Callable[[], bool], timeout_s: float = 3.0) -> None:
    """Wait until ``check()`` holds, or fail; for simulator state that has no event to await."""
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.005)


@pytest.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running behind it."""
    before = asyncio.all_tasks()
    yield
    # Give cancelled tasks a few turns of the loop to finish.
    for _ in range(5):
        await asyncio.sleep(0)
    current = asyncio.current_task()
    leaked = {t for t in asyncio.all_tasks() - before if t is not current and not t.done()}
    assert not leaked, f"tasks left running: {leaked}"


@pytest.fixture
async def relay_board() -> AsyncIterator[RelayBoardSim]:
    """A started 8-door board with 4 spare inputs on a free port; 1 ms lock actuation."""
    sim = RelayBoardSim(DOORS, extra_inputs=SPARE_INPUTS, actuation_ms=1.0)
    await sim.start()
    yield sim
    await sim.stop()


def board_points(doors: int = DOORS, spares: int = SPARE_INPUTS) -> frozenset[str]:
    """Every coil, position, lock sense and spare input of a board."""
    coils = {f"coil:{i}" for i in range(doors)}
    inputs = {f"input:{i}" for i in range(2 * doors + spares)}
    return frozenset(coils | inputs)


@pytest.fixture
async def start_driver(
    relay_board: RelayBoardSim,
) -> AsyncIterator[Callable[..., Awaitable[DriverHarness]]]:
    """Factory: start a driver (fast intervals) against ``relay_board``; stopped afterwards."""
    running: list[DriverHarness] = []

    async def start(points: Iterable[str] | None = None, **settings: Any) -> DriverHarness:
        values: dict[str, Any] = {
            "id": "relay-t",
            "driver": "modbus_relay",
            "host": "127.0.0.1",
            "port": relay_board.port,
            "coils": relay_board.doors,
            "inputs": relay_board.input_count,
            "poll_interval_ms": 20,
            "timeout_ms": 200,
            "reconnect_min_ms": 20,
            "reconnect_max_ms": 200,
        }
        config = ModbusRelayConfig.model_validate({**values, **settings})
        recorder = EventRecorder()
        watched = frozenset(points) if points is not None else board_points()
        driver = ModbusRelayDriver(config, watched, recorder)
        harness = DriverHarness(relay_board, driver, recorder)
        started = asyncio.Event()
        harness.task = asyncio.create_task(driver.run(started.set))
        running.append(harness)
        await asyncio.wait_for(started.wait(), 5)
        return harness

    yield start
    for harness in running:
        await harness.stop()
