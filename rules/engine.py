"""The engine: active sources in, one decision per door out.

Sources are persisted before they take effect (see :mod:`rules.store`), except volatile
ones (a fire alarm), which act first and are persisted best-effort: life safety never waits
on a disk. Decisions are pure arbitration over the sources on the scopes that contain a door
(at most four: campus, building, zone, door), so deciding is cheap whatever the campus size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import structlog

from gatewayd.kernel.campus import Campus
from gatewayd.kernel.scope import Scope
from gatewayd.rules.arbitration import Decision, arbitrate
from gatewayd.rules.sources import Source
from gatewayd.rules.store import SafetyStore, StoreError

log = structlog.get_logger(__name__)


class Engine:
    """Holds the active sources of one campus."""

    def __init__(self, campus: Campus, store: SafetyStore) -> None:
        self.campus = campus
        self._store = store
        self._sources: dict[str, Source] = {}
        self._by_scope: dict[Scope, dict[str, Source]] = defaultdict(dict)
        for source in store.load():
            self._activate(source)

    @property
    def sources(self) -> dict[str, Source]:
        return dict(self._sources)

    def get(self, key: str) -> Source | None:
        return self._sources.get(key)

    def put(self, source: Source) -> list[str]:
        """Persist (if durable) then activate a source; return the doors it may change."""
        self.campus.resolve(source.scope)
        if source.durable:
            self._store.put(source)
        return self._activate(source)

    def persist(self, source: Source) -> None:
        """Write a volatile source that already acts (may raise :class:`StoreError`)."""
        self._store.put(source)

    def remove(self, key: str, *, force: bool = False) -> list[str]:
        """Forget then deactivate a source; return the doors it held.

        A durable source is deleted on disk first, so a failed write refuses the release
        instead of leaving a lock that a restart would bring back unannounced. A volatile
        one (a fire alarm resetting) or a forced one (an override at its expiry, which a
        restart drops anyway) is deactivated whatever the disk says.
        """
        source = self._sources.get(key)
        if source is None:
            return []
        best_effort = force or not source.durable
        if not best_effort:
            self._store.delete(key)
        del self._sources[key]
        del self._by_scope[source.scope][key]
        if best_effort:
            try:
                self._store.delete(key)
            except StoreError as exc:
                log.error("store.delete_failed", key=key, error=str(exc))
        return sorted(self._doors_of(source), key=self._order)

    def decide(self, door_id: str) -> Decision:
        door = self.campus.doors[door_id]
        claims = []
        for scope in self.campus.scopes_of(door_id):
            for source in self._by_scope.get(scope, {}).values():
                claim = source.claim_for(door.kind)
                if claim is not None:
                    claims.append(claim)
        return arbitrate(claims, normal_locked=door.normally_locked)

    def decide_all(self, door_ids: Iterable[str]) -> dict[str, Decision]:
        """Decisions for many doors; doors alike (same scopes, kind, normal) share one."""
        # A campus lockdown decides a thousand doors, most of them alike: arbitrate each
        # kind of door once. A door with a source of its own is always decided alone.
        shared: dict[tuple[object, ...], Decision] = {}
        out: dict[str, Decision] = {}
        for door_id in door_ids:
            scopes = self.campus.scopes_of(door_id)
            if self._by_scope.get(scopes[-1]):
                out[door_id] = self.decide(door_id)
                continue
            door = self.campus.doors[door_id]
            key = (scopes[:-1], door.kind, door.normally_locked)
            decision = shared.get(key)
            if decision is None:
                decision = shared[key] = self.decide(door_id)
            out[door_id] = decision
        return out

    def sources_at(self, scope: Scope) -> list[Source]:
        return list(self._by_scope.get(scope, {}).values())

    def expired(self, now: float) -> list[Source]:
        return [
            s for s in self._sources.values() if s.expires_at is not None and s.expires_at <= now
        ]

    def next_expiry(self) -> float | None:
        ends = [s.expires_at for s in self._sources.values() if s.expires_at is not None]
        return min(ends, default=None)

    def doors_of(self, source: Source) -> list[str]:
        return sorted(self._doors_of(source), key=self._order)

    def _activate(self, source: Source) -> list[str]:
        old = self._sources.get(source.key)
        if old is not None:
            del self._by_scope[old.scope][old.key]
        self._sources[source.key] = source
        self._by_scope[source.scope][source.key] = source
        doors = set(self._doors_of(source))
        if old is not None:
            doors.update(self._doors_of(old))
        return sorted(doors, key=self._order)

    def _doors_of(self, source: Source) -> list[str]:
        kinds = source.kinds
        if not source.effects:
            return []
        return [
            d
            for d in self.campus.resolve(source.scope)
            if not kinds or self.campus.doors[d].kind in kinds
        ]

    def _order(self, door_id: str) -> int:
        return self.campus.door_index[door_id]
