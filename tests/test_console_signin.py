"""Console sign-in under attack, over the real server: throttling, the hash queue, sessions,
plain HTTP, the cookie, the allowed origins and what the log says (issue 12).

Clients pick their source address (any of 127.0.0.0/8 reaches a loopback console), so one
test can be the student flooding from one machine and the principal at another.
"""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from gatewayd.console.config import ConsoleConfig, origin_of
from gatewayd.console.passwords import hash_password
from gatewayd.console.server import COOKIE, Console
from gatewayd.console.signin import (
    FORGET_S,
    HASHING_AT_ONCE,
    HASHING_QUEUE,
    SigninThrottle,
    source_of,
)
from gatewayd.kernel.errors import ConfigError
from gatewayd.service.config import parse_config
from tests.support.console import Browser, cookie_jar, site_console, start_console
from tests.support.gateway import Site
from tests.support.waiting import eventually

DEMO_CAMPUS = Path(__file__).resolve().parents[1] / "configs" / "demo-campus.toml"


@contextlib.asynccontextmanager
async def browser_at(url: str, address: str = "127.0.0.1") -> AsyncIterator[Browser]:
    """A browser on the machine at ``address`` (its connections come from there)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector, cookie_jar=cookie_jar(url)) as http:
        yield Browser(http, url)


@contextlib.asynccontextmanager
async def hashing_held(console: Console) -> AsyncIterator[None]:
    """Every password-check slot taken, as by a CPU too busy to finish one: checks queue."""
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(HASHING_AT_ONCE):
            await stack.enter_async_context(console.signin._hashing)
        yield


async def signin_status(browser: Browser, name: str, password: str | None = None) -> int:
    async with await browser.signin(name, password) as response:
        return response.status


# --- throttling ----------------------------------------------------------------------------------


def test_waits_grow_per_address_and_pair_up_to_the_cap_and_are_forgotten() -> None:
    now = [0.0]
    throttle = SigninThrottle(
        free_per_name=3, free_per_address=5, base_delay_s=1, max_delay_s=8, clock=lambda: now[0]
    )
    waits = [throttle.failed("10.0.0.9", "principal")]
    for _ in range(6):
        # Each try waits what it was told to.
        now[0] += waits[-1]
        waits.append(throttle.failed("10.0.0.9", "principal"))
    assert waits == [0, 0, 1, 2, 4, 8, 8], "free tries, then doubling, then the cap"
    assert throttle.retry_after_s("10.0.0.9", "principal") == 8
    # The address counts its own: seven failures, five of them free.
    assert throttle.retry_after_s("10.0.0.9", "office") == 4, "the address waits as well"
    assert throttle.retry_after_s("10.0.0.10", "principal") == 0, "never a lock on the name"
    now[0] += FORGET_S
    assert throttle.retry_after_s("10.0.0.9", "principal") == 0, "a quiet key is forgotten"
    assert throttle.failed("10.0.0.9", "principal") == 0


def test_ipv6_clients_are_throttled_by_their_64_network() -> None:
    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2:bbbb::7")
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:10.1.2.3") == "10.1.2.3"


async def test_a_flood_from_one_address_never_keeps_the_principal_out_from_another(
    site: Site,
) -> None:
    # A long first wait, so that nothing here depends on how fast the machine is.
    console = site_console(site, signin_base_delay_s=60)
    async with start_console(console):
        assert console.url is not None
        async with browser_at(console.url, "127.0.0.2") as student:
            pair = [await signin_status(student, "principal", "guess") for _ in range(10)]
            assert pair == [401] * 3 + [429] * 7, "three tries for the pair, then waits"
            async with await student.signin("principal", "guess") as response:
                assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
                assert (await response.json())["error"] == "throttled"
            names = [await signin_status(student, f"n{i}", "guess") for i in range(12)]
            assert names == [401] * 7 + [429] * 5, "ten failures per address, whatever the names"
        async with browser_at(console.url, "127.0.0.1") as principal:
            assert await signin_status(principal, "principal") == 200
            assert await signin_status(principal, "principal", "typo") == 401


async def test_a_flood_from_one_address_is_throttled_before_the_hash_queue(site: Site) -> None:
    async with start_console(site_console(site)) as console:
        assert console.url is not None
        async with (
            browser_at(console.url, "127.0.0.2") as student,
            browser_at(console.url, "127.0.0.3") as principal,
        ):
            async with hashing_held(console):
                flood = [
                    asyncio.create_task(signin_status(student, "principal", f"guess-{i}"))
                    for i in range(12)
                ]
                await eventually(lambda: sum(t.done() for t in flood) == 10, timeout_s=10)
                assert [t.result() for t in flood if t.done()] == [429] * 10
                assert console.signin.hashing_waiting == 2, "one address holds two places at most"
                real = asyncio.create_task(signin_status(principal, "principal"))
                await eventually(lambda: console.signin.hashing_waiting == 3, timeout_s=10)
            assert await real == 200
            assert sorted(await asyncio.gather(*flood)) == [401, 401] + [429] * 10


async def test_a_full_hash_queue_answers_503_and_counts_no_failure(site: Site) -> None:
    async with start_console(site_console(site)) as console, contextlib.AsyncExitStack() as stack:
        assert console.url is not None
        assert HASHING_QUEUE == 8
        browsers = [
            await stack.enter_async_context(browser_at(console.url, f"127.0.0.{10 + i}"))
            for i in range(5)
        ]
        async with hashing_held(console):
            queued = [
                asyncio.create_task(signin_status(b, "office")) for b in browsers[:4] for _ in "ab"
            ]
            await eventually(lambda: console.signin.hashing_waiting == HASHING_QUEUE, timeout_s=10)
            async with await browsers[4].signin("principal") as busy:
                assert busy.status == 503, "a password that was never checked is no failure"
                assert (await busy.json())["error"] == "busy"
                assert int(busy.headers["Retry-After"]) >= 1
        assert await asyncio.gather(*queued) == [200] * 8
        stats = console.statistics()
        assert (stats["signin_busy"], stats["signin_failed_known"]) == (1, 0)
        assert console.signin.throttle.failures(source_of("127.0.0.14")) == 0
        assert await signin_status(browsers[4], "principal") == 200


# --- sessions ------------------------------------------------------------------------------------


async def test_sessions_are_capped_per_user_and_never_end_another_users(site: Site) -> None:
    async with start_console(site_console(site, sessions_per_user=4)) as console:
        assert console.url is not None
        async with browser_at(console.url) as principal, browser_at(console.url) as office:
            assert await signin_status(principal, "principal") == 200
            async with await office.signin("office") as first:
                first_token = first.cookies[COOKIE].value
            # Past the old global bound of 256 sessions.
            for _ in range(260):
                assert await signin_status(office, "office") == 200
            assert console.sessions.of("office") == 4 and console.sessions.of("principal") == 1
            assert console.statistics()["sessions_evicted"] == 257
            async with principal.http.get(console.url + "api/session") as still:
                assert still.status == 200, "one user's sign-ins never sign another out"
            async with (
                aiohttp.ClientSession() as bare,
                bare.get(
                    console.url + "api/session", headers={"Cookie": f"{COOKIE}={first_token}"}
                ) as oldest,
            ):
                assert oldest.status == 401, "that user's oldest session ended"


async def test_session_cookie_is_secure_httponly_strict_and_ends_with_the_browser(
    console: Console,
) -> None:
    assert console.url is not None
    async with browser_at(console.url) as browser, await browser.signin("office") as response:
        assert response.status == 200
        raw = response.headers["Set-Cookie"]
        cookie = response.cookies[COOKIE]
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict", raw
    assert not cookie["max-age"] and not cookie["expires"], f"a session cookie, not {raw}"


# --- plain HTTP ----------------------------------------------------------------------------------


def campus_with_console(**console: Any) -> dict[str, Any]:
    raw = tomllib.loads(DEMO_CAMPUS.read_text(encoding="utf-8"))
    return {**raw, "console": console}


def test_plain_http_on_a_network_address_is_refused_unless_the_campus_file_says_so() -> None:
    with pytest.raises(ConfigError, match=r"console.*10\.20\.0\.5.*allow_plain_http = true"):
        parse_config(campus_with_console(host="10.20.0.5"))
    allowed = parse_config(campus_with_console(host="10.20.0.5", allow_plain_http=True))
    assert allowed.console is not None and not allowed.console.https
    tls = parse_config(campus_with_console(host="10.20.0.5", cert="c.pem", key="k.pem"))
    assert tls.console is not None and tls.console.https
    for loopback in ("127.0.0.1", "::1", "localhost"):
        assert parse_config(campus_with_console(host=loopback)).console is not None
    with pytest.raises(ConfigError, match=r"console\.public_url"):
        parse_config(campus_with_console(host="0.0.0.0", cert="c.pem", key="k.pem"))


async def test_a_console_built_around_the_check_still_refuses_to_start(site: Site) -> None:
    plain = site_console(site).config.model_copy(update={"host": "0.0.0.0"})
    assert site.gateway is not None
    with pytest.raises(ConfigError, match="allow_plain_http"):
        # Bounded: a console that did start would serve until cancelled.
        async with asyncio.timeout(10):
            await Console(site.gateway, plain).run()


# --- origins -------------------------------------------------------------------------------------


async def test_posts_from_an_origin_the_config_does_not_name_are_refused(console: Console) -> None:
    assert console.url is not None
    port = int(console.url.rsplit(":", 1)[1].strip("/"))
    rebound = f"console.evil.example:{port}"
    async with browser_at(console.url) as browser:
        # A DNS-rebinding page: its own name in Host, and an Origin that matches it.
        async with await browser.signin(
            "office", Host=rebound, Origin=f"http://{rebound}"
        ) as response:
            assert response.status == 403 and (await response.json())["error"] == "cross_origin"
        async with browser.http.post(
            console.url + "api/signin", json={"name": "office", "password": "x"}
        ) as no_origin:
            assert no_origin.status == 403, "a POST that names no origin is not the page"
        assert await signin_status(browser, "office", None) == 200
        async with await browser.signin("office", Origin="null", Referer=console.url) as ref:
            assert ref.status == 200, "the Referer stands in for an opaque Origin"
        assert await signin_status(browser, "office") == 200
    for same in ("http://localhost", "http://[::1]"):
        assert f"{same}:{port}" in console.origins


async def test_the_configured_public_url_is_the_origin_posts_may_come_from(site: Site) -> None:
    public = "https://Console.School.example:443/"
    async with start_console(site_console(site, public_url=public)) as console:
        assert console.url is not None
        assert console.origins == {"https://console.school.example"} == {origin_of(public)}
        async with browser_at(console.url) as browser:
            assert await signin_status(browser, "office") == 403, "not the address people use"
            async with await browser.signin(
                "office", Origin="https://console.school.example"
            ) as response:
                assert response.status == 200


def test_allowed_origins_must_be_origins() -> None:
    with pytest.raises(ValueError, match="is not an origin"):
        ConsoleConfig(allowed_origins=("https://console.example/path",))
    with pytest.raises(ValueError, match=r"http\(s\)"):
        ConsoleConfig(public_url="console.example")


# --- the log -------------------------------------------------------------------------------------


async def test_failed_signins_log_the_address_and_never_the_submitted_name(
    console: Console,
) -> None:
    assert console.url is not None
    secret = "Tr0ub4dor&3-in-the-name-field"
    async with browser_at(console.url, "127.0.0.7") as browser:
        with capture_logs() as logs:
            assert await signin_status(browser, secret, "x") == 401
            assert await signin_status(browser, "office", "wrong") == 401
    failed = [e for e in logs if e["event"] == "console.signin_failed"]
    assert len(failed) == 2 and all(e["remote"] == "127.0.0.7" for e in failed)
    assert secret not in repr(logs) and "office" not in repr(failed)
    stats = console.statistics()
    assert (stats["signin_failed_known"], stats["signin_failed_unknown"]) == (1, 1)


# --- the doc -------------------------------------------------------------------------------------


def test_the_documented_console_section_is_valid_and_names_every_setting() -> None:
    doc = (DEMO_CAMPUS.parents[1] / "docs" / "console.md").read_text(encoding="utf-8")
    block = doc.split("## Configure it", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    section = tomllib.loads(block)["console"]
    # The doc shows a placeholder hash; everything else is checked as written.
    for user in section["users"]:
        user["password_hash"] = hash_password("documented", n=2**4)
    config = ConsoleConfig.model_validate(section)
    assert config.https and config.origins(config.port) == {
        "https://console.lincoln-high.example:8443"
    }
    assert set(ConsoleConfig.model_fields) == set(section), "every setting is in the example"
