"""Cards at OSDP readers end to end: simulated readers (libosdp peripheral devices, secure
channel), the running gateway, the relay boards, a real Mosquitto and the audit log on disk."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gatewayd.simulators.broker import Mosquitto
from gatewayd.simulators.osdp_reader import OsdpReaderSim
from tests.support.gateway import Site, demo_config, site_of
from tests.support.mqtt import Collector
from tests.support.waiting import eventually

RESPONDER, STAFF, EXPIRED, STAFF_PIN = "1000001", "1000002", "1000003", "1000004"
MAIN, A101 = "reader-a-main", "reader-a101"


@pytest.fixture
async def access_site(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Site]:
    """The demo campus with short unlocks, so a relock shows within a test."""
    config = demo_config(mosquitto, tmp_path / "state")
    assert config.access is not None
    access = config.access.model_copy(update={"responder_unlock_s": 1.5, "staff_unlock_s": 1.0})
    async with site_of(config.model_copy(update={"access": access})) as running:
        await eventually(lambda: all(r.describe()["secure"] for r in readers(running).values()),
                         timeout_s=15, message="every reader online, secure")  # fmt: skip
        yield running


def readers(site: Site) -> dict[str, OsdpReaderSim]:
    return {i: d for i, d in site.sim.devices.items() if isinstance(d, OsdpReaderSim)}


def audit_records(site: Site) -> list[dict[str, Any]]:
    path = Path(site.config.state_dir) / site.config.security.audit_log
    return [json.loads(line) for line in path.read_text().splitlines()]


def access_records(site: Site) -> list[dict[str, Any]]:
    return [r for r in audit_records(site) if r["kind"] == "access"]


async def test_responder_card_opens_a_locked_down_classroom_then_it_relocks(
    access_site: Site, mqtt_collect: Callable[[str], Awaitable[Collector]]
) -> None:
    site = access_site
    events = await mqtt_collect("gatewayd/demo-school/event/access")
    reader = readers(site)[A101]
    reply = await site.command("lockdown", scope="building/A")
    assert reply["ok"], reply
    assert site.coil("A-101")
    await eventually(lambda: reader.led == "red", message="reader shows the lockdown")
    reader.present_card(RESPONDER)
    await eventually(lambda: not site.coil("A-101"), message="responder card unlocked A-101")
    await eventually(lambda: reader.led == "green", message="reader shows the override")
    # Bounded: it relocks by itself, and the reader goes back to red.
    await eventually(lambda: site.coil("A-101"), timeout_s=10, message="A-101 relocked")
    await eventually(lambda: reader.led == "red", message="reader shows the lockdown again")
    # Nothing else moved: A-102 stayed locked throughout.
    assert site.coil("A-102")
    await events.wait_for(lambda m: m.json()["data"].get("outcome") == "granted", 5)
    granted = [m.json()["data"] for m in events.items]
    assert granted[0]["credential"] == "demo-responder"
    assert granted[0]["role"] == "responder"
    assert RESPONDER not in json.dumps(granted)
    record = next(r for r in access_records(site) if r["data"]["outcome"] == "granted")
    assert record["data"]["via"] == "credential:demo-responder"
    assert record["data"]["during"].startswith("lockdown")


async def test_staff_card_never_opens_a_locked_down_door(access_site: Site) -> None:
    site = access_site
    reader = readers(site)[A101]
    assert (await site.command("lockdown", scope="campus"))["ok"]
    for card in (STAFF, EXPIRED, "31337"):
        reader.present_card(card)
    await eventually(lambda: len(access_records(site)) >= 3, message="three refusals audited")
    reasons = sorted(r["data"]["reason"] for r in access_records(site))
    assert reasons == ["expired", "lockdown", "unknown"]
    assert site.coil("A-101")
    # Shown on the reader: red flashes and buzzes, the steady colour still red.
    await eventually(lambda: reader.counts["buzzer"] >= 3, message="three refusals buzzed")
    assert reader.led == "red"
    assert all(r["data"].get("card_ref") for r in access_records(site))


async def test_staff_card_unlocks_the_main_entrance_momentarily_in_normal_state(
    access_site: Site,
) -> None:
    site = access_site
    assert site.coil("A-116"), "the exterior main entrance is normally locked"
    readers(site)[MAIN].present_card(STAFF)
    await eventually(lambda: not site.coil("A-116"), message="staff card opened A-116")
    await eventually(lambda: site.coil("A-116"), timeout_s=10, message="A-116 relocked")
    [record] = access_records(site)
    assert record["data"]["credential"] == "demo-staff"
    assert record["data"]["outcome"] == "granted"


async def test_a_card_with_a_pin_waits_for_the_right_pin(access_site: Site) -> None:
    site = access_site
    reader = readers(site)[MAIN]
    reader.present_card(STAFF_PIN)
    await eventually(lambda: reader.last_led == "amber", message="reader asks for the PIN")
    reader.key_pin("9999")
    await eventually(lambda: len(access_records(site)) == 1, message="wrong PIN refused")
    assert access_records(site)[0]["data"]["reason"] == "wrong_pin"
    assert site.coil("A-116")
    reader.present_card(STAFF_PIN)
    await eventually(lambda: reader.counts["led"] >= 4, message="PIN asked again")
    reader.key_pin("1234")
    await eventually(lambda: not site.coil("A-116"), message="card + PIN opened A-116")


async def test_a_fire_alarm_still_releases_egress_while_a_responder_card_is_used(
    access_site: Site,
) -> None:
    site = access_site
    assert (await site.command("lockdown", scope="building/A"))["ok"]
    readers(site)[A101].present_card(RESPONDER)
    await eventually(lambda: not site.coil("A-101"), message="responder override")
    site.sim.boards["relay-a1"].set_input(64, True)
    await eventually(lambda: not site.coil("A-119"), message="egress A-119 released by fire")
    # The classroom relocks when the override ends; the fire keeps egress open.
    await eventually(lambda: site.coil("A-101"), timeout_s=10, message="A-101 relocked")
    assert not site.coil("A-119")


async def test_an_opened_reader_cover_is_a_loud_device_event(
    access_site: Site, mqtt_collect: Callable[[str], Awaitable[Collector]]
) -> None:
    events = await mqtt_collect("gatewayd/demo-school/event/device")
    readers(access_site)[MAIN].set_tamper(True)
    message = await events.wait_for(
        lambda m: m.json()["data"].get("reader") == "tamper", timeout_s=5
    )
    body = message.json()
    assert body["source"] == MAIN
    assert body["data"] == {"reader": "tamper", "active": True, "door": "A-116"}
    assert body["location"]["room"] == "A116"
