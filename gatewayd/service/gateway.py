"""The running gateway: drivers, door table, engine and uplink wired together.

Start-up order matters for safety: persisted sources are loaded and every door is re-asserted
*before* the MQTT uplink starts, so a restart during a lockdown never opens a door.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gatewayd.console.config import ConsoleConfig
from gatewayd.kernel.bus import Bus
from gatewayd.kernel.campus import Campus
from gatewayd.kernel.doorstate import DoorState
from gatewayd.kernel.driver import AnyDriver
from gatewayd.kernel.errors import GatewayError
from gatewayd.kernel.events import (
    CameraEvent,
    DeviceFault,
    DeviceHealth,
    DriverEvent,
    PointChanged,
    new_id,
    now_ns,
)
from gatewayd.kernel.registry import load_driver
from gatewayd.kernel.scope import CAMPUS, Scope
from gatewayd.rules.actions import ActionSink
from gatewayd.rules.engine import Engine
from gatewayd.rules.policy import RANK
from gatewayd.rules.rulefile import RuleSet, load_rules
from gatewayd.rules.store import SafetyStore
from gatewayd.security.audit import AuditKind, AuditRecord
from gatewayd.security.guard import open_guard
from gatewayd.security.keys import ServerKeys
from gatewayd.service.commands import LATENCY_WINDOW, Actions
from gatewayd.service.config import Config
from gatewayd.service.dispatch import DeviceSink
from gatewayd.service.doors import ActuationReport, DoorService, Target
from gatewayd.service.supervisor import Supervisor
from gatewayd.service.triggers import Triggers
from gatewayd.uplink.daemon import Uplink
from gatewayd.uplink.outbox import Outbox

if TYPE_CHECKING:
    from gatewayd.console.server import Console

log = structlog.get_logger(__name__)

RANK_BY_NAME = {str(state): rank for state, rank in RANK.items()}

#: How often dirty scope summaries are republished.
SUMMARY_INTERVAL_S = 0.05
#: Door payloads encoded between two turns of the event loop.
FLUSH_CHUNK = 64


def utc_iso(epoch_s: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if epoch_s is None else epoch_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Gateway(Actions, Triggers):
    """One campus gateway; run it with :meth:`run`."""

    def __init__(self, config: Config, *, sink: ActionSink | None = None) -> None:
        self.config = config
        self.policy = config.policy
        self.rules = load_rules(self.policy.rules) if self.policy.rules else RuleSet()
        self.campus = Campus(config)
        self.bus: Bus[DriverEvent] = Bus()
        self._events = self.bus.subscribe("gateway")
        self.drivers: dict[str, AnyDriver] = {}
        for dev in config.devices:
            cls = load_driver(dev.driver)
            points = frozenset(self.campus.points[dev.id])
            self.drivers[dev.id] = cls(dev, points, self.bus.publish)
        #: Where rule actions (radio alerts, snapshots) go: the devices able to carry them out.
        self.sink: ActionSink = sink or DeviceSink(self.drivers, self._publish_event)
        self.store = SafetyStore(Path(config.state_dir) / "safety.sqlite")
        self.engine = Engine(self.campus, self.store)
        self.doors = DoorService(self.campus, self.drivers, self._door_changed, self._input_changed)
        #: Every MQTT command passes it: signature, role, replay, audit (gatewayd/security.py).
        self.guard = open_guard(
            config.security,
            state_dir=config.state_dir,
            site=config.site.id,
            demo=config.site.demo,
            responder_max_s=config.policy.responder_max_s,
            on_record=self._publish_audit,
        )
        self.uplink = Uplink(
            config.mqtt,
            config.site.id,
            self.handle_command,
            queue=Outbox(Path(config.state_dir) / "outbox.sqlite"),
        )
        self._dirty_scopes: set[Scope] = set()
        self._dirty_doors: set[str] = set()
        #: The web console, once started (``[console]`` in the campus file).
        self.console: Console | None = None
        self._ready = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self.supervisor: Supervisor | None = None
        self.started_at = time.time()
        self.reports: list[ActuationReport] = []
        self._latencies: deque[dict[str, float | None]] = deque(maxlen=LATENCY_WINDOW)
        self._expiry_wake = asyncio.Event()
        self._fire_pending: dict[str, asyncio.Task[None]] = {}
        if self.policy.fire_verification_s:
            log.warning(
                "policy.fire_verification_delay",
                seconds=self.policy.fire_verification_s,
                note="fire alarms release egress doors only after this delay",
            )

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self, ready: Callable[[], None] = lambda: None) -> None:
        """Run until cancelled: drivers, re-assertion, uplink, housekeeping."""
        t0 = now_ns()
        async with AsyncExitStack() as stack, asyncio.TaskGroup() as group:
            self._group = group
            stack.callback(self.store.close)
            stack.callback(self.guard.close)
            group.create_task(self._pump_events(), name="gateway:events")
            # Overrides and drills that ran out while the daemon was down end before anything
            # is written, so a restart never re-opens a door whose override has expired.
            for source in self.engine.expired(time.time()):
                self.engine.remove(source.key, force=True)
            supervisor = Supervisor(self.drivers, self.bus.publish)
            # Door devices first: re-asserting the doors waits for nothing else.
            await supervisor.start(wait_for=self.doors.devices)
            stack.push_async_callback(supervisor.stop)
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
            await self._flush_retained()
            group.create_task(self._publish_summaries(), name="gateway:summaries")
            if self.config.console is not None:
                group.create_task(self._console(self.config.console), name="gateway:console")
            group.create_task(self._expire(), name="gateway:expiry")
            # Everything built so far lives as long as the daemon: keep the cyclic collector
            # from re-scanning it, so a full collection cannot stall a lockdown for tens of ms.
            gc.freeze()
            self._ready.set()
            log.info(
                "gateway.ready",
                site=self.campus.site,
                doors=len(self.campus.doors),
                devices=len(self.drivers),
                ms=round((now_ns() - t0) / 1e6, 1),
            )
            ready()
            await asyncio.Event().wait()

    async def _reassert(self) -> ActuationReport:
        return await self._apply(self.campus.doors, now_ns())

    async def _reassert_device(self, device: str) -> None:
        door_ids = self.doors.doors_on(device)
        report = await self._apply(door_ids, now_ns())
        log.info(
            "device.reasserted",
            device=device,
            doors=len(report.commanded),
            confirmed=len(report.confirmed),
            failed=len(report.failed),
        )

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        if self._group is None:
            # Not running (a unit test driving commands directly): nothing may outlive us.
            coro.close()
            log.error("gateway.not_running", task=name)
            return None
        return self._group.create_task(coro, name=name)

    async def _expire(self) -> None:
        """End responder overrides and drills at their time, and relock what they held."""
        while True:
            due = self.engine.next_expiry()
            timeout_s = None if due is None else max(0.0, due - time.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._expiry_wake.wait()
            self._expiry_wake.clear()
            for source in self.engine.expired(time.time()):
                trigger_ns = now_ns()
                doors = self.engine.remove(source.key, force=True)
                self._mark_dirty(source.scope)
                log.warning("source.expired", key=source.key, actor=source.actor, doors=len(doors))
                self.guard.note(
                    AuditKind.OVERRIDE if source.name == "responder" else AuditKind.STATE,
                    "system:expiry",
                    {
                        "ended": "expired",
                        "key": source.key,
                        "by": source.actor,
                        "scope": str(source.scope),
                        "doors": len(doors),
                    },
                )
                self._publish_event(
                    "door" if source.name == "responder" else "state",
                    source.actor,
                    {"ended": "expired", "key": source.key, "scope": str(source.scope)},
                    life_safety=True,
                    drill=source.drill,
                )
                report = await self._apply(doors, trigger_ns)
                self.record(report, trigger=f"expiry {source.key}", drill=source.drill)

    def _expiry_changed(self) -> None:
        self._expiry_wake.set()

    def _mark_dirty(self, scope: Scope) -> None:
        self._dirty_scopes.update(self._ancestors(scope))
        if scope.kind != "door":
            # Narrower scopes show the state in force over them, so they change too.
            inside = set(self.campus.resolve(scope))
            self._dirty_scopes.update(
                s for s in self.campus.all_scopes() if inside & set(self.campus.resolve(s))
            )

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
                    self._publish_event(
                        "device",
                        event.device,
                        {
                            "health": str(event.health),
                            "detail": event.detail,
                        },
                        life_safety=False,
                    )
                    log.info(
                        "device.health",
                        device=event.device,
                        health=str(event.health),
                        detail=event.detail,
                    )
                case CameraEvent():
                    self._publish_event(
                        "camera",
                        event.device,
                        {
                            "topic": event.topic,
                            "active": event.active,
                            **event.data,
                        },
                        life_safety=event.topic == "tamper",
                    )
                case DeviceFault():
                    self._publish_event(
                        "device",
                        event.device,
                        {
                            "fault": event.error,
                            "detail": event.detail,
                        },
                        life_safety=True,
                    )
                    log.warning(
                        "device.fault", device=event.device, error=event.error, detail=event.detail
                    )

    # --- publishing ------------------------------------------------------------------------

    async def _console(self, config: ConsoleConfig) -> None:
        """Serve the web console; a page that cannot start never stops the doors."""
        from gatewayd.console.server import Console

        keys = ServerKeys(self.config.security.console_keys, demo=self.config.site.demo)
        console = Console(self, config, keys=keys, demo=self.config.site.demo)
        self.console = console
        try:
            await console.run(lambda: log.info("console.ready", url=console.url))
        except (OSError, GatewayError) as exc:
            log.critical("console.failed", error=str(exc), host=config.host, port=config.port)

    def _door_changed(self, state: DoorState) -> None:
        # Only marked here: a lockdown changes every door twice within milliseconds, and
        # encoding 2,000 payloads must not delay the writes still going out.
        self._dirty_doors.add(state.id)
        self._dirty_scopes.update(self.campus.scopes_of(state.id)[:-1])

    async def _publish_summaries(self) -> None:
        """Publish what changed every ``SUMMARY_INTERVAL_S``."""
        while True:
            await asyncio.sleep(SUMMARY_INTERVAL_S)
            await self._flush_retained()

    async def _flush_retained(self) -> None:
        """Publish the doors, then the scope counts, that changed since the last flush."""
        doors, self._dirty_doors = self._dirty_doors, set()
        for i, door_id in enumerate(doors, 1):
            self.uplink.set_retained(f"door/{door_id}", self.doors.doors[door_id].payload())
            # A thousand payloads in one go would stall a lockdown's writes: yield often.
            if i % FLUSH_CHUNK == 0:
                await asyncio.sleep(0)
        scopes, self._dirty_scopes = self._dirty_scopes, set()
        for scope in scopes:
            self.uplink.set_retained(f"state/{scope}", self.scope_state(scope))

    def scope_state(self, scope: Scope) -> dict[str, Any]:
        """The effective SRP state of a scope and how many of its doors are secured."""
        active = [
            s
            for a in self._ancestors(scope)
            for s in self.engine.sources_at(a)
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

    def _publish_audit(self, record: AuditRecord) -> None:
        # The external anchor of the hash chain (docs/security.md, section 7): after the
        # door traffic, never before it.
        self._publish_event("audit", "gateway", record.as_dict(), life_safety=False)

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
            self.uplink.publish_event(kind, event, life_safety=life_safety)
        except GatewayError as exc:
            # A full outbox must never stop a lockdown: the doors matter more than the report.
            log.critical("event.not_queued", kind=kind, source=source, error=str(exc))
        self.evaluate_rules(event)

    async def _apply(self, doors: Iterable[str], trigger_ns: int) -> ActuationReport:
        """Actuate what the engine decides now; the door topic names override and drill."""
        decisions = self.engine.decide_all(doors)
        targets = {
            d: Target(dec.locked, dec.reason, int(dec.priority)) for d, dec in decisions.items()
        }
        detail: dict[str, dict[str, Any]] = {}
        for door_id, dec in decisions.items():
            held_by = self.engine.get(dec.claim.source) if dec.claim else None
            if held_by is None:
                continue
            if held_by.name == "responder" and held_by.expires_at is not None:
                detail[door_id] = {
                    "override": {"actor": held_by.actor, "until": utc_iso(held_by.expires_at)}
                }
            elif held_by.drill:
                detail[door_id] = {"drill": True}
        return await self.doors.actuate(targets, trigger_ns=trigger_ns, detail=detail)

    def statistics(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_statistics(),
            "rules": self.rules.statistics(),
            "sources": len(self.engine.sources),
            "uptime_s": round(time.time() - self.started_at, 1),
            "actuations": self.doors.actuations,
            "bus": self.bus.statistics(),
            "uplink": self.uplink.statistics(),
            "devices": self.supervisor.statistics() if self.supervisor else {},
            "security": self.guard.statistics(),
        }
