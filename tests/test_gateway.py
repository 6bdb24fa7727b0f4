"""The gateway end to end: MQTT commands, simulated boards over Modbus TCP, real Mosquitto."""

from __future__ import annotations

from tests.support.gateway import Site
from tests.support.mqtt import Collector, Received
from tests.support.waiting import eventually

SITE = "gatewayd/demo-school"


def door_ids(site: Site, **match: str) -> list[str]:
    return [
        d.id for d in site.config.doors if all(str(getattr(d, k)) == v for k, v in match.items())
    ]


async def test_campus_lockdown_locks_and_confirms_every_door(
    site: Site, mqtt_collect: object
) -> None:
    reply = await site.command("lockdown", scope="campus")
    every = [d.id for d in site.config.doors]
    assert reply["ok"] is True, reply
    assert sorted(reply["doors"]["confirmed"]) == sorted(every)
    assert reply["doors"]["failed"] == {}
    assert all(site.coil(d) for d in every)
    lat = reply["latency_ms"]
    assert lat["decided"] <= lat["on_wire"] <= lat["confirmed"]


async def test_lockdown_is_visible_on_retained_state_and_door_topics(
    site: Site, mqtt_collect: object
) -> None:
    await site.command("lockdown", scope="building/A")
    collect = mqtt_collect  # the fixture returns a coroutine factory
    watcher: Collector = await collect(f"{SITE}/#")  # type: ignore[operator]

    def building_a_secured(m: Received) -> bool:
        return (
            m.topic == f"{SITE}/state/building/A"
            and m.json()["state"] == "lockdown"
            and m.json()["doors"]["secured"] == len(door_ids(site, building="A"))
        )

    state = await watcher.wait_for(building_a_secured)
    assert state.json()["source"] == "building/A"
    # A subscriber that comes later gets the same state, retained.
    late: Collector = await collect(f"{SITE}/#")  # type: ignore[operator]
    retained = await late.wait_for(lambda m: m.topic == f"{SITE}/state/building/A")
    assert retained.retain and building_a_secured(retained)
    door = await late.wait_for(lambda m: m.topic == f"{SITE}/door/A-101")
    assert door.json()["locked"] is True
    assert door.json()["reason"] == "lockdown (building/A)"
    assert door.json()["confirmed"] is True
    other = await late.wait_for(lambda m: m.topic == f"{SITE}/state/building/B")
    assert other.json()["state"] == "normal"
    assert (await late.wait_for(lambda m: m.topic == f"{SITE}/availability")).text == "online"


async def test_release_returns_doors_to_their_normal_state(site: Site) -> None:
    await site.command("lockdown", scope="building/C")
    reply = await site.command("release", scope="building/C")
    assert reply["ok"] is True
    for door in site.config.doors:
        if door.building == "C":
            assert site.coil(door.id) is door.normally_locked, door.id


async def test_release_of_one_scope_leaves_another_in_force(site: Site) -> None:
    await site.command("lockdown", scope="campus")
    await site.command("lockdown", scope="building/B")
    await site.command("release", scope="building/B")
    assert all(site.coil(d) for d in door_ids(site, building="B"))


async def test_manual_unlock_during_lockdown_is_refused_and_moves_nothing(site: Site) -> None:
    await site.command("lockdown", scope="zone/A1")
    board = site.sim.boards["relay-a1"]
    writes_before = len(board.write_log)
    reply = await site.command("unlock", door="A-101")
    assert reply["ok"] is False
    assert reply["error"] == "held"
    assert "lockdown (zone/A1)" in reply["message"]
    assert site.coil("A-101") is True
    assert len(board.write_log) == writes_before


async def test_lock_and_unlock_one_door(site: Site) -> None:
    assert (await site.command("lock", door="B-101"))["doors"]["confirmed"] == ["B-101"]
    assert site.coil("B-101") is True
    assert (await site.command("unlock", door="B-101"))["ok"] is True
    assert site.coil("B-101") is False


async def test_bad_commands_get_stable_codes_and_move_no_door(site: Site) -> None:
    logs = {name: len(b.write_log) for name, b in site.sim.boards.items()}
    cases = [
        ({"scope": "building/Z"}, "lockdown", "unknown_scope"),
        ({"scope": "wing/A"}, "lockdown", "bad_scope"),
        ({"door": "Z-999"}, "lock", "unknown_door"),
        ({}, "lockdown", "bad_request"),
        ({"scope": "building/D"}, "release", "not_active"),
        ({"scope": "campus", "colour": "red"}, "lockdown", "bad_request"),
    ]
    for fields, action, code in cases:
        reply = await site.command(action, **fields)
        assert (reply["ok"], reply["error"]) == (False, code), (fields, reply)
        assert reply["message"]
    assert logs == {name: len(b.write_log) for name, b in site.sim.boards.items()}


async def test_jammed_lock_is_retried_then_reported_unconfirmed(site: Site) -> None:
    site.sim.boards["relay-d1"].jam(0)
    reply = await site.command("lockdown", scope="building/D")
    jammed = door_ids(site, building="D")[0]
    assert reply["ok"] is False
    assert reply["error"] == "unconfirmed"
    assert reply["doors"]["failed"] == {jammed: "unconfirmed: lock did not confirm"}
    assert len(reply["doors"]["confirmed"]) == len(door_ids(site, building="D")) - 1


async def test_vanished_board_is_reported_offline_and_other_boards_still_lock(
    site: Site, mqtt_collect: object
) -> None:
    watcher: Collector = await mqtt_collect(f"{SITE}/event/device")  # type: ignore[operator]
    board = site.sim.boards["relay-b1"]
    await board.vanish()
    offline = await watcher.wait_for(
        lambda m: m.json()["source"] == "relay-b1" and m.json()["data"].get("health") == "offline",
        timeout_s=5,
    )
    assert offline.json()["kind"] == "device"

    reply = await site.command("lockdown", scope="campus")
    lost = set(door_ids(site, building="B"))
    assert set(reply["doors"]["failed"]) == lost
    assert set(reply["doors"]["confirmed"]) == {d.id for d in site.config.doors} - lost
    assert all(site.coil(d) for d in door_ids(site, building="A"))

    await board.reappear()
    await watcher.wait_for(
        lambda m: m.json()["source"] == "relay-b1" and m.json()["data"].get("health") == "online",
        timeout_s=10,
    )
    # The board is brought back to what is decided now: the campus lockdown.
    await eventually(lambda: all(site.coil(d) for d in lost))


async def test_restart_during_lockdown_reasserts_and_never_writes_an_unlock(site: Site) -> None:
    await site.command("lockdown", scope="campus")
    await site.stop_gateway()
    for board in site.sim.boards.values():
        board.write_log.clear()
    gateway = await site.start_gateway()
    assert all(site.coil(d.id) for d in site.config.doors)
    unlocks = [w for b in site.sim.boards.values() for w in b.write_log if not w.value]
    assert unlocks == []
    assert gateway.scope_state(gateway.campus.all_scopes()[0])["state"] == "lockdown"


async def test_gateway_serves_the_console_when_the_campus_file_asks_for_it(site: Site) -> None:
    import aiohttp

    from gatewayd.console.config import ConsoleConfig

    await site.stop_gateway()
    site.config = site.config.model_copy(update={"console": ConsoleConfig(port=0)})
    gateway = await site.start_gateway()
    await eventually(lambda: gateway.console is not None and gateway.console.url, timeout_s=10)
    assert gateway.console is not None and gateway.console.url is not None
    async with aiohttp.ClientSession() as http, http.get(gateway.console.url) as page:
        assert page.status == 200
        assert "text/html" in page.headers["Content-Type"]
