"""Console sessions (random tokens with idle and absolute expiry) and sign-in throttling."""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gatewayd.console.config import ConsoleUser

#: Throttle keys (addresses and address+name pairs) kept at most; the stalest go first.
MAX_THROTTLE_KEYS = 10_000
#: Sign-ins from one address whose password check may be under way at once.
MAX_IN_FLIGHT_PER_ADDRESS = 2
#: A key with no failure for this long (at least twice the longest wait) starts afresh.
FORGET_S = 3600.0

Clock = Callable[[], float]


@dataclass(slots=True)
class Session:
    """One signed-in browser: the cookie holds ``token``, the page sends ``csrf`` on POSTs."""

    token: str
    csrf: str
    user: ConsoleUser
    created: float
    last_seen: float


class Sessions:
    """Sessions by token; each user holds at most ``per_user``; expired ones vanish on lookup.

    The bound is per user, never global: however often one person (or a stolen password)
    signs in, only that person's oldest sessions end, and nobody else is signed out.
    """

    def __init__(
        self, *, idle_s: float, max_s: float, per_user: int, clock: Clock = time.monotonic
    ) -> None:
        self.idle_s = idle_s
        self.max_s = max_s
        self.per_user = per_user
        self._clock = clock
        self._by_token: dict[str, Session] = {}
        #: Tokens per user name, oldest sign-in first.
        self._by_user: dict[str, OrderedDict[str, None]] = {}
        #: Sessions ended because their user signed in once too often, since start.
        self.evicted = 0

    def create(self, user: ConsoleUser) -> Session:
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), user, now, now)
        tokens = self._by_user.setdefault(user.name, OrderedDict())
        for token in [t for t in tokens if not self.alive(self._by_token[t])]:
            self.end(token)
        while len(tokens) >= self.per_user:
            self.end(next(iter(tokens)))
            self.evicted += 1
        self._by_token[session.token] = session
        tokens[session.token] = None
        return session

    def get(self, token: str | None, *, touch: bool = True) -> Session | None:
        """The live session for a cookie value, or None; ``touch`` extends the idle timer."""
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None:
            return None
        if not self.alive(session):
            self.end(token)
            return None
        if touch:
            session.last_seen = self._clock()
        return session

    def alive(self, session: Session) -> bool:
        now = self._clock()
        return (
            now - session.last_seen < self.idle_s
            and now - session.created < self.max_s
            and session.token in self._by_token
        )

    def end(self, token: str) -> None:
        session = self._by_token.pop(token, None)
        if session is None:
            return
        tokens = self._by_user.get(session.user.name)
        if tokens is not None:
            tokens.pop(token, None)
            if not tokens:
                del self._by_user[session.user.name]

    def of(self, name: str) -> int:
        """How many sessions ``name`` holds (expired ones included until looked up)."""
        return len(self._by_user.get(name, ()))

    def __len__(self) -> int:
        return len(self._by_token)


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
            waits.append(self.base_delay_s)
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
