"""Live state for the page: the gateway's door table and scope states polled, diffed, fanned out.

The gateway has no change hook yet, so the console polls every :data:`POLL_S`; what changed
goes to each open event stream, and notable changes become entries of the event feed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict, deque
from datetime import UTC, datetime
from typing import Any

import structlog

from gatewayd.console.view import GatewayLike, door_live, scope_live

log = structlog.get_logger(__name__)

#: How often the door table and scope states are compared with what the page last saw.
POLL_S = 0.2
#: Feed entries kept for pages that connect later.
FEED_SIZE = 200
#: Messages waiting per page; a page that falls this far behind is disconnected, and its
#: browser reconnects and starts again from a fresh snapshot.
SUBSCRIBER_QUEUE = 64
#: How often the door schedules' next transitions are computed again (they change slowly).
SCHEDULES_S = 5.0
#: The srp states that are an incident rather than normal running.
_CALM = frozenset({"normal", None})

Message = tuple[str, Any] | None


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Live:
    """Current doors, scopes and feed; ``subscribe`` gives a bounded queue of changes."""

    def __init__(self, gateway: GatewayLike) -> None:
        self.gateway = gateway
        self.doors: dict[str, dict[str, Any]] = {}
        self.scopes: dict[str, dict[str, Any]] = {}
        self.feed: deque[dict[str, Any]] = deque(maxlen=FEED_SIZE)
        #: Each door schedule with its next transitions (docs/rules.md, "Door schedules").
        self.schedules: list[dict[str, Any]] = []
        self._schedules_at = float("-inf")
        self._subscribers: set[asyncio.Queue[Message]] = set()
        self._seq = itertools.count(1)
        #: Pages dropped for falling behind, since start.
        self.dropped = 0
        self.refresh(quiet=True)

    # --- subscribers -----------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[Message]:
        queue: asyncio.Queue[Message] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Message]) -> None:
        self._subscribers.discard(queue)

    def close(self) -> None:
        """End every open stream (shutdown)."""
        for queue in list(self._subscribers):
            self._drop(queue)

    def _broadcast(self, name: str, data: Any) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait((name, data))
            except asyncio.QueueFull:
                self.dropped += 1
                self._drop(queue)

    def _drop(self, queue: asyncio.Queue[Message]) -> None:
        self._subscribers.discard(queue)
        # Make room for the end marker: what was queued is stale once the page reconnects.
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)

    def snapshot(self) -> dict[str, Any]:
        return {"doors": self.doors, "scopes": self.scopes, "feed": list(self.feed),
                "schedules": self.schedules}  # fmt: skip

    # --- polling ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(POLL_S)
            self.refresh()

    def refresh(self, *, quiet: bool = False) -> None:
        """Compare the gateway with what pages saw; push the differences and feed entries."""
        doors = {d: door_live(s) for d, s in self.gateway.doors.doors.items()}
        scopes = {str(s): scope_live(self.gateway, s) for s in self.gateway.campus.all_scopes()}
        changed_doors = {d: v for d, v in doors.items() if self.doors.get(d) != v}
        changed_scopes = {s: v for s, v in scopes.items() if self.scopes.get(s) != v}
        entries = [] if quiet else [*self._state_entries(scopes), *self._fault_entries(doors)]
        self.doors, self.scopes = doors, scopes
        if changed_doors:
            self._broadcast("doors", changed_doors)
        if changed_scopes:
            self._broadcast("scopes", changed_scopes)
        for entry in entries:
            self.add_feed(entry)
        self._refresh_schedules()

    def _refresh_schedules(self) -> None:
        now = time.monotonic()
        if now - self._schedules_at < SCHEDULES_S:
            return
        self._schedules_at = now
        schedules = self.gateway.upcoming_schedules()
        if schedules != self.schedules:
            self.schedules = schedules
            self._broadcast("schedules", schedules)

    def add_feed(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Number, stamp, keep and push one feed entry."""
        full = {
            "seq": next(self._seq),
            "ts": utc_now(),
            "building": None,
            "drill": False,
            "latency_ms": None,
            **entry,
        }
        self.feed.append(full)
        self._broadcast("feed", [full])
        return full

    def _state_entries(self, scopes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """One entry per scope that set or lost a state itself (not the scopes it covers)."""
        entries = []
        for name, new in scopes.items():
            old = self.scopes.get(name, {})
            key = ("state", "hazard", "drill", "dry_run", "source")
            if all(old.get(k) == new.get(k) for k in key):
                continue
            if name not in (new.get("source"), old.get("source")):
                continue
            state = new.get("state")
            real = state not in _CALM and not new.get("drill")
            words = f"{state}{' (' + new['hazard'] + ')' if new.get('hazard') else ''}"
            text = (
                f"DRILL {words}"
                if new.get("drill")
                else words.upper()
                if real
                else f"{name} back to normal"
            )
            entries.append(
                {
                    "kind": "state",
                    "severity": "high" if real else "info",
                    "building": self._building_of(name),
                    "drill": bool(new.get("drill")),
                    "text": f"{text} on {name}"
                    + (f" by {new['actor']}" if new.get("actor") else ""),
                }
            )
        return entries

    def _fault_entries(self, doors: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Door faults that appeared or cleared, grouped per building and reason."""
        raised: dict[tuple[str, str], list[str]] = defaultdict(list)
        cleared: dict[str, list[str]] = defaultdict(list)
        places = self.gateway.campus.doors
        for door_id, new in doors.items():
            before = self.doors.get(door_id, {}).get("fault")
            after = new.get("fault")
            building = places[door_id].building
            if after and after != before:
                raised[(building, after)].append(door_id)
            elif before and not after:
                cleared[building].append(door_id)
        entries = [
            {
                "kind": "door",
                "severity": "high",
                "building": building,
                "text": f"{_some(ids)}: {fault}",
            }
            for (building, fault), ids in raised.items()
        ]
        entries += [
            {
                "kind": "door",
                "severity": "info",
                "building": building,
                "text": f"{_some(ids)}: fault cleared",
            }
            for building, ids in cleared.items()
        ]
        return entries

    def _building_of(self, scope: str) -> str | None:
        kind, _, ident = scope.partition("/")
        if kind == "zone":
            return self.gateway.campus.zones[ident].building
        return ident if kind == "building" else None

    def statistics(self) -> dict[str, int]:
        return {"streams": len(self._subscribers), "dropped": self.dropped, "feed": len(self.feed)}


def _some(ids: list[str]) -> str:
    if len(ids) == 1:
        return f"door {ids[0]}"
    shown = ", ".join(ids[:5])
    return f"{len(ids)} doors ({shown}{', …' if len(ids) > 5 else ''})"
