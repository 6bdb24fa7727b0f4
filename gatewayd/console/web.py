"""What every gatewayd web console answers the same way: errors, JSON bodies, cross-site
refusals, sign-in and the session cookie.

The school console (:mod:`gatewayd.console.server`) and the district console
(:mod:`gatewayd.app.district_console`) both build on these, so a POST from another site, a
body that is not a JSON object or a throttled sign-in is refused in one wording everywhere.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gatewayd.console.config import ConsoleUser, origin_of
from gatewayd.console.signin import Signin, SigninRefused

#: The header a page sends its session's CSRF token in, on every POST but the sign-in.
CSRF_HEADER = "X-CSRF-Token"
SIGNIN_PATH = "/api/signin"


class SignedOut(Exception):
    """The request has no live session."""


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response(
        {"ok": False, "error": code, "message": message, **extra}, status=status
    )


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; HTTP 400 naming what is wrong otherwise."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(
            text=json.dumps(
                {"ok": False, "error": "bad_request", "message": f"body is not JSON: {exc}"}
            ),
            content_type="application/json",
        ) from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"ok": false, "error": "bad_request", "message": "send a JSON object"}',
            content_type="application/json",
        )
    return body


def check_post(
    request: web.Request,
    origins: frozenset[str] | set[str],
    *,
    csrf: Callable[[], str],
    settings: str,
) -> web.Response | None:
    """Refuse a cross-site POST: foreign origin, not JSON, or (past sign-in) a wrong CSRF token.

    ``csrf`` gives the session's token (raising :class:`SignedOut` without a session);
    ``settings`` names where the allowed origins are configured, for the refusal.
    """
    refusal = _check_origin(request, origins, settings)
    if refusal is not None:
        return refusal
    if request.content_type != "application/json":
        # A cross-site HTML form cannot send JSON without a CORS preflight we never grant.
        return error_response(415, "bad_request", "send JSON (Content-Type: application/json)")
    if request.path != SIGNIN_PATH:
        expected = csrf()
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            return error_response(403, "csrf", f"missing or wrong {CSRF_HEADER} header")
    return None


def _check_origin(
    request: web.Request, origins: frozenset[str] | set[str], settings: str
) -> web.Response | None:
    """A POST must say it comes from a configured origin (``Origin``, else ``Referer``).

    Never compared with the request's own Host header: a DNS-rebinding page names its
    own host there, and its Origin matches it.
    """
    sent = request.headers.get("Origin")
    if sent is None or sent == "null":
        referer = request.headers.get("Referer")
        sent = referer if referer else sent
    if sent is None:
        # Every browser sends Origin on a POST; a request without one is not the page.
        return error_response(403, "cross_origin", "a POST needs an Origin header")
    try:
        origin = origin_of(sent)
    except ValueError:
        origin = sent
    if origin not in origins:
        return error_response(
            403, "cross_origin", f"requests from {origin[:100]} are refused ({settings})"
        )
    return None


async def sign_in(request: web.Request, signin: Signin) -> ConsoleUser | web.Response:
    """The user a sign-in request's name and password are; the refusal to send otherwise."""
    body = await json_body(request)
    name, password = body.get("name"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name:
        return error_response(400, "bad_request", "send name and password")
    try:
        return await signin.check(name, password, request.remote)
    except SigninRefused as exc:
        if not exc.retry_after_s:
            return error_response(exc.status, exc.code, str(exc))
        refusal = error_response(exc.status, exc.code, str(exc), retry_after_s=exc.retry_after_s)
        refusal.headers["Retry-After"] = str(exc.retry_after_s)
        return refusal


def set_session_cookie(
    response: web.StreamResponse, cookie: str, token: str, *, secure: bool
) -> None:
    """The session cookie: HTTP-only, same-site strict, for the whole console.

    No Max-Age: the cookie ends with the browser; the server ends the session after its idle
    or total time. ``secure`` except on an explicitly allowed plain-HTTP network address,
    where a browser would drop it (browsers keep Secure cookies from http://127.0.0.1 and
    localhost: the demo and a TLS proxy).
    """
    response.set_cookie(cookie, token, httponly=True, samesite="Strict", secure=secure, path="/")
