"""SHELTER acts on the air: fans stopped and outside air closed, verified, and given back.

While a SHELTER for a hazard in ``[policy] shelter_air_hazards`` (hazmat by default) holds a
scope, every air handler serving it is commanded through the controller's priority array at
the lockdown priority (5): fan off, outside-air damper closed. When no such state holds any
more, the gateway relinquishes its slots and the building's own controls (schedule, operator)
have the air again. A fire alarm covering the unit wins: the fire alarm system's smoke
control owns the fans and dampers, so the gateway relinquishes for as long as it is active.

Verified like doors: the fan's current switch and the damper's end switch are read back, and
each scope's state topic counts its units ``secured`` / ``unsecured`` / ``unknown`` while a
shelter holds them (``released`` otherwise). The air never stands in the doors' way: it runs
in its own task, woken whenever the actuator has moved doors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from gatewayd.kernel.driver import AnyDriver
from gatewayd.kernel.errors import DeviceError
from gatewayd.kernel.events import DeviceHealth, Health, PointChanged, PointWrite, WritePoints
from gatewayd.kernel.scope import Scope
from gatewayd.kernel.site import AirHandler
from gatewayd.rules.arbitration import Priority
from gatewayd.rules.sources import Source
from gatewayd.service.core import Core

log = structlog.get_logger(__name__)

#: The priority slot the gateway's air commands take (the lockdown family's).
AIR_PRIORITY = int(Priority.LOCKDOWN)
#: A command that failed (device offline) is tried again after this.
RETRY_S = 2.0
#: Even with nothing new, what is wanted is compared with what was commanded this often.
RECHECK_S = 10.0


@dataclass(slots=True)
class AirState:
    """What the gateway commanded one air handler, and what it reads back."""

    #: True: fan off and damper closed at :data:`AIR_PRIORITY`; False: relinquished;
    #: None: nothing commanded yet.
    held: bool | None = None
    #: Why it is held or released (the shelter, a fire alarm, normal).
    reason: str = "normal"
    fan_running: bool | None = None
    damper_open: bool | None = None
    fault: str | None = None

    def status(self, unit: AirHandler) -> str:
        if not self.held:
            return "released"
        if self.fault or self.fan_running is None:
            return "unknown"
        if unit.damper is not None and self.damper_open is None:
            return "unknown"
        closed = unit.damper is None or self.damper_open is False
        return "secured" if self.fan_running is False and closed else "unsecured"


class AirService:
    """Keeps each air handler's command equal to what the SRP sources want of it."""

    def __init__(self, core: Core, drivers: Mapping[str, AnyDriver]) -> None:
        self._core = core
        self._drivers = drivers
        self._campus = core.campus
        self.units: dict[str, AirHandler] = dict(core.campus.air)
        self.states = {u: AirState() for u in self.units}
        self._wake = asyncio.Event()
        self.commands = 0
        self.failures = 0

    def changed(self) -> None:
        """The sources may have changed: look again (never blocks)."""
        self._wake.set()

    # --- read-back ---------------------------------------------------------------------------

    def on_point(self, event: PointChanged) -> None:
        route = self._campus.air_roles.get((event.device, event.point))
        if route is None:
            return
        unit_id, role = route
        state = self.states[unit_id]
        before = state.status(self.units[unit_id])
        if role == "fan_status":
            state.fan_running = event.value
        elif role == "damper_status":
            state.damper_open = event.value
        else:
            return
        after = state.status(self.units[unit_id])
        if after != before:
            log.info("air.status", unit=unit_id, status=after, fan=state.fan_running,
                     damper=state.damper_open)  # fmt: skip
            self._mark(unit_id)

    def on_health(self, event: DeviceHealth) -> None:
        """A controller that is offline leaves its units unknown; back, they are commanded again."""
        online = event.health is not Health.OFFLINE
        for unit_id, unit in self.units.items():
            if unit.fan.device != event.device:
                continue
            state = self.states[unit_id]
            if not online and state.fault is None:
                state.fault = f"device {event.device} offline"
                self._mark(unit_id)
            elif online and state.fault is not None:
                # Re-commanded by the next reconcile (a fault always is), then read back.
                self._wake.set()

    # --- what is wanted ------------------------------------------------------------------------

    def wanted(self, unit: AirHandler) -> tuple[bool, str]:
        """(secure the air?, why): a fire alarm first, then a sheltering state, else normal."""
        hazards = {str(h) for h in self._core.policy.shelter_air_hazards}
        shelter: Source | None = None
        for source in self._core.engine.sources.values():
            if not self._covers(source.scope, unit):
                continue
            if source.key.startswith("fire:"):
                return False, f"fire alarm ({source.scope}): smoke control has the air"
            live = source.key.startswith(("srp:", "drill:")) and not source.dry_run
            if live and source.state == "shelter" and source.hazard in hazards:
                shelter = source
        if shelter is not None:
            return True, shelter.reason
        return False, "normal"

    def _covers(self, scope: Scope, unit: AirHandler) -> bool:
        match scope.kind:
            case "campus":
                return True
            case "building":
                return scope.ident == unit.building
            case "zone":
                zone = self._campus.zones.get(scope.ident)
                # An air handler with no zone serves its whole building, the zone included.
                return unit.zone == scope.ident or (
                    unit.zone is None and zone is not None and zone.building == unit.building
                )
            case _:
                return False

    # --- commands ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the sources until cancelled."""
        if not self.units:
            return
        while True:
            failed = await self.reconcile()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETRY_S if failed else RECHECK_S):
                    await self._wake.wait()
            self._wake.clear()

    async def reconcile(self) -> bool:
        """Command every unit whose wanted state differs from its last command; True if any
        command failed (it is tried again)."""
        by_device: dict[str, list[tuple[str, bool, str]]] = defaultdict(list)
        for unit_id, unit in self.units.items():
            secure, why = self.wanted(unit)
            state = self.states[unit_id]
            if state.held is secure and state.fault is None:
                continue
            by_device[unit.fan.device].append((unit_id, secure, why))
        results = await asyncio.gather(*(self._command(d, units) for d, units in by_device.items()))
        return not all(results)

    async def _command(self, device: str, units: list[tuple[str, bool, str]]) -> bool:
        writes = []
        for unit_id, secure, _ in units:
            for role in ("fan", "damper"):
                bound = self._campus.air_bindings[unit_id].get(role)
                if bound is not None:
                    # Secure: fan off, damper closed (False) at our slot; else give it back.
                    writes.append(PointWrite(bound[1], False, AIR_PRIORITY, relinquish=not secure))
        self.commands += 1
        try:
            result = await self._drivers[device].execute(WritePoints(tuple(writes)))
        except DeviceError as exc:
            self.failures += 1
            for unit_id, secure, why in units:
                state = self.states[unit_id]
                if state.held is None and not secure:
                    # The first release at start-up, before the controller is up: nothing
                    # was taken from the building's controls yet, so nothing is at stake.
                    log.info("air.not_yet_reachable", unit=unit_id, error=str(exc))
                    continue
                state.fault = f"{exc.code}: {exc}"
                log.error("air.command_failed", unit=unit_id, secure=secure, error=str(exc))
                self._core.publisher.event("air", unit_id,
                                           {"unit": unit_id, "action": _action(secure),
                                            "reason": why, "error": state.fault},
                                           life_safety=True)  # fmt: skip
                self._mark(unit_id)
            return False
        for value in result.values:
            self.on_point(PointChanged(device, value.point, value.value))
        for unit_id, secure, why in units:
            state = self.states[unit_id]
            state.held, state.reason, state.fault = secure, why, None
            # Handing the air back in normal state is routine (every start-up does it).
            routine = not secure and why == "normal"
            (log.info if routine else log.warning)(
                "air.commanded", unit=unit_id, action=_action(secure), reason=why
            )
            unit = self.units[unit_id]
            self._core.publisher.event("air", unit_id,
                                       {"unit": unit_id, "action": _action(secure),
                                        "reason": why, "priority": AIR_PRIORITY},
                                       life_safety=True,
                                       location={"building": unit.building})  # fmt: skip
            self._mark(unit_id)
        return True

    # --- what the world sees -------------------------------------------------------------------

    def _mark(self, unit_id: str) -> None:
        unit = self.units[unit_id]
        scope = Scope("zone", unit.zone) if unit.zone else Scope("building", unit.building)
        self._core.publisher.mark_counts(scope)

    def summary(self, scope: Scope) -> dict[str, Any]:
        """``air`` counts and the units not secured, for a scope's state topic."""
        units = [u for u in self.units.values() if self._in_scope(scope, u)]
        if not units:
            return {}
        groups: dict[str, list[str]] = {"secured": [], "unsecured": [], "unknown": [],
                                        "released": []}  # fmt: skip
        for unit in units:
            groups[self.states[unit.id].status(unit)].append(unit.id)
        return {
            "air": {k: len(v) for k, v in groups.items()},
            "air_unsecured": groups["unsecured"] + groups["unknown"],
        }

    def _in_scope(self, scope: Scope, unit: AirHandler) -> bool:
        if scope.kind == "zone":
            return unit.zone == scope.ident
        return self._covers(scope, unit)

    def payload(self, unit_id: str) -> dict[str, Any]:
        state, unit = self.states[unit_id], self.units[unit_id]
        return {"unit": unit_id, "status": state.status(unit), "held": state.held,
                "reason": state.reason, "fan_running": state.fan_running,
                "damper_open": state.damper_open, "fault": state.fault}  # fmt: skip

    def statistics(self) -> dict[str, int]:
        return {"units": len(self.units), "commands": self.commands, "failures": self.failures}


def _action(secure: bool) -> str:
    return "secure" if secure else "release"
