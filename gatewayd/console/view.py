"""What the console needs of the gateway, and the JSON the page is drawn from."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from gatewayd.console.feeds import CapSource
from gatewayd.kernel.campus import Campus
from gatewayd.kernel.doorstate import DoorState
from gatewayd.kernel.scope import CAMPUS, Scope
from gatewayd.rules.config import PolicyConfig


class DoorTable(Protocol):
    @property
    def doors(self) -> Mapping[str, DoorState]: ...


class GatewayLike(Protocol):
    """The slice of :class:`gatewayd.gateway.Gateway` the console uses, and nothing more."""

    @property
    def campus(self) -> Campus: ...

    @property
    def doors(self) -> DoorTable: ...

    @property
    def policy(self) -> PolicyConfig: ...

    @property
    def cap(self) -> CapSource: ...

    @property
    def audit_path(self) -> Path: ...

    async def handle_command(self, payload: bytes) -> dict[str, Any]: ...

    def scope_state(self, scope: Scope) -> dict[str, Any]: ...

    def upcoming_schedules(self) -> list[dict[str, Any]]: ...


def door_word(state: DoorState) -> str:
    """``locked``, ``unlocked``, ``open``, ``unknown`` or ``faulted``: what the page shows."""
    if state.fault:
        return "faulted"
    if not state.device_online or state.locked is None:
        return "unknown"
    if state.closed is False:
        return "open"
    return "locked" if state.locked else "unlocked"


def door_live(state: DoorState) -> dict[str, Any]:
    """The changing part of a door: the retained MQTT payload plus the word to show."""
    live = state.payload()
    # Changes on every touch; the page does not show it and it would defeat diffing.
    live.pop("updated_at", None)
    live["state"] = door_word(state)
    return live


def scope_live(gateway: GatewayLike, scope: Scope) -> dict[str, Any]:
    state = dict(gateway.scope_state(scope))
    state.pop("updated_at", None)
    return state


def scopes(campus: Campus) -> list[Scope]:
    return campus.all_scopes()


def layout(campus: Campus, policy: PolicyConfig) -> dict[str, Any]:
    """The fixed part: site, buildings with floors as signed, zones, and each door's place."""
    buildings = []
    for building in campus.buildings.values():
        floors = list(building.floors)
        floors += sorted(
            {
                d.floor
                for d in campus.doors.values()
                if d.building == building.id and d.floor not in floors
            }
        )
        buildings.append({"id": building.id, "name": building.name, "floors": floors})
    return {
        "site": {"id": campus.site, "name": campus.model.site.name},
        "buildings": buildings,
        "zones": [
            {"id": z.id, "building": z.building, "name": z.name or z.id}
            for z in campus.zones.values()
        ],
        "doors": [
            {
                "id": d.id,
                "room": d.room,
                "building": d.building,
                "floor": d.floor,
                "zone": d.zone,
                "kind": str(d.kind),
                "name": d.name,
            }
            for d in campus.doors.values()
        ],
        "responder": {
            "default_s": max(10.0, policy.responder_momentary_s),
            "max_s": policy.responder_max_s,
        },
        "drill_max_s": policy.drill_max_s,
        "scopes": [str(s) for s in (CAMPUS, *scopes(campus)[1:])],
    }
