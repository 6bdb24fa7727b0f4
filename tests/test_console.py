"""The operator console over HTTP: sign-in, sessions, CSRF, roles, commands and live events."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from gatewayd.app.cli import main
from gatewayd.console.actions import ConsoleRequest, authorize
from gatewayd.console.config import ConsoleConfig
from gatewayd.console.passwords import (
    DEMO_SIGNINS,
    demo_hashes,
    hash_password,
    is_demo_hash,
    parse_hash,
    verify_password,
)
from gatewayd.console.server import COOKIE, Console
from gatewayd.console.sessions import Sessions
from gatewayd.kernel.command import Action
from gatewayd.kernel.errors import CommandError, ConfigError
from gatewayd.kernel.scope import Scope
from gatewayd.security.roles import permit
from tests.support.console import (
    PASSWORDS,
    Browser,
    console_config,
    cookie_jar,
    site_console,
    start_console,
)
from tests.support.gateway import Site
from tests.support.tls import Pki
from tests.support.waiting import eventually

BUILDING = "building/A"


@pytest.fixture
async def client(console: Console) -> AsyncIterator[Browser]:
    assert console.url is not None
    async with aiohttp.ClientSession(cookie_jar=cookie_jar(console.url)) as http:
        yield Browser(http, console.url)


# --- passwords, sessions, throttling (no gateway) -----------------------------------------------


def test_password_hash_has_the_documented_form_and_verifies() -> None:
    stored = hash_password("correct horse", n=2**10)
    scheme, n, r, p, _salt, _digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "1024", "8", "1")
    assert len(parse_hash(stored).digest) == 32
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsf", stored)
    assert hash_password("correct horse", n=2**10) != stored, "each hash has its own salt"


@pytest.mark.parametrize(
    "bad",
    [
        "plain",
        "scrypt$1000$8$1$c2FsdHNhbHQ=$AAAA",
        "bcrypt$10$8$1$a$b",
        "scrypt$1024$8$1$!!$AAAA",
        f"scrypt${2**22}$8$1$c2FsdHNhbHQ=${'A' * 43}=",
    ],
)
def test_malformed_or_extravagant_hashes_are_config_errors(bad: str) -> None:
    with pytest.raises(ValueError, match=r"password_hash|scrypt"):
        parse_hash(bad)


def test_demo_passwords_are_recognised_and_refused_outside_demo_mode() -> None:
    hashes = demo_hashes()
    assert all(is_demo_hash(h) for h in hashes.values())
    name, password, actor, role = DEMO_SIGNINS[0]
    assert verify_password(password, hashes[name])
    config = ConsoleConfig.model_validate(
        {"users": [{"name": name, "password_hash": hashes[name], "actor": actor, "roles": [role]}]}
    )
    console = Console(_no_gateway(), config)
    with pytest.raises(ConfigError, match="demo passwords outside demo mode"):
        console._refuse_unsafe()


def test_console_users_may_not_hold_system_or_district_roles() -> None:
    with pytest.raises(ValueError, match="console users may hold"):
        ConsoleConfig.model_validate(
            {
                "users": [
                    {
                        "name": "x",
                        "password_hash": hash_password("x", n=2**4),
                        "actor": "x",
                        "roles": ["system"],
                    }
                ]
            }
        )


def test_sessions_end_when_idle_and_at_their_absolute_limit() -> None:
    now = [0.0]
    sessions = Sessions(idle_s=10, max_s=25, per_user=8, clock=lambda: now[0])
    user = console_config().users[0]
    session = sessions.create(user)
    now[0] = 9
    assert sessions.get(session.token) is session
    now[0] = 18
    assert sessions.get(session.token) is session, "use within the idle time extends it"
    now[0] = 26
    assert sessions.get(session.token) is None, "absolute limit, however busy"
    other = sessions.create(user)
    now[0] = 37
    assert sessions.get(other.token) is None, "idle limit"


def test_console_passwd_prints_a_hash_that_verifies(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "s3cret-door")
    assert main(["console-passwd", "--cost", "10"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert verify_password("s3cret-door", printed)


def _no_gateway() -> Any:
    """Enough of a gateway for checks that never reach it."""
    return SimpleNamespace(
        doors=SimpleNamespace(doors={}),
        campus=SimpleNamespace(doors={}, all_scopes=list),
        upcoming_schedules=list,
    )


# --- sign-in, sessions and CSRF over HTTP -------------------------------------------------------


async def test_signin_sets_an_httponly_samesite_strict_cookie(client: Browser) -> None:
    response = await client.signin("office")
    assert response.status == 200
    body = await response.json()
    assert body["actor"] == "front-office" and body["roles"] == ["operator"]
    assert "release" not in body["actions"] and "lockdown" in body["actions"]
    cookie = response.cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert len(cookie.value) >= 40
    session = await client.http.get(client.base + "api/session")
    assert session.status == 200 and (await session.json())["name"] == "office"


async def test_posts_without_the_csrf_token_or_from_another_origin_are_refused(
    client: Browser,
    site: Site,
) -> None:
    assert (await client.signin("office")).status == 200
    token, client.csrf = client.csrf, "forged"
    status, body = await client.command(action="lockdown", scope=BUILDING)
    assert (status, body["error"]) == (403, "csrf")
    client.csrf = token
    response = await client.post(
        "api/command", {"action": "lockdown", "scope": BUILDING}, Origin="https://evil.example"
    )
    assert response.status == 403 and (await response.json())["error"] == "cross_origin"
    form = await client.http.post(
        client.base + "api/command", data={"action": "lockdown"}, headers={"Origin": client.origin}
    )
    assert form.status == 415, "an HTML form post (no JSON) never reaches the command path"
    assert site.gateway is not None
    assert site.gateway.engine.get(f"srp:{BUILDING}") is None


async def test_signed_out_and_expired_sessions_cannot_act(site: Site) -> None:
    assert site.gateway is not None
    console = site_console(site, session_idle_s=0.3)
    async with start_console(console):
        assert console.url is not None
        async with aiohttp.ClientSession(cookie_jar=cookie_jar(console.url)) as http:
            client = Browser(http, console.url)
            assert (await client.signin("principal")).status == 200
            await asyncio.sleep(0.5)
            status, body = await client.command(action="lockdown", scope=BUILDING)
            assert (status, body["error"]) == (401, "signed_out")
            assert (await client.signin("principal")).status == 200
            assert (await client.post("api/signout", {})).status == 200
            assert (await http.get(console.url + "api/session")).status == 401


# --- commands through the gateway ---------------------------------------------------------------


async def test_lockdown_from_the_console_locks_every_door_with_the_users_actor(
    client: Browser,
    site: Site,
) -> None:
    assert site.gateway is not None
    await client.signin("office")
    status, reply = await client.command(action="lockdown", scope=BUILDING)
    assert status == 200 and reply["ok"], reply
    doors = site.gateway.campus.resolve(Scope.parse(BUILDING))
    assert all(site.coil(d) for d in doors), "every door of the building reads locked"
    assert all(site.gateway.doors.doors[d].locked for d in doors)
    source = site.gateway.engine.get(f"srp:{BUILDING}")
    assert source is not None and source.actor == "front-office"
    assert reply["id"].startswith("console-")
    assert set(reply["latency_ms"]) == {"decided", "on_wire", "confirmed"}


async def test_roles_the_user_lacks_are_refused_before_the_gateway(
    client: Browser,
    site: Site,
) -> None:
    assert site.gateway is not None
    await client.signin("officer")
    status, body = await client.command(action="lockdown", scope=BUILDING)
    assert (status, body["ok"], body["error"]) == (403, False, "forbidden")
    assert "officer (responder) may not lockdown" in body["message"]
    status, body = await client.command(action="unlock", door="A-101")
    assert (status, body["error"]) == (403, "forbidden"), "a responder unlock is bounded"
    status, body = await client.command(
        action="unlock", door="A-101", params={"duration_s": 99_999}
    )
    assert (status, body["error"]) == (403, "forbidden")
    assert site.gateway.engine.get(f"srp:{BUILDING}") is None
    assert site.gateway.engine.get("responder:door/A-101") is None
    assert site.gateway.engine.get("manual:door/A-101") is None
    await client.signin("office")
    status, body = await client.command(action="release", scope=BUILDING)
    assert (status, body["error"]) == (403, "forbidden"), "operators trigger, admins release"


async def test_responder_unlock_is_timed_and_relocks_during_a_lockdown(
    client: Browser,
    site: Site,
) -> None:
    await client.signin("office")
    assert (await client.command(action="lockdown", scope=BUILDING))[1]["ok"]
    await client.signin("officer")
    status, reply = await client.command(action="unlock", door="A-101", params={"duration_s": 0.5})
    assert status == 200 and reply["ok"], reply
    assert not site.coil("A-101")
    await eventually(lambda: site.coil("A-101"))


async def test_bad_requests_get_a_reply_that_names_the_field(client: Browser) -> None:
    await client.signin("principal")
    status, body = await client.command(action="explode", scope=BUILDING)
    assert status == 400 and body["error"] == "bad_request" and "action" in body["message"]
    status, body = await client.command(action="lockdown", scope="building/ZZ")
    assert status == 200 and body == {**body, "ok": False, "error": "unknown_scope"}


# --- live updates -------------------------------------------------------------------------------


async def read_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    name = ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, json.loads(line[6:])


async def test_event_stream_sends_a_snapshot_then_door_scope_and_feed_changes(
    client: Browser,
    site: Site,
) -> None:
    await client.signin("office")
    assert (await client.http.get(client.base + "api/events")).status == 200
    async with client.http.get(client.base + "api/events") as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        events = read_events(stream)
        name, snapshot = await anext(events)
        assert name == "snapshot" and snapshot["doors"]["A-101"]["state"] == "unlocked"
        assert snapshot["scopes"][BUILDING]["state"] == "normal"
        assert (await client.command(action="lockdown", scope=BUILDING))[1]["ok"]
        seen: dict[str, Any] = {"doors": {}, "scopes": {}, "feed": []}
        async with asyncio.timeout(5):
            async for name, data in events:
                if name == "feed":
                    seen["feed"] += data
                else:
                    seen[name].update(data)
                if (
                    seen["doors"].get("A-101", {}).get("state") == "locked"
                    and seen["scopes"].get(BUILDING, {}).get("state") == "lockdown"
                    and any(e["kind"] == "state" for e in seen["feed"])
                ):
                    break
    command = next(e for e in seen["feed"] if e["kind"] == "command")
    assert command["latency_ms"]["confirmed"] is not None and command["building"] == "A"


async def test_event_stream_needs_a_session(client: Browser) -> None:
    response = await client.http.get(client.base + "api/events")
    assert response.status == 401


async def test_pages_carry_a_strict_content_security_policy(client: Browser) -> None:
    for path in ("", "static/app.js", "static/app.css"):
        response = await client.http.get(client.base + path)
        assert response.status == 200, path
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_console_serves_https_when_a_certificate_is_configured(
    site: Site,
    tmp_path: Path,
) -> None:
    assert site.gateway is not None
    pki = Pki(tmp_path, "console")
    issued = pki.issue("console", server=True)
    console = site_console(site, cert=str(issued.cert), key=str(issued.key))
    trust = ssl.create_default_context(cafile=str(pki.ca_file))
    async with (
        start_console(console),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        assert console.url is not None and console.url.startswith("https://127.0.0.1:")
        response = await http.post(
            console.url + "api/signin",
            ssl=trust,
            json={"name": "office", "password": PASSWORDS["office"][0]},
            headers={"Origin": console.url.rstrip("/")},
        )
        assert response.status == 200
        assert response.cookies[COOKIE]["secure"], "the cookie never travels in clear"
        assert "max-age" in response.headers["Strict-Transport-Security"]


@pytest.mark.parametrize(
    ("params", "allowed"),
    [
        ({"momentary": True}, True),
        ({"duration_s": 30}, True),
        ({"duration_s": 10_000}, False),
        ({}, False),
    ],
)
def test_console_and_authorizer_share_the_responder_bounds(
    params: dict[str, Any], allowed: bool
) -> None:
    officer = next(u for u in console_config().users if u.name == "officer")
    request = ConsoleRequest(action=Action.UNLOCK, door="A-101", params=params)
    try:
        authorize(officer, request, responder_max_s=300)
        console_says = True
    except CommandError as exc:
        assert exc.code == "forbidden"
        console_says = False
    try:
        permit(officer.roles, Action.UNLOCK, door="A-101", scope=None, params=params,
               responder_max_s=300, who="officer")  # fmt: skip
        authorizer_says = True
    except CommandError:
        authorizer_says = False
    assert console_says == authorizer_says == allowed
