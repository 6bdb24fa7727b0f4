"""The engine: active sources in, one decision per door out.

The engine holds the sources in memory and nothing else: what is durable is the gateway's
journal, which records every :class:`Change` (before a change that unlocks a door takes
effect, right after one that only locks). :meth:`Engine.unlocks` says which kind a change is.
Decisions are pure arbitration over the sources on the scopes that contain a door (at most
four: campus, building, zone, door), so deciding is cheap whatever the campus size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from gatewayd.kernel.campus import Campus
from gatewayd.kernel.scope import Scope
from gatewayd.rules.arbitration import Decision, arbitrate
from gatewayd.rules.sources import Source


@dataclass(frozen=True, slots=True)
class Change:
    """Sources to add (or replace, by key) and keys to remove, applied together."""

    put: tuple[Source, ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.put or self.remove)

    def as_record(self) -> dict[str, Any]:
        """The ``sources`` member of the audit record that makes this change durable."""
        return {"put": [s.to_json() for s in self.put], "removed": list(self.remove)}


class Engine:
    """Holds the active sources of one campus."""

    def __init__(self, campus: Campus, sources: Iterable[Source] = ()) -> None:
        self.campus = campus
        #: Sort key putting doors in campus order (a bound dict lookup: sorts run in C).
        self._order = campus.door_index.__getitem__
        self._sources: dict[str, Source] = {}
        self._by_scope: dict[Scope, dict[str, Source]] = defaultdict(dict)
        #: Bumped at every change of a key, so a change that waited can see it was overtaken.
        self._versions: dict[str, int] = defaultdict(int)
        #: Door -> the number of its shape: doors of one shape (same wider scopes, kind and
        #: normal state) decide alike unless a source names the door itself.
        self._shapes: dict[str, int] = {}
        numbers: dict[tuple[tuple[Scope, ...], str, bool], int] = {}
        for door_id, door in campus.doors.items():
            key = (campus.scopes_of(door_id)[:-1], door.kind, door.normally_locked)
            self._shapes[door_id] = numbers.setdefault(key, len(numbers))
        #: Each shape's wider scopes, kind and normal state, by its number.
        self._shape_keys = list(numbers)
        for source in sources:
            self._activate(source)

    @property
    def sources(self) -> dict[str, Source]:
        return dict(self._sources)

    def get(self, key: str) -> Source | None:
        return self._sources.get(key)

    def put(self, source: Source) -> list[str]:
        """Activate a source (replacing one with its key); return the doors it may change."""
        self.campus.resolve(source.scope)
        return self._activate(source)

    def remove(self, key: str) -> list[str]:
        """Deactivate a source; return the doors it held."""
        source = self._sources.pop(key, None)
        if source is None:
            return []
        self._versions[key] += 1
        del self._by_scope[source.scope][key]
        return self._doors_of(source)

    def apply(self, change: Change) -> list[str]:
        """Remove, then put; return every door the change may move."""
        if not change.remove and len(change.put) == 1:
            return self.put(change.put[0])
        doors: set[str] = set()
        for key in change.remove:
            doors.update(self.remove(key))
        for source in change.put:
            doors.update(self.put(source))
        return sorted(doors, key=self._order)

    def versions(self, change: Change) -> tuple[int, ...]:
        """Where the keys a change touches stand now (compare after waiting)."""
        return tuple(self._versions[k] for k in (*change.remove, *(s.key for s in change.put)))

    def affected(self, change: Change) -> list[str]:
        """The doors a change may move, without making it."""
        doors: set[str] = set()
        for key in change.remove:
            if (old := self._sources.get(key)) is not None:
                doors.update(self._doors_of(old))
        for source in change.put:
            self.campus.resolve(source.scope)
            doors.update(self._doors_of(source))
            if (old := self._sources.get(source.key)) is not None:
                doors.update(self._doors_of(old))
        return sorted(doors, key=self._order)

    def unlocks(self, change: Change) -> list[str]:
        """Doors locked now that the change would leave unlocked (it is made, then undone)."""
        if self._only_adds_locks(change):
            # A new claim that locks either wins (locked) or loses (nothing changes): no door
            # can end up unlocked. A campus lockdown skips deciding 1,000 doors twice here.
            return []
        doors = self.affected(change)
        before = self.decide_all(doors)
        with self._trial(change):
            after = self.decide_all(doors)
        return [d for d in doors if before[d].locked and not after[d].locked]

    def _only_adds_locks(self, change: Change) -> bool:
        """Nothing removed or replaced, and every new source only locks."""
        return not change.remove and all(
            source.key not in self._sources and all(e.locked for e in source.effects)
            for source in change.put
        )

    @contextmanager
    def _trial(self, change: Change) -> Iterator[None]:
        # Put back as it was, not rebuilt: re-activating every source resolved its doors
        # (a thousand for a campus source) once per door command.
        saved, versions = dict(self._sources), dict(self._versions)
        by_scope = {scope: dict(held) for scope, held in self._by_scope.items() if held}
        try:
            self.apply(change)
            yield
        finally:
            self._sources = saved
            self._by_scope = defaultdict(dict, by_scope)
            self._versions = defaultdict(int, versions)

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
        # kind of door once. Shapes whose wider scopes hold the same sources (a campus
        # lockdown: every zone's doors of a kind) decide alike too. A door with a source of
        # its own is always decided alone.
        shared: dict[int, Decision] = {}
        alike: dict[tuple[tuple[Scope, ...], str, bool], Decision] = {}
        out: dict[str, Decision] = {}
        by_scope, shapes = self._by_scope, self._shapes
        # The doors with sources of their own, by id: one string lookup per door below.
        own_held = {s.ident for s, held in by_scope.items() if held and s.kind == "door"}
        for door_id in door_ids:
            if door_id in own_held:
                out[door_id] = self.decide(door_id)
                continue
            shape = shapes[door_id]
            decision = shared.get(shape)
            if decision is None:
                wider, kind, normal = self._shape_keys[shape]
                held = (tuple(s for s in wider if by_scope.get(s)), kind, normal)
                decision = alike.get(held)
                if decision is None:
                    decision = alike[held] = self.decide(door_id)
                shared[shape] = decision
            out[door_id] = decision
        return out

    def sources_at(self, scope: Scope) -> list[Source]:
        return list(self._by_scope.get(scope, {}).values())

    def doors_of(self, source: Source) -> list[str]:
        return self._doors_of(source)

    def _activate(self, source: Source) -> list[str]:
        old = self._sources.get(source.key)
        if old is not None:
            del self._by_scope[old.scope][old.key]
        self._sources[source.key] = source
        self._by_scope[source.scope][source.key] = source
        self._versions[source.key] += 1
        doors = self._doors_of(source)
        if old is not None:
            return sorted({*doors, *self._doors_of(old)}, key=self._order)
        return doors

    def _doors_of(self, source: Source) -> list[str]:
        """The doors a source holds, in campus order (``Campus.resolve`` keeps it)."""
        kinds = source.kinds
        if not source.effects:
            return []
        return [
            d
            for d in self.campus.resolve(source.scope)
            if not kinds or self.campus.doors[d].kind in kinds
        ]
