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
