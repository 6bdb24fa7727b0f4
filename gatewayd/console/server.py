"""The console's web server: sign-in, sessions, CSRF, the campus snapshot, commands, SSE.

Every action goes through the gateway's ``handle_command`` with a full command envelope
carrying the signed-in user's actor: the console has no other way to move a door.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from gatewayd.console.actions import (
    ConsoleRequest,
    allowed_actions,
    authorize,
    envelope,
    parse_request,
    sign_envelope,
)
from gatewayd.console.after import AfterPages
from gatewayd.console.config import ConsoleConfig, ConsoleUser
from gatewayd.console.live import Live
from gatewayd.console.passwords import is_demo_hash
from gatewayd.console.sessions import Session, Sessions
from gatewayd.console.signin import Signin
from gatewayd.console.view import GatewayLike, layout
from gatewayd.console.web import (
    SignedOut,
    check_post,
    error_response,
    json_body,
    set_session_cookie,
    sign_in,
)
from gatewayd.kernel.command import Action
from gatewayd.kernel.errors import CommandError, ConfigError
from gatewayd.security.keys import ServerKeys

log = structlog.get_logger(__name__)

COOKIE = "gatewayd_session"
#: A comment line keeps idle event streams (and proxies) from timing out; also how often an
#: open stream notices that its session has expired.
HEARTBEAT_S = 15.0
#: How long shutdown waits for open connections.
SHUTDOWN_S = 2.0
MAX_BODY_BYTES = 16 * 1024

STATIC = Path(str(resources.files("gatewayd.console") / "static"))
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Console:
    """The operator console for one gateway; run it in the gateway's task group."""

    def __init__(
        self,
        gateway: GatewayLike,
        config: ConsoleConfig,
        *,
        keys: ServerKeys | None = None,
        demo: bool = False,
    ) -> None:
        self.gateway = gateway
        self.config = config
        self.demo = demo
        self.sessions = Sessions(
            idle_s=config.session_idle_s,
            max_s=config.session_max_s,
            per_user=config.sessions_per_user,
        )
        self.signin = Signin(config)
        self.live = Live(gateway)
        #: Reports, floor plans and the CAP feed (gatewayd.console.after).
        self.after = AfterPages(gateway, self._session)
        #: ``http(s)://host:port/`` once listening.
        self.url: str | None = None
        #: Origins a POST may come from; set once the port is known (``config.origins``).
        self.origins: frozenset[str] = frozenset()
        self.refused = 0
        #: Keys the console signs with (``security.console_keys``; DEMO keys in demo mode).
        self._server_keys = keys if keys is not None else ServerKeys(None, demo=demo)
        # Request tasks still running; shutdown waits for them so that none outlives run().
        self._requests: set[asyncio.Task[Any]] = set()
        self.app = self._make_app()

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC, append_version=False)
        app.router.add_get("/api/session", self._session_info)
        app.router.add_post("/api/signin", self._signin)
        app.router.add_post("/api/signout", self._signout)
        app.router.add_get("/api/campus", self._campus)
        app.router.add_post("/api/command", self._command)
        app.router.add_get("/api/events", self._events)
        self.after.add_routes(app)
        app.on_response_prepare.append(self._headers)
        app.on_shutdown.append(self._on_shutdown)
        return app

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self, started: Callable[[], None] = lambda: None) -> None:
        """Serve until cancelled; ``started`` is called once the port is open."""
        self._refuse_unsafe()
        context = self._ssl_context()
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_S)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port, ssl_context=context)
            await site.start()
            host, port = runner.addresses[0][:2]
            host = f"[{host}]" if ":" in host else host
            self.url = f"{'https' if context else 'http'}://{host}:{port}/"
            self.origins = self.config.origins(port)
            if context is None and not self.config.loopback:
                log.warning(
                    "console.plain_http",
                    url=self.url,
                    why="console.allow_plain_http = true: passwords cross the network in clear",
                )
            log.info(
                "console.listening",
                url=self.url,
                origins=sorted(self.origins),
                users=len(self.config.users),
            )
            started()
            await self.live.run()
        finally:
            self.live.close()
            await runner.cleanup()
            # aiohttp cancels the handlers of connections it closed but does not wait for them.
            if self._requests:
                await asyncio.wait(list(self._requests), timeout=SHUTDOWN_S)

    def _refuse_unsafe(self) -> None:
        # Checked again here: a config built with model_copy() skipped its validators.
        problem = self.config.plain_http_problem()
        if problem:
            raise ConfigError("console", [problem])
        demo_users = [u.name for u in self.config.users if is_demo_hash(u.password_hash)]
        if demo_users and not self.demo:
            raise ConfigError(
                "console",
                [
                    f"console.users {', '.join(demo_users)}: demo passwords outside demo mode;"
                    " set new ones with `gatewayd console-passwd`"
                ],
            )

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.config.cert is None or self.config.key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.config.cert, self.config.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("console", [f"console.cert/key: {exc}"]) from exc
        return context

    async def _on_shutdown(self, app: web.Application) -> None:
        self.live.close()

    def statistics(self) -> dict[str, Any]:
        return {
            "sessions": len(self.sessions),
            "sessions_evicted": self.sessions.evicted,
            "refused": self.refused,
            **self.signin.statistics(),
            **self.live.statistics(),
        }

    # --- middleware ------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Track each request task; refuse cross-site POSTs (origin, JSON only, CSRF token)."""
        task = asyncio.current_task()
        if task is not None and task not in self._requests:
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
        try:
            refusal = self._check_post(request) if request.method == "POST" else None
            return refusal or await handler(request)
        except SignedOut as exc:
            return error_response(401, "signed_out", str(exc))

    def _check_post(self, request: web.Request) -> web.Response | None:
        return check_post(
            request,
            self.origins,
            csrf=lambda: self._session(request, touch=False).csrf,
            settings="console.public_url, console.allowed_origins",
        )

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.secure:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")

    def _session(self, request: web.Request, *, touch: bool = True) -> Session:
        session = self.sessions.get(request.cookies.get(COOKIE), touch=touch)
        if session is None:
            raise SignedOut("sign in first (no session, or it has expired)")
        return session

    # --- pages and sessions ----------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    def _whoami(self, session: Session) -> dict[str, Any]:
        user = session.user
        return {
            "name": user.name,
            "display": user.display or user.name,
            "actor": user.actor,
            "roles": sorted(user.roles),
            "actions": allowed_actions(user.roles),
            "csrf": session.csrf,
            "idle_s": self.config.session_idle_s,
        }

    async def _session_info(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, **self._whoami(self._session(request))})

    async def _signin(self, request: web.Request) -> web.StreamResponse:
        user = await sign_in(request, self.signin)
        if isinstance(user, web.Response):
            return user
        session = self.sessions.create(user)
        log.info("console.signin", name=user.name, actor=user.actor, remote=request.remote)
        response = web.json_response({"ok": True, **self._whoami(session)})
        set_session_cookie(response, COOKIE, session.token,
                           secure=self.config.https or self.config.loopback)  # fmt: skip
        return response

    async def _signout(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request, touch=False)
        self.sessions.end(session.token)
        log.info("console.signout", name=session.user.name)
        response = web.json_response({"ok": True})
        response.del_cookie(COOKIE, path="/")
        return response

    # --- campus and commands -----------------------------------------------------------------

    async def _campus(self, request: web.Request) -> web.StreamResponse:
        self._session(request)
        return web.json_response(
            {"layout": layout(self.gateway.campus, self.gateway.policy), **self.live.snapshot()}
        )

    async def _command(self, request: web.Request) -> web.StreamResponse:
        user = self._session(request).user
        try:
            wanted = parse_request(await json_body(request))
            authorize(user, wanted, responder_max_s=self.gateway.policy.responder_max_s)
            body = sign_envelope(
                envelope(user, wanted), self._server_keys, site=self.gateway.campus.site
            )
        except CommandError as exc:
            return self._refuse(user, exc, request)
        log.info(
            "console.command",
            name=user.name,
            actor=user.actor,
            id=body["id"],
            action=body["action"],
            scope=wanted.scope,
            door=wanted.door,
        )
        # aiohttp does not cancel a handler when the browser goes away: a lockdown that was
        # asked for runs to completion whatever happens to the page.
        reply = await self.gateway.handle_command(json.dumps(body).encode())
        self._feed_reply(user, wanted, reply)
        return web.json_response(reply)

    def _refuse(self, user: ConsoleUser, exc: CommandError, request: web.Request) -> web.Response:
        self.refused += 1
        status = 403 if exc.code == "forbidden" else 400
        # Until refusals reach the gateway's audit log through handle_command, the log and
        # the feed are where they are recorded.
        log.warning(
            "console.refused",
            name=user.name,
            actor=user.actor,
            error=exc.code,
            message=str(exc),
            remote=request.remote,
        )
        self.live.add_feed(
            {
                "kind": "command",
                "severity": "warning",
                "text": f"refused {user.name} ({user.actor}): {exc}",
            }
        )
        return error_response(status, exc.code, str(exc))

    def _feed_reply(self, user: ConsoleUser, wanted: ConsoleRequest, reply: dict[str, Any]) -> None:
        where = wanted.scope or (f"door/{wanted.door}" if wanted.door else "")
        ok = bool(reply.get("ok"))
        severity = "info" if ok else ("high" if reply.get("error") == "unconfirmed" else "warning")
        building = None
        if wanted.door and wanted.door in self.gateway.campus.doors:
            building = self.gateway.campus.doors[wanted.door].building
        elif where.startswith("building/"):
            building = where.removeprefix("building/")
        self.live.add_feed(
            {
                "kind": "command",
                "severity": severity,
                "building": building,
                "drill": wanted.action is Action.DRILL or bool(reply.get("drill")),
                "text": f"{wanted.action} {where} by {user.actor}: "
                f"{'ok' if ok else reply.get('error')} - {reply.get('message', '')}",
                "latency_ms": reply.get("latency_ms") if ok or reply.get("doors") else None,
            }
        )

    # --- live updates --------------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: a snapshot, then door, scope and feed changes as they happen."""
        session = self._session(request)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        queue = self.live.subscribe()
        try:
            await _send(response, "snapshot", self.live.snapshot())
            while True:
                message: tuple[str, Any] | None
                try:
                    async with asyncio.timeout(HEARTBEAT_S):
                        message = await queue.get()
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    message = ("heartbeat", None)
                if not self.sessions.alive(session):
                    await _send(response, "signed_out", {"message": "session expired"})
                    break
                if message is None:
                    break
                if message[0] != "heartbeat":
                    await _send(response, *message)
        except (ConnectionResetError, ConnectionError):
            log.debug("console.stream_closed", name=session.user.name)
        finally:
            self.live.unsubscribe(queue)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response


async def _send(response: web.StreamResponse, name: str, data: Any) -> None:
    payload = json.dumps(data, separators=(",", ":"))
    await response.write(f"event: {name}\ndata: {payload}\n\n".encode())
