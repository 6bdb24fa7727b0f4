"""The running gateway: drivers, door table, engine and uplink wired together.

Start-up order matters for safety: persisted sources are loaded and every door is re-asserted
*before* the MQTT uplink starts, so a restart during a lockdown never opens a door.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from gatewayd.bus import Bus
from gatewayd.campus import CAMPUS, Campus, Scope
from gatewayd.commands import Action, Command, command_id_of, parse_command
from gatewayd.config import Config
from gatewayd.doors import ActuationReport, DoorService, DoorState
from gatewayd.driver import AnyDriver
from gatewayd.errors import CommandError
from gatewayd.events import (
    CameraEvent,
    DeviceFault,
    DeviceHealth,
    DriverEvent,
    PointChanged,
    new_id,
    now_ns,
)
from gatewayd.mqtt import Uplink
from gatewayd.registry import load_driver
from gatewayd.supervisor import Supervisor
from rules.arbitration import Priority
from rules.engine import Engine
from rules.sources import Source
from rules.store import SafetyStore

log = structlog.get_logger(__name__)

#: How often dirty scope summaries are republished.
SUMMARY_INTERVAL_S = 0.1


def utc_iso(epoch_s: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if epoch_s is None else epoch_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Gateway:
    """One campus gateway; run it with :meth:`run`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.campus = Campus(config)
        self.bus: Bus[DriverEvent] = Bus()
        self._events = self.bus.subscribe("gateway")
        self.drivers: dict[str, AnyDriver] = {}
        for dev in config.devices:
            cls = load_driver(dev.driver)
            points = frozenset(self.campus.points[dev.id])
            self.drivers[dev.id] = cls(dev, points, self.bus.publish)
        self.store = SafetyStore(Path(config.state_dir) / "safety.sqlite")
        self.engine = Engine(self.campus, self.store)
        self.doors = DoorService(self.campus, self.drivers, self._door_changed, self._input_changed)
        self.uplink = Uplink(config.mqtt, config.site.id, self.handle_command)
        self._dirty_scopes: set[Scope] = set()
        self._ready = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self.supervisor: Supervisor | None = None
        self.started_at = time.time()
        self.reports: list[ActuationReport] = []

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self, ready: Callable[[], None] = lambda: None) -> None:
        """Run until cancelled: drivers, re-assertion, uplink, housekeeping."""
        t0 = now_ns()
        async with AsyncExitStack() as stack, asyncio.TaskGroup() as group:
            self._group = group
            stack.callback(self.store.close)
            group.create_task(self._pump_events(), name="gateway:events")
            supervisor = await stack.enter_async_context(Supervisor(self.drivers, self.bus.publish))
            self.supervisor = supervisor
            report = await self._reassert()
            log.info(
                "gateway.reasserted",
                doors=len(report.commanded),
                confirmed=len(report.confirmed),
                failed=len(report.failed),
                sources=len(self.engine.sources),
                ms=round((now_ns() - t0) / 1e6, 1),
            )
            uplink_started = asyncio.Event()
            group.create_task(self.uplink.run(uplink_started.set), name="gateway:uplink")
            await uplink_started.wait()
            for scope in self.campus.all_scopes():
                self._dirty_scopes.add(scope)
            for state in self.doors.doors.values():
                self._door_changed(state)
            group.create_task(self._publish_summaries(), name="gateway:summaries")
            self._ready.set()
            log.info("gateway.ready", site=self.campus.site, doors=len(self.campus.doors),
                     devices=len(self.drivers), ms=round((now_ns() - t0) / 1e6, 1))
            ready()
            await asyncio.Event().wait()

    async def _reassert(self) -> ActuationReport:
        decisions = self.engine.decide_all(self.campus.doors)
        targets = {d: (dec.locked, dec.reason) for d, dec in decisions.items()}
        return await self.doors.actuate(targets, trigger_ns=now_ns())

    async def _reassert_device(self, device: str) -> None:
        door_ids = self.doors.doors_on(device)
        report = await self._apply(door_ids, now_ns())
        log.info("device.reasserted", device=device, doors=len(report.commanded),
                 confirmed=len(report.confirmed), failed=len(report.failed))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        assert self._group is not None
        self._group.create_task(coro, name=name)

    async def _pump_events(self) -> None:
        async for event in self._events:
            match event:
                case PointChanged():
                    self.doors.on_point(event)
                case DeviceHealth():
                    came_back = self.doors.on_health(event)
                    if came_back:
                        # A board that was away may have rebooted into its default coil
                        # state: write what is decided now, as at start-up.
                        self._spawn(self._reassert_device(event.device), f"reassert:{event.device}")
                    self._publish_event("device", event.device, {
                        "health": str(event.health), "detail": event.detail,
                    }, life_safety=False)
                    log.info("device.health", device=event.device, health=str(event.health),
                             detail=event.detail)
                case CameraEvent():
                    self._publish_event("camera", event.device, {
                        "topic": event.topic, "active": event.active, **event.data,
                    }, life_safety=event.topic == "tamper")
                case DeviceFault():
                    self._publish_event("device", event.device, {
                        "fault": event.error, "detail": event.detail,
                    }, life_safety=True)
                    log.warning("device.fault", device=event.device, error=event.error,
                                detail=event.detail)

    # --- publishing ------------------------------------------------------------------------

    def _door_changed(self, state: DoorState) -> None:
        self.uplink.set_retained(f"door/{state.id}", state.payload())
        self._dirty_scopes.update(self.campus.scopes_of(state.id)[:-1])

    def _input_changed(self, input_id: str, active: bool) -> None:
        alarm = self.campus.inputs[input_id]
        log.warning("input.changed", input=input_id, kind=str(alarm.kind), active=active)
        self._publish_event("alarm", input_id, {
            "input": input_id, "type": str(alarm.kind), "active": active,
        }, life_safety=True, location={"building": alarm.building, "room": alarm.room})

    async def _publish_summaries(self) -> None:
        while True:
            await asyncio.sleep(SUMMARY_INTERVAL_S)
            dirty, self._dirty_scopes = self._dirty_scopes, set()
            for scope in dirty:
                self.uplink.set_retained(f"state/{scope}", self.scope_state(scope))

    def scope_state(self, scope: Scope) -> dict[str, Any]:
        """The effective SRP state of a scope and how many of its doors are secured."""
        ancestors = set(self._ancestors(scope))
        active = [
            s for s in self.engine.sources.values()
            if s.key.startswith("srp:") and s.scope in ancestors
        ]
        winner = min(active, key=lambda s: (s.priority, -s.scope.rank), default=None)
        return {
            "scope": str(scope),
            "state": winner.name if winner else "normal",
            "since": utc_iso(winner.since) if winner else None,
            "source": str(winner.scope) if winner else None,
            "actor": winner.actor if winner else None,
            "drill": winner.drill if winner else False,
            **self.doors.summary(self.campus.resolve(scope)),
            "updated_at": utc_iso(),
        }

    def _ancestors(self, scope: Scope) -> list[Scope]:
        if scope.kind == "campus":
            return [CAMPUS]
        if scope.kind == "building":
            return [CAMPUS, scope]
        if scope.kind == "zone":
            return [CAMPUS, Scope("building", self.campus.zones[scope.ident].building), scope]
        return list(self.campus.scopes_of(scope.ident))

    def _publish_event(
        self,
        kind: str,
        source: str,
        data: Mapping[str, Any],
        *,
        life_safety: bool,
        location: Mapping[str, Any] | None = None,
        drill: bool = False,
    ) -> None:
        self.uplink.publish_event(kind, {
            "id": new_id(),
            "ts": utc_iso(),
            "kind": kind,
            "source": source,
            "location": dict(location or {}),
            "drill": drill,
            "data": dict(data),
        }, life_safety=life_safety)

    # --- commands --------------------------------------------------------------------------

    async def handle_command(self, payload: bytes) -> dict[str, Any]:
        """Parse, decide, actuate, verify; always return a reply, never raise for bad input."""
        trigger_ns = now_ns()
        try:
            command = parse_command(payload)
        except CommandError as exc:
            log.warning("command.refused", error=exc.code, message=str(exc))
            reply = {"id": command_id_of(payload), "ok": False, "error": exc.code,
                     "message": str(exc)}
            self._publish_event("command", "mqtt", reply, life_safety=True)
            return reply
        try:
            reply = await self.execute(command, trigger_ns)
        except CommandError as exc:
            reply = {"id": command.id, "ok": False, "error": exc.code, "message": str(exc),
                     "action": str(command.action)}
            log.warning("command.refused", id=command.id, actor=command.actor,
                        action=str(command.action), error=exc.code, message=str(exc))
        self._publish_event("command", command.actor, {
            "command": command.id, "action": str(command.action),
            "scope": command.scope or (f"door/{command.door}" if command.door else None),
            **{k: reply[k] for k in ("ok", "error", "message") if k in reply},
            "latency_ms": reply.get("latency_ms"),
        }, life_safety=True)
        return reply

    async def execute(self, command: Command, trigger_ns: int) -> dict[str, Any]:
        """Carry out one authenticated command (authorisation comes with the security work)."""
        match command.action:
            case Action.LOCKDOWN:
                scope = self._scope_of(command)
                source = Source(
                    key=f"srp:{scope}", scope=scope, priority=Priority.LOCKDOWN, locked=True,
                    name="lockdown", actor=command.actor, since=time.time(),
                )
                doors = self.engine.put(source)
            case Action.RELEASE:
                scope = self._scope_of(command)
                key = f"manual:{scope}" if scope.kind == "door" else f"srp:{scope}"
                if key not in self.engine.sources:
                    raise CommandError("not_active", f"nothing to release at {scope}")
                doors = self.engine.remove(key)
            case Action.LOCK | Action.UNLOCK:
                scope = self._door_scope(command)
                locked = command.action is Action.LOCK
                source = Source(
                    key=f"manual:{scope}", scope=scope, priority=Priority.MANUAL, locked=locked,
                    name=str(command.action), actor=command.actor, since=time.time(),
                )
                self._refuse_if_overridden(source)
                doors = self.engine.put(source)
            case _:
                raise CommandError(
                    "not_supported", f"action {command.action!s} is not available yet"
                )
        report = await self._apply(doors, trigger_ns)
        self.reports.append(report)
        del self.reports[:-1000]
        log.info("command.done", id=command.id, actor=command.actor,
                 action=str(command.action), scope=str(scope),
                 commanded=len(report.commanded), confirmed=len(report.confirmed),
                 failed=len(report.failed),
                 **{f"{k}_ms": v for k, v in report.latencies_ms().items()})
        self._dirty_scopes.update(self._ancestors(scope))
        return {
            "id": command.id,
            "ok": not report.failed,
            "error": "unconfirmed" if report.failed else None,
            "message": f"{len(report.confirmed)}/{len(report.commanded)} doors confirmed",
            "action": str(command.action),
            "scope": str(scope),
            "doors": {
                "commanded": report.commanded,
                "confirmed": report.confirmed,
                "failed": report.failed,
            },
            "latency_ms": report.latencies_ms(),
        }

    async def _apply(self, doors: list[str], trigger_ns: int) -> ActuationReport:
        decisions = self.engine.decide_all(doors)
        targets = {d: (dec.locked, dec.reason) for d, dec in decisions.items()}
        return await self.doors.actuate(targets, trigger_ns=trigger_ns)

    def _refuse_if_overridden(self, source: Source) -> None:
        door_id = source.scope.ident
        current = self.engine.decide(door_id)
        if current.priority < source.priority and current.locked != source.locked:
            raise CommandError(
                "held",
                f"door {door_id} is held {'locked' if current.locked else 'unlocked'} by"
                f" {current.reason}, which outranks a manual {source.name}",
            )

    def _scope_of(self, command: Command) -> Scope:
        if command.door is not None:
            return self._door_scope(command)
        if command.scope is None:
            raise CommandError("bad_request", f"{command.action!s} needs a scope or a door")
        scope = Scope.parse(command.scope)
        self.campus.resolve(scope)
        return scope

    def _door_scope(self, command: Command) -> Scope:
        ident = command.door
        if ident is None and command.scope and command.scope.startswith("door/"):
            ident = command.scope.removeprefix("door/")
        if ident is None:
            raise CommandError("bad_request", f"{command.action!s} needs a door")
        scope = Scope("door", ident)
        self.campus.resolve(scope)
        return scope

    def statistics(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started_at, 1),
            "actuations": self.doors.actuations,
            "bus": self.bus.statistics(),
            "uplink": self.uplink.statistics(),
            "devices": self.supervisor.statistics() if self.supervisor else {},
        }
