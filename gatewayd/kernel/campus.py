"""The campus as the running daemon sees it: doors indexed by scope, points by device."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from gatewayd.kernel.errors import CommandError, ErrorCode
from gatewayd.kernel.registry import load_driver
from gatewayd.kernel.scope import CAMPUS, Scope
from gatewayd.kernel.site import AlarmInput, Door, Site


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a door's points live, in normalised driver notation."""

    device: str
    lock: str
    position: str | None
    sense: str | None


class Campus:
    """Indexes over a validated config; built once at start-up."""

    def __init__(self, config: Site) -> None:
        #: The validated site model (a whole campus config is one too).
        self.model = config
        self.site = config.site.id
        #: Doors by id, in config order.
        self.doors: dict[str, Door] = {d.id: d for d in config.doors}
        # Asked for every door on every change: computed once.
        self._scopes = {d.id: self._scope_chain(d) for d in config.doors}
        #: Position of each door in the config, for stable ordering.
        self.door_index: dict[str, int] = {d.id: i for i, d in enumerate(config.doors)}
        self.inputs: dict[str, AlarmInput] = {i.id: i for i in config.inputs}
        self._by_building: dict[str, list[str]] = defaultdict(list)
        self._by_zone: dict[str, list[str]] = defaultdict(list)
        #: Normalised points each device must poll.
        self.points: dict[str, set[str]] = {d.id: set() for d in config.devices}
        #: Door bindings in normalised notation.
        self.bindings: dict[str, Binding] = {}
        #: (device, point) -> (door id, role) for routing point changes.
        self.point_roles: dict[tuple[str, str], tuple[str, str]] = {}
        drivers = {d.id: load_driver(d.driver) for d in config.devices}
        for door in config.doors:
            self._by_building[door.building].append(door.id)
            if door.zone:
                self._by_zone[door.zone].append(door.id)
            norm: dict[str, str | None] = {}
            for role in ("lock", "position", "sense"):
                ref = getattr(door, role)
                if ref is None:
                    norm[role] = None
                    continue
                point = drivers[ref.device].parse_point(ref.point)
                norm[role] = point
                self.points[ref.device].add(point)
                self.point_roles[(ref.device, point)] = (door.id, role)
            self.bindings[door.id] = Binding(
                door.lock.device, str(norm["lock"]), norm["position"], norm["sense"]
            )
        for alarm in config.inputs:
            point = drivers[alarm.point.device].parse_point(alarm.point.point)
            self.points[alarm.point.device].add(point)
            self.point_roles[(alarm.point.device, point)] = (alarm.id, "input")
        #: Air handlers by id, and (device, point) -> (air handler id, role) for read-back.
        self.air = {a.id: a for a in config.air_handlers}
        self.air_roles: dict[tuple[str, str], tuple[str, str]] = {}
        self.air_bindings: dict[str, dict[str, tuple[str, str]]] = {}
        for unit in config.air_handlers:
            binding: dict[str, tuple[str, str]] = {}
            for role in ("fan", "fan_status", "damper", "damper_status"):
                ref = getattr(unit, role)
                if ref is None:
                    continue
                point = drivers[ref.device].parse_point(ref.point)
                self.points[ref.device].add(point)
                self.air_roles[(ref.device, point)] = (unit.id, role)
                binding[role] = (ref.device, point)
            self.air_bindings[unit.id] = binding
        self.buildings = {b.id: b for b in config.buildings}
        self.zones = {z.id: z for z in config.zones}

    def resolve(self, scope: Scope) -> list[str]:
        """Door ids in a scope; an unknown building, zone or door is a command error."""
        if scope.kind == "campus":
            return list(self.doors)
        if scope.kind == "building":
            if scope.ident not in self.buildings:
                raise CommandError(
                    ErrorCode.UNKNOWN_SCOPE, f"no building {scope.ident!r} on this site"
                )
            return list(self._by_building.get(scope.ident, ()))
        if scope.kind == "zone":
            if scope.ident not in self.zones:
                raise CommandError(ErrorCode.UNKNOWN_SCOPE, f"no zone {scope.ident!r} on this site")
            return list(self._by_zone.get(scope.ident, ()))
        if scope.ident not in self.doors:
            raise CommandError(ErrorCode.UNKNOWN_DOOR, f"no door {scope.ident!r} on this site")
        return [scope.ident]

    def scopes_of(self, door_id: str) -> tuple[Scope, ...]:
        """Every scope containing a door, from the campus down to the door itself."""
        return self._scopes[door_id]

    @staticmethod
    def _scope_chain(door: Door) -> tuple[Scope, ...]:
        scopes = [CAMPUS, Scope("building", door.building)]
        if door.zone:
            scopes.append(Scope("zone", door.zone))
        scopes.append(Scope("door", door.id))
        return tuple(scopes)

    def all_scopes(self) -> list[Scope]:
        """Campus, buildings and zones: the scopes that get a retained state topic."""
        return [
            CAMPUS,
            *(Scope("building", b) for b in self.buildings),
            *(Scope("zone", z) for z in self.zones),
        ]
