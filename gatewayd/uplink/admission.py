"""Incoming commands in two bounded lanes: what looks signed by a known actor goes first.

A flood on ``cmd`` (garbage, unsigned, forged) must never delay a real lockdown. Each message
is sorted on arrival by a cheap look at its bytes (no JSON parsing, no signature check): one
that names a known actor and carries a signature of the right length goes in the trusted
lane, everything else in the other. Workers always take from the trusted lane first. Both
lanes are bounded: when the other lane is full its oldest message is dropped (and counted);
when the trusted lane is full (someone forges known actors at volume) its oldest goes the
same way, so the newest, freshest command still gets in. The signature is checked later by
the guard: the lanes only order the work.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Messages waiting per lane at most.
TRUSTED_LANE = 256
OTHER_LANE = 1024
#: Replies to refused, unauthenticated messages at most per second (a flood gets silence).
UNTRUSTED_REPLIES_PER_S = 20.0

_ACTOR = re.compile(rb'"actor"\s*:\s*"([^"\\]{1,128})"')
_SIG = re.compile(rb'"sig"\s*:\s*"[A-Za-z0-9+/=]{86,90}"')


@dataclass(slots=True)
class Incoming:
    """One command message as it came off the wire."""

    payload: bytes
    #: ``time.monotonic_ns()`` when it was read from the broker: latencies start here.
    arrived_ns: int
    #: The MQTT 5 properties (response topic, correlation data), opaque here.
    properties: Any
    trusted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def looks_signed(payload: bytes, actors: frozenset[str], max_bytes: int) -> bool:
    """Names a known actor and carries a signature-sized ``sig``: worth checking first."""
    if len(payload) > max_bytes:
        return False
    match = _ACTOR.search(payload)
    if match is None or match.group(1).decode("utf-8", "replace") not in actors:
        return False
    return _SIG.search(payload) is not None


class Admission:
    """The two lanes between the MQTT reader and the command workers."""

    def __init__(self, classify: Callable[[bytes], bool]) -> None:
        self._classify = classify
        self._trusted: deque[Incoming] = deque()
        self._other: deque[Incoming] = deque()
        #: One count per queued message: each offer wakes one worker, not all of them (an
        #: Event woke all 32 per message, most of the loop's time under a flood).
        self._queued = asyncio.Semaphore(0)
        self._tokens = UNTRUSTED_REPLIES_PER_S
        self._refilled = time.monotonic()
        self.stats = dict.fromkeys(
            ("trusted", "other", "dropped_trusted", "dropped_other", "replies_suppressed"), 0
        )

    def offer(self, message: Incoming) -> None:
        """Queue a message; never blocks (a full lane drops its oldest)."""
        message.trusted = self._classify(message.payload)
        lane, bound, name = (
            (self._trusted, TRUSTED_LANE, "trusted")
            if message.trusted
            else (self._other, OTHER_LANE, "other")
        )
        if len(lane) >= bound:
            # The newcomer takes the dropped message's place: the count stays as it is.
            lane.popleft()
            self.stats[f"dropped_{name}"] += 1
        else:
            self._queued.release()
        lane.append(message)
        self.stats[name] += 1

    async def take(self) -> Incoming:
        """The next message: the trusted lane first."""
        await self._queued.acquire()
        return self._trusted.popleft() if self._trusted else self._other.popleft()

    def may_reply(self, message: Incoming, refused: bool) -> bool:
        """Replies to refused messages from nobody known are rate-limited; others always go."""
        if message.trusted or not refused:
            return True
        now = time.monotonic()
        self._tokens = min(
            UNTRUSTED_REPLIES_PER_S,
            self._tokens + (now - self._refilled) * UNTRUSTED_REPLIES_PER_S,
        )
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.stats["replies_suppressed"] += 1
        return False

    def __len__(self) -> int:
        return len(self._trusted) + len(self._other)

    def statistics(self) -> dict[str, int]:
        return {**self.stats, "queued": len(self)}
