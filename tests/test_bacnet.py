"""The BACnet driver against the BACnet/IP controller simulator, over real UDP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gatewayd.drivers.bacnet import BacnetConfig, BacnetDriver
from gatewayd.drivers.bacnet.transport import APPLICATIONS
from gatewayd.kernel.errors import BadPoint, DeviceTimeout, UnsupportedCommand
from gatewayd.kernel.events import (
    DeviceFault,
    DeviceHealth,
    Health,
    PointChanged,
    PointWrite,
    SendAlert,
    WritePoints,
)
from gatewayd.simulators.bacnet_device import BacnetDeviceSim
from tests.support.harness import DriverHarness, Harnesses, changed, health
from tests.support.waiting import eventually

POINTS = frozenset({"binary-output:0", "binary-output:1", "binary-input:0", "binary-input:2"})
LOCAL = "127.0.0.1:0"


Running = DriverHarness[BacnetDriver, BacnetDeviceSim]
online = health(Health.ONLINE)
offline = health(Health.OFFLINE)


@pytest.fixture
async def sim() -> AsyncIterator[BacnetDeviceSim]:
    device = BacnetDeviceSim(2, actuation_ms=1, device_instance=1201)
    await device.start()
    try:
        yield device
    finally:
        await device.stop()


@pytest.fixture
async def start(harnesses: Harnesses) -> AsyncIterator[Callable[..., Any]]:
    """Start drivers against a simulator; every one is stopped at the end."""
    started: list[Running] = []

    async def go(sim: BacnetDeviceSim, points: frozenset[str] = POINTS, **settings: Any) -> Running:
        values: dict[str, Any] = {
            "id": f"ctl{len(started)}",
            "driver": "bacnet",
            "address": sim.address,
            "device_instance": sim.device_instance,
            "local_address": LOCAL,
            "poll_interval_ms": 50,
            "timeout_ms": 200,
            "reconnect_min_ms": 50,
            "reconnect_max_ms": 300,
        } | settings
        config = BacnetConfig(**values)
        run = await harnesses.start(lambda emit: BacnetDriver(config, points, emit), sim)
        started.append(run)
        return run

    yield go
    await harnesses.stop_all()
    assert APPLICATIONS.users(LOCAL) == 0


def lock(value: bool, priority: int, door: int = 0) -> WritePoints:
    return WritePoints((PointWrite(f"binary-output:{door}", value, priority),))


def network_writes(sim: BacnetDeviceSim) -> list[tuple[int, bool | None, int]]:
    return [(w.door, w.value, w.priority) for w in sim.write_log if w.source == "network"]


async def test_write_at_lockdown_priority_locks_and_reads_back(
    sim: BacnetDeviceSim, start: Callable[..., Any]
) -> None:
    run = await start(sim)
    await run.wait_for(online, 5)
    result = await run.driver.execute(lock(True, 5))
    values = {v.point: v.value for v in result.values}
    assert values["binary-output:0"] is True
    assert set(values) == {"binary-output:0", "binary-input:0", "binary-input:2"}
    assert sim.locked(0) and sim.priority_array(0) == {5: True}
    assert network_writes(sim) == [(0, True, 5)]


async def test_life_safety_release_then_return_leaves_lockdown_in_force(
    sim: BacnetDeviceSim, start: Callable[..., Any]
) -> None:
    run = await start(sim)
    await run.wait_for(online, 5)
    await run.driver.execute(lock(True, 5))
    await run.driver.execute(lock(False, 1))
    # The controller agrees with the gateway: only the winning slot is held.
    assert sim.priority_array(0) == {1: False} and not sim.locked(0)
    await run.driver.execute(lock(True, 5))
    assert sim.priority_array(0) == {5: True} and sim.locked(0)
    # New slot first, old slot relinquished after: never a pass through relinquish-default.
    assert network_writes(sim) == [
        (0, True, 5),
        (0, False, 1),
        (0, None, 5),
        (0, True, 5),
        (0, None, 1),
    ]


async def test_relinquish_never_touches_a_slot_the_gateway_did_not_write(
    sim: BacnetDeviceSim, start: Callable[..., Any]
) -> None:
    sim.operator_write(0, True, 8)
    run = await start(sim)
    await run.wait_for(online, 5)
    await run.driver.execute(lock(False, 5))
    await run.driver.execute(lock(False, 16))
    assert sim.priority_array(0) == {8: True, 16: False}
    assert sim.locked(0), "the operator's priority 8 still wins over the gateway's 16"
    assert all(priority != 8 for _, _, priority in network_writes(sim))


async def test_a_restarted_gateway_adopts_only_its_own_priorities(
    sim: BacnetDeviceSim, start: Callable[..., Any]
) -> None:
    first = await start(sim)
    await first.wait_for(online, 5)
    await first.driver.execute(lock(True, 5))
    await first.stop()
    sim.operator_write(0, False, 8)
    second = await start(sim)
    await second.wait_for(online, 5)
    assert second.driver.held_priorities() == {"binary-output:0": (5,)}
    await second.driver.execute(lock(False, 16))
    assert sim.priority_array(0) == {8: False, 16: False}


async def test_cov_reports_an_input_change_well_before_the_next_poll(
    sim: BacnetDeviceSim, start: Callable[..., Any]
) -> None:
    run = await start(sim, poll_interval_ms=3_000, cov_poll_interval_ms=30_000)
    await run.wait_for(online, 5)
    await run.wait_for(changed("binary-input:0", True), 2)
    polls = run.driver.statistics()["polls"]
    mark = len(run.events)
    sim.set_closed(0, False)
    await run.wait_for(changed("binary-input:0", False), 1.0, since=mark)
    assert run.driver.statistics()["polls"] == polls


async def test_subscriptions_are_renewed_before_their_lifetime_lapses(
    sim: BacnetDeviceSim, start: Callable[..., Any]
) -> None:
    run = await start(sim, cov_lifetime_s=2)
    await run.wait_for(online, 5)
    await eventually(lambda: int(run.stat("cov_renewals")) >= 2, timeout_s=6)
    assert sim.subscriptions() == 2
    mark = len(run.events)
    sim.set_closed(0, False)
    await run.wait_for(changed("binary-input:0", False), 0.5, since=mark)


async def test_a_device_restart_is_noticed_and_subscriptions_recreated(
    sim: BacnetDeviceSim, start: Callable[..., Any]
) -> None:
    run = await start(sim, poll_interval_ms=100)
    await run.wait_for(online, 5)
    await sim.restart()
    assert sim.subscriptions() == 0
    await eventually(lambda: sim.subscriptions() >= 2, timeout_s=3)
    assert run.driver.statistics()["restarts_seen"] >= 1
    mark = len(run.events)
    sim.set_closed(0, False)
    await run.wait_for(changed("binary-input:0", False), 1.0, since=mark)


async def test_vanished_device_is_offline_within_5_s_and_back_with_cov(
    sim: BacnetDeviceSim, start: Callable[..., Any]
) -> None:
    run = await start(sim)
    await run.wait_for(online, 5)
    await run.driver.execute(lock(True, 5))
    mark = len(run.events)
    await sim.vanish()
    await run.wait_for(offline, 5, since=mark)
    await sim.reappear()
    await run.wait_for(online, 5, since=mark)
    assert sim.subscriptions() == 2
    assert run.driver.held_priorities() == {"binary-output:0": (5,)}


async def test_a_point_the_device_lacks_is_a_fault_and_a_clear_error(
    sim: BacnetDeviceSim, start: Callable[..., Any]
) -> None:
    run = await start(sim, POINTS | {"binary-output:7"})
    fault = await run.wait_for(lambda e: isinstance(e, DeviceFault), 5)
    assert isinstance(fault, DeviceFault) and "binary-output:7" in fault.detail
    await run.wait_for(lambda e: isinstance(e, DeviceHealth) and e.health is Health.DEGRADED, 5)
    with pytest.raises(BadPoint, match="has no binary-output:7"):
        await run.driver.execute(lock(True, 5, door=7))
    await run.driver.execute(lock(True, 5))
    assert sim.locked(0)


async def test_a_write_whose_datagram_is_lost_is_sent_again_and_the_door_locks(
    sim: BacnetDeviceSim, start: Callable[..., Any]
) -> None:
    # Slow polls and probes: after the first probe, the next request the controller sees is
    # the write.
    run = await start(sim, poll_interval_ms=60_000, cov_poll_interval_ms=600_000)
    await run.wait_for(online, 5)
    await eventually(lambda: run.driver.statistics()["probes"] >= 1)
    sim.faults.drop_next = 1
    result = await run.driver.execute(lock(True, 5))
    assert {v.point: v.value for v in result.values}["binary-output:0"] is True
    assert sim.locked(0) and sim.priority_array(0) == {5: True}
    assert sim.counts["dropped"] == 1
    assert network_writes(sim) == [(0, True, 5)]
    assert run.driver.statistics()["write_retries"] == 1


async def test_a_write_lost_every_time_fails_naming_the_controller_and_the_sends(
    sim: BacnetDeviceSim, start: Callable[..., Any]
) -> None:
    run = await start(sim, poll_interval_ms=60_000, cov_poll_interval_ms=600_000,
                      write_retries=2)  # fmt: skip
    await run.wait_for(online, 5)
    await eventually(lambda: run.driver.statistics()["probes"] >= 1)
    sim.faults.drop_next = 3
    sent_3_times = rf"no reply from {sim.address} within 200 ms \(sent 3 times\)"
    with pytest.raises(DeviceTimeout, match=sent_3_times):
        await run.driver.execute(lock(True, 5))
    assert not sim.locked(0) and sim.counts["dropped"] == 3
    assert run.driver.statistics()["write_retries"] == 2


def test_bad_point_notation_says_what_was_expected() -> None:
    with pytest.raises(BadPoint, match="expected 'binary-output:N'"):
        BacnetDriver.parse_point("analog-value:3")
    assert BacnetDriver.parse_point(" BO,3 ") == "binary-output:3"
    assert BacnetDriver.is_output("binary-output:3")
    assert not BacnetDriver.is_output("binary-input:3")


async def test_a_garbled_cov_notification_is_a_fault_and_no_change(
    sim: BacnetDeviceSim, start: Callable[..., Any]
) -> None:
    run = await start(sim, poll_interval_ms=3_000, cov_poll_interval_ms=30_000)
    await run.wait_for(online, 5)
    await eventually(run.reported_every_point)
    mark = len(run.events)
    sim.faults.corrupt = 1.0
    sim.set_closed(0, False)
    await run.wait_for(lambda e: isinstance(e, DeviceFault), 2, since=mark)
    assert not [e for e in run.events[mark:] if isinstance(e, PointChanged)]


async def test_other_commands_are_unsupported_and_writes_refuse_inputs(
    sim: BacnetDeviceSim, start: Callable[..., Any]
) -> None:
    run = await start(sim)
    with pytest.raises(UnsupportedCommand):
        await run.driver.execute(SendAlert("LOCKDOWN", "test"))
    with pytest.raises(BadPoint, match="input"):
        await run.driver.execute(WritePoints((PointWrite("binary-input:0", True, 5),)))


async def test_controllers_share_one_local_application(start: Callable[..., Any]) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sims = []
        for instance in (1301, 1302, 1303):
            device = BacnetDeviceSim(2, actuation_ms=1, device_instance=instance)
            await device.start()
            stack.push_async_callback(device.stop)
            sims.append(device)
        runs = [await start(device) for device in sims]
        for run in runs:
            await run.wait_for(online, 5)
        assert APPLICATIONS.users(LOCAL) == 3
        for device, run in zip(sims, runs, strict=True):
            await run.driver.execute(lock(True, 5))
            assert device.locked(0)


async def test_a_propped_door_reads_open_its_bolt_throws_and_it_is_not_secured(
    sim: BacnetDeviceSim, start: Callable[..., Any]
) -> None:
    run = await start(sim)
    await run.wait_for(online, 5)
    mark = len(run.events)
    sim.hold_open(0)
    await run.wait_for(changed("binary-input:0", False), 2, since=mark)
    await run.driver.execute(lock(True, 5))
    # Lock sense (binary-input:2 for door 0 of 2) reports the bolt, thrown on an open door.
    await run.wait_for(changed("binary-input:2", True), 2, since=mark)
    assert not sim.closed(0) and sim.sense(0) and not sim.secured(0)
    sim.release_door(0)
    await run.wait_for(changed("binary-input:0", True), 2, since=mark)
    assert sim.secured(0)


async def test_the_simulator_refuses_what_a_real_controller_refuses(
    sim: BacnetDeviceSim, start: Callable[..., Any]
) -> None:
    """A door input is the door's (a client cannot write it); priority 6 is reserved."""
    from bacpypes3.primitivedata import ObjectIdentifier

    from gatewayd.drivers.bacnet.transport import DeviceRefused

    run = await start(sim)
    await run.wait_for(online, 5)
    link = run.driver._link  # the driver's own wire, to send what the driver never would
    with pytest.raises(DeviceRefused, match=r"write-access-denied|writeAccessDenied"):
        await link.write_present_value(ObjectIdentifier("binary-input:0"), False, 16)
    assert sim.closed(0), "the door input kept the door's value"
    with pytest.raises(DeviceRefused, match=r"write-access-denied|writeAccessDenied"):
        await link.write_present_value(ObjectIdentifier("binary-output:0"), True, 6)
    assert 6 not in sim.priority_array(0)


def test_the_shared_applications_open_from_a_second_event_loop() -> None:
    # The registry is module-level; a lock it used in one loop must not refuse the next
    # (the demo campus's two BACnet controllers share one local address and contend).
    async def two_at_once(instance: int) -> None:
        apps = await asyncio.gather(
            APPLICATIONS.acquire(LOCAL, instance), APPLICATIONS.acquire(LOCAL, instance)
        )
        assert apps[0] is apps[1]
        assert APPLICATIONS.users(LOCAL) == 2
        APPLICATIONS.release(LOCAL)
        APPLICATIONS.release(LOCAL)
        assert APPLICATIONS.users(LOCAL) == 0

    asyncio.run(two_at_once(1401))
    asyncio.run(two_at_once(1402))
