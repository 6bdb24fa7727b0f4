"""The driver contract, run against every registered driver with its simulator."""

from __future__ import annotations

import asyncio
import contextlib
import typing
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from gatewayd.kernel.driver import AnyDriver
from gatewayd.kernel.events import DeviceFault, DeviceHealth, DriverEvent, Health, PointChanged
from gatewayd.kernel.registry import available, load_driver
from gatewayd.simulators.contract import Rig, all_rigs

RIGS = all_rigs()


def test_every_registered_driver_has_a_rig() -> None:
    assert set(available()) <= set(RIGS), "register a rig in simulators/contract.py"


@pytest.mark.parametrize("name", sorted(available()))
def test_execute_takes_exactly_the_commands_the_driver_declares(name: str) -> None:
    driver = load_driver(name)
    hint = typing.get_type_hints(driver._execute)["command"]
    assert set(typing.get_args(hint) or (hint,)) == set(driver.commands)


@dataclass
class Harness:
    rig: Rig
    driver: AnyDriver
    events: list[DriverEvent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def wait_for(
        self, check: Callable[[DriverEvent], bool], timeout_s: float, since: int = 0
    ) -> DriverEvent:
        async with asyncio.timeout(timeout_s):
            while True:
                for event in self.events[since:]:
                    if check(event):
                        return event
                self.changed.clear()
                await self.changed.wait()

    async def start(self) -> None:
        self.task = asyncio.create_task(self.driver.run(self.started.set))
        async with asyncio.timeout(5):
            await self.started.wait()

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def health(value: Health) -> Callable[[DriverEvent], bool]:
    return lambda e: isinstance(e, DeviceHealth) and e.health is value


@pytest.fixture(params=sorted(RIGS))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    rig = RIGS[request.param]()
    config, points = await rig.start()
    events: list[DriverEvent] = []
    changed = asyncio.Event()

    def emit(event: DriverEvent) -> None:
        events.append(event)
        changed.set()

    driver = load_driver(rig.driver)(config, points, emit)
    h = Harness(rig, driver, events, changed)
    try:
        yield h
    finally:
        await h.stop()
        await rig.stop()


async def test_start_signals_started_and_goes_online(harness: Harness) -> None:
    await harness.start()
    await harness.wait_for(health(Health.ONLINE), timeout_s=5)


async def test_stop_twice_is_harmless_and_leaves_no_task(harness: Harness) -> None:
    await harness.start()
    before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    await harness.stop()
    await harness.stop()
    after = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert not [t for t in after - before if not t.done()]
    assert harness.task is None


async def test_command_is_carried_out_on_the_wire(harness: Harness) -> None:
    await harness.start()
    await harness.wait_for(health(Health.ONLINE), timeout_s=5)
    command = harness.rig.wire_command()
    result = await harness.driver.execute(command)
    assert result.done_ns >= result.on_wire_ns > 0
    async with asyncio.timeout(5):
        while not harness.rig.saw_on_wire(command):
            await asyncio.sleep(0.01)


async def test_vanished_device_is_offline_within_5_s_and_back_when_it_returns(
    harness: Harness,
) -> None:
    await harness.start()
    await harness.wait_for(health(Health.ONLINE), timeout_s=5)
    mark = len(harness.events)
    await harness.rig.vanish()
    await harness.wait_for(health(Health.OFFLINE), timeout_s=5, since=mark)
    mark = len(harness.events)
    await harness.rig.reappear()
    await harness.wait_for(health(Health.ONLINE), timeout_s=10, since=mark)


async def test_garbage_from_the_device_is_a_fault_and_changes_no_state(harness: Harness) -> None:
    await harness.start()
    await harness.wait_for(health(Health.ONLINE), timeout_s=5)
    await asyncio.sleep(0.2)
    mark = len(harness.events)
    harness.rig.garble(True)
    await harness.wait_for(lambda e: isinstance(e, DeviceFault), timeout_s=5, since=mark)
    await asyncio.sleep(0.3)
    assert not [e for e in harness.events[mark:] if isinstance(e, PointChanged)]
