"""Console sessions: random tokens with idle and absolute expiry, bounded per user."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gatewayd.console.config import ConsoleUser

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
