"""Doors hold what they are told: someone else's write is undone and made loud."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pymodbus.client import AsyncModbusTcpClient

from gatewayd.kernel.doorstate import DoorState
from gatewayd.kernel.site import DoorKind
from tests.support.gateway import Site
from tests.support.mqtt import Collector
from tests.support.waiting import eventually

Collect = Callable[[str], Awaitable[Collector]]
SITE = "gatewayd/demo-school"


async def third_party_write(site: Site, door_id: str, locked: bool) -> None:
    """What another Modbus master on the school network does to a lock coil."""
    ref = next(d for d in site.config.doors if d.id == door_id).lock
    board = site.sim.boards[ref.device]
    client = AsyncModbusTcpClient("127.0.0.1", port=board.port)
    await client.connect()
    try:
        await client.write_coil(int(ref.point.split(":")[1]), locked, device_id=1)
    finally:
        client.close()


async def test_a_classroom_unlocked_by_someone_else_during_lockdown_is_relocked(
    site: Site, mqtt_collect: Collect
) -> None:
    await site.command("lockdown", scope="building/A")
    classroom = next(d.id for d in site.config.doors
                     if d.building == "A" and d.kind is DoorKind.CLASSROOM)  # fmt: skip
    events = await mqtt_collect(f"{SITE}/event/door")
    await third_party_write(site, classroom, False)
    drift = await events.wait_for(
        lambda m: m.json()["data"].get("door") == classroom
        and m.json()["data"].get("action") == "re-asserting", timeout_s=10)  # fmt: skip
    assert drift.json()["data"]["severity"] == "high"
    await eventually(lambda: site.coil(classroom), timeout_s=10)


async def test_an_egress_door_relocked_by_someone_else_during_a_fire_is_released_again(
    site: Site, mqtt_collect: Collect
) -> None:
    assert site.gateway is not None
    egress = [d.id for d in site.config.doors if d.building == "A" and d.kind is DoorKind.EGRESS]
    await site.command("lockdown", scope="building/A")
    site.sim.boards["relay-a1"].set_input(64, True)  # fire-A
    await eventually(lambda: not any(site.coil(d) for d in egress))
    # Released and confirmed: a relock while the release is still being confirmed is answered
    # by the release's own retry, not as drift.
    doors = site.gateway.doors
    await eventually(lambda: not doors.actuating and all(doors.doors[d].confirmed for d in egress))
    events = await mqtt_collect(f"{SITE}/event/door")
    await third_party_write(site, egress[0], True)
    drift = await events.wait_for(
        lambda m: m.json()["data"].get("door") == egress[0]
        and m.json()["data"].get("action") == "re-asserting", timeout_s=10)  # fmt: skip
    assert (drift.json()["data"]["commanded"], drift.json()["data"]["locked"]) == (False, True)
    await eventually(lambda: not site.coil(egress[0]), timeout_s=10)
    assert site.gateway.drift.statistics()["reasserts"] >= 1


def test_a_door_locked_against_an_unlock_command_counts_as_faulted_not_secured() -> None:
    state = DoorState("E-1", commanded=False, locked=True, closed=True, device_online=True,
                      fault="drifted: reads locked against the command")  # fmt: skip
    assert state.status == "faulted"
    state.commanded = True
    assert state.status == "secured"
