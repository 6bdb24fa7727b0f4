"""The operator console end to end in headless Chromium (Debian's, never a downloaded one).

Driven with Playwright's async Python client in the test's own event loop, beside the
gateway and the simulated boards, so the page acts on real doors through the real stack.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.console.server import COOKIE, Console
from gatewayd.kernel.scope import Scope
from tests.support.console import PASSWORDS
from tests.support.gateway import Site

CHROMIUM = "/usr/bin/chromium"
#: The CI artifact the README names; /artifacts/ is git-ignored.
SCREENSHOT = Path(__file__).resolve().parents[1] / "artifacts" / "console.png"
# Without the background-networking flags Chromium tries Google's hosts at every start,
# which this closed network refuses; --no-sandbox because CI runs as root.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver",
)
pw_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is missing: pip install -e '.[dev]'"
)
expect = pw_api.expect


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    # Playwright gives each launch a fresh, empty profile directory and removes it after.
    async with pw_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=FLAGS, chromium_sandbox=False
        )
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 1000})
            yield await context.new_page()
        finally:
            await browser.close()


async def sign_in(page: Any, name: str) -> None:
    """Keyboard only: type the name, tab to the password, press Enter."""
    await expect(page.locator("#signin-view")).to_be_visible()
    await page.locator("#signin-name").focus()
    await page.keyboard.type(name)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORDS[name][0])
    await page.keyboard.press("Enter")
    await expect(page.locator("#who")).to_be_visible()
    await expect(page.locator("#who-name")).to_contain_text(PASSWORDS[name][1])


async def sign_out(page: Any) -> None:
    await page.locator("#signout").click()
    await expect(page.locator("#signin-view")).to_be_visible()
    await expect(page.locator("#app-view")).to_be_hidden()


async def test_lockdown_responder_unlock_refusal_and_sign_out_in_chromium(
    page: Any,
    console: Console,
    site: Site,
) -> None:
    assert site.gateway is not None and console.url is not None
    building = site.gateway.campus.resolve(Scope.parse("building/A"))
    await page.goto(console.url)
    await sign_in(page, "office")

    # A building lockdown, with the confirmation step naming the scope and its door count.
    await page.locator("#action-scope").select_option("building/A")
    await page.locator("#srp-buttons [data-action=lockdown]").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#confirm-title")).to_contain_text("LOCKDOWN — building A")
    await expect(page.locator("#confirm-text")).to_contain_text(f"{len(building)} doors")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await expect(page.locator("#result")).to_contain_text("OK")
    for door_id in building:
        await expect(page.locator(f"#door-{door_id}")).to_have_attribute("data-state", "locked")
        assert site.coil(door_id), f"{door_id}: the board's coil is not energised"
    await expect(page.locator("#incident-banner")).to_contain_text("LOCKDOWN on building A")
    await expect(page.locator("[data-scope='building/A'] .counts")).to_contain_text(
        f"secured {len(building)}"
    )
    await expect(page.locator("#feed-list .lat").first).to_contain_text("on the wire")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT), full_page=True)
    await sign_out(page)

    # A responder: no SRP buttons; a timed unlock of one door, which relocks by itself.
    await sign_in(page, "officer")
    await expect(page.locator("#actions")).to_be_hidden()
    await expect(page.locator("[data-action=lockdown]")).to_have_count(0)
    await page.locator("#resp-building").select_option("A")
    await page.locator("#resp-seconds").fill("2")
    await page.locator("#resp-doors [data-door=A-101] [data-action=unlock]").click()
    await expect(page.locator("#resp-result")).to_contain_text("OK")
    await expect(page.locator("#door-A-101")).to_have_attribute("data-state", "unlocked")
    await expect(page.locator("#door-A-101 .why")).to_contain_text("responder unit-12")
    await expect(page.locator("#door-A-101")).to_have_attribute(
        "data-state", "locked", timeout=10_000
    )
    assert site.coil("A-101")

    # What the page does not offer, the server refuses anyway; the feed records the refusal.
    reply = await page.evaluate("""() => fetch('/api/command', {method: 'POST',
        headers: {'Content-Type': 'application/json', 'X-CSRF-Token': app.me.csrf},
        body: JSON.stringify({action: 'release', scope: 'building/A'})})
        .then(async (r) => ({status: r.status, body: await r.json()}))""")
    assert reply["status"] == 403 and reply["body"]["error"] == "forbidden"
    await expect(page.locator("#feed-list li.sev-warning").first).to_contain_text("refused officer")
    assert site.gateway.engine.get("srp:building/A") is not None, "the lockdown still holds"
    await sign_out(page)
    assert await page.evaluate("fetch('/api/session').then((r) => r.status)") == 401


async def test_console_fits_a_phone_screen(page: Any, console: Console) -> None:
    assert console.url is not None
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(console.url)
    await sign_in(page, "principal")
    await expect(page.locator("#srp-buttons [data-action=release]")).to_be_visible()
    overflow = await page.evaluate(
        "document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
    # In an incident nobody scrolls past the state cards to find it: Lockdown is on the
    # first screen, above them.
    lockdown = await page.locator("#srp-buttons [data-action=lockdown]").bounding_box()
    cards = await page.locator("#scope-cards").bounding_box()
    assert lockdown is not None and cards is not None
    assert lockdown["y"] + lockdown["height"] <= 844, lockdown
    assert lockdown["y"] < cards["y"]


async def test_a_shelter_drill_asks_for_its_hazard_and_starts(page: Any, console: Console) -> None:
    assert console.url is not None
    await page.goto(console.url)
    await sign_in(page, "principal")
    await page.locator("#drill-state").select_option("shelter")
    await page.locator("#drill-start").click()
    # The confirmation asks which hazard, as for a real shelter.
    await expect(page.locator("#confirm-hazard")).to_be_visible()
    await page.locator("#hazard").select_option("hazmat")
    await page.locator("#confirm-ok").click()
    # A dry run by default: what the hazmat shelter would do (lock the exterior doors).
    await expect(page.locator("#result")).to_contain_text("OK — dry run:")
    await expect(page.locator("#result")).to_contain_text("would lock")


async def test_chromium_keeps_a_secure_strict_session_cookie_that_ends_with_the_browser(
    page: Any, console: Console, site: Site
) -> None:
    assert console.url is not None and site.gateway is not None
    await page.goto(console.url)
    await sign_in(page, "office")
    cookie = {c["name"]: c for c in await page.context.cookies()}[COOKIE]
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    assert cookie["expires"] == -1, "a browser-session cookie: closing the browser ends it"
    assert await page.evaluate("document.cookie") == "", "no script on the page can read it"
    # Chromium sends the Secure cookie back over http://127.0.0.1, and its Origin is one the
    # console derived from its own listen address: the page still acts.
    await page.locator("#action-scope").select_option("building/A")
    await page.locator("#srp-buttons [data-action=lockdown]").click()
    await page.locator("#confirm-ok").click()
    await expect(page.locator("#result")).to_contain_text("OK")
    assert site.gateway.engine.get("srp:building/A") is not None
