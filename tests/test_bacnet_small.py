"""The BACnet driver against small controllers: no RPM, no COV, a small APDU, no segmentation.

Each personality is the simulator with a service taken away (``BacnetDeviceSim(rpm=False)``
and the like); the driver must stay online, carry out and confirm a lockdown, and say in its
health how it reads the device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gatewayd.kernel.events import DeviceHealth, DriverEvent, Health
from gatewayd.simulators.bacnet_device import BacnetDeviceSim
from tests import test_bacnet
from tests.support.harness import changed
from tests.support.waiting import eventually
from tests.test_bacnet import lock, online

#: The driver-starting fixture of the main BACnet tests.
start = test_bacnet.start

RPM = "ReadPropertyMultipleRequest"
READ = "ReadPropertyRequest"


def online_note(e: DriverEvent) -> str | None:
    if isinstance(e, DeviceHealth) and e.health is Health.ONLINE:
        return e.detail
    return None


def services(sim: BacnetDeviceSim, mark: int = 0) -> set[str]:
    return {seen.service for seen in list(sim.request_log)[mark:]}


async def lock_all_confirmed(run: Any) -> None:
    """The lockdown of both doors is carried out and read back locked."""
    for door in (0, 1):
        result = await run.driver.execute(lock(True, 5, door))
        values = {v.point: v.value for v in result.values}
        assert values[f"binary-output:{door}"] is True


async def test_a_device_without_rpm_is_read_per_property_and_locks_confirmed(
    bacnet_sims: Callable[..., Any], start: Callable[..., Any]
) -> None:
    sim = await bacnet_sims(rpm=False)
    run = await start(sim)
    event = await run.wait_for(online, 5)
    assert isinstance(event, DeviceHealth)
    assert "ReadProperty per property" in event.detail
    await lock_all_confirmed(run)
    assert sim.locked(0) and sim.locked(1)
    stats = run.driver.statistics()
    assert stats["rpm"] == 0 and stats["consecutive_failures"] == 0
    # protocol-services-supported said so: not one RPM was sent.
    assert RPM not in services(sim) and READ in services(sim)
    assert run.driver.health is Health.ONLINE


async def test_an_rpm_rejected_as_unknown_falls_back_and_is_remembered(
    bacnet_sims: Callable[..., Any], start: Callable[..., Any]
) -> None:
    sim = await bacnet_sims()
    run = await start(sim)
    await run.wait_for(online, 5)
    assert RPM in services(sim)
    # The device lists RPM but rejects it (unrecognized-service): firmware that lies.
    assert sim._app is not None
    sim._app.hidden = frozenset({"do_ReadPropertyMultipleRequest"})
    await eventually(lambda: run.driver.statistics()["rpm"] == 0, timeout_s=5)
    mark = len(sim.request_log)
    await lock_all_confirmed(run)
    # Liveness probes (COV covers the inputs) keep reading the device, per property now.
    probes = run.driver.statistics()["probes"]
    await eventually(lambda: run.driver.statistics()["probes"] >= probes + 2, timeout_s=5)
    assert RPM not in services(sim, mark)
    assert not [
        e for e in run.events if isinstance(e, DeviceHealth) and e.health is not Health.ONLINE
    ]


async def test_a_device_without_cov_is_polled_and_stays_online(
    bacnet_sims: Callable[..., Any], start: Callable[..., Any]
) -> None:
    sim = await bacnet_sims(cov=False)
    run = await start(sim, poll_interval_ms=50, cov_poll_interval_ms=30_000)
    await run.wait_for(lambda e: bool(online_note(e)) and "COV refused" in str(online_note(e)), 5)
    assert sim.subscriptions() == 0
    mark = len(run.events)
    sim.set_closed(0, False)
    # Found by the poll at poll_interval_ms, not the 30 s safety net.
    await run.wait_for(changed("binary-input:0", False), 5, since=mark)
    await lock_all_confirmed(run)
    assert run.driver.statistics()["cov_active"] == 0


async def test_a_small_apdu_without_segmentation_is_read_in_fitting_requests(
    bacnet_sims: Callable[..., Any], start: Callable[..., Any]
) -> None:
    sim = await bacnet_sims(max_apdu=50, segmentation=False)
    run = await start(sim)
    await run.wait_for(online, 5)
    assert run.driver.statistics()["per_read"] == 1
    await lock_all_confirmed(run)
    assert sim.statistics()["too_long"] == 0, "every reply fitted the device's APDU"


async def test_a_reply_too_long_for_an_unsegmented_device_is_read_in_halves(
    bacnet_sims: Callable[..., Any], start: Callable[..., Any]
) -> None:
    sim = await bacnet_sims(segmentation=False)
    run = await start(sim, cov=False)  # a full poll every 50 ms: 5 properties per read
    await run.wait_for(online, 5)
    # The device object said 1476 bytes; the device can in fact send far fewer.
    sim.max_apdu = 60
    await eventually(lambda: run.driver.statistics()["rpm_split"] >= 1, timeout_s=5)
    await lock_all_confirmed(run)
    assert sim.statistics()["too_long"] >= 1
    assert run.driver.statistics()["per_read"] < 5
    assert run.driver.health is Health.ONLINE


async def test_a_device_with_everything_taken_away_reads_its_object_list_by_index(
    bacnet_sims: Callable[..., Any], start: Callable[..., Any]
) -> None:
    # 4 doors: 13 objects, an object-list reply longer than the device's 50 bytes.
    sim = await bacnet_sims(doors=4, rpm=False, cov=False, max_apdu=50, segmentation=False)
    run = await start(sim)
    await run.wait_for(online, 5)
    assert sim.statistics()["too_long"] >= 1, "the whole object-list did not fit"
    assert run.driver.statistics()["missing_points"] == 0
    await lock_all_confirmed(run)
    assert sim.locked(0) and sim.locked(1) and not sim.locked(2)
    assert RPM not in services(sim)


async def test_a_priority_array_too_long_for_the_device_is_read_slot_by_slot(
    bacnet_sims: Callable[..., Any], start: Callable[..., Any]
) -> None:
    sim = await bacnet_sims(segmentation=False)
    sim.operator_write(0, True, 8)
    sim.operator_write(0, False, 5)
    # Smaller than BACnet allows, so the 16-slot array (30 bytes here) cannot come whole,
    # while one slot (16 bytes) can.
    sim.max_apdu = 20
    run = await start(sim)
    await run.wait_for(online, 5)
    assert sim.statistics()["too_long"] >= 1
    # Slot 5 is among the gateway's priorities: adopted; slot 8 (an operator's) is not.
    assert run.driver.held_priorities() == {"binary-output:0": (5,)}
