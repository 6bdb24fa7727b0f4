"""The demo campus end to end: relay boards, a BACnet controller, cameras and the radio."""

from __future__ import annotations

from gatewayd.drivers.psap_radio.frames import FrameType
from gatewayd.simulators.bacnet_device import BacnetDeviceSim
from gatewayd.simulators.onvif_camera import OnvifCameraSim
from gatewayd.simulators.psap_radio import PsapRadioSim
from tests.support.gateway import Site
from tests.support.waiting import eventually


def radio(site: Site) -> PsapRadioSim:
    sim = site.sim.devices["psap-radio"]
    assert isinstance(sim, PsapRadioSim)
    return sim


def camera(site: Site, ident: str) -> OnvifCameraSim:
    sim = site.sim.devices[ident]
    assert isinstance(sim, OnvifCameraSim)
    return sim


async def test_lockdown_locks_bacnet_doors_alerts_the_radio_and_snapshots_the_building(
    site: Site,
) -> None:
    gym = [d.id for d in site.config.doors if d.building == "C"]
    controller = site.sim.devices["bacnet-c1"]
    assert isinstance(controller, BacnetDeviceSim)
    before = len(controller.write_log)
    # The gateway does not wait for cameras at start-up (doors first): this one is up once
    # it has subscribed, and only then can it take the lockdown's snapshot.
    await eventually(lambda: camera(site, "cam-c-gym").subscriptions >= 1, timeout_s=10)
    reply = await site.command("lockdown", scope="building/C")
    assert reply["ok"] is True, reply
    assert sorted(reply["doors"]["confirmed"]) == sorted(gym)
    assert all(site.coil(d) for d in gym)
    # The controller's own priority array holds the lockdown at the lockdown priority.
    assert {w.priority for w in list(controller.write_log)[before:] if w.value} == {5}

    await eventually(
        lambda: any("LOCKDOWN" in f.payload for f in radio(site).acted_on(FrameType.EMG)),
        timeout_s=10,
    )
    text = [f.payload for f in radio(site).acted_on(FrameType.TXT)]
    assert any("building/C" in t for t in text), text
    await eventually(lambda: camera(site, "cam-c-gym").counts["snapshots"] >= 1, timeout_s=10)
    assert camera(site, "cam-a-entrance").counts["snapshots"] == 0


async def test_a_drill_lockdown_never_reaches_the_radio_as_a_real_alert(site: Site) -> None:
    reply = await site.command(
        "drill",
        params={
            "state": "lockdown",
            "scope": "building/A",
            "duration_s": 60,
            "dry_run": False,
        },
    )
    assert reply["ok"] is True, reply
    assert site.gateway is not None
    driver = site.gateway.drivers["psap-radio"]
    # The drill reached the radio driver, which proved the link without going on the air.
    await eventually(lambda: driver.statistics()["drills_suppressed"] == 1, timeout_s=10)
    assert driver.statistics()["alerts_failed"] == 0
    assert radio(site).real_emergencies() == []
