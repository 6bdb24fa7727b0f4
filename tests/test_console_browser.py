"""The operator console end to end in headless Chromium (Debian's, never a downloaded one).

Driven with Playwright's async Python client in the test's own event loop, beside the
gateway and the simulated boards, so the page acts on real doors through the real stack.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.console.server import Console
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
