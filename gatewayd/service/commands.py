"""Command execution: SRP states, release, door actions, responder overrides, drills, status.

``handle_command(payload) -> reply`` is the single entry point from outside: the command
guard (signature, role, replay) admits a command before :meth:`CommandService.run_command`
sees it, every change of a safety source goes through :meth:`Core.commit` (recorded first if it
unlocks a door, at once otherwise), and every decision carries the command's ``actor`` into
the audit log. The reply goes out as soon as the outcome is known, without waiting for the
disk: it says whether the records of what it did are on disk yet (``recorded``), and a record
that cannot be written is never dropped quietly (the journal keeps and retries it, and an
``alarm`` of type ``bookkeeping`` says so).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
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
from gatewayd.kernel.siteinfo import SrpState
from gatewayd.rules.arbitration import Priority
from gatewayd.rules.engine import Change
from gatewayd.rules.policy import (
    RANK,
    check_transition,
    responder_override,
    room_release,
    srp_source,
    state_of,
)
from gatewayd.rules.sources import Effect, Source
from gatewayd.security.audit import AuditKind, AuditRecord
from gatewayd.security.guard import is_unauthenticated
from gatewayd.security.journal import Pending
from gatewayd.security.roles import Authority
from gatewayd.service.core import Core
from gatewayd.service.drills import Drills
from gatewayd.service.expiry import Expiry
from gatewayd.service.scopes import claimed_location, door_scope, location_of, scope_of

log = structlog.get_logger(__name__)

SRP_ACTIONS = frozenset(
    {Action.HOLD, Action.SECURE, Action.LOCKDOWN, Action.EVACUATE, Action.SHELTER}
)
#: A record's future, from the writer thread or wrapped onto the loop.
_Settled = Future[AuditRecord] | asyncio.Future[AuditRecord]
#: (scope, doors to actuate, extra reply fields) of one decided command.
Decided = tuple[Scope, list[str], dict[str, Any]]


class CommandService:
    """What a command does: decide, commit, actuate through the actuator, reply."""

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

    async def handle_command(self, payload: bytes, arrived_ns: int | None = None) -> dict[str, Any]:
        """Parse, admit, decide, actuate, verify; always reply, never raise for bad input.

        Nothing moves unless the guard admitted (authenticated, authorized) it. Latencies count
        from ``arrived_ns``, the message's arrival from the broker, so queueing shows.
        """
        trigger_ns = arrived_ns or now_ns()
        command: Command | None = None
        guard = self._core.guard
        try:
            try:
                command = parse_command(payload)
                authority = guard.check(command, payload=payload, now=time.time())
            except RecursionError as exc:
                # Any parser (JSON, the canonical form) that a hostile body drives too deep.
                raise CommandError(ErrorCode.BAD_REQUEST, "command nests too deeply") from exc
        except CommandError as exc:
            guard.refused(exc, payload=payload, command=command)
            reply = {
                "id": command.id if command else command_id_of(payload),
                "ok": False,
                "error": exc.code,
                "message": str(exc),
            }
            if not is_unauthenticated(exc.code):
                log.warning("command.refused", id=reply["id"], error=exc.code, message=str(exc),
                            claimed_actor=command.actor if command else None)  # fmt: skip
                self._core.publisher.event("command", "mqtt", reply, life_safety=False)
            return reply
        records = [guard.admitted(command, authority)]
        return await self.run_command(command, trigger_ns, authority, records)

    async def run_command(
        self,
        command: Command,
        trigger_ns: int,
        authority: Authority,
        records: list[Pending] | None = None,
    ) -> dict[str, Any]:
        """Execute a parsed command (from MQTT, an input or a rule) and publish its outcome."""
        records = records if records is not None else []
        try:
            reply = await self.execute(command, trigger_ns, authority, records)
        except CommandError as exc:
            reply = {
                "id": command.id,
                "ok": False,
                "error": exc.code,
                "message": str(exc),
                "action": str(command.action),
            }
            if exc.code == ErrorCode.STORE_FAILED:
                self._core.guard.undo_admission(command)
            log.warning("command.refused", id=command.id, actor=command.actor,
                        action=str(command.action), error=exc.code,
                        message=str(exc))  # fmt: skip
        reply["recorded"] = self._recorded(command, records)
        if command.action is not Action.STATUS:
            # The requester's reply goes out first: whoever returns this hands it to the
            # broker in this same turn, and the event (bookkeeping) follows in the next one.
            asyncio.get_running_loop().call_soon(
                partial(
                    self._core.publisher.event,
                    "command",
                    command.actor,
                    life_safety=reply.get("error") is None,
                    drill=bool(reply.get("drill")),
                ),
                {
                    "command": command.id,
                    "action": str(command.action),
                    "scope": command.scope or (f"door/{command.door}" if command.door else None),
                    **{k: reply[k] for k in ("ok", "error", "message") if k in reply},
                    "latency_ms": reply.get("latency_ms"),
                    "recorded": reply["recorded"],
                },
            )
        return reply

    def _recorded(self, command: Command, records: list[Pending]) -> bool | None:
        """On disk now (True), not written (False: an alarm says why), or queued (None).

        The reply never waits for the disk: an fsync that a busy disk holds for hundreds of
        milliseconds would hold every reply with it. A record still queued is followed to the
        end; one that fails is alarmed, never dropped without a word.
        """
        state: bool | None = True
        for pending in records:
            if not pending.future.done():
                state = False if state is False else None
                asyncio.wrap_future(pending.future).add_done_callback(
                    lambda done: self._settled(command, done)
                )
            elif not _written(pending.future):
                state = False
                self._record_failed(command, pending.future)
        if state is None and not self._core.guard.journal.healthy:
            # Queued behind a disk that fails: kept and retried, not on disk (the
            # bookkeeping alarm is out already).
            state = False
        return state

    def _settled(self, command: Command, done: asyncio.Future[AuditRecord]) -> None:
        if not _written(done):
            self._record_failed(command, done)

    def _record_failed(self, command: Command, future: _Settled) -> None:
        error = "cancelled" if future.cancelled() else str(future.exception())
        log.critical("command.record_failed", id=command.id, actor=command.actor,
                     action=str(command.action), error=error)  # fmt: skip
        self._core.publisher.event(
            "alarm",
            "gateway",
            {"type": "bookkeeping", "healthy": self._core.guard.journal.healthy,
             "problem": f"the audit record of command {command.id} was not written: {error}",
             "command": command.id},
            life_safety=True,
        )  # fmt: skip

    async def run_system(self, command: Command) -> dict[str, Any]:
        """Run a command the gateway gives itself: audited as ``system``, no signature."""
        trigger_ns = now_ns()
        records = [self._core.guard.system(command)]
        return await self.run_command(command, trigger_ns, Authority.system(command.actor), records)

    async def execute(
        self, command: Command, trigger_ns: int, authority: Authority, records: list[Pending]
    ) -> dict[str, Any]:
        """Decide and actuate one command; raise :class:`CommandError` to refuse it."""
        if command.action in SRP_ACTIONS:
            decided = await self._set_state(command, authority, records)
        elif command.action is Action.RELEASE:
            decided = await self._release(command, authority, records)
        elif command.action is Action.UNLOCK and command.params:
            decided = await self._responder_unlock(command, records)
        elif command.action in (Action.LOCK, Action.UNLOCK):
            decided = await self._manual(command, authority, records)
        elif command.action is Action.DRILL:
            return await self._drill(command, trigger_ns, authority, records)
        else:
            return self._status(command)
        scope, doors, extra = decided
        reply = await self._finish(command, scope, doors, trigger_ns)
        return {**reply, **extra}

    # --- SRP states ----------------------------------------------------------------------------

    async def _set_state(
        self, command: Command, authority: Authority, records: list[Pending]
    ) -> Decided:
        core = self._core
        scope = scope_of(core.campus, command)
        params = parse_params(StateParams, command)
        state = SrpState(str(command.action))
        if state is SrpState.SHELTER and params.hazard is None:
            raise CommandError(
                ErrorCode.BAD_REQUEST,
                "shelter needs params.hazard (tornado, hazmat, earthquake, severe_weather, bomb)",
            )
        current = state_of(core.engine.get(f"srp:{scope}"))
        check_transition(current, state, scope)
        if params.source == "panic_app":
            location, problem = claimed_location(core.campus, scope, params.location)
            alarm = {"type": "panic", "actor": command.actor, "scope": str(scope),
                     "location_verified": problem is None}  # fmt: skip
            if problem is not None:
                # The lockdown goes ahead; only the unverified words stay off the radio.
                alarm["location_problem"] = problem
                log.warning("panic_app.location_refused", id=command.id, problem=problem)
            core.publisher.event("alarm", "panic_app", alarm, life_safety=True,
                                 location=location)  # fmt: skip
        drills = self._drills.overlapping(core.campus.resolve(scope))
        source = srp_source(core.policy, state, scope, actor=command.actor, since=time.time(),
                            hazard=params.hazard)  # fmt: skip
        # "Lockdown!" again means every door again: per-room releases under it end, and so do
        # narrower states weaker than the new one (a door-scoped evacuate, a building's hold).
        weaker = self._weaker_under(scope, state)
        removed = [*(d.key for d in drills), *(s.key for s in weaker)]
        change = Change(put=(source,), remove=tuple(removed))
        data = {"command": command.id, "scope": str(scope), "state": str(state),
                "hazard": params.hazard, "from": str(current),
                "cleared": [s.key for s in weaker]}  # fmt: skip
        # An evacuation of a building, zone or campus releases egress for people told to
        # leave: like fire, never held up, for any staff member (audited with what it ended).
        # Evacuating one door is no evacuation: it is an unlock, under the unlock rules.
        evacuation = state is SrpState.EVACUATE and scope.kind != "door"
        doors = await core.commit(change, kind=AuditKind.STATE, actor=command.actor, data=data,
                                  records=records, life_safety=evacuation,
                                  authority=authority, scope=scope)  # fmt: skip
        self._drills.announce_preempted(drills, why=f"{state} {scope}")
        core.publisher.event("state", command.actor,
                             {"scope": str(scope), "state": str(state), "hazard": params.hazard},
                             life_safety=True,
                             location=location_of(core.campus, scope))  # fmt: skip
        return scope, doors, {}

    async def _release(
        self, command: Command, authority: Authority, records: list[Pending]
    ) -> Decided:
        core = self._core
        scope = scope_of(core.campus, command)
        # Checked by the guard already; here only so that no other key slips through.
        cosigner = parse_params(ReleaseParams, command).cosigner
        data: dict[str, Any] = {"command": command.id, "scope": str(scope), "cosigner": cosigner}
        if scope.kind == "door":
            change = self._release_door(scope, command.actor)
            data["state"] = "released"
        else:
            keys = [k for k in (f"srp:{scope}", f"drill:{scope}") if core.engine.get(k)]
            if not keys:
                raise CommandError(ErrorCode.NOT_ACTIVE, f"nothing to release at {scope}")
            rooms = [s.key for s in self._room_releases_under(scope)]
            change = Change(remove=(*keys, *rooms))
            data.update(state="normal", released=keys)
        doors = await core.commit(change, kind=AuditKind.STATE, actor=command.actor, data=data,
                                  records=records, authority=authority,
                                  scope=scope)  # fmt: skip
        if scope.kind != "door":
            core.publisher.event("state", command.actor, {"scope": str(scope), "state": "normal"},
                                 life_safety=True,
                                 location=location_of(core.campus, scope))  # fmt: skip
        return scope, doors, {}

    def _release_door(self, scope: Scope, actor: str) -> Change:
        """A door held by a wider state gets a per-room release; else its own sources end."""
        engine = self._core.engine
        own = [f"srp:{scope}", f"manual:{scope}", f"responder:{scope}", f"drill:{scope}"]
        claim = engine.decide(scope.ident).claim
        if (
            claim is not None
            and claim.priority is Priority.LOCKDOWN
            and claim.locked
            and claim.source not in own
        ):
            return Change(put=(room_release(scope, actor=actor, since=time.time()),))
        keys = tuple(k for k in own if engine.get(k))
        if not keys:
            raise CommandError(ErrorCode.NOT_ACTIVE, f"nothing to release at {scope}")
        return Change(remove=keys)

    def _room_releases_under(self, scope: Scope) -> list[Source]:
        inside = set(self._core.campus.resolve(scope))
        return [
            s
            for s in self._core.engine.sources.values()
            if s.state == "released" and s.scope.ident in inside
        ]

    def _weaker_under(self, scope: Scope, state: SrpState) -> list[Source]:
        """SRP sources on scopes inside ``scope`` (not it) weaker than ``state``, and releases."""
        campus = self._core.campus
        inside = set(campus.resolve(scope))
        rank = RANK[state]
        out = []
        for source in self._core.engine.sources.values():
            if not source.key.startswith("srp:") or source.scope == scope:
                continue
            weaker = source.state == "released" or RANK.get(state_of(source), 0) > rank
            if weaker and set(campus.resolve(source.scope)) <= inside:
                out.append(source)
        return out

    # --- doors -----------------------------------------------------------------------------

    async def _manual(
        self, command: Command, authority: Authority, records: list[Pending]
    ) -> Decided:
        scope = door_scope(self._core.campus, command)
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
        data = {"command": command.id, "door": scope.ident, "manual": str(command.action)}
        doors = await self._core.commit(Change(put=(source,)), kind=AuditKind.OVERRIDE,
                                        actor=command.actor, data=data, records=records,
                                        authority=authority, scope=scope)  # fmt: skip
        return scope, doors, {}

    async def _responder_unlock(self, command: Command, records: list[Pending]) -> Decided:
        """A bounded unlock that pre-empts the lockdown family for one door, then relocks."""
        policy = self._core.policy
        scope = door_scope(self._core.campus, command)
        params = parse_params(UnlockParams, command)
        duration_s = params.duration_s or policy.responder_momentary_s
        if duration_s > policy.responder_max_s:
            raise CommandError(
                ErrorCode.OUT_OF_BOUNDS,
                f"params.duration_s {duration_s:g} exceeds the"
                f" site's responder_max_s {policy.responder_max_s:g}",
            )
        now = time.time()
        source = responder_override(scope, actor=command.actor, since=now, until=now + duration_s)
        data = {"command": command.id, "door": scope.ident, "unlock_s": duration_s,
                "until": now + duration_s}  # fmt: skip
        doors = await self._core.commit(Change(put=(source,)), kind=AuditKind.OVERRIDE,
                                        actor=command.actor, data=data,
                                        records=records)  # fmt: skip
        self._expiry.changed()
        log.warning("responder.override", door=scope.ident, actor=command.actor,
                    duration_s=duration_s)  # fmt: skip
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

    async def _drill(
        self, command: Command, trigger_ns: int, authority: Authority, records: list[Pending]
    ) -> dict[str, Any]:
        plan = self._drills.plan(command)
        source = plan.source
        data = {"command": command.id, "scope": str(source.scope), "state": source.state,
                "drill": True, "dry_run": source.dry_run}  # fmt: skip
        doors = await self._core.commit(Change(put=(source,)), kind=AuditKind.STATE,
                                        actor=command.actor, data=data, records=records,
                                        authority=authority, scope=source.scope)  # fmt: skip
        self._expiry.changed()
        self._drills.announce(plan)
        if plan.would is not None:
            return self._drills.dry_run_reply(command, plan)
        reply = await self._finish(command, source.scope, doors, trigger_ns, drill=True)
        return {**reply, "drill": True, "dry_run": False, "until": source.expires_at}

    # --- completion, status ----------------------------------------------------------------

    async def _finish(
        self, command: Command, scope: Scope, doors: list[str], trigger_ns: int, *,
        drill: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        core = self._core
        report = await core.actuator.apply(doors, trigger_ns)
        core.reporting.record(report, trigger=f"{command.action} {scope}", drill=drill,
                              command=command.id)  # fmt: skip
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
        core.publisher.mark_dirty(scope)
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


def _written(future: _Settled) -> bool:
    """A settled record future that holds the written record (not cancelled, not failed)."""
    return not future.cancelled() and future.exception() is None
