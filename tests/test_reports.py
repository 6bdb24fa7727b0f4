"""After-action reports: a scripted drill through a real gateway, reported from its audit log,
with the report's figures checked against the records and the replies."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pypdf import PdfReader

from gatewayd.console.incidents import load_incidents
from gatewayd.console.report import duration_s
from gatewayd.kernel.campus import Campus
from gatewayd.security.audit import read_records
from tests.support.gateway import DEMO, Site, run_cli
from tests.support.waiting import eventually

LIVE = {"duration_s": 120, "dry_run": False}


def records(site: Site) -> list[dict[str, Any]]:
    assert site.gateway is not None
    return list(read_records(site.gateway.journal.audit_path))


def outcome_of(site: Site, command_id: str) -> dict[str, Any]:
    [record] = [r for r in records(site)
                if r["kind"] == "outcome" and r["data"]["command_id"] == command_id]  # fmt: skip
    return dict(record["data"])


async def scripted_drills(site: Site) -> dict[str, Any]:
    """A first drill of building B, then one of building A with a jammed lock, a responder
    unlock and a release: the replies, by name."""
    first = await site.command("drill", params={"state": "lockdown", "scope": "building/B", **LIVE})
    assert first["ok"], first
    assert (await site.command("release", scope="building/B"))["ok"]
    jammed_door = next(d.id for d in site.config.doors
                       if d.lock.device == "relay-a1" and d.lock.point == "coil:0")  # fmt: skip
    site.sim.boards["relay-a1"].jam(0)
    drill = await site.command("drill", params={"state": "lockdown", "scope": "building/A", **LIVE})
    assert drill["doors"]["failed"] == {jammed_door: "unconfirmed: lock did not confirm"}
    unlock = await site.command("unlock", door="A-102", params={"duration_s": 30})
    assert unlock["ok"], unlock
    release = await site.command("release", scope="building/A")
    assert release["ok"], release
    # The rule's radio alert and snapshots are recorded after the doors: wait for them.
    await eventually(
        lambda: sum(r["kind"] == "action" for r in records(site)) >= 2, timeout_s=10,
        message="radio and camera action records",
    )  # fmt: skip
    await eventually(
        lambda: any(r["kind"] == "outcome" and r["data"]["command_id"] == release["id"]
                    for r in records(site)), timeout_s=10, message="the release's outcome",
    )  # fmt: skip
    return {"first": first, "drill": drill, "jammed": jammed_door, "unlock": unlock,
            "release": release}  # fmt: skip


async def test_drill_report_figures_match_the_audit_log_and_the_replies(
    site: Site, tmp_path: Path
) -> None:
    run = await scripted_drills(site)
    drill = run["drill"]
    outcome = outcome_of(site, drill["id"])
    assert outcome["commanded"] == len(drill["doors"]["commanded"])
    assert outcome["scopes"]["building/A"]["doors"] == len(drill["doors"]["commanded"])
    assert outcome["confirmed"] == len(drill["doors"]["confirmed"])
    assert outcome["drill"] is True
    campus = Campus(site.config)
    assert site.gateway is not None
    incidents = load_incidents(site.gateway.journal.audit_path, campus)
    assert [i.drill for i in incidents] == [True, True]
    first, second = incidents
    # Time to secure per zone, worked out here from the gateway's own actuation report (each
    # door's confirmation time): building A has a failed door, so it is not secured at all.
    # (The release commands the same doors later: the drill's is the first.)
    actuation = next(r for r in site.gateway.reports if r.failed == drill["doors"]["failed"])
    by_zone: dict[str, list[float]] = {}
    for door_id, at_ns in actuation.confirmed_at_ns.items():
        zone = f"zone/{campus.doors[door_id].zone}"
        by_zone.setdefault(zone, []).append(round((at_ns - actuation.trigger_ns) / 1e6, 3))
    jammed_zone = f"zone/{campus.doors[run['jammed']].zone}"
    for zone, times in by_zone.items():
        expected = None if zone == jammed_zone else max(times)
        assert second.secure[zone].ms == expected, zone
        assert second.secure[zone].confirmed == len(times)
    assert second.secure["building/A"].ms is None
    assert second.secure["building/A"].failed == {
        run["jammed"]: "unconfirmed: lock did not confirm"
    }
    # Building B's first drill secured every door: its time is the reply's confirmed latency.
    assert first.secure["building/B"].ms == run["first"]["latency_ms"]["confirmed"]
    assert second.commanded == len(drill["doors"]["commanded"])
    assert second.failed == drill["doors"]["failed"]

    # It runs from the drill's state record to the release's, by their audit timestamps.
    def state_ts(command_id: str) -> str:
        return next(str(r["ts"]) for r in records(site)
                    if r["kind"] == "state" and r["data"].get("command") == command_id)  # fmt: skip

    assert (second.started, second.ended) == (state_ts(drill["id"]), state_ts(run["release"]["id"]))
    took = duration_s(second)
    assert took is not None and took > 0
    # The timeline is the audit log's, time for time.
    stamps = {r["seq"]: r["ts"] for r in records(site)}
    assert all(stamps[s.seq] == s.ts for s in second.steps)
    kinds = [s.what for s in second.steps]
    for what in ("trigger", "decided", "failed", "radio", "camera", "responder", "release"):
        assert what in kinds, what
    assert any("A-102" in s.text and "demo-responder" in s.text for s in second.steps)

    code, _, err = await run_cli("report", "-c", str(DEMO), "--state-dir",
                                   site.config.state_dir, "--last", "--out",
                                   str(tmp_path / "out"))  # fmt: skip
    assert code == 0, err
    html = (tmp_path / "out" / f"incident-{second.id}.html").read_text(encoding="utf-8")
    assert "DRILL" in html and run["jammed"] in html and "unconfirmed: lock did not confirm" in html
    assert re.search(rf"Doors commanded</th><td>{second.commanded}<", html)
    zone_ms = max(by_zone["zone/A2"]) if jammed_zone != "zone/A2" else max(by_zone["zone/A3"])
    assert f"{zone_ms:.1f} ms" in html
    assert "<svg" in html and "NOT SECURED" in html
    # The drill is compared with the site's previous one (building B's).
    assert f"#{first.id}" in html and "Previous drills" in html
    pdf = PdfReader(tmp_path / "out" / f"incident-{second.id}.pdf")
    text = "\n".join(page.extract_text() for page in pdf.pages)
    for wanted in (f"After-action report #{second.id}", "DRILL", run["jammed"],
                     f"{zone_ms:.1f} ms", "demo-responder", "Previous drills"):  # fmt: skip
        assert wanted in text, wanted


async def test_report_list_and_since_name_every_incident(site: Site, tmp_path: Path) -> None:
    await site.command("lockdown", scope="building/D")
    await site.command("release", scope="building/D")
    base = ["report", "-c", str(DEMO), "--state-dir", site.config.state_dir]
    code, out, _ = await run_cli(*base, "--list")
    assert code == 0
    [line] = out.splitlines()
    assert "REAL" in line and "lockdown building/D" in line
    code, out, _ = await run_cli(*base, "--since", "2000-01-01", "--out", str(tmp_path))
    assert code == 0 and out.count("wrote ") == 1
    code, _, err = await run_cli(*base, "--since", "next tuesday")
    assert code == 2 and "not a date" in err
    code, _, err = await run_cli(*base, "--incident", "999999")
    assert code == 1 and "no incident" in err


async def test_responder_pack_has_every_plan_door_room_reader_and_camera(tmp_path: Path) -> None:
    code, _, err = await run_cli("report", "-c", str(DEMO), "--responder-pack", "--out",
                                   str(tmp_path))  # fmt: skip
    assert code == 0, err
    pdf = PdfReader(tmp_path / "responder-pack.pdf")
    text = "\n".join(page.extract_text() for page in pdf.pages)
    from gatewayd.console.plans import load_plans
    from gatewayd.service.config import load_config

    config = load_config(DEMO)
    for door in config.doors:
        assert door.id in text and door.room in text, door.id
    plans = load_plans(config)
    for plan in plans.values():
        for marker in plan.readers + plan.cameras:
            assert marker.id in text, marker.id
    for building in config.buildings:
        assert f"Building {building.id}: {building.name}" in text
    # Each door id is on its plan (drawn by svglib, labelled) and in its building's table.
    assert all(text.count(door.id) >= 2 for door in config.doors)
