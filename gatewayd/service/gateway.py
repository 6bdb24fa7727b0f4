"""The running gateway: drivers, door table, engine, uplink and the services composed.

Start-up order matters for safety: persisted sources are loaded and every door is re-asserted
*before* the MQTT uplink starts, so a restart during a lockdown never opens a door.

Each concern is one object with explicit collaborators (docs/architecture.md): the
:class:`Publisher` tells the world, the :class:`Actuator` moves doors, :class:`Reporting`
keeps latencies, :class:`Drills`, :class:`Expiry`, :class:`CommandService` and
:class:`Triggers` decide. The gateway builds them, runs their loops and routes driver events.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gatewayd.console.config import ConsoleConfig
from gatewayd.kernel.bus import Bus
from gatewayd.kernel.campus import Campus
from gatewayd.kernel.command import MAX_COMMAND_BYTES
from gatewayd.kernel.driver import AnyDriver
from gatewayd.kernel.errors import ConfigError, GatewayError
from gatewayd.kernel.events import (
    CameraEvent,
    CredentialRead,
    DeviceFault,
    DeviceHealth,
    DriverEvent,
    PointChanged,
    ReaderReport,
    now_ns,
)
from gatewayd.kernel.registry import load_driver
from gatewayd.kernel.scope import CAMPUS, Scope
from gatewayd.rules.actions import ActionSink
from gatewayd.rules.engine import Engine
from gatewayd.rules.rulefile import RuleSet, load_rules
from gatewayd.rules.schedules import KEY_PREFIX as SCHEDULE_PREFIX
from gatewayd.rules.sources import Source
from gatewayd.security.anchor import HeadSigner
from gatewayd.security.audit import AuditKind, AuditRecord
from gatewayd.security.credentials import CredentialStore
from gatewayd.security.guard import open_guard
from gatewayd.security.journal import daemon_record
from gatewayd.security.keys import ServerKeys
from gatewayd.service.access import AccessService
from gatewayd.service.actuation import Actuator
from gatewayd.service.air import AirService
from gatewayd.service.cap import CapAlerts
from gatewayd.service.clock import ClockWatch
from gatewayd.service.commands import CommandService
from gatewayd.service.config import Config, load_config, restart_needed
from gatewayd.service.core import Core
from gatewayd.service.dispatch import DeviceSink
from gatewayd.service.doors import ActuationReport, DoorService
from gatewayd.service.drift import DriftGuard
from gatewayd.service.drills import Drills
from gatewayd.service.expiry import Expiry
from gatewayd.service.publisher import Publisher
from gatewayd.service.reporting import Reporting
from gatewayd.service.schedules import Scheduler, WallClock
from gatewayd.service.supervisor import Supervisor
from gatewayd.service.tasks import Tasks
from gatewayd.service.triggers import Triggers
from gatewayd.uplink.admission import looks_signed
from gatewayd.uplink.daemon import Uplink
from gatewayd.uplink.heartbeat import Heartbeat
from gatewayd.uplink.outbox import Outbox

if TYPE_CHECKING:
    from gatewayd.console.server import Console

log = structlog.get_logger(__name__)

#: Driver events routed between two turns of the event loop at most.
PUMP_BATCH = 512


class Gateway:
    """One campus gateway; run it with :meth:`run`."""

    def __init__(
        self,
        config: Config,
        *,
        sink: ActionSink | None = None,
        rules: RuleSet | None = None,
        clock: WallClock = time.time,
    ) -> None:
        self.config = config
        self.policy = config.policy
        if rules is None:
            rules = load_rules(self.policy.rules) if self.policy.rules else RuleSet()
        self.rules = rules
        self.campus = Campus(config)
        self.bus: Bus[DriverEvent] = Bus()
        self._events = self.bus.subscribe("gateway")
        self.drivers: dict[str, AnyDriver] = {}
        for dev in config.devices:
            cls = load_driver(dev.driver)
            points = frozenset(self.campus.points[dev.id])
            self.drivers[dev.id] = cls(dev, points, self.bus.publish)
        state_dir = Path(config.state_dir)
        # Empty until run() has read the journal: nothing decides before the record is read.
        self.engine = Engine(self.campus)
        self.doors = DoorService(self.campus, self.drivers)
        self.uplink = Uplink(
            config.mqtt,
            config.site.id,
            self.handle_command,
            classify=partial(
                looks_signed,
                actors=frozenset(a.id for a in config.security.actors),
                max_bytes=MAX_COMMAND_BYTES,
            ),
            queue=Outbox(state_dir / "outbox.sqlite"),
            on_alarm=self._uplink_alarm,
            busy=lambda: self.doors.actuating,
        )
        self.publisher = Publisher(self.campus, self.engine, self.doors, self.uplink)
        #: Every MQTT command passes it: signature, role, replay; it records every decision.
        self.guard = open_guard(
            config.security,
            state_dir=str(state_dir),
            site=config.site.id,
            demo=config.site.demo,
            responder_max_s=self.policy.responder_max_s,
        )
        #: The durable record: the audit log and its index (gatewayd.security.journal).
        self.journal = self.guard.journal
        self.journal.listen_records(self.publisher.audit_record)
        #: Signs the chain's head for publication (gatewayd.security.anchor); read (or made,
        #: the first time) off the loop at start-up, like the journal.
        self.head_signer: HeadSigner | None = None
        self._state_dir = state_dir
        self._head: tuple[int, str] | None = None
        self.journal.listen_records(self._note_head)
        self.journal.listen(self._bookkeeping_health)
        self.guard.listen(self._refusals_counted)
        self.tasks = Tasks()
        self.actuator = Actuator(self.engine, self.doors)
        self.reporting = Reporting(self.campus, self.policy, self.publisher, self.guard)
        core = Core(
            campus=self.campus,
            policy=self.policy,
            engine=self.engine,
            guard=self.guard,
            publisher=self.publisher,
            actuator=self.actuator,
            reporting=self.reporting,
        )
        self.expiry = Expiry(core)
        self.drills = Drills(core)
        self.commands = CommandService(
            core, drills=self.drills, expiry=self.expiry, statistics=self.statistics
        )
        #: Where rule actions (radio alerts, snapshots) go: the devices able to carry them out.
        self.sink: ActionSink = sink or DeviceSink(self.drivers, self.publisher.event)
        self.triggers = Triggers(
            core,
            drills=self.drills,
            commands=self.commands,
            sink=self.sink,
            rules=self.rules,
            tasks=self.tasks,
        )
        store = CredentialStore(config.access, config.credentials) if config.access else None
        #: Cards and PINs at readers; readers showing their door's state.
        self.access = AccessService(core, store, expiry=self.expiry, tasks=self.tasks,
                                    drivers=self.drivers)  # fmt: skip
        self.doors.listen_doors(self.access.door_changed)
        self.drift = DriftGuard(core, self.doors, self.tasks)
        self._site_services(core, config, clock)
        self.publisher.listen(self._record_action)
        self.doors.listen(doors=self.publisher.door_changed, inputs=self.triggers.input_changed,
                          drift=self.drift.drifted)  # fmt: skip
        self.clock = ClockWatch(config.security.timestamp_window_s, self._clock_stepped)
        #: The web console, once started (``[console]`` in the campus file).
        self.console: Console | None = None
        self.supervisor: Supervisor | None = None
        self.started_at = time.time()
        #: Set once start-up is over (doors re-asserted, uplink up): reloads wait for it.
        self._ready = False
        if self.policy.fire_verification_s:
            log.warning(
                "policy.fire_verification_delay",
                seconds=self.policy.fire_verification_s,
                note="fire alarms release egress doors only after this delay",
            )

    def _site_services(self, core: Core, config: Config, clock: WallClock) -> None:
        """Schedules, shelter air and CAP alerts: built on the core, fed by the publisher."""
        #: Door schedules at the schedule priority (``[schedules]``); ``clock`` is the wall
        #: clock they follow (a test injects one).
        self.schedules = Scheduler(core, config.schedules, clock=clock)
        #: SHELTER's air: fans stopped, outside air closed (``[[air_handlers]]``).
        self.air = AirService(core, self.drivers)
        self.actuator.listen(self.air.changed)
        self.publisher.air_summary = self.air.summary
        self.publisher.listen(self.triggers.evaluate_rules)
        #: CAP 1.2 alerts for signage and notification systems (gatewayd.service.cap).
        self.cap = CapAlerts(self.campus, config.cap, self.uplink,
                             actuating=lambda: self.doors.actuating)  # fmt: skip
        self.publisher.listen(self.cap.event)

    # --- what the outside calls ------------------------------------------------------------

    async def handle_command(self, payload: bytes, arrived_ns: int | None = None) -> dict[str, Any]:
        """One command body from MQTT or the console; always a reply, never an exception."""
        return await self.commands.handle_command(payload, arrived_ns)

    def scope_state(self, scope: Scope) -> dict[str, Any]:
        return self.publisher.scope_state(scope)

    def upcoming_schedules(self) -> list[dict[str, Any]]:
        """Each door schedule, whether it holds now, and its next transitions."""
        return self.schedules.upcoming()

    @property
    def audit_path(self) -> Path:
        """The audit log (the after-action reports are read from it)."""
        return self.journal.audit_path

    @property
    def reports(self) -> list[ActuationReport]:
        return list(self.reporting.reports)

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self, ready: Callable[[], None] = lambda: None) -> None:
        """Run until cancelled: drivers, re-assertion, uplink, housekeeping."""
        t0 = now_ns()
        async with AsyncExitStack() as stack, asyncio.TaskGroup() as group:
            self.tasks.attach(group)
            stack.callback(self.tasks.attach, None)
            await self._restore()
            # Unwound last to first: the stop is recorded, then the outbox takes what that
            # said (queued on disk, sent at the next start) and closes.
            stack.callback(self.uplink.close_queue)
            stack.push_async_callback(self._stopped)
            group.create_task(self._pump_events(), name="gateway:events")
            group.create_task(self.guard.run(), name="gateway:refusals")
            group.create_task(self.clock.run(), name="gateway:clock")
            supervisor = Supervisor(self.drivers, self.bus.publish)
            # Door devices first: re-asserting the doors waits for nothing else.
            await supervisor.start(wait_for=self.doors.devices)
            stack.push_async_callback(supervisor.stop)
            self.supervisor = supervisor
            report = await self.actuator.apply(self.campus.doors, now_ns())
            log.info(
                "gateway.reasserted",
                doors=len(report.commanded),
                confirmed=len(report.confirmed),
                failed=len(report.failed),
                sources=len(self.engine.sources),
                ms=round((now_ns() - t0) / 1e6, 1),
            )
            uplink_started = asyncio.Event()
            group.create_task(self.uplink.run(uplink_started.set, close_queue=False),
                              name="gateway:uplink")  # fmt: skip
            await uplink_started.wait()
            self.publisher.mark_everything()
            await self.publisher.flush()
            group.create_task(self.publisher.run(), name="gateway:publisher")
            heartbeat = Heartbeat(self.uplink, self._campus_state, self.config.mqtt.heartbeat_s)
            group.create_task(heartbeat.run(), name="gateway:heartbeat")
            if self.config.console is not None:
                group.create_task(self._console(self.config.console), name="gateway:console")
            group.create_task(self.expiry.run(), name="gateway:expiry")
            group.create_task(self.cap.run(), name="gateway:cap")
            group.create_task(self.schedules.run(), name="gateway:schedules")
            group.create_task(self.air.run(), name="gateway:air")
            group.create_task(self._publish_heads(), name="gateway:heads")
            # Everything built so far lives as long as the daemon: keep the cyclic collector
            # from re-scanning it, so a full collection cannot stall a lockdown for tens of ms.
            gc.freeze()
            log.info(
                "gateway.ready",
                site=self.campus.site,
                doors=len(self.campus.doors),
                devices=len(self.drivers),
                ms=round((now_ns() - t0) / 1e6, 1),
            )
            self._ready = True
            ready()
            await asyncio.Event().wait()

    async def _restore(self) -> None:
        """Read the durable record; put back what was in force before anything is written."""
        recovered = await asyncio.to_thread(self.journal.open)
        self.head_signer = await asyncio.to_thread(
            HeadSigner.load_or_create, self._state_dir, self.config.site.id
        )
        self.journal.start(asyncio.get_running_loop())
        self.guard.authorizer.replay.load(recovered.commands)
        restored: list[Source] = []
        fire: list[Source] = []
        unreadable: list[str] = []
        # A schedule is the config and the clock, not state: re-derived below, never restored
        # (a window that ended while the daemon was down must not open its doors again).
        self.schedules.forget(list(recovered.sources))
        for key, body in recovered.sources.items():
            if key.startswith(SCHEDULE_PREFIX):
                continue
            try:
                source = Source.from_json(body)
                self.campus.resolve(source.scope)
            except (GatewayError, KeyError, TypeError, ValueError) as exc:
                unreadable.append(f"{key}: {exc}")
                continue
            (fire if key.startswith("fire:") else restored).append(source)
        for source in restored:
            self.engine.put(source)
        ended = self.expiry.drop_expired()
        self.triggers.restore_fire(fire)
        await self.schedules.prime()
        problems = recovered.problems + [f"source not restored: {u}" for u in unreadable]
        daemon_record(self.journal, "started", sources=len(restored), fire_rows=len(fire),
                      expired=[s.key for s in ended], rebuilt=recovered.rebuilt,
                      problems=problems)  # fmt: skip
        if recovered.rebuilt or problems:
            log.critical("gateway.state_repaired", rebuilt=recovered.rebuilt, problems=problems)
            self.publisher.event("alarm", "gateway",
                                 {"type": "bookkeeping", "rebuilt": recovered.rebuilt,
                                  "problems": problems, "sources": len(restored)},
                                 life_safety=True)  # fmt: skip

    async def _stopped(self) -> None:
        """Record the stop and let the journal write what is queued (bounded)."""
        self.guard.flush_refusals()
        daemon_record(self.journal, "stopping", sources=len(self.engine.sources))
        await asyncio.to_thread(self.journal.close)

    def _bookkeeping_health(self, healthy: bool, problem: str) -> None:
        """The journal cannot write (or can again): loud, never in the doors' way."""
        if healthy:
            log.warning("bookkeeping.recovered")
        else:
            log.critical("bookkeeping.failing", problem=problem,
                         note="doors still move; releases and unlocks are refused")  # fmt: skip
        self.publisher.event("alarm", "gateway",
                             {"type": "bookkeeping", "healthy": healthy, "problem": problem},
                             life_safety=True)  # fmt: skip

    def _record_action(self, event: Mapping[str, Any]) -> None:
        """A rule's radio alert or snapshot, as it went: into the durable record (reports)."""
        data = event.get("data") or {}
        if event.get("kind") not in ("radio", "camera") or "rule" not in data:
            return
        self.guard.record(AuditKind.ACTION, f"device:{event.get('source')}",
                          {**data, "kind": event.get("kind"), "device": event.get("source"),
                           "device_drill": data.get("drill"), "drill": bool(event.get("drill")),
                           "event": event.get("id"),
                           "location": event.get("location") or {}})  # fmt: skip

    def _note_head(self, record: AuditRecord) -> None:
        self._head = (record.seq, record.hash)

    async def _publish_heads(self) -> None:
        """The signed head, once an interval when the chain grew: anchored off the box."""
        published: tuple[int, str] | None = None
        while True:
            if self._head is not None and self._head != published and self.head_signer:
                published = self._head
                head = self.head_signer.head(*published)
                self.publisher.event("audit", "gateway", head, life_safety=True)
            await asyncio.sleep(self.config.security.head_interval_s)

    def _campus_state(self) -> str:
        return str(self.publisher.scope_state(CAMPUS)["state"])

    def _uplink_alarm(self, kind: str, details: dict[str, Any]) -> None:
        self.publisher.event("alarm", "gateway", {"type": kind, **details}, life_safety=True)

    def _refusals_counted(self, data: dict[str, Any]) -> None:
        self.publisher.event("command", "mqtt", data, life_safety=False)

    def _clock_stepped(self, step_s: float) -> None:
        self.schedules.clock_stepped(step_s)
        self.publisher.event("alarm", "gateway",
                             {"type": "clock_step", "step_s": round(step_s, 3),
                              "window_s": self.clock.threshold_s},
                             life_safety=True)  # fmt: skip
        daemon_record(self.journal, "clock_stepped", step_s=round(step_s, 3))

    async def reload(
        self, config: Config | None = None, *, actor: str = "system:reload"
    ) -> dict[str, Any]:
        """Re-read the campus file (or take ``config``) and apply what can change live.

        Schedules take effect at once; any other section that differs is named in the answer
        and the log as needing a restart. A file that does not validate changes nothing.
        Audited either way.
        """
        if not self._ready:
            # Before start-up has re-asserted the doors, nothing may change under it.
            log.warning("gateway.reload_too_early", actor=actor)
            return {"ok": False, "problems": ["the gateway is still starting; reload again"]}
        try:
            if config is None:
                config = await asyncio.to_thread(load_config, self.config.source)
        except ConfigError as exc:
            # Each problem names its file: the campus file may pull in others (rules,
            # credentials), and "cannot read file" alone says not which.
            problems = [f"{exc.path}: {p}" for p in exc.problems]
            log.error("gateway.reload_refused", source=self.config.source, problems=problems)
            daemon_record(self.journal, "reload_refused", actor=actor, problems=problems)
            self.publisher.event("alarm", "gateway",
                                 {"type": "reload_refused", "problems": problems},
                                 life_safety=False)  # fmt: skip
            return {"ok": False, "problems": problems}
        restart = restart_needed(self.config, config)
        schedules = await self.schedules.reload(config.schedules, actor=actor)
        self.config = self.config.model_copy(update={"schedules": config.schedules})
        daemon_record(self.journal, "reloaded", actor=actor, schedules=schedules,
                      restart_needed=restart)  # fmt: skip
        if restart:
            log.warning("gateway.reload_partial", restart_needed=restart)
        return {"ok": True, "schedules": schedules, "restart_needed": restart}

    async def _reassert_device(self, device: str) -> None:
        report = await self.actuator.apply(self.doors.doors_on(device), now_ns())
        log.info(
            "device.reasserted",
            device=device,
            doors=len(report.commanded),
            confirmed=len(report.confirmed),
            failed=len(report.failed),
        )

    async def _pump_events(self) -> None:
        """Route what the drivers report: door table, alarm inputs, events.

        What queued is taken together: runs of point changes are folded into the door table
        in one pass, and the loop is given back between batches, so a lockdown's read-backs
        never hold up the writes still going out.
        """
        events = self._events
        while True:
            batch = [await events.get(), *events.take(PUMP_BATCH - 1)]
            points: list[PointChanged] = []
            for event in batch:
                if isinstance(event, PointChanged):
                    points.append(event)
                    self.air.on_point(event)
                    continue
                if points:
                    self.doors.on_points(points)
                    points = []
                self._route(event)
            if points:
                self.doors.on_points(points)
            await asyncio.sleep(0)

    def _route(self, event: DriverEvent) -> None:
        """One event that is not a point change: device health, camera, fault."""
        publish = self.publisher.event
        match event:
            case DeviceHealth():
                self.air.on_health(event)
                if self.doors.on_health(event):
                    # A board that was away may have rebooted into its default coil
                    # state: write what is decided now, as at start-up.
                    self.tasks.spawn(
                        self._reassert_device(event.device), f"reassert:{event.device}"
                    )
                publish("device", event.device,
                        {"health": str(event.health), "detail": event.detail},
                        life_safety=False)  # fmt: skip
                log.info("device.health", device=event.device, health=str(event.health),
                         detail=event.detail)  # fmt: skip
                self.access.reader_health(event)
            case CredentialRead():
                self.access.credential(event)
            case ReaderReport():
                self.access.report(event)
            case CameraEvent():
                publish("camera", event.device,
                        {"topic": event.topic, "active": event.active, **event.data},
                        life_safety=event.topic == "tamper")  # fmt: skip
            case DeviceFault():
                publish("device", event.device,
                        {"fault": event.error, "detail": event.detail},
                        life_safety=True)  # fmt: skip
                log.warning("device.fault", device=event.device, error=event.error,
                            detail=event.detail)  # fmt: skip

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

    def statistics(self) -> dict[str, Any]:
        return {
            "latency_ms": self.reporting.latency_statistics(),
            "rules": self.rules.statistics(),
            "sources": len(self.engine.sources),
            "uptime_s": round(time.time() - self.started_at, 1),
            "actuations": self.doors.actuations,
            "drift": self.drift.statistics(),
            "schedules": self.schedules.statistics(),
            "air": self.air.statistics(),
            "bus": self.bus.statistics(),
            "uplink": self.uplink.statistics(),
            "devices": self.supervisor.statistics() if self.supervisor else {},
            "security": self.guard.statistics(),
            "cap": self.cap.statistics(),
        }
