"""The console after the alarm: floor plans with live door state (also on a phone, in headless
Chromium), the incident and drill reports, and the floor-plan format's checks."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pypdf import PdfReader

from gatewayd.console.plans import parse_plan
from gatewayd.console.server import Console
from gatewayd.kernel.errors import ConfigError
from gatewayd.kernel.site import Door
from tests.support.console import Browser, cookie_jar
from tests.support.gateway import Site

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update",
         "--disable-sync"]  # fmt: skip
LIVE = {"duration_s": 300, "dry_run": False}


@pytest.fixture
async def browser(console: Console) -> AsyncIterator[Browser]:
    assert console.url is not None
    async with aiohttp.ClientSession(cookie_jar=cookie_jar(console.url)) as http:
        yield Browser(http, console.url)


async def test_plans_need_a_session_and_come_cleaned_with_every_door(
    browser: Browser, site: Site
) -> None:
    async with browser.http.get(browser.base + "api/plans") as response:
        assert response.status == 401
    assert (await browser.signin("office")).status == 200
    async with browser.http.get(browser.base + "api/plans") as response:
        plans = (await response.json())["plans"]
    assert sorted(plans) == ["A", "B", "C", "D"]
    for building, plan in plans.items():
        doors = sorted(d.id for d in site.config.doors if d.building == building)
        assert plan["doors"] == doors
        assert "<script" not in plan["svg"] and "data-door" in plan["svg"]


async def test_reports_are_listed_and_served_as_html_and_pdf(browser: Browser, site: Site) -> None:
    drill = await site.command("drill", params={"state": "lockdown", "scope": "building/D", **LIVE})
    assert drill["ok"], drill
    assert (await site.command("release", scope="building/D"))["ok"]
    async with browser.http.get(browser.base + "reports") as response:
        assert response.status == 401
    await browser.signin("principal")
    async with browser.http.get(browser.base + "api/reports") as response:
        [incident] = (await response.json())["incidents"]
    assert incident["drill"] is True and incident["doors"] == len(drill["doors"]["commanded"])
    assert incident["worst_secure_ms"] == drill["latency_ms"]["confirmed"]
    async with browser.http.get(f"{browser.base}reports/{incident['id']}") as response:
        html = await response.text()
        assert "script-src" not in response.headers["Content-Security-Policy"]
    assert f"After-action report #{incident['id']}" in html and "DRILL" in html
    async with browser.http.get(f"{browser.base}reports/{incident['id']}.pdf") as response:
        assert response.content_type == "application/pdf"
        pdf = PdfReader(io.BytesIO(await response.read()))
    assert "DRILL" in pdf.pages[0].extract_text()
    async with browser.http.get(f"{browser.base}reports/999999") as response:
        assert response.status == 404


def door(ident: str, building: str = "A") -> Door:
    return Door.model_validate({"id": ident, "room": ident, "building": building,
                                "kind": "classroom",
                                "lock": {"device": "relay-a1", "point": "coil:0"}})  # fmt: skip


def test_a_plan_names_every_marker_problem_and_is_cleaned(tmp_path: Path) -> None:
    path = tmp_path / "A.svg"
    path.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 50">'
        '<script>alert(1)</script><a href="https://example.invalid"><text>x</text></a>'
        '<circle data-door="A-1" cx="10" cy="10" r="3" onclick="alert(2)"/>'
        '<circle data-door="Z-9" cx="20" cy="10" r="3"/><rect data-door="A-1" x="1" y="1"/>'
        "</svg>"
    )
    with pytest.raises(ConfigError) as caught:
        parse_plan(path, "A", [door("A-1"), door("A-2")])
    problems = "\n".join(caught.value.problems)
    assert "door Z-9: no such door in building A" in problems
    assert "door A-1: two markers" in problems
    assert "1 doors of building A have no marker: A-2" in problems
    path.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 50"><script>alert(1)</script>'
        '<circle data-door="A-1" cx="10" cy="10" r="3" onclick="alert(2)" style="x"/>'
        '<text class="room" x="5" y="40">101</text></svg>'
    )
    plan = parse_plan(path, "A", [door("A-1")])
    assert "script" not in plan.svg and "onclick" not in plan.svg and "style" not in plan.svg
    assert plan.doors["A-1"].x == 10 and [r.id for r in plan.rooms] == ["101"]
    path.write_text("<svg")
    with pytest.raises(ConfigError, match="not XML"):
        parse_plan(path, "A", [door("A-1")])


pw_api = pytest.importorskip("playwright.async_api", reason="playwright is missing")


@pytest.fixture
async def phone() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    async with pw_api.async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS,
                                            chromium_sandbox=False)  # fmt: skip
        try:
            context = await launched.new_context(
                viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                has_touch=True,
            )  # fmt: skip
            yield await context.new_page()
        finally:
            await launched.close()


async def test_floor_plan_shows_live_door_states_on_a_phone(
    phone: Any, console: Console, site: Site
) -> None:
    expect = pw_api.expect
    assert console.url is not None
    assert (await site.command("lockdown", scope="building/A"))["ok"]
    assert (await site.command("unlock", door="A-102", params={"duration_s": 120}))["ok"]
    await phone.goto(console.url)
    await phone.locator("#signin-name").fill("principal")
    await phone.locator("#signin-password").fill("principal-pass-1")
    await phone.locator("#signin-submit").click()
    await expect(phone.locator("#plans-panel")).to_be_visible()
    plan = phone.locator("#plan-view")
    await expect(plan.locator('[data-door="A-101"]')).to_have_attribute("data-state", "secured")
    await expect(plan.locator('[data-door="A-102"]')).to_have_attribute("data-state", "override")
    await expect(plan.locator('[data-letter-for="A-102"]')).to_have_text("O")
    # Live: a drill starting elsewhere shows on that building's plan without a reload.
    drill = await site.command("drill", params={"state": "lockdown", "scope": "building/B", **LIVE})
    assert drill["ok"], drill
    await phone.locator("#plan-building").select_option("B")
    await expect(plan.locator('[data-door="B-101"]')).to_have_attribute("data-state", "drill")
    await phone.locator("#plan-building").select_option("A")
    await expect(plan.locator('[data-door="A-101"]')).to_have_attribute("data-state", "secured")
    # On a phone the page never scrolls sideways: the plan scales to the screen.
    wide = await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert wide <= 0, f"the page is {wide} px wider than the phone"
    box = await plan.locator("svg").bounding_box()
    assert box is not None and box["width"] <= 390
    ARTIFACTS.mkdir(exist_ok=True)
    await phone.locator("#plans-panel").screenshot(path=str(ARTIFACTS / "floorplan.png"))
    # The report of the drill is one tap away.
    assert (await site.command("release", scope="building/B"))["ok"]
    await phone.goto(console.url + "reports")
    await phone.locator("table a").first.click()
    await expect(phone.locator("h1")).to_contain_text("After-action report")
    await phone.set_viewport_size({"width": 900, "height": 1200})
    await phone.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
