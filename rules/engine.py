"""The engine: active sources in, one decision per door out.

Sources are persisted before they take effect (see :mod:`rules.store`); decisions are pure
arbitration over the sources that cover a door.
"""

from __future__ import annotations

from collections.abc import Iterable

from gatewayd.campus import Campus, Scope
from rules.arbitration import Decision, arbitrate
from rules.sources import Source
from rules.store import SafetyStore


class Engine:
    """Holds the active sources of one campus."""

    def __init__(self, campus: Campus, store: SafetyStore) -> None:
        self.campus = campus
        self._store = store
        self._sources: dict[str, Source] = {}
        for source in store.load():
            self._sources[source.key] = source

    @property
    def sources(self) -> dict[str, Source]:
        return dict(self._sources)

    def put(self, source: Source) -> list[str]:
        """Persist then activate a source; return the doors it may change."""
        self.campus.resolve(source.scope)
        self._store.put(source)
        old = self._sources.get(source.key)
        self._sources[source.key] = source
        doors = set(self._doors_of(source))
        if old is not None:
            doors.update(self._doors_of(old))
        return sorted(doors, key=self._order)

    def remove(self, key: str) -> list[str]:
        """Deactivate then forget a source; return the doors it held."""
        source = self._sources.pop(key, None)
        if source is None:
            return []
        self._store.delete(key)
        return sorted(self._doors_of(source), key=self._order)

    def decide(self, door_id: str) -> Decision:
        door = self.campus.doors[door_id]
        scopes = set(self.campus.scopes_of(door_id))
        claims = [
            s.claim()
            for s in self._sources.values()
            if s.scope in scopes and s.applies_to(door.kind)
        ]
        return arbitrate(claims, normal_locked=door.normally_locked)

    def decide_all(self, door_ids: Iterable[str]) -> dict[str, Decision]:
        return {d: self.decide(d) for d in door_ids}

    def sources_at(self, scope: Scope) -> list[Source]:
        return [s for s in self._sources.values() if s.scope == scope]

    def _doors_of(self, source: Source) -> list[str]:
        kinds = source.kinds
        return [
            d
            for d in self.campus.resolve(source.scope)
            if not kinds or self.campus.doors[d].kind in kinds
        ]

    def _order(self, door_id: str) -> int:
        return self.campus.door_index[door_id]
