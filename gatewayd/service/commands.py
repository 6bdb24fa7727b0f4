"""Command execution: SRP states, release, door actions, responder overrides, drills, status.

:class:`Actions` is mixed into :class:`gatewayd.gateway.Gateway`; it holds the decisions,
the gateway holds the lifecycle and the publishing. ``handle_command(payload) -> reply`` is
the single entry point from outside: the command guard (signature, role, replay, audit)
admits a command before :meth:`Actions.run_command` sees it, and every decision carries the
command's ``actor`` into the audit log.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import structlog

from gatewayd.kernel.command import (
    Action,
    Command,
    DrillParams,
    ReleaseParams,
    StateParams,
    UnlockParams,
    command_id_of,
    parse_command,
    parse_params,
)
from gatewayd.kernel.errors import CommandError
from gatewayd.kernel.events import now_ns
from gatewayd.kernel.scope import Scope
from gatewayd.kernel.site import SrpState
from gatewayd.rules.arbitration import Priority
from gatewayd.rules.policy import (
    check_transition,
    responder_override,
    room_release,
    srp_source,
    state_of,
)
from gatewayd.rules.sources import Effect, Source
from gatewayd.rules.store import StoreError
from gatewayd.security.audit import AuditKind
from gatewayd.service.doors import ActuationReport
from gatewayd.service.hooks import GatewayHooks

log = structlog.get_logger(__name__)

SRP_ACTIONS = frozenset(
    {Action.HOLD, Action.SECURE, Action.LOCKDOWN, Action.EVACUATE, Action.SHELTER}
)
#: Triggers kept for latency statistics.
LATENCY_WINDOW = 500


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


class Actions(GatewayHooks):
    """What a command does; mixed into the gateway, which provides the declared members."""

    reports: list[ActuationReport]
    _latencies: deque[dict[str, float | None]]

    # --- provided by the gateway ------------------------------------------------------------

    def _expiry_changed(self) -> None:
        raise NotImplementedError

    def statistics(self) -> dict[str, Any]:
        raise NotImplementedError

    # --- entry points ------------------------------------------------------------------------

    async def handle_command(self, payload: bytes) -> dict[str, Any]:
        """Parse, admit, decide, actuate, verify; always reply, never raise for bad input.

        Nothing moves unless the guard admitted (authenticated, authorized, audited) it.
        """
        trigger_ns = now_ns()
        command: Command | None = None
        try:
            command = parse_command(payload)
            self.guard.admit(command, payload=payload, now=time.time())
        except CommandError as exc:
            if command is None:
                # The guard audits its own refusals; an unparsable body is audited here.
                self.guard.refused(exc, payload=payload)
            log.warning(
                "command.refused",
                id=command.id if command else None,
                claimed_actor=command.actor if command else None,
                error=exc.code,
                message=str(exc),
            )
            reply = {
                "id": command.id if command else command_id_of(payload),
                "ok": False,
                "error": exc.code,
                "message": str(exc),
            }
            self._publish_event("command", "mqtt", reply, life_safety=True)
            return reply
        return await self.run_command(command, trigger_ns)

    async def run_command(self, command: Command, trigger_ns: int) -> dict[str, Any]:
        """Execute a parsed command (from MQTT, an input or a rule) and publish its outcome."""
        try:
            reply = await self.execute(command, trigger_ns)
        except (CommandError, StoreError) as exc:
            reply = {
                "id": command.id,
                "ok": False,
                "error": exc.code,
                "message": str(exc),
                "action": str(command.action),
            }
            log.warning(
                "command.refused",
                id=command.id,
                actor=command.actor,
                action=str(command.action),
                error=exc.code,
                message=str(exc),
            )
        if command.action is not Action.STATUS:
            self._publish_event(
                "command",
                command.actor,
                {
                    "command": command.id,
                    "action": str(command.action),
                    "scope": command.scope or (f"door/{command.door}" if command.door else None),
                    **{k: reply[k] for k in ("ok", "error", "message") if k in reply},
                    "latency_ms": reply.get("latency_ms"),
                },
                life_safety=True,
                drill=bool(reply.get("drill")),
            )
        return reply

    async def execute(self, command: Command, trigger_ns: int) -> dict[str, Any]:
        """Decide and actuate one command; raise :class:`CommandError` to refuse it."""
        extra: dict[str, Any] = {}
        if command.action in SRP_ACTIONS:
            scope, doors = self._set_state(command)
        elif command.action is Action.RELEASE:
            scope, doors = self._release(command)
        elif command.action is Action.UNLOCK and command.params:
            scope, doors, extra = self._responder_unlock(command)
        elif command.action in (Action.LOCK, Action.UNLOCK):
            scope, doors = self._manual(command)
        elif command.action is Action.DRILL:
            return await self._drill(command, trigger_ns)
        else:
            return self._status(command)
        reply = await self._finish(command, scope, doors, trigger_ns)
        return {**reply, **extra}

    # --- SRP states ----------------------------------------------------------------------------

    def _set_state(self, command: Command) -> tuple[Scope, list[str]]:
        scope = self._scope_of(command)
        params = parse_params(StateParams, command)
        state = SrpState(str(command.action))
        if state is SrpState.SHELTER and params.hazard is None:
            raise CommandError(
                "bad_request",
                "shelter needs params.hazard (tornado, hazmat, earthquake, severe_weather, bomb)",
            )
        check_transition(state_of(self.engine.get(f"srp:{scope}")), state, scope)
        if params.source == "panic_app":
            self._publish_event(
                "alarm",
                "panic_app",
                {
                    "type": "panic",
                    "actor": command.actor,
                    "scope": str(scope),
                },
                life_safety=True,
                location=params.location,
            )
        doors = set(self.preempt_drills(self.campus.resolve(scope), why=f"{state} {scope}"))
        # "Lockdown!" again means every door again: per-room releases under it end.
        for source in self._room_releases_under(scope):
            doors.update(self.engine.remove(source.key))
        doors.update(
            self.engine.put(
                srp_source(
                    self.policy,
                    state,
                    scope,
                    actor=command.actor,
                    since=time.time(),
                    hazard=params.hazard,
                )
            )
        )
        self._publish_event(
            "state",
            command.actor,
            {
                "scope": str(scope),
                "state": str(state),
                "hazard": params.hazard,
            },
            life_safety=True,
            location=self._location_of(scope),
        )
        self.guard.note(
            AuditKind.STATE,
            command.actor,
            {
                "command": command.id,
                "scope": str(scope),
                "state": str(state),
                "hazard": params.hazard,
                "doors": len(doors),
            },
        )
        return scope, sorted(doors, key=self.campus.door_index.__getitem__)

    def _location_of(self, scope: Scope) -> dict[str, Any]:
        """Where a scope is, as an event's location (the building a responder goes to)."""
        match scope.kind:
            case "building":
                return {"building": scope.ident}
            case "zone":
                return {"building": self.campus.zones[scope.ident].building}
            case "door":
                door = self.campus.doors[scope.ident]
                return {"building": door.building, "floor": door.floor, "room": door.room}
            case _:
                return {}

    def _release(self, command: Command) -> tuple[Scope, list[str]]:
        scope = self._scope_of(command)
        # Checked by the guard already; here only so that no other key slips through.
        cosigner = parse_params(ReleaseParams, command).cosigner
        if scope.kind == "door":
            released = self._release_door(scope, command.actor)
            self.guard.note(
                AuditKind.STATE,
                command.actor,
                {
                    "command": command.id,
                    "scope": str(scope),
                    "state": "released",
                    "cosigner": cosigner,
                    "doors": len(released),
                },
            )
            return scope, released
        keys = [k for k in (f"srp:{scope}", f"drill:{scope}") if self.engine.get(k)]
        if not keys:
            raise CommandError("not_active", f"nothing to release at {scope}")
        doors: set[str] = set()
        for key in keys:
            doors.update(self.engine.remove(key))
        for source in self._room_releases_under(scope):
            doors.update(self.engine.remove(source.key))
        self._publish_event(
            "state",
            command.actor,
            {"scope": str(scope), "state": "normal"},
            life_safety=True,
            location=self._location_of(scope),
        )
        self.guard.note(
            AuditKind.STATE,
            command.actor,
            {
                "command": command.id,
                "scope": str(scope),
                "state": "normal",
                "released": keys,
                "cosigner": cosigner,
                "doors": len(doors),
            },
        )
        return scope, sorted(doors, key=self.campus.door_index.__getitem__)

    def _release_door(self, scope: Scope, actor: str) -> list[str]:
        """A door held by a wider state gets a per-room release; else its own sources end."""
        own = [f"srp:{scope}", f"manual:{scope}", f"responder:{scope}", f"drill:{scope}"]
        claim = self.engine.decide(scope.ident).claim
        if (
            claim is not None
            and claim.priority is Priority.LOCKDOWN
            and claim.locked
            and claim.source not in own
        ):
            return self.engine.put(room_release(scope, actor=actor, since=time.time()))
        keys = [k for k in own if self.engine.get(k)]
        if not keys:
            raise CommandError("not_active", f"nothing to release at {scope}")
        doors: set[str] = set()
        for key in keys:
            doors.update(self.engine.remove(key))
        return sorted(doors)

    def _room_releases_under(self, scope: Scope) -> list[Source]:
        inside = set(self.campus.resolve(scope))
        return [
            s
            for s in self.engine.sources.values()
            if s.state == "released" and s.scope.ident in inside
        ]

    def preempt_drills(self, doors: Iterable[str], *, why: str) -> list[str]:
        """End every drill overlapping these doors: a real incident always wins."""
        wanted = set(doors)
        moved: list[str] = []
        for source in list(self.engine.sources.values()):
            if source.drill and wanted & set(self.campus.resolve(source.scope)):
                moved += self.engine.remove(source.key)
                self._mark_dirty(source.scope)
                log.warning("drill.preempted", scope=str(source.scope), by=why)
                self._publish_event(
                    "state",
                    source.actor,
                    {
                        "scope": str(source.scope),
                        "state": source.state,
                        "ended": "preempted",
                        "by": why,
                    },
                    life_safety=True,
                    drill=True,
                )
        return moved

    # --- doors -----------------------------------------------------------------------------

    def _manual(self, command: Command) -> tuple[Scope, list[str]]:
        scope = self._door_scope(command)
        locked = command.action is Action.LOCK
        source = Source(
            key=f"manual:{scope}",
            scope=scope,
            priority=Priority.MANUAL,
            effects=(Effect(frozenset(), locked),),
            name=str(command.action),
            actor=command.actor,
            since=time.time(),
        )
        self._refuse_if_overridden(source, locked)
        doors = self.engine.put(source)
        self.guard.note(
            AuditKind.OVERRIDE,
            command.actor,
            {"command": command.id, "door": scope.ident, "manual": str(command.action)},
        )
        return scope, doors

    def _responder_unlock(self, command: Command) -> tuple[Scope, list[str], dict[str, Any]]:
        """A bounded unlock that pre-empts the lockdown family for one door, then relocks."""
        scope = self._door_scope(command)
        params = parse_params(UnlockParams, command)
        duration_s = params.duration_s or self.policy.responder_momentary_s
        if duration_s > self.policy.responder_max_s:
            raise CommandError(
                "out_of_bounds",
                f"params.duration_s {duration_s:g} exceeds the"
                f" site's responder_max_s {self.policy.responder_max_s:g}",
            )
        now = time.time()
        source = responder_override(scope, actor=command.actor, since=now, until=now + duration_s)
        doors = self.engine.put(source)
        self._expiry_changed()
        log.warning(
            "responder.override", door=scope.ident, actor=command.actor, duration_s=duration_s
        )
        self.guard.note(
            AuditKind.OVERRIDE,
            command.actor,
            {
                "command": command.id,
                "door": scope.ident,
                "unlock_s": duration_s,
                "until": now + duration_s,
            },
        )
        return scope, doors, {"override": {"actor": command.actor, "until": now + duration_s}}

    def _refuse_if_overridden(self, source: Source, locked: bool) -> None:
        door_id = source.scope.ident
        current = self.engine.decide(door_id)
        if current.priority < source.priority and current.locked != locked:
            raise CommandError(
                "held",
                f"door {door_id} is held {'locked' if current.locked else 'unlocked'} by"
                f" {current.reason}, which outranks a manual {source.name}",
            )

    # --- drills -----------------------------------------------------------------------------

    async def _drill(self, command: Command, trigger_ns: int) -> dict[str, Any]:
        params = parse_params(DrillParams, command)
        text = params.scope or command.scope
        if text is None:
            raise CommandError("bad_request", "drill needs params.scope (or scope)")
        scope = Scope.parse(text)
        doors = self.campus.resolve(scope)
        if params.state in (SrpState.NORMAL,):
            raise CommandError("bad_request", "params.state: a drill needs an SRP state")
        if params.duration_s > self.policy.drill_max_s:
            raise CommandError(
                "out_of_bounds",
                f"params.duration_s {params.duration_s:g}"
                f" exceeds the site's drill_max_s {self.policy.drill_max_s:g}",
            )
        self._refuse_if_incident(doors, scope)
        now = time.time()
        source = srp_source(
            self.policy,
            params.state,
            scope,
            actor=command.actor,
            since=now,
            hazard=params.hazard,
            drill=True,
            dry_run=params.dry_run,
            expires_at=now + params.duration_s,
        )
        self._publish_event(
            "state",
            command.actor,
            {
                "scope": str(scope),
                "state": str(params.state),
                "dry_run": params.dry_run,
                "until": source.expires_at,
            },
            life_safety=False,
            drill=True,
        )
        if params.dry_run:
            preview = srp_source(
                self.policy,
                params.state,
                scope,
                actor=command.actor,
                since=now,
                hazard=params.hazard,
            )
            return self._dry_run(command, source, preview, doors)
        moved = self.engine.put(source)
        self._expiry_changed()
        reply = await self._finish(command, scope, moved, trigger_ns, drill=True)
        return {**reply, "drill": True, "dry_run": False, "until": source.expires_at}

    def _refuse_if_incident(self, doors: list[str], scope: Scope) -> None:
        wanted = set(doors)
        for source in self.engine.sources.values():
            real = source.key.startswith(("srp:", "fire:")) and source.state != "released"
            if real and wanted & set(self.campus.resolve(source.scope)):
                raise CommandError(
                    "incident_active",
                    f"{source.reason} is in force; no drill may overlap a real incident ({scope})",
                )

    def _dry_run(
        self, command: Command, source: Source, preview: Source, doors: list[str]
    ) -> dict[str, Any]:
        """Publish what a drill would do, hold the drill state for its time, move nothing."""
        scope = source.scope
        would: dict[str, list[str]] = {"lock": [], "unlock": []}
        for door_id in doors:
            claim = preview.claim_for(self.campus.doors[door_id].kind)
            if claim is not None:
                would["lock" if claim.locked else "unlock"].append(door_id)
        self.engine.put(source)
        self._expiry_changed()
        self._mark_dirty(scope)
        self._publish_event(
            "state",
            command.actor,
            {
                "scope": str(scope),
                "state": source.state,
                "dry_run": True,
                "would_lock": would["lock"],
                "would_unlock": would["unlock"],
            },
            life_safety=False,
            drill=True,
        )
        return {
            "id": command.id,
            "ok": True,
            "error": None,
            "action": "drill",
            "scope": str(scope),
            "drill": True,
            "dry_run": True,
            "until": source.expires_at,
            "message": f"dry run: {len(would['lock'])} doors would lock,"
            f" {len(would['unlock'])} would unlock",
            "decisions": would,
        }

    # --- completion, latency, status ---------------------------------------------------------

    async def _finish(
        self,
        command: Command,
        scope: Scope,
        doors: list[str],
        trigger_ns: int,
        *,
        drill: bool = False,
    ) -> dict[str, Any]:
        report = await self._apply(doors, trigger_ns)
        self.record(report, trigger=f"{command.action} {scope}", drill=drill)
        log.info(
            "command.done",
            id=command.id,
            actor=command.actor,
            action=str(command.action),
            scope=str(scope),
            commanded=len(report.commanded),
            confirmed=len(report.confirmed),
            failed=len(report.failed),
            **{f"{k}_ms": v for k, v in report.latencies_ms().items()},
        )
        self._mark_dirty(scope)
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

    def record(self, report: ActuationReport, *, trigger: str, drill: bool = False) -> None:
        """Keep a trigger's latencies; raise ``budget`` and ``door`` events when due."""
        self.reports.append(report)
        del self.reports[:-1000]
        lat = report.latencies_ms()
        if report.commanded:
            self._latencies.append(lat)
        for door_id, why in report.failed.items():
            door = self.campus.doors[door_id]
            self._publish_event(
                "door",
                door_id,
                {
                    "door": door_id,
                    "severity": "high",
                    "fault": why,
                    "trigger": trigger,
                },
                life_safety=True,
                drill=drill,
                location={"building": door.building, "floor": door.floor, "room": door.room},
            )
        total_ms = (report.confirmed_ns or now_ns()) - report.trigger_ns
        if report.commanded and (report.failed or total_ms / 1e6 > self.policy.budget_ms):
            self._publish_event(
                "budget",
                "gateway",
                {
                    "trigger": trigger,
                    "budget_ms": self.policy.budget_ms,
                    "latency_ms": lat,
                    "failed": len(report.failed),
                },
                life_safety=False,
                drill=drill,
            )
            log.warning(
                "budget.exceeded",
                trigger=trigger,
                budget_ms=self.policy.budget_ms,
                **{f"{k}_ms": v for k, v in lat.items()},
            )
            self.guard.note(
                AuditKind.BUDGET,
                "system:budget",
                {
                    "trigger": trigger,
                    "budget_ms": self.policy.budget_ms,
                    "latency_ms": lat,
                    "failed": len(report.failed),
                    "drill": drill,
                },
            )
        if len(self._latencies) % 50 == 0 and self._latencies:
            log.info("latency.statistics", **self.latency_statistics())

    def latency_statistics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"triggers": len(self._latencies), "budget_ms": self.policy.budget_ms}
        for stage in ("decided", "on_wire", "confirmed"):
            values = [v for t in self._latencies if (v := t.get(stage)) is not None]
            out[stage] = {"p50": _percentile(values, 0.5), "p99": _percentile(values, 0.99)}
        return out

    def _status(self, command: Command) -> dict[str, Any]:
        sources = [
            {
                "key": s.key,
                "state": s.state or s.name,
                "scope": str(s.scope),
                "actor": s.actor,
                "drill": s.drill,
                "dry_run": s.dry_run,
                "until": s.expires_at,
            }
            for s in self.engine.sources.values()
        ]
        stats = self.latency_statistics()
        log.info("latency.statistics", **stats)
        return {
            "id": command.id,
            "ok": True,
            "error": None,
            "action": "status",
            "message": f"{len(sources)} active sources",
            "sources": sources,
            "latency_ms": stats,
            "statistics": self.statistics(),
        }

    # --- scopes -------------------------------------------------------------------------------

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
