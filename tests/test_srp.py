"""The SRP engine end to end: MQTT commands, alarm inputs and rules on simulated boards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from structlog.testing import capture_logs

from gatewayd.kernel.events import now_ns
from gatewayd.kernel.site import DoorKind
from gatewayd.rules.actions import ExternalAction
from gatewayd.rules.rulefile import parse_rules
from gatewayd.security.keys import demo_private_key
from gatewayd.service.doors import ActuationReport
from gatewayd.service.reporting import LATENCY_WINDOW, STATISTICS_EVERY
from tests.support.disk import locked as write_locked
from tests.support.gateway import Site
from tests.support.mqtt import Collector
from tests.support.waiting import eventually

SITE = "gatewayd/demo-school"
Collect = Callable[[str], Any]


def doors(site: Site, building: str, *kinds: DoorKind) -> list[str]:
    return [
        d.id for d in site.config.doors if d.building == building and (not kinds or d.kind in kinds)
    ]


def writes(site: Site) -> dict[str, int]:
    """How many lock writes each relay board and BACnet controller has received."""
    # Controllers only: the radio and the cameras log writes too, as rule actions, later.
    return {name: len(site.sim.devices[name].write_log) for name in site.sim.controllers}


EXPECTED = {
    # action: (kinds locked, kinds unlocked) under the default policy
    "hold": ({DoorKind.CLASSROOM}, set()),
    "secure": ({DoorKind.EXTERIOR}, set()),
    "lockdown": (
        {DoorKind.CLASSROOM, DoorKind.INTERIOR, DoorKind.EXTERIOR, DoorKind.EGRESS},
        set(),
    ),
    "evacuate": (set(), {DoorKind.EGRESS, DoorKind.INTERIOR}),
    "shelter": ({DoorKind.EXTERIOR}, set()),
}


async def test_every_srp_action_locks_and_releases_the_doors_its_policy_names(
    site: Site,
) -> None:
    for action, (locked, unlocked) in EXPECTED.items():
        params = {"hazard": "tornado"} if action == "shelter" else {}
        reply = await site.command(action, scope="building/D", params=params)
        assert reply["ok"] is True, (action, reply)
        for door in site.config.doors:
            if door.building != "D":
                continue
            want = (
                True
                if door.kind in locked
                else False
                if door.kind in unlocked
                else door.normally_locked
            )
            assert site.coil(door.id) is want, (action, door.id, door.kind)
        assert site.gateway is not None
        state = site.gateway.scope_state(site.gateway.campus.all_scopes()[4])
        assert state["scope"] == "building/D" and state["state"] == action
        assert (await site.command("release", scope="building/D"))["ok"] is True
        assert all(
            site.coil(d.id) is d.normally_locked for d in site.config.doors if d.building == "D"
        )


async def test_campus_lockdown_over_building_secure_gives_every_door_the_strictest(
    site: Site,
) -> None:
    await site.command("secure", scope="building/A")
    await site.command("lockdown", scope="campus")
    assert all(site.coil(d) for d in doors(site, "A"))
    await site.command("release", scope="campus")
    classrooms = doors(site, "A", DoorKind.CLASSROOM)
    assert not any(site.coil(d) for d in classrooms)
    # The building's SECURE is still in force after the campus release.
    assert all(site.coil(d) for d in doors(site, "A", DoorKind.EXTERIOR))


async def test_fire_alarm_during_lockdown_releases_egress_and_reset_restores_lockdown(
    site: Site, mqtt_collect: Collect
) -> None:
    alarms: Collector = await mqtt_collect(f"{SITE}/event/alarm")
    await site.command("lockdown", scope="campus")
    egress = doors(site, "A", DoorKind.EGRESS)
    others = [d for d in doors(site, "A") if d not in egress]
    site.sim.boards["relay-a1"].set_input(64, True)
    await eventually(lambda: not any(site.coil(d) for d in egress))
    assert all(site.coil(d) for d in others)
    assert all(site.coil(d) for d in doors(site, "B"))
    event = await alarms.wait_for(lambda m: m.json()["data"]["input"] == "fire-A")
    assert event.json()["data"]["active"] is True
    site.sim.boards["relay-a1"].set_input(64, False)
    await eventually(lambda: all(site.coil(d) for d in egress))


async def test_fire_alarm_releases_egress_even_when_the_index_is_locked(site: Site) -> None:
    assert site.gateway is not None
    await site.command("lockdown", scope="building/B")
    with write_locked(site.gateway.journal.index_path):  # another process holds its write lock
        site.sim.boards["relay-b1"].set_input(64, True)
        await eventually(lambda: not any(site.coil(d) for d in doors(site, "B", DoorKind.EGRESS)))


async def test_responder_unlock_opens_one_door_then_relocks_it(
    site: Site, mqtt_collect: Collect
) -> None:
    await site.command("lockdown", scope="building/A")
    watcher: Collector = await mqtt_collect(f"{SITE}/door/A-101")
    reply = await site.command("unlock", door="A-101", params={"duration_s": 0.6})
    assert reply["ok"] is True, reply
    assert reply["override"]["actor"] == "demo-responder"
    assert site.coil("A-101") is False
    assert site.coil("A-102") is True
    topic = await watcher.wait_for(lambda m: "override" in m.json())
    assert topic.json()["override"]["actor"] == "demo-responder"
    await eventually(lambda: site.coil("A-101"), timeout_s=5)
    too_long = await site.command("unlock", door="A-101", params={"duration_s": 3600})
    assert too_long["error"] == "forbidden"  # a responder's bound, checked at the door
    # An administrator may unlock, but not for longer than the site allows either.
    admin = "demo-administrator"
    too_long = await site.command_as(
        admin, demo_private_key(admin), "unlock", door="A-101", params={"duration_s": 3600}
    )
    assert too_long["error"] == "out_of_bounds"


async def test_per_room_release_during_lockdown_leaves_the_rest_locked(site: Site) -> None:
    await site.command("lockdown", scope="zone/A1")
    reply = await site.command("release", door="A-101")
    assert reply["ok"] is True, reply
    assert site.coil("A-101") is False
    assert site.coil("A-102") is True
    # Lockdown again means every door again.
    await site.command("lockdown", scope="zone/A1")
    assert site.coil("A-101") is True


async def test_live_drill_is_tagged_and_preempted_by_a_real_lockdown(
    site: Site, mqtt_collect: Collect
) -> None:
    assert site.gateway is not None
    states: Collector = await mqtt_collect(f"{SITE}/event/state")
    reply = await site.command(
        "drill",
        params={"state": "lockdown", "scope": "building/B", "duration_s": 30, "dry_run": False},
    )
    assert reply["ok"] is True and reply["drill"] is True, reply
    assert all(site.coil(d) for d in doors(site, "B"))
    building_b = site.gateway.campus.all_scopes()[2]
    assert site.gateway.scope_state(building_b)["drill"] is True
    refused = await site.command(
        "drill", params={"state": "secure", "scope": "campus", "duration_s": 30}
    )
    assert refused["ok"] is True  # drills may overlap drills, not incidents
    await site.command("lockdown", scope="campus")
    assert not [k for k in site.gateway.engine.sources if k.startswith("drill:")]
    state = site.gateway.scope_state(building_b)
    assert (state["state"], state["drill"]) == ("lockdown", False)
    ended = await states.wait_for(lambda m: m.json()["data"].get("ended") == "preempted")
    assert ended.json()["drill"] is True
    during = await site.command(
        "drill", params={"state": "hold", "scope": "building/C", "duration_s": 30}
    )
    assert during["error"] == "incident_active"


async def test_dry_run_drill_publishes_decisions_and_moves_nothing(site: Site) -> None:
    before = writes(site)
    reply = await site.command(
        "drill", params={"state": "lockdown", "scope": "building/C", "duration_s": 0.5}
    )
    assert reply["ok"] is True and reply["dry_run"] is True, reply
    assert set(reply["decisions"]["lock"]) == set(doors(site, "C"))
    assert writes(site) == before
    gateway = site.gateway
    assert gateway is not None
    await eventually(lambda: not gateway.engine.sources)


async def test_bad_srp_commands_get_stable_codes_and_write_nothing(site: Site) -> None:
    await site.command("lockdown", scope="building/A")
    before = writes(site)
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("hold", {"scope": "building/A"}, "illegal_transition"),
        ("lockdown", {"scope": "building/Q"}, "unknown_scope"),
        ("shelter", {"scope": "campus"}, "bad_request"),
        ("shelter", {"scope": "campus", "params": {"hazard": "meteor"}}, "bad_request"),
        (
            "drill",
            {"params": {"state": "lockdown", "scope": "campus", "duration_s": 1e9}},
            "out_of_bounds",
        ),
    ]
    for action, fields, code in cases:
        reply = await site.command(action, **fields)
        assert (reply["ok"], reply["error"]) == (False, code), (action, reply)
    assert "lockdown -> hold" in (await site.command("hold", scope="building/A"))["message"]
    assert writes(site) == before


async def test_panic_input_locks_down_its_building(site: Site) -> None:
    # Building C's contacts are wired to the office board, whichever it is.
    panic = next(i for i in site.config.inputs if i.id == "panic-C").point
    site.sim.boards[panic.device].set_input(int(panic.point.split(":")[1]), True)
    await eventually(lambda: all(site.coil(d) for d in doors(site, "C")))
    assert not any(site.coil(d) for d in doors(site, "A", DoorKind.CLASSROOM))


class Recorder:
    def __init__(self) -> None:
        self.seen: list[ExternalAction] = []

    async def dispatch(self, action: ExternalAction) -> None:
        self.seen.append(action)


RULES = {
    "rule": [
        {
            "id": "panic-app",
            "when": {"kind": "alarm", "source": "panic_app"},
            "do": [
                {"action": "radio_alert", "text": "Panic {location.building} {location.room}"},
                {"action": "snapshot", "cameras": ["cam-1"]},
            ],
        },
        {
            "id": "drill-echo",
            "when": {"kind": "state", "data": {"state": "hold"}},
            "do": [{"action": "radio_alert", "text": "Hold on {data.scope}"}],
        },
    ]
}


async def test_panic_app_command_locks_down_and_rules_alert_the_radio(site: Site) -> None:
    recorder = Recorder()
    await site.stop_gateway()
    await site.start_gateway(sink=recorder, rules=parse_rules(RULES))
    reply = await site.command(
        "lockdown",
        scope="building/D",
        params={"source": "panic_app", "location": {"building": "D", "room": "D104"}},
    )
    assert reply["ok"] is True, reply
    assert all(site.coil(d) for d in doors(site, "D"))
    await eventually(lambda: len(recorder.seen) >= 2)
    radio = next(a for a in recorder.seen if a.kind == "radio_alert")
    assert (radio.text, radio.drill) == ("Panic D D104", False)
    # A drill's events reach the radio only marked as a drill.
    await site.command("drill", params={"state": "hold", "scope": "building/C", "duration_s": 10})
    await eventually(lambda: any(a.rule == "drill-echo" for a in recorder.seen))
    assert all(a.drill for a in recorder.seen if a.rule == "drill-echo")


async def test_status_reports_latency_statistics(site: Site) -> None:
    await site.command("lockdown", scope="building/B")
    reply = await site.command("status")
    assert reply["ok"] is True
    assert reply["latency_ms"]["triggers"] >= 1
    assert reply["latency_ms"]["confirmed"]["p50"] is not None
    assert any(s["key"] == "srp:building/B" for s in reply["sources"])


async def test_latency_statistics_are_logged_once_per_interval_after_the_window_fills(
    site: Site,
) -> None:
    # The window stops growing at its size: the statistics (a sort of the whole window per
    # stage) must still be built once per interval, not after every command from then on.
    assert site.gateway is not None
    reporting = site.gateway.reporting
    door = next(iter(site.config.doors)).id
    triggers = LATENCY_WINDOW + 3 * STATISTICS_EVERY
    with capture_logs() as logs:
        for _ in range(triggers):
            t = now_ns()
            report = ActuationReport(t, t + 1, commanded=[door], confirmed=[door], on_wire_ns=t + 2,
                                     confirmed_ns=t + 3, confirmed_at_ns={door: t + 3})  # fmt: skip
            reporting.record(report, trigger="lock door")
    logged = [e for e in logs if e["event"] == "latency.statistics"]
    assert len(logged) == triggers // STATISTICS_EVERY
    assert logged[-1]["triggers"] == LATENCY_WINDOW
