"""The retained ``heartbeat``: a timestamp that keeps moving while the gateway is alive.

``availability`` says ``online`` for as long as the broker the gateway talks to holds its
session; a district broker behind a bridge keeps seeing ``online`` while the school's link is
cut. The heartbeat's age tells a district when a school went stale (docs/district.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

TOPIC = "heartbeat"


class RetainedOutlet(Protocol):
    def set_retained(self, topic_suffix: str, payload: Mapping[str, Any] | str) -> None: ...


class Heartbeat:
    """``{"at": ISO time, "seq": n, "state": campus state}`` every ``interval_s``, retained."""

    def __init__(
        self, outlet: RetainedOutlet, campus_state: Callable[[], str], interval_s: float
    ) -> None:
        self._outlet = outlet
        self._campus_state = campus_state
        self.interval_s = interval_s
        #: Beats since start (a restart begins again at 1; ``at`` orders across restarts).
        self.seq = 0

    def beat(self) -> None:
        self.seq += 1
        at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self._outlet.set_retained(TOPIC, {"at": at, "seq": self.seq, "state": self._campus_state()})

    async def run(self) -> None:
        """Beat until cancelled; while disconnected only the latest beat waits to be sent."""
        while True:
            self.beat()
            await asyncio.sleep(self.interval_s)
