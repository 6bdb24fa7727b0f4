"""The driver contract, run against every registered driver with its simulator."""

from __future__ import annotations

import asyncio
import typing
from collections.abc import AsyncIterator

import pytest

from gatewayd.kernel.driver import AnyDriver
from gatewayd.kernel.events import Health, PointChanged
from gatewayd.kernel.registry import available, load_driver
from gatewayd.simulators.contract import Rig, all_rigs
from tests.support.harness import DriverHarness, health, is_fault
from tests.support.waiting import eventually

RIGS = all_rigs()


def test_every_registered_driver_has_a_rig() -> None:
    assert set(available()) <= set(RIGS), "register a rig in simulators/contract.py"


@pytest.mark.parametrize("name", sorted(available()))
def test_execute_takes_exactly_the_commands_the_driver_declares(name: str) -> None:
    driver = load_driver(name)
    hint = typing.get_type_hints(driver._execute)["command"]
    assert set(typing.get_args(hint) or (hint,)) == set(driver.commands)


Harness = DriverHarness[AnyDriver, Rig]


@pytest.fixture(params=sorted(RIGS))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    rig = RIGS[request.param]()
    config, points = await rig.start()
    h = Harness(lambda emit: load_driver(rig.driver)(config, points, emit), rig)
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
    command = harness.sim.wire_command()
    result = await harness.driver.execute(command)
    assert result.done_ns >= result.on_wire_ns > 0
    await eventually(lambda: harness.sim.saw_on_wire(command))


async def test_vanished_device_is_offline_within_5_s_and_back_when_it_returns(
    harness: Harness,
) -> None:
    await harness.start()
    await harness.wait_for(health(Health.ONLINE), timeout_s=5)
    mark = len(harness.events)
    await harness.sim.vanish()
    await harness.wait_for(health(Health.OFFLINE), timeout_s=5, since=mark)
    mark = len(harness.events)
    await harness.sim.reappear()
    await harness.wait_for(health(Health.ONLINE), timeout_s=10, since=mark)


async def test_garbage_from_the_device_is_a_fault_and_changes_no_state(harness: Harness) -> None:
    await harness.start()
    await harness.wait_for(health(Health.ONLINE), timeout_s=5)
    await eventually(harness.reported_every_point)
    mark = harness.mark()
    harness.sim.garble(True)
    # Two faults: the garbage was read more than once, so a change it caused would be in.
    await harness.recorder.wait_count(is_fault, 2, timeout_s=5, since=mark)
    assert not [e for e in harness.events[mark:] if isinstance(e, PointChanged)]
