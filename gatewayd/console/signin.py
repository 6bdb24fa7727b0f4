"""Sign-in checks: growing waits per address and address + name, a bounded hash queue.

A sign-in is refused with a wait (429) when its address or pair must wait, answered 503 when
the hash queue is full (its password never checked, so no failure), and otherwise checked
in a worker thread. Nothing here logs a submitted name.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import structlog

from gatewayd.console.config import ConsoleConfig, ConsoleUser
from gatewayd.console.passwords import hash_password, verify_password

log = structlog.get_logger(__name__)

#: Throttle keys (addresses and address+name pairs) kept at most; the stalest go first.
MAX_THROTTLE_KEYS = 10_000
#: Sign-ins from one address whose password check may be under way at once.
MAX_IN_FLIGHT_PER_ADDRESS = 2
#: What a sign-in refused for that tells the browser to wait, in seconds.
IN_FLIGHT_RETRY_S = 1.0
#: A key with no failure for this long (at least twice the longest wait) starts afresh.
FORGET_S = 3600.0
#: Password checks running at once (each is ~0.1 s of CPU in a thread), and checks running or
#: waiting at most; past that a sign-in is answered 503 and counts as nothing.
HASHING_AT_ONCE, HASHING_QUEUE = 2, 8
#: What a 503 for a full hash queue tells the browser to wait, in seconds.
BUSY_RETRY_S = 2
#: ``console.signin_busy`` is logged at most this often.
BUSY_LOG_INTERVAL_S = 10.0

Clock = Callable[[], float]


def source_of(remote: str | None) -> str:
    """The throttling key of a client address: IPv4 as is, IPv6 by its /64 network.

    One machine on IPv6 picks addresses from its /64 at will, so a single address would be
    no key at all.
    """
    if not remote:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last: float = 0.0
    #: No sign-in is checked for this key before then.
    next_try: float = 0.0


class SigninThrottle:
    """Growing waits after failed sign-ins, per source address and per address + name.

    Never per name alone: a wrong password typed from one address never keeps the same name
    out from another. Each key gets some free failures, then waits ``base_delay_s`` doubled
    with every further failure up to ``max_delay_s``; a key quiet for ``FORGET_S`` is
    forgotten, and a successful sign-in clears its address + name pair.
    """

    def __init__(
        self,
        *,
        free_per_name: int,
        free_per_address: int,
        base_delay_s: float,
        max_delay_s: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.free_per_name = free_per_name
        self.free_per_address = free_per_address
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self._clock = clock
        self._forget_s = max(FORGET_S, 2 * max_delay_s)
        self._keys: OrderedDict[tuple[str, ...], _Failures] = OrderedDict()
        self._in_flight: dict[str, int] = {}
        # Names are kept only as keyed digests: a password typed into the name field never
        # sits in memory in clear beyond the request.
        self._salt = secrets.token_bytes(16)
        #: Sign-ins refused because their address or pair had to wait, since start.
        self.throttled = 0

    def _pair(self, address: str, name: str) -> tuple[str, ...]:
        digest = hashlib.blake2b(name.encode(), key=self._salt, digest_size=16).hexdigest()
        return ("pair", address, digest)

    def _entry(self, key: tuple[str, ...], now: float) -> _Failures | None:
        entry = self._keys.get(key)
        if entry is not None and now - entry.last >= self._forget_s:
            del self._keys[key]
            return None
        return entry

    def retry_after_s(self, address: str, name: str) -> float:
        """Seconds until ``name`` may be tried from ``address``; 0 when it may be now."""
        now = self._clock()
        waits = [
            entry.next_try - now
            for key in (("addr", address), self._pair(address, name))
            if (entry := self._entry(key, now)) is not None
        ]
        if self._in_flight.get(address, 0) >= MAX_IN_FLIGHT_PER_ADDRESS:
            waits.append(IN_FLIGHT_RETRY_S)
        wait = max([0.0, *waits])
        if wait > 0:
            self.throttled += 1
        return wait

    def begin(self, address: str) -> None:
        """A password check for ``address`` starts; pair with :meth:`end`."""
        self._in_flight[address] = self._in_flight.get(address, 0) + 1

    def end(self, address: str) -> None:
        left = self._in_flight.get(address, 0) - 1
        if left > 0:
            self._in_flight[address] = left
        else:
            self._in_flight.pop(address, None)

    def failed(self, address: str, name: str) -> float:
        """Count a wrong password; the wait it imposes on the address or pair, in seconds."""
        now = self._clock()
        waits = [
            self._fail(("addr", address), self.free_per_address, now),
            self._fail(self._pair(address, name), self.free_per_name, now),
        ]
        while len(self._keys) > MAX_THROTTLE_KEYS:
            self._keys.popitem(last=False)
        return max(waits)

    def _fail(self, key: tuple[str, ...], free: int, now: float) -> float:
        entry = self._entry(key, now) or _Failures()
        self._keys.pop(key, None)
        entry.count += 1
        entry.last = now
        wait = 0.0
        if entry.count >= free:
            wait = min(self.max_delay_s, self.base_delay_s * 2 ** min(entry.count - free, 64))
        entry.next_try = now + wait
        self._keys[key] = entry
        return wait

    def succeeded(self, address: str, name: str) -> None:
        self._keys.pop(self._pair(address, name), None)

    def failures(self, address: str) -> int:
        """Failures counted against ``address`` (forgotten ones aside)."""
        entry = self._entry(("addr", address), self._clock())
        return 0 if entry is None else entry.count


class SigninRefused(Exception):
    """A sign-in answered without a session: HTTP ``status`` with ``code``."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: float = 0) -> None:
        self.status = status
        self.code = code
        #: Whole seconds for ``Retry-After``; 0 when there is nothing to wait for.
        self.retry_after_s = max(1, math.ceil(retry_after_s)) if retry_after_s > 0 else 0
        if self.retry_after_s:
            message = f"{message}; try again in {self.retry_after_s} s"
        super().__init__(message)


@cache
def _decoy_hash() -> str:
    """A hash to check unknown names against, so they take as long as known ones."""
    return hash_password("no such user")


class Signin:
    """Decides sign-ins for one console: throttle, hash queue, password check, counts."""

    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.throttle = SigninThrottle(
            free_per_name=config.signin_free_failures,
            free_per_address=config.signin_address_free_failures,
            base_delay_s=config.signin_base_delay_s,
            max_delay_s=config.signin_max_delay_s,
        )
        self._hashing = asyncio.Semaphore(HASHING_AT_ONCE)
        #: Checks running or waiting for a slot.
        self.hashing_waiting = 0
        #: Wrong sign-ins whose name is a user, and whose name is none: counts, never names.
        self.failed_known = self.failed_unknown = 0
        #: Sign-ins answered 503 because the hash queue was full.
        self.busy = 0
        self._busy_logged = -BUSY_LOG_INTERVAL_S

    async def check(self, name: str, password: str, remote: str | None) -> ConsoleUser:
        """The user ``name`` and ``password`` sign in as; :class:`SigninRefused` otherwise."""
        address = source_of(remote)
        wait_s = self.throttle.retry_after_s(address, name)
        if wait_s > 0:
            # Not logged one by one (a flood would fill the journal); counted in statistics.
            raise SigninRefused(429, "throttled", "too many failed sign-ins from here", wait_s)
        user = self.config.user(name)
        self.throttle.begin(address)
        try:
            ok = await self._verify(password, user)
        finally:
            self.throttle.end(address)
        if not ok or user is None:
            self._failed(remote, address, name, known=user is not None)
            raise SigninRefused(401, "bad_credentials", "wrong name or password")
        self.throttle.succeeded(address, name)
        return user

    def _failed(self, remote: str | None, address: str, name: str, *, known: bool) -> None:
        if known:
            self.failed_known += 1
        else:
            self.failed_unknown += 1
        wait_s = self.throttle.failed(address, name)
        # Never the submitted name: a password typed into the name field would land in the
        # journal. Whether names existed is only counted (statistics()).
        log.warning(
            "console.signin_failed",
            remote=remote,
            failures_from_address=self.throttle.failures(address),
            wait_s=wait_s,
        )

    async def _verify(self, password: str, user: ConsoleUser | None) -> bool:
        if self.hashing_waiting >= HASHING_QUEUE:
            # A sign-in flood must not queue without bound behind the CPU-heavy hash, and a
            # check that never ran is no failure of the person who asked.
            self.busy += 1
            now = time.monotonic()
            # At most one line per interval: a flood from many addresses would fill the journal.
            if now - self._busy_logged >= BUSY_LOG_INTERVAL_S:
                self._busy_logged = now
                log.warning("console.signin_busy", refused_since_start=self.busy)
            raise SigninRefused(503, "busy", "too many sign-ins at once", BUSY_RETRY_S)
        self.hashing_waiting += 1
        try:
            async with self._hashing:
                stored = user.password_hash if user else _decoy_hash()
                # scrypt takes ~0.1 s of CPU: off the loop, so doors never wait for it.
                return await asyncio.to_thread(verify_password, password, stored)
        finally:
            self.hashing_waiting -= 1

    def statistics(self) -> dict[str, Any]:
        return {
            "signin_throttled": self.throttle.throttled,
            "signin_busy": self.busy,
            "signin_failed_known": self.failed_known,
            "signin_failed_unknown": self.failed_unknown,
        }
