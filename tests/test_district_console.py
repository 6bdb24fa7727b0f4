"""``gatewayd district console`` over HTTP against real gateways: sign-in, the district view,
and lockdown / release buttons signed as the district actor."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from gatewayd.app.district import load_district
from gatewayd.app.district_console import DistrictConsole, console_settings
from gatewayd.console.passwords import hash_password
from gatewayd.security.keys import load_private_key
from gatewayd.simulators.broker import Mosquitto
from tests.support.console import Browser, cookie_jar
from tests.support.district import (
    DISTRICT_ACTOR,
    audit_records,
    bridged_broker,
    district_file,
    school,
    school_config,
)
from tests.support.gateway import Site
from tests.support.waiting import eventually

SITES = ["school-a", "school-b"]
PASSWORD = "ops-pass-1"


@contextlib.asynccontextmanager
async def serving(console: DistrictConsole) -> AsyncIterator[DistrictConsole]:
    started = asyncio.Event()
    task = asyncio.create_task(console.run(started.set), name="test-district-console")
    try:
        async with asyncio.timeout(10):
            await started.wait()
        yield console
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def locked(site: Site) -> bool:
    return all(site.coil(d.id) for d in site.config.doors if d.kind == "classroom")


def unlocked(site: Site) -> bool:
    return not any(site.coil(d.id) for d in site.config.doors if d.kind == "classroom")


async def test_district_console_shows_every_school_and_its_buttons_reach_them(
    tmp_path: Path,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        hub = await stack.enter_async_context(Mosquitto())
        path = district_file(tmp_path, SITES, hub.url, resend_s=1.0, stale_after_s=3.0)
        district = load_district(path)
        users = [{"name": "ops", "password_hash": hash_password(PASSWORD, n=2**10)}]
        config, _ = console_settings({"port": 0, "users": users}, str(path), actor=DISTRICT_ACTOR)
        console = DistrictConsole(district, config, load_private_key(district.key_path),
                                  refresh_s=0.3)  # fmt: skip
        running, brokers = {}, {}
        for site_id in SITES:
            local = await stack.enter_async_context(bridged_broker(site_id, [hub.url]))
            brokers[site_id] = local
            school_conf = school_config(local, tmp_path / site_id, site_id, heartbeat_s=0.5,
                                        district_sites=(site_id,))  # fmt: skip
            running[site_id] = await stack.enter_async_context(school(school_conf))
        await stack.enter_async_context(serving(console))
        assert console.url is not None
        url = console.url
        http = await stack.enter_async_context(aiohttp.ClientSession(cookie_jar=cookie_jar(url)))
        browser = Browser(http, url)

        # Signed out: no view, no buttons.
        async with http.get(url + "api/schools") as response:
            assert response.status == 401
        assert (await browser.command(action="lockdown", schools="all"))[0] == 401
        assert (await browser.signin("ops", "wrong")).status == 401
        assert (await browser.signin("ops", PASSWORD)).status == 200
        # A page elsewhere cannot press the buttons, nor can a request without the CSRF token.
        response = await browser.post("api/command", {"action": "lockdown", "schools": "all"},
                                      Origin="http://evil.example")  # fmt: skip
        assert response.status == 403
        response = await http.post(url + "api/command", json={"action": "lockdown"},
                                   headers={"Origin": browser.origin})  # fmt: skip
        assert response.status == 403

        async def view() -> dict[str, dict[str, Any]]:
            async with http.get(url + "api/schools") as response:
                assert response.status == 200
                return {s["school"]: s for s in (await response.json())["schools"]}

        async def all_ok() -> bool:
            rows = await view()
            return set(rows) == set(SITES) and all(r["verdict"] == "ok" for r in rows.values())

        await eventually(all_ok, timeout_s=30, interval_s=0.3)
        row = (await view())["school-a"]
        assert row["state"] == "normal" and row["doors"] and row["heartbeat_age_s"] is not None

        await press_buttons(browser, view, running)
        # A school whose box goes away shows stale, though the hub keeps its `online`.
        await asyncio.to_thread(brokers["school-b"].kill)

        async def b_stale() -> bool:
            row = (await view())["school-b"]
            return bool(row["verdict"] == "stale" and row["availability"] == "online")

        await eventually(b_stale, timeout_s=30, interval_s=0.3)
        assert (await view())["school-a"]["verdict"] == "ok"


View = Callable[[], Awaitable[dict[str, dict[str, Any]]]]


async def press_buttons(browser: Browser, view: View, running: dict[str, Site]) -> None:
    # One school's button: that school only.
    status, reply = await browser.command(action="lockdown", schools=["school-a"])
    assert status == 200 and reply["ok"], reply
    assert [o["school"] for o in reply["outcomes"]] == ["school-a"]
    assert locked(running["school-a"]) and unlocked(running["school-b"])
    records = audit_records(running["school-a"])
    [decision] = [r for r in records if r["kind"] == "command"]
    assert (decision["actor"], decision["data"]["action"]) == (DISTRICT_ACTOR, "lockdown")

    # Every school, then release every school.
    status, reply = await browser.command(action="lockdown", schools="all")
    assert status == 200 and reply["ok"], reply
    assert all(locked(s) for s in running.values())

    async def shows_lockdown() -> bool:
        rows = await view()
        return all(r["state"] == "lockdown" and r["last"]["result"] == "confirmed"
                   for r in rows.values())  # fmt: skip

    await eventually(shows_lockdown, timeout_s=15, interval_s=0.3)
    status, reply = await browser.command(action="release", schools="all")
    assert status == 200 and reply["ok"], reply
    assert all(unlocked(s) for s in running.values())
    assert (await browser.command(action="unlock", schools="all"))[0] == 400
    assert (await browser.command(action="lockdown", schools=["nope"]))[0] == 400
    assert (await browser.command(action="lockdown", schools="all", scope="building/A"))[0] == 400
