"""What the gateway tells the world: events, and the retained door and scope topics.

Door and scope changes are *marked* when they happen. A door's topic goes out in the next
turn of the event loop, so an input flip reaches MQTT at once; under load (after a state
change, while an actuation is writing and confirming doors) door changes are gathered for
``SUMMARY_INTERVAL_S`` first: a lockdown changes every door twice within milliseconds, and
encoding 2,000 payloads must not delay the writes still going out. Scope counts, which run
over every door of the scope, go out on that interval. Neither is flushed while an actuation
still writes and confirms, for at most ``ACTUATION_HOLD_S``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from gatewayd.kernel.campus import Campus
from gatewayd.kernel.doorstate import DoorState
from gatewayd.kernel.errors import GatewayError
from gatewayd.kernel.events import new_id
from gatewayd.kernel.scope import CAMPUS, Scope
from gatewayd.rules.engine import Engine
from gatewayd.rules.policy import RANK
from gatewayd.security.audit import AuditRecord

log = structlog.get_logger(__name__)

RANK_BY_NAME = {str(state): rank for state, rank in RANK.items()}
#: How long changes are gathered before publishing while an actuation runs.
SUMMARY_INTERVAL_S = 0.05
#: Door payloads encoded between two turns of the event loop.
FLUSH_CHUNK = 64
#: While an actuation writes and confirms doors, topics wait for it to end, at most this
#: long: a 1,000-door flush run between its acknowledgements delays the read-backs.
ACTUATION_HOLD_S = 0.25
#: How often a held flush looks whether the actuation has ended.
HOLD_POLL_S = 0.005

#: Called with every event after it is queued (the declarative rules listen here).
EventListener = Callable[[Mapping[str, Any]], None]


def utc_iso(epoch_s: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if epoch_s is None else epoch_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Outlet(Protocol):
    """The slice of the uplink the publisher writes to."""

    def publish_event(
        self, kind: str, payload: Mapping[str, Any], *, life_safety: bool
    ) -> None: ...

    def set_retained(self, topic_suffix: str, payload: Mapping[str, Any] | str) -> None: ...


class DoorTable(Protocol):
    @property
    def doors(self) -> Mapping[str, DoorState]: ...

    def summary(
        self, door_ids: list[str], statuses: Mapping[str, str] | None = None
    ) -> dict[str, Any]: ...

    @property
    def actuating(self) -> bool: ...


class Publisher:
    """Builds events and retained states, and hands them to the uplink."""

    def __init__(self, campus: Campus, engine: Engine, doors: DoorTable, outlet: Outlet) -> None:
        self._campus = campus
        self._engine = engine
        self._doors = doors
        self._outlet = outlet
        self._listeners: list[EventListener] = []
        self._dirty_scopes: set[Scope] = set()
        self._dirty_doors: set[str] = set()
        #: Doors changed since the last scope flush: their scopes' counts are recomputed then.
        self._counted_doors: set[str] = set()
        #: Each door's campus, building and zone (not the door itself), looked up once.
        self._parents = {d: campus.scopes_of(d)[:-1] for d in campus.doors}
        #: Set when something is marked dirty; :meth:`run` waits on it.
        self._wake = asyncio.Event()
        #: A state change or a restart marked many topics: gather before publishing.
        self._bulk = False
        #: The air handlers' counts for a scope's state topic (empty when it has none).
        self.air_summary: Callable[[Scope], dict[str, Any]] | None = None

    def listen(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    # --- events ----------------------------------------------------------------------------

    def event(
        self,
        kind: str,
        source: str,
        data: Mapping[str, Any],
        *,
        life_safety: bool,
        location: Mapping[str, Any] | None = None,
        drill: bool = False,
    ) -> None:
        """Queue ``event/<kind>`` (never blocks, never raises), then tell the listeners."""
        event = {
            "id": new_id(),
            "ts": utc_iso(),
            "kind": kind,
            "source": source,
            "location": dict(location or {}),
            "drill": drill,
            "data": dict(data),
        }
        try:
            self._outlet.publish_event(kind, event, life_safety=life_safety)
        except GatewayError as exc:
            # A full outbox must never stop a lockdown: the doors matter more than the report.
            log.critical("event.not_queued", kind=kind, source=source, error=str(exc))
        for listener in self._listeners:
            listener(event)

    def audit_record(self, record: AuditRecord) -> None:
        # The external anchor of the hash chain (docs/security.md, section 7): after the
        # door traffic, never before it.
        self.event("audit", "gateway", record.as_dict(), life_safety=False)

    # --- retained topics ---------------------------------------------------------------------

    def door_changed(self, state: DoorState) -> None:
        # Called twice per door in a lockdown, from the read-back path: two set adds here;
        # which scopes that touches is worked out once per scope flush, off this path.
        self._dirty_doors.add(state.id)
        self._counted_doors.add(state.id)
        self._wake.set()

    def mark_dirty(self, scope: Scope) -> None:
        """A scope's state changed: it, the scopes above it and the scopes inside it."""
        self._dirty_scopes.update(self.ancestors(scope))
        self._bulk = True
        self._wake.set()
        if scope.kind != "door":
            # Narrower scopes show the state in force over them, so they change too.
            inside = set(self._campus.resolve(scope))
            self._dirty_scopes.update(
                s for s in self._campus.all_scopes() if inside & set(self._campus.resolve(s))
            )

    def mark_counts(self, scope: Scope) -> None:
        """Something a scope counts changed (an air handler's read-back): it and its parents."""
        self._dirty_scopes.update(self.ancestors(scope))
        self._wake.set()

    def mark_everything(self) -> None:
        """After a (re)start: every door and scope topic goes out again."""
        self._dirty_scopes.update(self._campus.all_scopes())
        self._bulk = True
        for state in self._doors.doors.values():
            self.door_changed(state)

    async def run(self) -> None:
        """Publish door changes at once (gathered under load), scope counts on a tick."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._publish_doors(), name="publisher:doors")
            group.create_task(self._publish_scopes(), name="publisher:scopes")

    async def _publish_doors(self) -> None:
        while True:
            await self._wake.wait()
            # Changes made in this same turn of the loop go out together.
            await asyncio.sleep(0)
            if self._bulk or self._doors.actuating:
                await asyncio.sleep(SUMMARY_INTERVAL_S)
                await self._after_actuation()
            self._wake.clear()
            self._bulk = False
            await self._flush_doors()

    async def _publish_scopes(self) -> None:
        # A scope's counts run over all its doors (1,000 for the campus): never per change.
        while True:
            await asyncio.sleep(SUMMARY_INTERVAL_S)
            await self._after_actuation()
            self._flush_scopes()

    async def _after_actuation(self) -> None:
        """Wait while doors are being written and confirmed, at most ``ACTUATION_HOLD_S``."""
        deadline = time.monotonic() + ACTUATION_HOLD_S
        while self._doors.actuating and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(HOLD_POLL_S)

    async def flush(self) -> None:
        """Publish the doors, then the scope counts, that changed since the last flush."""
        await self._flush_doors()
        self._flush_scopes()

    async def _flush_doors(self) -> None:
        doors, self._dirty_doors = self._dirty_doors, set()
        table = self._doors.doors
        for i, door_id in enumerate(doors, 1):
            self._outlet.set_retained(f"door/{door_id}", table[door_id].payload())
            # A thousand payloads in one go would stall a lockdown's writes: yield often.
            if i % FLUSH_CHUNK == 0:
                await asyncio.sleep(0)

    def _flush_scopes(self) -> None:
        scopes, self._dirty_scopes = self._dirty_scopes, set()
        counted, self._counted_doors = self._counted_doors, set()
        for parents in {self._parents[d] for d in counted}:
            scopes.update(parents)
        if not scopes:
            return
        # Each door's status once per flush, not once per scope that holds it (three times).
        table = self._doors.doors
        statuses = {d: table[d].status for d in self._campus.doors}
        for scope in scopes:
            self._outlet.set_retained(f"state/{scope}", self.scope_state(scope, statuses))

    def scope_state(
        self, scope: Scope, statuses: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """The effective SRP state of a scope and how many of its doors are secured.

        ``statuses`` (door -> status, taken once) saves recomputing them for every scope.
        """
        active = [
            s
            for a in self.ancestors(scope)
            for s in self._engine.sources_at(a)
            if s.key.startswith(("srp:", "drill:")) and s.state in RANK_BY_NAME
        ]
        # A real state shows before a drill; then the strictest; then the narrowest scope.
        winner = min(
            active, key=lambda s: (s.drill, RANK_BY_NAME[str(s.state)], -s.scope.rank), default=None
        )
        return {
            "scope": str(scope),
            "state": winner.state if winner else "normal",
            "hazard": winner.hazard if winner else None,
            "since": utc_iso(winner.since) if winner else None,
            "source": str(winner.scope) if winner else None,
            "actor": winner.actor if winner else None,
            "drill": winner.drill if winner else False,
            "dry_run": winner.dry_run if winner else False,
            "until": utc_iso(winner.expires_at) if winner and winner.expires_at else None,
            **self._doors.summary(self._campus.resolve(scope), statuses),
            **(self.air_summary(scope) if self.air_summary else {}),
            "updated_at": utc_iso(),
        }

    def ancestors(self, scope: Scope) -> list[Scope]:
        """The scopes whose state applies to ``scope``, widest first, ``scope`` last."""
        if scope.kind == "campus":
            return [CAMPUS]
        if scope.kind == "building":
            return [CAMPUS, scope]
        if scope.kind == "zone":
            return [CAMPUS, Scope("building", self._campus.zones[scope.ident].building), scope]
        return list(self._campus.scopes_of(scope.ident))
