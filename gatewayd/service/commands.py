"""Command execution: SRP states, release, door actions, responder overrides, drills, status.

``handle_command(payload) -> reply`` is the single entry point from outside: the command
guard (signature, role, replay, audit) admits a command before :meth:`CommandService.run`
sees it, and every decision carries the command's ``actor`` into the audit log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from gatewayd.kernel.command import (
    Action,
    Command,
    ReleaseParams,
    StateParams,
    UnlockParams,
    command_id_of,
    parse_command,
    parse_params,
)
from gatewayd.kernel.errors import CommandError, ErrorCode
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
from gatewayd.service.core import Core
from gatewayd.service.drills import Drills, LiveDrill
from gatewayd.service.expiry import Expiry

log = structlog.get_logger(__name__)

SRP_ACTIONS = frozenset(
    {Action.HOLD, Action.SECURE, Action.LOCKDOWN, Action.EVACUATE, Action.SHELTER}
)


class CommandService:
    """What a command does: decide, actuate through the actuator, reply."""

    def __init__(
        self,
        core: Core,
        *,
        drills: Drills,
        expiry: Expiry,
        statistics: Callable[[], dict[str, Any]],
    ) -> None:
        self._core = core
        self._drills = drills
        self._expiry = expiry
        self._statistics = statistics

    # --- entry points ------------------------------------------------------------------------

    async def handle_command(self, payload: bytes) -> dict[str, Any]:
        """Parse, admit, decide, actuate, verify; always reply, never raise for bad input.

        Nothing moves unless the guard admitted (authenticated, authorized, audited) it.
        """
        trigger_ns = now_ns()
        command: Command | None = None
        try:
            command = parse_command(payload)
            self._core.guard.admit(command, payload=payload, now=time.time())
        except CommandError as exc:
            if command is None:
                # The guard audits its own refusals; an unparsable body is audited here.
                self._core.guard.refused(exc, payload=payload)
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
            self._core.publisher.event("command", "mqtt", reply, life_safety=True)
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
            self._core.publisher.event(
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

    async def run_system(self, command: Command) -> dict[str, Any]:
        """Run a command the gateway gives itself: audited as ``system``, no signature."""
        trigger_ns = now_ns()
        self._core.guard.system(command)
        return await self.run_command(command, trigger_ns)

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
                ErrorCode.BAD_REQUEST,
                "shelter needs params.hazard (tornado, hazmat, earthquake, severe_weather, bomb)",
            )
        check_transition(state_of(self._core.engine.get(f"srp:{scope}")), state, scope)
        if params.source == "panic_app":
            self._core.publisher.event(
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
        doors = set(self._drills.preempt(self._core.campus.resolve(scope), why=f"{state} {scope}"))
        # "Lockdown!" again means every door again: per-room releases under it end.
        for source in self._room_releases_under(scope):
            doors.update(self._core.engine.remove(source.key))
        doors.update(
            self._core.engine.put(
                srp_source(
                    self._core.policy,
                    state,
                    scope,
                    actor=command.actor,
                    since=time.time(),
                    hazard=params.hazard,
                )
            )
        )
        self._core.publisher.event(
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
        self._core.guard.note(
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
        return scope, sorted(doors, key=self._core.campus.door_index.__getitem__)

    def _location_of(self, scope: Scope) -> dict[str, Any]:
        """Where a scope is, as an event's location (the building a responder goes to)."""
        match scope.kind:
            case "building":
                return {"building": scope.ident}
            case "zone":
                return {"building": self._core.campus.zones[scope.ident].building}
            case "door":
                door = self._core.campus.doors[scope.ident]
                return {"building": door.building, "floor": door.floor, "room": door.room}
            case _:
                return {}

    def _release(self, command: Command) -> tuple[Scope, list[str]]:
        scope = self._scope_of(command)
        # Checked by the guard already; here only so that no other key slips through.
        cosigner = parse_params(ReleaseParams, command).cosigner
        if scope.kind == "door":
            released = self._release_door(scope, command.actor)
            self._core.guard.note(
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
        keys = [k for k in (f"srp:{scope}", f"drill:{scope}") if self._core.engine.get(k)]
        if not keys:
            raise CommandError(ErrorCode.NOT_ACTIVE, f"nothing to release at {scope}")
        doors: set[str] = set()
        for key in keys:
            doors.update(self._core.engine.remove(key))
        for source in self._room_releases_under(scope):
            doors.update(self._core.engine.remove(source.key))
        self._core.publisher.event(
            "state",
            command.actor,
            {"scope": str(scope), "state": "normal"},
            life_safety=True,
            location=self._location_of(scope),
        )
        self._core.guard.note(
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
        return scope, sorted(doors, key=self._core.campus.door_index.__getitem__)

    def _release_door(self, scope: Scope, actor: str) -> list[str]:
        """A door held by a wider state gets a per-room release; else its own sources end."""
        own = [f"srp:{scope}", f"manual:{scope}", f"responder:{scope}", f"drill:{scope}"]
        claim = self._core.engine.decide(scope.ident).claim
        if (
            claim is not None
            and claim.priority is Priority.LOCKDOWN
            and claim.locked
            and claim.source not in own
        ):
            return self._core.engine.put(room_release(scope, actor=actor, since=time.time()))
        keys = [k for k in own if self._core.engine.get(k)]
        if not keys:
            raise CommandError(ErrorCode.NOT_ACTIVE, f"nothing to release at {scope}")
        doors: set[str] = set()
        for key in keys:
            doors.update(self._core.engine.remove(key))
        return sorted(doors)

    def _room_releases_under(self, scope: Scope) -> list[Source]:
        inside = set(self._core.campus.resolve(scope))
        return [
            s
            for s in self._core.engine.sources.values()
            if s.state == "released" and s.scope.ident in inside
        ]

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
        doors = self._core.engine.put(source)
        self._core.guard.note(
            AuditKind.OVERRIDE,
            command.actor,
            {"command": command.id, "door": scope.ident, "manual": str(command.action)},
        )
        return scope, doors

    def _responder_unlock(self, command: Command) -> tuple[Scope, list[str], dict[str, Any]]:
        """A bounded unlock that pre-empts the lockdown family for one door, then relocks."""
        scope = self._door_scope(command)
        params = parse_params(UnlockParams, command)
        duration_s = params.duration_s or self._core.policy.responder_momentary_s
        if duration_s > self._core.policy.responder_max_s:
            raise CommandError(
                ErrorCode.OUT_OF_BOUNDS,
                f"params.duration_s {duration_s:g} exceeds the"
                f" site's responder_max_s {self._core.policy.responder_max_s:g}",
            )
        now = time.time()
        source = responder_override(scope, actor=command.actor, since=now, until=now + duration_s)
        doors = self._core.engine.put(source)
        self._expiry.changed()
        log.warning(
            "responder.override", door=scope.ident, actor=command.actor, duration_s=duration_s
        )
        self._core.guard.note(
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
        current = self._core.engine.decide(door_id)
        if current.priority < source.priority and current.locked != locked:
            raise CommandError(
                ErrorCode.HELD,
                f"door {door_id} is held {'locked' if current.locked else 'unlocked'} by"
                f" {current.reason}, which outranks a manual {source.name}",
            )

    # --- drills -----------------------------------------------------------------------------

    # --- drills -----------------------------------------------------------------------------

    async def _drill(self, command: Command, trigger_ns: int) -> dict[str, Any]:
        started = self._drills.start(command)
        if not isinstance(started, LiveDrill):
            return started
        source = started.source
        reply = await self._finish(command, source.scope, started.doors, trigger_ns, drill=True)
        return {**reply, "drill": True, "dry_run": False, "until": source.expires_at}

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
        report = await self._core.actuator.apply(doors, trigger_ns)
        self._core.reporting.record(report, trigger=f"{command.action} {scope}", drill=drill)
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
        self._core.publisher.mark_dirty(scope)
        return {
            "id": command.id,
            "ok": not report.failed,
            "error": ErrorCode.UNCONFIRMED if report.failed else None,
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
            for s in self._core.engine.sources.values()
        ]
        stats = self._core.reporting.latency_statistics()
        log.info("latency.statistics", **stats)
        return {
            "id": command.id,
            "ok": True,
            "error": None,
            "action": "status",
            "message": f"{len(sources)} active sources",
            "sources": sources,
            "latency_ms": stats,
            "statistics": self._statistics(),
        }

    # --- scopes -------------------------------------------------------------------------------

    def _scope_of(self, command: Command) -> Scope:
        if command.door is not None:
            return self._door_scope(command)
        if command.scope is None:
            raise CommandError(ErrorCode.BAD_REQUEST, f"{command.action!s} needs a scope or a door")
        scope = Scope.parse(command.scope)
        self._core.campus.resolve(scope)
        return scope

    def _door_scope(self, command: Command) -> Scope:
        ident = command.door
        if ident is None and command.scope and command.scope.startswith("door/"):
            ident = command.scope.removeprefix("door/")
        if ident is None:
            raise CommandError(ErrorCode.BAD_REQUEST, f"{command.action!s} needs a door")
        scope = Scope("door", ident)
        self._core.campus.resolve(scope)
        return scope
