"""CAP 1.2 alerts out: SRP changes, fire and panic alarms on ``<prefix>/<site>/cap`` and in
the console's Atom feed, checked against the OASIS schema and an independent CAP parser."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import xmlschema
from capparselib.parsers import CAPParser

from gatewayd.kernel.campus import Campus
from gatewayd.service.cap import CapAlerts, CapConfig, CapMessage
from gatewayd.service.config import load_config
from tests.support.console import site_console, start_console
from tests.support.gateway import DEMO, Site
from tests.support.mqtt import Collector, Received

SITE = "gatewayd/demo-school"
CAP_XSD = Path(__file__).parent / "support" / "cap" / "CAP-v1.2.xsd"
SCHEMA = xmlschema.XMLSchema(CAP_XSD)
Collect = Callable[[str], Awaitable[Collector]]


def parsed(message: Received | CapMessage) -> dict[str, Any]:
    """One alert: valid against the OASIS schema, then read by capparselib (its own schema)."""
    xml = message.payload if isinstance(message, Received) else message.xml
    SCHEMA.validate(xml.decode())
    [alert] = CAPParser(xml.decode()).as_dict()
    return dict(alert)


def info(alert: dict[str, Any]) -> dict[str, Any]:
    [first] = alert["cap_info"]
    return dict(first)


def areas(alert: dict[str, Any]) -> list[str]:
    return [str(a["area_description"]) for a in info(alert)["cap_area"]]


async def cap_messages(watcher: Collector, count: int) -> list[dict[str, Any]]:
    await watcher.wait_until(lambda: len(watcher.on(f"{SITE}/cap")) >= count, 10, f"{count} CAP")
    return [parsed(m) for m in watcher.on(f"{SITE}/cap")]


async def test_lockdown_and_release_are_an_actual_alert_then_a_cancel_referencing_it(
    site: Site, mqtt_collect: Collect
) -> None:
    watcher = await mqtt_collect(f"{SITE}/cap")
    assert (await site.command("lockdown", scope="building/A"))["ok"]
    assert (await site.command("release", scope="building/A"))["ok"]
    alert, cancel = await cap_messages(watcher, 2)
    assert all(m.qos == 1 and not m.retain for m in watcher.on(f"{SITE}/cap"))
    assert (alert["cap_status"], alert["cap_message_type"]) == ("Actual", "Alert")
    assert alert["cap_scope"] == "Restricted"
    assert alert["cap_sender"] == "gatewayd@demo-school"
    assert info(alert)["cap_category"] == "Safety"
    assert info(alert)["cap_event"] == "Lockdown"
    assert (info(alert)["cap_urgency"], info(alert)["cap_severity"]) == ("Immediate", "Extreme")
    assert info(alert)["cap_certainty"] == "Observed"
    [where] = areas(alert)
    assert where.startswith("Building A (")
    assert (cancel["cap_status"], cancel["cap_message_type"]) == ("Actual", "Cancel")
    # references: sender,identifier,sent of the alert it ends; one incident for both.
    assert str(cancel["cap_references"]) == (
        f"{alert['cap_sender']},{alert['cap_id']},{alert['cap_sent']}"
    )
    assert str(cancel["cap_incidents"]) == str(alert["cap_id"]) == str(alert["cap_incidents"])


async def test_a_drill_is_always_an_exercise_from_alert_to_cancel(
    site: Site, mqtt_collect: Collect
) -> None:
    watcher = await mqtt_collect(f"{SITE}/cap")
    params = {"state": "lockdown", "scope": "building/B", "duration_s": 60, "dry_run": False}
    assert (await site.command("drill", params=params))["ok"]
    # A real lockdown of the campus pre-empts the drill: the drill's chain ends as an exercise
    # and the real alert is Actual, in a chain of its own.
    assert (await site.command("lockdown", scope="campus"))["ok"]
    messages = await cap_messages(watcher, 3)
    by_status = {(str(m["cap_status"]), str(m["cap_message_type"])) for m in messages}
    assert by_status == {("Exercise", "Alert"), ("Exercise", "Cancel"), ("Actual", "Alert")}
    drill = next(m for m in messages if m["cap_status"] == "Exercise")
    assert "DRILL" in str(drill["cap_note"])
    assert str(info(drill)["cap_headline"]).startswith("DRILL:")
    real = next(m for m in messages if m["cap_status"] == "Actual")
    assert "cap_references" not in real
    # The campus alert names every building, one area each.
    assert len(areas(real)) == len(site.config.buildings)


async def test_fire_alarm_input_is_an_alert_and_its_reset_a_cancel(
    site: Site, mqtt_collect: Collect
) -> None:
    watcher = await mqtt_collect(f"{SITE}/cap")
    board = site.sim.boards["relay-a1"]
    board.set_input(64, True)
    [fire] = await cap_messages(watcher, 1)
    board.set_input(64, False)
    _, reset = await cap_messages(watcher, 2)
    assert info(fire)["cap_event"] == "Fire alarm"
    assert info(fire)["cap_response_type"] == "Evacuate"
    assert (fire["cap_status"], fire["cap_message_type"]) == ("Actual", "Alert")
    assert reset["cap_message_type"] == "Cancel"
    assert str(fire["cap_id"]) in str(reset["cap_references"])


async def test_panic_button_is_an_alert_and_its_lockdown_another(
    site: Site, mqtt_collect: Collect
) -> None:
    watcher = await mqtt_collect(f"{SITE}/cap")
    site.sim.boards["relay-a1"].set_input(65, True)
    messages = await cap_messages(watcher, 2)
    assert sorted(str(info(m)["cap_event"]) for m in messages) == ["Lockdown", "Panic alarm"]
    panic = next(m for m in messages if info(m)["cap_event"] == "Panic alarm")
    assert info(panic)["cap_certainty"] == "Possible"
    assert "room office" in str(info(panic)["cap_headline"])


async def test_console_serves_the_alerts_as_an_atom_feed_a_cap_parser_reads(
    site: Site, mqtt_collect: Collect
) -> None:
    watcher = await mqtt_collect(f"{SITE}/cap")
    await site.command("lockdown", scope="building/A")
    await site.command("release", scope="building/A")
    await cap_messages(watcher, 2)
    async with start_console(site_console(site)) as console, aiohttp.ClientSession() as http:
        # The demo's alerts are Restricted: the feed needs a signed-in session.
        async with http.get(f"{console.url}cap.atom") as response:
            assert response.status == 401
        assert site.gateway is not None
        site.gateway.cap.config = site.gateway.cap.config.model_copy(update={"scope": "Public"})
        async with http.get(f"{console.url}cap.atom") as response:
            assert response.status == 200
            assert response.content_type == "application/atom+xml"
            feed = await response.text()
    entries = CAPParser(feed).as_dict()
    assert [str(e["cap_message_type"]) for e in entries] == ["Cancel", "Alert"]
    for entry, sent in zip(entries, reversed(watcher.on(f"{SITE}/cap")), strict=True):
        assert str(entry["cap_id"]) == str(parsed(sent)["cap_id"])


def test_every_alert_kind_validates_against_the_oasis_schema() -> None:
    sent: list[bytes] = []

    class Outlet:
        def publish_message(self, topic_suffix: str, payload: bytes, *, life_safety: bool) -> None:
            assert topic_suffix == "cap" and life_safety
            sent.append(payload)

    alerts = CapAlerts(Campus(load_config(DEMO)), CapConfig(scope="Public"), Outlet())
    for n, state in enumerate(["hold", "secure", "lockdown", "evacuate", "shelter"]):
        data = {"scope": "zone/A1", "state": state, "hazard": "tornado"}
        alerts.event({"id": f"e{n}", "ts": "2026-12-03T12:00:00.123Z", "kind": "state",
                      "drill": False, "data": data})  # fmt: skip
    alerts.event({"id": "end", "ts": "2026-12-03T12:10:00Z", "kind": "state", "drill": False,
                  "data": {"scope": "zone/A1", "state": "normal"}})  # fmt: skip
    alerts.drain()
    kinds = [parsed(m) for m in alerts.messages]
    assert [str(k["cap_message_type"]) for k in kinds] == ["Alert"] + ["Update"] * 4 + ["Cancel"]
    assert all(k["cap_scope"] == "Public" and "cap_restriction" not in k for k in kinds)
    # Each later message references all before it.
    assert len(str(kinds[-1]["cap_references"]).split()) == 5
    assert str(kinds[0]["cap_sent"]) == "2026-12-03T12:00:00+00:00"
    assert sent == [m.xml for m in alerts.messages]
    # Unprefixed, whatever other module (the floor plans' SVG) loaded ElementTree first:
    # subscribers that match on text see <msgType>, not <ns0:msgType>.
    import gatewayd.console.plans  # noqa: F401

    assert all(b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">' in m for m in sent)
    assert all(b"<msgType>" in m for m in sent)
