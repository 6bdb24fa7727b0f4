"""Console sessions (random tokens with idle and absolute expiry) and sign-in throttling."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gatewayd.console.config import ConsoleUser

#: Sessions kept at most; signing in past this ends the least recently used one.
MAX_SESSIONS = 256
#: Throttle keys (names and addresses) kept at most; the oldest are forgotten first.
MAX_THROTTLE_KEYS = 10_000

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
    """Sessions by token, in least-recently-used order; expired ones vanish on lookup."""

    def __init__(self, *, idle_s: float, max_s: float, clock: Clock = time.monotonic) -> None:
        self.idle_s = idle_s
        self.max_s = max_s
        self._clock = clock
        self._by_token: OrderedDict[str, Session] = OrderedDict()

    def create(self, user: ConsoleUser) -> Session:
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), user, now, now)
        self._by_token[session.token] = session
        while len(self._by_token) > MAX_SESSIONS:
            self._by_token.popitem(last=False)
        return session

    def get(self, token: str | None, *, touch: bool = True) -> Session | None:
        """The live session for a cookie value, or None; ``touch`` extends the idle timer."""
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None:
            return None
        if not self.alive(session):
            del self._by_token[token]
            return None
        if touch:
            session.last_seen = self._clock()
            self._by_token.move_to_end(token)
        return session

    def alive(self, session: Session) -> bool:
        now = self._clock()
        return (
            now - session.last_seen < self.idle_s
            and now - session.created < self.max_s
            and session.token in self._by_token
        )

    def end(self, token: str) -> None:
        self._by_token.pop(token, None)

    def __len__(self) -> int:
        return len(self._by_token)


@dataclass(slots=True)
class _Failures:
    times: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class SigninThrottle:
    """Counts failed sign-ins per key; too many in the window locks the key out for a while."""

    def __init__(
        self, *, max_failures: int, window_s: float, clock: Clock = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._keys: OrderedDict[str, _Failures] = OrderedDict()
        #: Sign-ins refused because a key was locked out, since start.
        self.refused = 0

    def retry_after_s(self, *keys: str) -> float:
        """Seconds until every key may try again; 0 when none is locked out."""
        now = self._clock()
        waits = [f.locked_until - now for k in keys if (f := self._keys.get(k)) is not None]
        wait = max([0.0, *waits])
        if wait > 0:
            self.refused += 1
        return wait

    def failed(self, *keys: str) -> None:
        now = self._clock()
        for key in keys:
            entry = self._keys.pop(key, None) or _Failures()
            entry.times.append(now)
            while entry.times and now - entry.times[0] > self.window_s:
                entry.times.popleft()
            if len(entry.times) >= self.max_failures:
                entry.locked_until = now + self.window_s
                entry.times.clear()
            self._keys[key] = entry
        while len(self._keys) > MAX_THROTTLE_KEYS:
            self._keys.popitem(last=False)

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._keys.pop(key, None)
