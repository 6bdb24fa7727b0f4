"""The operator console beside a ``site`` gateway, with one user per role."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from gatewayd.console.config import ConsoleConfig, ConsoleUser
from gatewayd.console.passwords import hash_password
from gatewayd.console.server import Console
from gatewayd.console.web import CSRF_HEADER
from gatewayd.security.keys import ServerKeys
from tests.support.gateway import Site

__all__ = [
    "PASSWORDS",
    "Browser",
    "console",
    "console_config",
    "cookie_jar",
    "site_console",
    "start_console",
]

#: name -> (password, actor, roles)
PASSWORDS = {
    "office": ("office-pass-1", "front-office", ("operator",)),
    "principal": ("principal-pass-1", "principal", ("administrator",)),
    "officer": ("officer-pass-1", "unit-12", ("responder",)),
}


def console_config(**overrides: Any) -> ConsoleConfig:
    """Users hashed with a small scrypt cost so that tests stay quick."""
    users = tuple(
        ConsoleUser(
            name=name,
            password_hash=hash_password(password, n=2**10),
            actor=actor,
            roles=frozenset(roles),
            display=name.title(),
        )
        for name, (password, actor, roles) in PASSWORDS.items()
    )
    return ConsoleConfig.model_validate({"port": 0, "users": users, **overrides})


def site_console(site: Site, **overrides: Any) -> Console:
    """A console for the site's gateway, signing with the site's console keys."""
    assert site.gateway is not None
    security = site.config.security
    keys = ServerKeys(security.console_keys, demo=site.config.site.demo)
    return Console(site.gateway, console_config(**overrides), keys=keys)


@contextlib.asynccontextmanager
async def start_console(console: Console) -> AsyncIterator[Console]:
    """Run a console until the block ends; fail fast if it cannot start."""
    started = asyncio.Event()
    task = asyncio.create_task(console.run(started.set), name="test-console")
    waiter = asyncio.create_task(started.wait())
    try:
        async with asyncio.timeout(5):
            done, _ = await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        yield console
    finally:
        for t in (waiter, task):
            t.cancel()
        for t in (waiter, task):
            with contextlib.suppress(asyncio.CancelledError):
                await t


@pytest.fixture
async def console(site: Site) -> AsyncIterator[Console]:
    async with start_console(site_console(site)) as running:
        yield running


def cookie_jar(url: str) -> aiohttp.CookieJar:
    """A jar that keeps the console's cookies the way a browser does on loopback.

    aiohttp refuses cookies from IP hosts by default (``unsafe``), and sends ``Secure``
    cookies over https only, where browsers also send them to http://127.0.0.1.
    """
    return aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=url)


@dataclass
class Browser:
    """A cookie-keeping HTTP client that signs in and posts like the page does."""

    http: aiohttp.ClientSession
    base: str
    csrf: str = ""

    @property
    def origin(self) -> str:
        """What a browser sends as ``Origin`` for the page at ``base``."""
        return self.base.rstrip("/")

    async def signin(
        self, name: str, password: str | None = None, **headers: str
    ) -> aiohttp.ClientResponse:
        body = {"name": name, "password": password or PASSWORDS[name][0]}
        response = await self.http.post(
            self.base + "api/signin", json=body, headers={"Origin": self.origin, **headers}
        )
        if response.status == 200:
            self.csrf = (await response.json())["csrf"]
        return response

    async def post(self, path: str, body: Any, **headers: str) -> aiohttp.ClientResponse:
        return await self.http.post(
            self.base + path,
            json=body,
            headers={CSRF_HEADER: self.csrf, "Origin": self.origin, **headers},
        )

    async def command(self, **body: Any) -> tuple[int, dict[str, Any]]:
        response = await self.post("api/command", body)
        return response.status, await response.json()
