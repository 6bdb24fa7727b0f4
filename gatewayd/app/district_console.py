"""``gatewayd district console``: the district view in a browser, for signed-in district users.

Every school's state, door counts, heartbeat age and verdict (``ok``, ``stale``,
``unreachable``), refreshed from the district brokers; buttons that send one command per
school exactly as ``gatewayd district lockdown`` does (signed with the district actor's key,
sent on every path, re-signed and resent until each school answers). Sign-in, sessions and
sign-in throttling are the school console's own (:mod:`gatewayd.console`); the users are
listed in ``[[console.users]]`` of district.toml, with hashes from ``gatewayd console-passwd``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from pydantic import Field

from gatewayd.app.district import District, SchoolStatus, district_command, school_status
from gatewayd.app.district_cli import ACTIONS
from gatewayd.app.district_page import PAGE, SCRIPT
from gatewayd.console.config import ConsoleConfig, ConsoleUser
from gatewayd.console.passwords import parse_hash
from gatewayd.console.server import MAX_BODY_BYTES, SECURITY_HEADERS
from gatewayd.console.sessions import Session, Sessions
from gatewayd.console.signin import Signin
from gatewayd.console.web import (
    SignedOut,
    check_post,
    error_response,
    json_body,
    set_session_cookie,
    sign_in,
)
from gatewayd.kernel.errors import ConfigError
from gatewayd.kernel.validation import Model, validated
from gatewayd.security.roles import Role

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = structlog.get_logger(__name__)

COOKIE = "gatewayd_district_session"
HAZARDS = ("tornado", "hazmat", "earthquake", "severe_weather", "bomb")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DistrictUser(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    password_hash: str
    display: str = ""


class DistrictConsoleSection(Model):
    """``[console]`` of district.toml."""

    #: Loopback by default: put a TLS proxy in front, or give cert and key.
    host: str = "127.0.0.1"
    port: int = Field(default=8450, ge=0, le=65535)
    cert: str | None = None
    key: str | None = None
    allow_plain_http: bool = False
    public_url: str | None = None
    #: How often every school's retained state is read again.
    refresh_s: float = Field(default=2.0, ge=0.2, le=300)
    users: tuple[DistrictUser, ...] = ()


def console_settings(raw: dict[str, Any], where: str, *, actor: str) -> tuple[ConsoleConfig, float]:
    """The school console's settings for the district's users, and the refresh interval."""
    section = validated(DistrictConsoleSection, raw, f"{where} [console]")
    problems = []
    for n, user in enumerate(section.users):
        try:
            parse_hash(user.password_hash)
        except ValueError as exc:
            problems.append(f"console.users[{n}]({user.name}).password_hash: {exc}")
    if not section.users:
        problems.append("console.users: nobody may sign in; add [[console.users]]")
    if problems:
        raise ConfigError(where, problems)
    # Built without validation because the school console only admits its local roles;
    # here every user is a district user, and what they send is signed as the district actor.
    users = tuple(
        ConsoleUser.model_construct(name=u.name, password_hash=u.password_hash, actor=actor,
                                    roles=frozenset({Role.DISTRICT}), display=u.display or u.name)
        for u in section.users
    )  # fmt: skip
    try:
        config = ConsoleConfig(host=section.host, port=section.port, cert=section.cert,
                               key=section.key, allow_plain_http=section.allow_plain_http,
                               public_url=section.public_url, users=users)  # fmt: skip
    except ValueError as exc:
        raise ConfigError(where, [f"console: {exc}"]) from exc
    return config, section.refresh_s


class DistrictConsole:
    """The district page and its API; ``run()`` serves until cancelled."""

    def __init__(
        self, district: District, config: ConsoleConfig, key: Ed25519PrivateKey,
        *, refresh_s: float = 2.0, status_timeout_s: float = 2.0,
    ) -> None:  # fmt: skip
        self.district = district
        self.config = config
        self.key = key
        self.refresh_s = refresh_s
        self.status_timeout_s = status_timeout_s
        self.sessions = Sessions(idle_s=config.session_idle_s, max_s=config.session_max_s,
                                 per_user=config.sessions_per_user)  # fmt: skip
        self.signin = Signin(config)
        self.rows: list[SchoolStatus] = []
        #: Wall-clock time of the last completed refresh.
        self.checked_at: float | None = None
        #: The last command per school: what the page shows under its buttons.
        self.last: dict[str, dict[str, Any]] = {}
        self.url: str | None = None
        self.origins: frozenset[str] = frozenset()
        self._busy = asyncio.Lock()
        self.app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY_BYTES)
        for method, path, handler in (
            ("GET", "/", self._page), ("GET", "/district.js", self._script),
            ("GET", "/api/session", self._session_info), ("POST", "/api/signin", self._signin),
            ("POST", "/api/signout", self._signout), ("GET", "/api/schools", self._schools),
            ("POST", "/api/command", self._command),
        ):  # fmt: skip
            self.app.router.add_route(method, path, handler)
        self.app.on_response_prepare.append(self._headers)

    async def run(self, started: Callable[[], None] = lambda: None) -> None:
        problem = self.config.plain_http_problem()
        if problem:
            raise ConfigError("console", [problem])
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            context = None
            if self.config.cert and self.config.key:
                import ssl

                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.load_cert_chain(self.config.cert, self.config.key)
            site = web.TCPSite(runner, self.config.host, self.config.port, ssl_context=context)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.url = f"{'https' if context else 'http'}://{host}:{port}/"
            self.origins = self.config.origins(port)
            log.info("district_console.listening", url=self.url, schools=len(self.rows))
            started()
            while True:
                await self.refresh()
                await asyncio.sleep(self.refresh_s)
        finally:
            await runner.cleanup()

    async def refresh(self) -> None:
        """Read every school's retained state again, all schools at once."""
        rows = await asyncio.gather(
            *(school_status(self.district, s, self.status_timeout_s) for s in self.district.schools)
        )
        self.rows, self.checked_at = list(rows), time.time()

    # --- guard -----------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST":
            try:
                refusal = check_post(
                    request,
                    self.origins,
                    csrf=lambda: self._csrf(request),
                    settings="district.toml's [console] public_url",
                )
            except SignedOut as exc:
                return error_response(401, "signed_out", str(exc))
            if refusal is not None:
                return refusal
        elif (
            request.path.startswith("/api/")
            and request.path != "/api/session"
            and self._session(request) is None
        ):
            return error_response(401, "signed_out", "sign in first")
        return await handler(request)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)

    def _csrf(self, request: web.Request) -> str:
        session = self._session(request, touch=False)
        if session is None:
            raise SignedOut("sign in first")
        return session.csrf

    def _session(self, request: web.Request, *, touch: bool = True) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE), touch=touch)

    # --- handlers --------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=PAGE, content_type="text/html")

    async def _script(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=SCRIPT, content_type="application/javascript")

    async def _session_info(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        if session is None:
            return error_response(401, "signed_out", "sign in first")
        return web.json_response({"ok": True, "name": session.user.name, "csrf": session.csrf,
                                  "display": session.user.display,
                                  "actor": self.district.section.actor})  # fmt: skip

    async def _signin(self, request: web.Request) -> web.StreamResponse:
        user = await sign_in(request, self.signin)
        if isinstance(user, web.Response):
            return user
        session = self.sessions.create(user)
        log.info("district_console.signin", name=user.name, remote=request.remote)
        response = web.json_response({"ok": True, "name": user.name, "csrf": session.csrf})
        set_session_cookie(response, COOKIE, session.token,
                           secure=self.config.https or self.config.loopback)  # fmt: skip
        return response

    async def _signout(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request, touch=False)
        if session is not None:
            self.sessions.end(session.token)
        response = web.json_response({"ok": True})
        response.del_cookie(COOKIE, path="/")
        return response

    async def _schools(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({
            "ok": True, "checked_at": self.checked_at, "actions": list(ACTIONS),
            "schools": [{**r.as_json(), "last": self.last.get(r.school)} for r in self.rows],
        })  # fmt: skip

    async def _command(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        assert session is not None
        body = await json_body(request)
        action, wanted, hazard = body.get("action"), body.get("schools"), body.get("hazard")
        unknown = sorted(set(body) - {"action", "schools", "hazard"})
        if unknown:
            return error_response(400, "bad_request", f"unknown fields: {', '.join(unknown)}")
        if action not in ACTIONS:
            return error_response(400, "bad_request", f"action: one of {', '.join(ACTIONS)}")
        if action == "shelter" and hazard not in HAZARDS:
            return error_response(400, "bad_request", f"hazard: one of {', '.join(HAZARDS)}")
        if wanted != "all" and not (isinstance(wanted, list) and wanted
                                    and all(isinstance(s, str) for s in wanted)):  # fmt: skip
            return error_response(400, "bad_request", 'schools: "all" or a list of school ids')
        try:
            schools = self.district.select("all" if wanted == "all" else ",".join(wanted))
        except ConfigError as exc:
            return error_response(400, "bad_request", "; ".join(exc.problems))
        command: dict[str, Any] = {"actor": self.district.section.actor, "action": action,
                                   "scope": "campus", "params": {}}  # fmt: skip
        if action == "shelter":
            command["params"] = {"hazard": hazard}
        ids = [s.id for s in schools]
        log.info("district_console.command", name=session.user.name, action=action, schools=ids)
        # One operation at a time: a second click waits for the first instead of racing it.
        async with self._busy:
            timeout_s = self.district.section.timeout_s
            outcomes = await district_command(self.district, schools, command, self.key,
                                              timeout_s=timeout_s)  # fmt: skip
        for o in outcomes:
            self.last[o.school] = {"action": action, "by": session.user.name, **o.as_json()}
        log.info("district_console.done", name=session.user.name, action=action,
                 results={o.school: o.result for o in outcomes})  # fmt: skip
        ok = all(o.result == "confirmed" for o in outcomes)
        return web.json_response({"ok": ok, "outcomes": [o.as_json() for o in outcomes]})


def console_command(args: argparse.Namespace, district: District) -> int:
    """``gatewayd district console``: serve until interrupted."""
    from gatewayd.security.keys import load_private_key

    config, refresh_s = console_settings(district.console, district.source,
                                         actor=district.section.actor)  # fmt: skip
    changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    config = config.model_copy(update=changes)
    console = DistrictConsole(district, config, load_private_key(district.key_path),
                              refresh_s=refresh_s)  # fmt: skip

    def started() -> None:
        print(f"district console on {console.url} ({len(district.schools)} schools)", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(console.run(started))
    return 0
