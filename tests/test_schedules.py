"""Door schedules: the calendar (DST, holidays), its place in arbitration, and a live gateway.

The gateway tests run the demo campus on its simulators with an injected wall clock: the
schedule follows that clock, so a window opens when the test moves it, on any real day.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.app.cli import main
from gatewayd.app.reload import schedule_lines
from gatewayd.kernel.campus import Campus
from gatewayd.kernel.errors import ConfigError
from gatewayd.kernel.scope import CAMPUS, Scope
from gatewayd.kernel.siteinfo import Hazard, SrpState
from gatewayd.rules.arbitration import Priority
from gatewayd.rules.config import PolicyConfig
from gatewayd.rules.engine import Change, Engine
from gatewayd.rules.policy import fire_source, responder_override, srp_source
from gatewayd.rules.schedules import Calendar, SchedulesConfig, WindowConfig, window_source
from gatewayd.security.audit import read_records
from gatewayd.service.config import Config, load_config, parse_config
from gatewayd.simulators.broker import Mosquitto
from tests.support.console import Browser, cookie_jar, site_console, start_console
from tests.support.daemon import command, spawn, start_simulator, until_ready
from tests.support.gateway import DEMO, Site, demo_config, run_cli, site_of
from tests.support.mqtt import Collector
from tests.support.waiting import eventually

NEW_YORK = ZoneInfo("America/New_York")
CHICAGO = ZoneInfo("America/Chicago")


def local(zone: dt.tzinfo, *when: int) -> float:
    """Epoch seconds of a wall-clock moment (year, month, day[, hour, minute, second])."""
    year, month, day, *rest = when
    hour, minute, second = (*rest, 0, 0, 0)[:3]
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=zone).timestamp()


def utc(*when: int) -> float:
    return local(dt.UTC, *when)


def calendar(
    zone: str = "America/New_York", holidays: tuple[str, ...] = (), **window: Any
) -> Calendar:
    fields: dict[str, Any] = {
        "id": "main",
        "doors": ("A-116",),
        "start": "07:30",
        "end": "08:15",
        **window,
    }
    return Calendar(
        SchedulesConfig(timezone=zone, holidays=holidays, windows=(WindowConfig(**fields),))
    )


# --- the calendar --------------------------------------------------------------------------


def test_window_opens_at_0730_local_on_both_sides_of_the_spring_dst_change() -> None:
    window = calendar().windows["main"]
    # Friday 6 March 2026 is EST (UTC-5); Monday 9 March is EDT (UTC-4).
    before = window.active_at(utc(2026, 3, 6, 12, 45))
    after = window.active_at(utc(2026, 3, 9, 11, 45))
    assert before is not None and after is not None
    assert (before.start, before.end) == (utc(2026, 3, 6, 12, 30), utc(2026, 3, 6, 13, 15))
    assert (after.start, after.end) == (utc(2026, 3, 9, 11, 30), utc(2026, 3, 9, 12, 15))
    # An hour off by UTC is outside the window on the new side of the change.
    assert window.active_at(utc(2026, 3, 9, 12, 45)) is None


def test_window_opens_at_0730_local_on_both_sides_of_the_autumn_dst_change() -> None:
    window = calendar().windows["main"]
    # Friday 30 October 2026 is EDT; Monday 2 November is EST.
    assert window.active_at(utc(2026, 10, 30, 11, 30)) is not None
    assert window.active_at(utc(2026, 10, 30, 12, 20)) is None
    assert window.active_at(utc(2026, 11, 2, 12, 30)) is not None
    assert window.active_at(utc(2026, 11, 2, 11, 45)) is None


def test_times_the_dst_changes_skip_or_repeat_are_read_as_rfc_5545_says() -> None:
    every_day = "FREQ=DAILY"
    # 02:30 does not exist on 8 March 2026: read with the offset before the gap (EST), it
    # is 07:30 UTC, i.e. 03:30 EDT on the wall.
    spring = calendar(rrule=every_day, start="02:30", end="04:00").windows["main"]
    found = spring.active_at(utc(2026, 3, 8, 7, 45))
    assert found is not None and found.start == utc(2026, 3, 8, 7, 30)
    assert spring.active_at(utc(2026, 3, 8, 7, 15)) is None
    # 01:30 happens twice on 1 November 2026: the first (EDT) one opens the window.
    autumn = calendar(rrule=every_day, start="01:30", end="03:00").windows["main"]
    found = autumn.active_at(utc(2026, 11, 1, 5, 40))
    assert found is not None and found.start == utc(2026, 11, 1, 5, 30)


def test_a_holiday_is_an_exdate_of_every_window_that_keeps_the_calendar() -> None:
    # Monday 16 November 2026 and the Thanksgiving Thursday-Friday are closed.
    cal = calendar(holidays=("2026-11-16", "2026-11-26/2026-11-27"))
    window = cal.windows["main"]
    assert window.active_at(local(NEW_YORK, 2026, 11, 16, 7, 45)) is None
    assert window.active_at(local(NEW_YORK, 2026, 11, 17, 7, 45)) is not None
    assert window.active_at(local(NEW_YORK, 2026, 11, 27, 7, 45)) is None
    begins = [
        t.local.date()
        for t in window.transitions(local(NEW_YORK, 2026, 11, 25, 9), 4)
        if t.edge == "begins"
    ]
    # Wednesday 25 -> the next school day is Monday 30 November.
    assert begins == [dt.date(2026, 11, 30), dt.date(2026, 12, 1)]


def test_a_window_can_ignore_the_holiday_calendar() -> None:
    config = SchedulesConfig(
        timezone="America/New_York",
        holidays=("2026-11-16",),
        windows=(
            WindowConfig(id="w", doors=("A-116",), start="07:30", end="08:15", holidays=False),
        ),
    )
    assert Calendar(config).windows["w"].active_at(local(NEW_YORK, 2026, 11, 16, 7, 45))


def test_an_overnight_window_ends_the_next_morning() -> None:
    window = calendar(
        rrule="FREQ=WEEKLY;BYDAY=FR", start="22:00", end="06:00", action="lock"
    ).windows["main"]
    # Friday 4 December 22:00 until Saturday 06:00.
    assert window.active_at(local(NEW_YORK, 2026, 12, 5, 5, 59)) is not None
    assert window.active_at(local(NEW_YORK, 2026, 12, 5, 6, 0)) is None
    assert window.active_at(local(NEW_YORK, 2026, 12, 4, 21, 59)) is None


def test_check_prints_the_next_transitions_of_each_schedule(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", "-c", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert "schedules 2 windows in America/Chicago" in out
    assert "main-arrival:" in out and "unlocks A-116" in out
    assert "main-dismissal:" in out and "unlocks A-116, A-117" in out
    # At a known moment the lines are exactly the calendar's: Friday 4 December 2026, noon.
    lines = schedule_lines(load_config(DEMO), wall_s=local(CHICAGO, 2026, 12, 4, 12))
    assert "  next    main-arrival: 2026-12-07T07:30-06:00 unlocks A-116" in lines
    assert "  next    main-dismissal: 2026-12-04T14:45-06:00 unlocks A-116, A-117" in lines


# --- config errors -------------------------------------------------------------------------


def demo_raw(**schedules: Any) -> dict[str, Any]:
    raw = tomllib.loads(DEMO.read_text(encoding="utf-8"))
    raw["schedules"] = {"timezone": "America/Chicago", **schedules}
    return raw


def problems_of(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return "\n".join(caught.value.problems)


def test_bad_schedules_are_refused_naming_the_field_and_what_is_wrong() -> None:
    window = {"id": "w1", "doors": ["A-116"], "start": "07:30", "end": "08:15"}
    bad_rule = problems_of(demo_raw(windows=[{**window, "rrule": "FREQ=SOMETIMES"}]))
    assert "schedules.windows[0](w1).rrule" in bad_rule and "RRULE" in bad_rule
    unknown = problems_of(demo_raw(windows=[{**window, "doors": ["A-116", "Z-999"]}]))
    assert "schedules.windows[0](w1).doors: unknown door 'Z-999'" in unknown
    zone = problems_of(
        {
            **demo_raw(windows=[window]),
            "schedules": {"timezone": "Mars/Olympus", "windows": [window]},
        }
    )
    assert "schedules.timezone" in zone and "unknown time zone 'Mars/Olympus'" in zone
    holiday = problems_of(demo_raw(holidays=["2026-13-01"], windows=[window]))
    assert "schedules.holidays" in holiday and "2026-13-01" in holiday
    empty = problems_of(demo_raw(windows=[{**window, "end": "07:30"}]))
    assert "schedules.windows[0](w1)" in empty and "empty" in empty


# --- arbitration -----------------------------------------------------------------------------

CONFIG = load_config(DEMO)
CAMPUS_MODEL = Campus(CONFIG)
POLICY = PolicyConfig()
DOORS = ["A-101", "A-116", "A-119", "C-107", "C-111"]
WINDOW_UNLOCK = WindowConfig(id="open", doors=tuple(DOORS), start="07:00", end="09:00")
WINDOW_LOCK = WindowConfig(id="shut", doors=tuple(DOORS), start="07:00", end="09:00", action="lock")
LOCKING = [SrpState.LOCKDOWN, SrpState.SECURE, SrpState.HOLD, SrpState.SHELTER]
SCOPES = [CAMPUS, Scope("building", "A"), Scope("building", "C"), Scope("zone", "A1")]


@settings(max_examples=200, deadline=None)
@given(
    windows=st.sets(st.sampled_from(["open", "shut"])),
    states=st.lists(st.tuples(st.sampled_from(LOCKING), st.sampled_from(SCOPES)), max_size=3),
    fire=st.booleans(),
    responder=st.sampled_from([None, *DOORS]),
)
def test_a_schedule_never_beats_an_srp_state_a_fire_alarm_or_a_responder(
    windows: set[str],
    states: list[tuple[SrpState, Scope]],
    fire: bool,
    responder: str | None,
) -> None:
    engine = Engine(CAMPUS_MODEL)
    for name in windows:
        config = WINDOW_UNLOCK if name == "open" else WINDOW_LOCK
        for door in config.doors:
            engine.put(window_source(config, door, since=0.0))
    without = {d: engine.decide(d) for d in DOORS}
    for state, scope in states:
        engine.put(srp_source(POLICY, state, scope, actor="t", since=0.0, hazard=Hazard.HAZMAT))
    if fire:
        engine.put(fire_source(POLICY, "fire-A", Scope("building", "A"), since=0.0))
        engine.put(fire_source(POLICY, "fire-C", Scope("building", "C"), since=0.0))
    if responder:
        engine.put(responder_override(Scope("door", responder), actor="r", since=0.0, until=9.0))
    reference = Engine(CAMPUS_MODEL)
    for key, source in engine.sources.items():
        if not key.startswith("schedule:"):
            reference.put(source)
    for door in DOORS:
        decision = engine.decide(door)
        higher = reference.decide(door)
        if higher.claim is not None:
            # Something above the schedule holds the door: exactly as if no schedule existed.
            assert decision.priority < Priority.SCHEDULE
            assert decision.locked == higher.locked
        else:
            assert decision == without[door]
    # Removing every other source gives the doors back to the schedule (it resumes).
    engine.apply(Change(remove=tuple(k for k in engine.sources if not k.startswith("schedule:"))))
    assert {d: engine.decide(d) for d in DOORS} == without


# --- a running gateway -----------------------------------------------------------------------


class FakeClock:
    """The wall clock the gateway's schedules follow; the test moves it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


WINDOWS = [
    {"id": "main-arrival", "doors": ["A-116"], "start": "07:30", "end": "08:15"},
    # A lock window on an egress door: a fire alarm must release the door all the same.
    {"id": "egress-hold", "doors": ["A-119"], "start": "07:00", "end": "09:00", "action": "lock"},
]


def scheduled(broker: Mosquitto, tmp_path: Path, windows: list[dict[str, Any]]) -> Config:
    config = demo_config(broker, tmp_path / "state")
    schedules = SchedulesConfig.model_validate({"timezone": "America/Chicago", "windows": windows})
    return config.model_copy(update={"schedules": schedules})


def door_reason(site: Site, door: str) -> str:
    assert site.gateway is not None
    return site.gateway.doors.doors[door].reason


# Monday 7 December 2026 in Chicago.
def monday(hour: int, minute: int, second: int = 0) -> float:
    return local(CHICAGO, 2026, 12, 7, hour, minute, second)


async def test_schedule_unlocks_the_main_entrance_yields_to_lockdown_and_fire_and_resumes(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    clock = FakeClock(monday(7, 29, 58))
    async with site_of(scheduled(mosquitto, tmp_path, WINDOWS), clock=clock) as site:
        assert site.coil("A-116") is True  # normally locked, window not yet open
        clock.now = monday(7, 30, 1)
        await eventually(
            lambda: site.coil("A-116") is False,
            timeout_s=10,
            message="the window opened the main entrance",
        )
        assert door_reason(site, "A-116") == "schedule:main-arrival (door/A-116)"

        reply = await site.command("lockdown", scope="building/A")
        assert reply["ok"] is True, reply
        assert site.coil("A-116") is True
        reply = await site.command("release", scope="building/A")
        assert reply["ok"] is True, reply
        await eventually(
            lambda: site.coil("A-116") is False,
            timeout_s=10,
            message="the schedule holds again after the release",
        )

        assert site.coil("A-119") is True
        site.sim.boards["relay-a1"].set_input(64, True)  # fire-A
        await eventually(
            lambda: site.coil("A-119") is False,
            timeout_s=10,
            message="fire released the egress door the schedule locks",
        )
        site.sim.boards["relay-a1"].set_input(64, False)
        await eventually(lambda: site.coil("A-119") is True, timeout_s=10)

        clock.now = monday(8, 15, 1)
        await eventually(
            lambda: site.coil("A-116") is True,
            timeout_s=10,
            message="the window closed and the main entrance relocked",
        )
        assert door_reason(site, "A-116") == "normal"


async def test_a_clock_step_moves_doors_to_what_the_calendar_says_at_the_new_time(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    clock = FakeClock(monday(7, 0))
    async with site_of(scheduled(mosquitto, tmp_path, WINDOWS[:1]), clock=clock) as site:
        assert site.gateway is not None
        assert site.coil("A-116") is True
        clock.now = monday(7, 40)
        # What the clock watch calls when the wall clock jumps 40 minutes.
        site.gateway._clock_stepped(2400.0)
        await eventually(lambda: site.coil("A-116") is False, timeout_s=10)
        clock.now = monday(7, 10)
        site.gateway._clock_stepped(-1800.0)
        await eventually(
            lambda: site.coil("A-116") is True,
            timeout_s=10,
            message="stepped back before the window: relocked",
        )


async def test_a_restart_after_the_window_ended_never_opens_the_door_again(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    clock = FakeClock(monday(7, 45))
    async with site_of(scheduled(mosquitto, tmp_path, WINDOWS[:1]), clock=clock) as site:
        assert site.coil("A-116") is False
        await site.stop_gateway()
        clock.now = monday(9, 0)
        gateway = await site.start_gateway(clock=clock)
        # Written at start-up, before ready: the ended window is not restored.
        assert site.coil("A-116") is True
        assert not any(k.startswith("schedule:") for k in gateway.engine.sources)


async def test_reload_changes_schedules_live_audits_them_and_refuses_a_bad_file(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    clock = FakeClock(monday(7, 45))
    campus_file = tmp_path / "campus.toml"
    text = DEMO.read_text(encoding="utf-8")
    for beside in ("demo-rules.toml", "demo-credentials.toml"):
        (tmp_path / beside).write_text(
            (DEMO.parent / beside).read_text(encoding="utf-8"), encoding="utf-8"
        )
    shutil.copytree(DEMO.parent / "plans", tmp_path / "plans")
    config = scheduled(mosquitto, tmp_path, WINDOWS[:1])
    config = config.model_copy(update={"source": str(campus_file)})
    async with site_of(config, clock=clock) as site:
        gateway = site.gateway
        assert gateway is not None
        assert site.coil("A-116") is False and site.coil("A-117") is True
        # The demo file's own schedules: main-arrival now holds A-116 only; add A-117.
        campus_file.write_text(
            text.replace(
                'doors = ["A-116"]\nstart = "07:30"', 'doors = ["A-116", "A-117"]\nstart = "07:30"'
            ),
            encoding="utf-8",
        )
        result = await gateway.reload(actor="test")
        assert result["ok"] is True, result
        assert result["schedules"]["changed"] == ["main-arrival"]
        assert result["schedules"]["added"] == ["main-dismissal"]
        assert site.coil("A-117") is False and site.coil("A-116") is False

        campus_file.write_text(
            text.replace('rrule = "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"', 'rrule = "FREQ=NEVER"', 1),
            encoding="utf-8",
        )
        refused = await gateway.reload(actor="test")
        assert refused["ok"] is False
        assert any("rrule" in p for p in refused["problems"])
        assert site.coil("A-117") is False  # the schedules in force stay

        await eventually(
            lambda: _daemon_events(gateway.journal.audit_path) >= {"reloaded", "reload_refused"},
            timeout_s=10,
        )
        records = list(read_records(gateway.journal.audit_path))
        reloaded = next(r for r in records if r["data"].get("event") == "reloaded")
        assert reloaded["data"]["schedules"]["changed"] == ["main-arrival"]
        begun = [r for r in records if r["data"].get("via") == "system:schedule"]
        assert any("main-arrival" in str(r["data"]["begun"]) for r in begun)


def _daemon_events(path: Path) -> set[str]:
    return {str(r["data"].get("event")) for r in read_records(path) if r["kind"] == "daemon"}


async def test_gatewayd_reload_signals_the_daemon_which_applies_the_new_schedule(
    campus_file: Path, tmp_path: Path, mqtt_collect: Callable[[str], Awaitable[Collector]]
) -> None:
    sim = await start_simulator(campus_file, tmp_path)
    daemon = await spawn(
        "-m",
        "gatewayd",
        "run",
        "-c",
        str(campus_file),
        "--log-level",
        "warning",
        log=tmp_path / "daemon.log",
    )
    try:
        await until_ready(campus_file)
        entrance = await mqtt_collect("gatewayd/demo-school/door/A-116")
        # A window in force now by the real clock: the daemon follows the real one.
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        start, end = (now - dt.timedelta(minutes=2)).time(), (now + dt.timedelta(minutes=30)).time()
        with campus_file.open("a", encoding="utf-8") as out:
            out.write(
                f'\n[schedules]\ntimezone = "UTC"\n\n[[schedules.windows]]\n'
                f'id = "sighup"\ndoors = ["A-116"]\nstart = "{start}"\nend = "{end}"\n'
                'rrule = "FREQ=DAILY"\n'
            )
        code, out_text, err = await run_cli("reload", "-c", str(campus_file))
        assert code == 0, err
        assert "sent SIGHUP" in out_text and "sighup:" in out_text

        async def scheduled_source() -> bool:
            status = await command(campus_file, "status")
            return any(s["key"] == "schedule:sighup:A-116" for s in status.get("sources", []))

        await eventually(scheduled_source, timeout_s=20, message="the reloaded window in force")
        door = await entrance.wait_for(lambda m: m.json()["locked"] is False, timeout_s=20)
        assert door.json()["reason"] == "schedule:sighup (door/A-116)"
    finally:
        daemon.send_signal(signal.SIGTERM)
        await daemon.wait()
        sim.send_signal(signal.SIGTERM)
        await sim.wait()
    # The simulator writes its log as it stops: the main entrance's coil was written unlocked.
    lock = next(d.lock for d in load_config(campus_file).doors if d.id == "A-116")
    coil = int(lock.point.split(":")[1])
    writes = [json.loads(line) for line in (tmp_path / "writes.jsonl").read_text().splitlines()]
    assert any(w["device"] == lock.device and w["coil"] == coil and not w["value"] for w in writes)


async def test_the_console_shows_each_schedule_and_its_next_transitions(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    clock = FakeClock(monday(7, 45))
    async with (
        site_of(scheduled(mosquitto, tmp_path, WINDOWS[:1]), clock=clock) as site,
        start_console(site_console(site)) as console,
        aiohttp.ClientSession(cookie_jar=cookie_jar(str(console.url))) as http,
    ):
        browser = Browser(http, str(console.url))
        assert (await browser.signin("office")).status == 200
        response = await http.get(f"{console.url}api/campus")
        [window] = (await response.json())["schedules"]
        assert window["id"] == "main-arrival" and window["active"] is True
        assert window["doors"] == ["A-116"]
        assert [(t["edge"], t["at"]) for t in window["next"][:2]] == [
            ("ends", "2026-12-07T08:15:00-06:00"),
            ("begins", "2026-12-08T07:30:00-06:00"),
        ]


def test_reload_of_a_bad_file_prints_every_problem_and_signals_nobody(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "campus.toml"
    bad.write_text(
        DEMO.read_text(encoding="utf-8").replace(
            'timezone = "America/Chicago"', 'timezone = "Nowhere/Land"'
        ),
        encoding="utf-8",
    )
    (tmp_path / "demo-rules.toml").write_text(
        (DEMO.parent / "demo-rules.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    # --pid 1 would be init: a bad file must stop before any signal is sent.
    assert main(["reload", "-c", str(bad), "--pid", "1"]) == 2
    err = capsys.readouterr().err
    assert "schedules.timezone" in err and "Nowhere/Land" in err
