"""SHELTER acts on the air: the demo campus's air handlers on a BACnet controller over UDP."""

from __future__ import annotations

import tomllib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gatewayd.kernel.errors import ConfigError
from gatewayd.kernel.scope import Scope
from gatewayd.service.config import parse_config
from gatewayd.simulators.bacnet_air import AIR_BASE, AirHandlers
from gatewayd.simulators.bacnet_device import BacnetDeviceSim
from tests.support.gateway import DEMO, Site
from tests.support.mqtt import Collector
from tests.support.waiting import eventually

SITE = "gatewayd/demo-school"
FAN_A, DAMPER_A = AIR_BASE, AIR_BASE + 1
Collect = Callable[[str], Awaitable[Collector]]


def hvac(site: Site) -> AirHandlers:
    sim = site.sim.devices["bacnet-hvac"]
    assert isinstance(sim, BacnetDeviceSim)
    return sim.air


def air_of(site: Site, scope: str) -> dict[str, Any]:
    assert site.gateway is not None
    state = site.gateway.scope_state(Scope.parse(scope))
    return {"air": state.get("air"), "air_unsecured": state.get("air_unsecured")}


async def test_hazmat_shelter_stops_the_fans_closes_outside_air_and_release_gives_it_back(
    site: Site, mqtt_collect: Collect
) -> None:
    air = hvac(site)
    assert air.running(0) and air.damper_open(0)
    states = await mqtt_collect(f"{SITE}/state/building/A")
    reply = await site.command("shelter", scope="building/A", params={"hazard": "hazmat"})
    assert reply["ok"] is True, reply
    await eventually(
        lambda: not air.running(0) and not air.damper_open(0),
        timeout_s=10,
        message="AHU-1's fan stopped and its outside air closed",
    )
    # Through the priority array, at the lockdown priority; building B's unit is untouched.
    assert air.priority_array(FAN_A) == {5: False}
    assert air.priority_array(DAMPER_A) == {5: False}
    assert air.running(1) and air.priority_array(AIR_BASE + 2) == {}
    secured = await states.wait_for(
        lambda m: (m.json().get("air") or {}).get("secured") == 1, timeout_s=10
    )
    assert secured.json()["air_unsecured"] == []
    assert air_of(site, "campus")["air"] == {
        "secured": 1,
        "unsecured": 0,
        "unknown": 0,
        "released": 1,
    }

    reply = await site.command("release", scope="building/A")
    assert reply["ok"] is True, reply
    await eventually(
        lambda: air.running(0) and air.damper_open(0),
        timeout_s=10,
        message="the building's own controls have the air again",
    )
    assert air.priority_array(FAN_A) == {} and air.priority_array(DAMPER_A) == {}
    await eventually(lambda: air_of(site, "building/A")["air"]["released"] == 1, timeout_s=10)


async def test_a_shelter_for_a_tornado_leaves_the_air_alone(site: Site) -> None:
    air = hvac(site)
    reply = await site.command("shelter", scope="campus", params={"hazard": "tornado"})
    assert reply["ok"] is True, reply
    assert site.gateway is not None
    # Wait until the air service has looked at the new state, then check it did nothing.
    await eventually(lambda: site.gateway is not None and site.gateway.air.commands >= 1)
    assert air.running(0) and air.running(1)
    assert air.priority_array(FAN_A) == {}
    assert air_of(site, "campus")["air"]["released"] == 2


async def test_a_fire_alarm_takes_the_air_back_from_a_hazmat_shelter_and_returns_it(
    site: Site,
) -> None:
    air = hvac(site)
    await site.command("shelter", scope="campus", params={"hazard": "hazmat"})
    await eventually(lambda: not air.running(0) and not air.running(1), timeout_s=10)
    site.sim.boards["relay-a1"].set_input(64, True)  # fire-A: building A
    # The fire alarm system's smoke control owns building A's air: the gateway lets go.
    await eventually(
        # Fan and damper are two writes: both are let go, the damper's may land second.
        lambda: air.priority_array(FAN_A) == {} and air.priority_array(DAMPER_A) == {},
        timeout_s=10,
        message="the gateway relinquished AHU-1's fan and damper during the fire alarm",
    )
    assert air.priority_array(AIR_BASE + 2) == {5: False}  # building B still sheltered
    site.sim.boards["relay-a1"].set_input(64, False)
    await eventually(
        lambda: air.priority_array(FAN_A) == {5: False},
        timeout_s=10,
        message="fire reset: the shelter has the air again",
    )
    await eventually(lambda: not air.running(0), timeout_s=10)


async def test_a_fan_that_keeps_running_is_counted_unsecured(site: Site) -> None:
    air = hvac(site)
    air.stuck.add(0)
    reply = await site.command("shelter", scope="building/A", params={"hazard": "hazmat"})
    assert reply["ok"] is True, reply
    await eventually(lambda: air.priority_array(FAN_A) == {5: False}, timeout_s=10)
    await eventually(lambda: air_of(site, "building/A")["air"]["unsecured"] == 1, timeout_s=10)
    assert air_of(site, "building/A")["air_unsecured"] == ["ahu-a"]
    assert air.running(0)


def demo_raw() -> dict[str, Any]:
    return tomllib.loads(DEMO.read_text(encoding="utf-8"))


def test_air_handlers_are_checked_where_they_point_and_need_a_priority_array() -> None:
    raw = demo_raw()
    unit = raw["air_handlers"][0]
    unit["building"] = "Z"
    unit["fan"] = {"device": "relay-a1", "point": "coil:3"}
    unit["damper"] = {"device": "bacnet-hvac", "point": "binary-output:9999999"}
    del unit["damper_status"]
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    problems = "\n".join(caught.value.problems)
    assert "air_handlers[0](ahu-a).building: unknown building 'Z'" in problems
    assert "air_handlers[0](ahu-a).fan.device: 'relay-a1' has no priority array" in problems
    assert "air_handlers[0](ahu-a).damper.point" in problems
    assert "air_handlers[0](ahu-a): damper and damper_status go together" in problems


async def test_a_controller_that_vanishes_leaves_its_units_unknown_until_it_is_back(
    site: Site,
) -> None:
    sim = site.sim.devices["bacnet-hvac"]
    assert isinstance(sim, BacnetDeviceSim)
    await site.command("shelter", scope="building/A", params={"hazard": "hazmat"})
    await eventually(lambda: air_of(site, "building/A")["air"]["secured"] == 1, timeout_s=10)
    await sim.vanish()
    await eventually(
        lambda: air_of(site, "building/A")["air"]["unknown"] == 1,
        timeout_s=20,
        message="an offline controller's unit is not counted secured",
    )
    await sim.reappear()
    await eventually(
        lambda: air_of(site, "building/A")["air"]["secured"] == 1,
        timeout_s=20,
        message="back online: commanded again and read back secured",
    )
    assert sim.air.priority_array(FAN_A) == {5: False}
