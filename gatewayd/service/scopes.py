"""Where a command applies, read from its envelope, and where a scope is for an event."""

from __future__ import annotations

from typing import Any

from gatewayd.kernel.campus import Campus
from gatewayd.kernel.command import Command
from gatewayd.kernel.errors import CommandError, ErrorCode
from gatewayd.kernel.scope import Scope


def scope_of(campus: Campus, command: Command) -> Scope:
    """The command's scope (or door), known to this campus; else a ``CommandError``."""
    if command.door is not None:
        return door_scope(campus, command)
    if command.scope is None:
        raise CommandError(ErrorCode.BAD_REQUEST, f"{command.action!s} needs a scope or a door")
    scope = Scope.parse(command.scope)
    campus.resolve(scope)
    return scope


def door_scope(campus: Campus, command: Command) -> Scope:
    """The one door a command names (``door``, or a ``door/<id>`` scope)."""
    ident = command.door
    if ident is None and command.scope and command.scope.startswith("door/"):
        ident = command.scope.removeprefix("door/")
    if ident is None:
        raise CommandError(ErrorCode.BAD_REQUEST, f"{command.action!s} needs a door")
    scope = Scope("door", ident)
    campus.resolve(scope)
    return scope


def location_of(campus: Campus, scope: Scope) -> dict[str, Any]:
    """Where a scope is, as an event's location (the building a responder goes to)."""
    match scope.kind:
        case "building":
            return {"building": scope.ident}
        case "zone":
            return {"building": campus.zones[scope.ident].building}
        case "door":
            door = campus.doors[scope.ident]
            return {"building": door.building, "floor": door.floor, "room": door.room}
        case _:
            return {}


def claimed_location(
    campus: Campus, scope: Scope, claimed: dict[str, str]
) -> tuple[dict[str, Any], str | None]:
    """A panic app's location as the campus file names it, and what was wrong with the claim.

    The app's user types or picks where they are; what reaches the PSAP must be a building
    inside the command's scope and a room of the campus file, written as the campus file
    writes it, never the free text itself. When the claim does not hold, the location is the
    scope's (the building a responder goes to) and the problem is said.
    """
    # Every key present, so that a rule's radio text renders (blank where nothing is known).
    fallback = {"building": "", "floor": "", "room": "", **location_of(campus, scope)}
    inside = set(campus.resolve(scope))
    building = claimed.get("building")
    room = claimed.get("room")
    unknown = sorted(set(claimed) - {"building", "floor", "room"})
    if unknown:
        return fallback, f"location has unknown keys: {', '.join(unknown)[:80]}"
    doors = [campus.doors[d] for d in inside]
    if building is not None:
        doors = [d for d in doors if d.building == building]
        if not doors:
            return fallback, "location.building is not a building in the command's scope"
    if room is None:
        return ({**fallback, "building": building} if building else fallback), None
    matches = [d for d in doors if d.room and d.room == room]
    if not matches:
        return fallback, "location.room is not a room of the campus file in that scope"
    door = matches[0]
    floor = claimed.get("floor")
    if floor is not None and floor != door.floor:
        return fallback, "location.floor is not the floor of that room"
    return {"building": door.building, "floor": door.floor, "room": door.room}, None
