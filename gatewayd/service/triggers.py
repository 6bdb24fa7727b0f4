"""Triggers that are not MQTT commands: alarm inputs (fire, panic) and declarative rules.

A fire alarm is life safety: its source is activated in memory and the doors are written
before anything touches the disk; the copy on disk is best-effort and only shortens the
window after a restart until the input is read again; so is the audit record, and a fire
release never waits for, nor fails on, the audit log. A panic input and a rule's
``set_state`` go through the same command path as an operator's command, with the input or
rule as the actor (audited as ``system``, never signature-checked), so transitions, drills
and the audit trail treat them alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import structlog

from gatewayd.kernel.command import Action, Command
from gatewayd.kernel.events import new_id, now_ns
from gatewayd.kernel.scope import CAMPUS, Scope
from gatewayd.kernel.site import AlarmInput, InputKind
from gatewayd.kernel.siteinfo import SrpState
from gatewayd.rules.actions import ActionSink, ExternalAction
from gatewayd.rules.engine import Change
from gatewayd.rules.policy import fire_source
from gatewayd.rules.rulefile import Publish, RadioAlert, Rule, RuleSet, SetState, Snapshot, render
from gatewayd.rules.sources import Source
from gatewayd.security.audit import AuditKind
from gatewayd.service.commands import CommandService
from gatewayd.service.core import Core
from gatewayd.service.drills import Drills
from gatewayd.service.tasks import Tasks

log = structlog.get_logger(__name__)

#: How long a fire row of the last run waits for its input to be read before it is applied.
FIRE_INPUT_WAIT_S = 5.0


class Triggers:
    """Alarm inputs and rules, turned into door changes and commands."""

    def __init__(
        self,
        core: Core,
        *,
        drills: Drills,
        commands: CommandService,
        sink: ActionSink,
        rules: RuleSet,
        tasks: Tasks,
    ) -> None:
        self._core = core
        self._drills = drills
        self._commands = commands
        self._sink = sink
        self._rules = rules
        self._tasks = tasks
        #: Fire inputs waiting out the site's verification delay.
        self._fire_pending: dict[str, asyncio.Task[None]] = {}
        #: Fire rows of the last run whose input has not been read yet.
        self._restored_fire: dict[str, Source] = {}

    # --- alarm inputs --------------------------------------------------------------------------

    def input_changed(self, input_id: str, active: bool, first: bool) -> None:
        alarm = self._core.campus.inputs[input_id]
        if alarm.kind is InputKind.FIRE_ALARM:
            self._fire_changed(alarm, active)
        elif active:
            self._panic(alarm)
        if first and not active:
            # A quiet contact read for the first time is not news.
            return
        log.warning("input.changed", input=input_id, kind=str(alarm.kind), active=active)
        self._core.publisher.event(
            "alarm",
            input_id,
            {
                "input": input_id,
                "type": str(alarm.kind),
                "active": active,
            },
            life_safety=True,
            location={"building": alarm.building, "room": alarm.room},
        )

    def _fire_changed(self, alarm: AlarmInput, active: bool) -> None:
        pending = self._fire_pending.pop(alarm.id, None)
        if pending is not None:
            pending.cancel()
        if active:
            delay_s = self._core.policy.fire_verification_s
            if delay_s:
                log.warning("fire.verifying", input=alarm.id, seconds=delay_s)
                task = self._tasks.spawn(
                    self._fire_after(alarm, delay_s), f"fire-verify:{alarm.id}"
                )
                if task is not None:
                    self._fire_pending[alarm.id] = task
            else:
                self._fire_release(alarm)
            return
        self._fire_reset(alarm)

    def _fire_reset(self, alarm: AlarmInput) -> None:
        key = f"fire:{alarm.id}"
        stale = self._restored_fire.pop(alarm.id, None)
        if self._core.engine.get(key) is None:
            if stale is not None:
                # The alarm of the last run ended while the gateway was away: its row goes,
                # unapplied, so no restart can bring it back.
                log.warning("fire.stale_row_cleared", input=alarm.id)
                self._core.guard.record(AuditKind.FIRE, f"input:{alarm.id}",
                                        {"input": alarm.id, "active": False, "stale": True},
                                        sources=Change(remove=(key,)).as_record())  # fmt: skip
            return
        trigger_ns = now_ns()
        scope = self._alarm_scope(alarm)
        doors, _ = self._core.commit_now(
            Change(remove=(key,)),
            kind=AuditKind.FIRE,
            actor=f"input:{alarm.id}",
            data={"input": alarm.id, "active": False, "scope": str(scope)},
        )
        log.warning("fire.reset", input=alarm.id, doors=len(doors))
        self._core.publisher.mark_dirty(scope)
        self._tasks.spawn(
            self._actuate(doors, trigger_ns, f"fire reset {alarm.id}"), f"fire:{alarm.id}"
        )

    async def _fire_after(self, alarm: AlarmInput, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._fire_pending.pop(alarm.id, None)
        self._fire_release(alarm)

    def _fire_release(self, alarm: AlarmInput) -> None:
        """Release egress doors now: memory first, wire next; the record follows, never first.

        The record goes into the journal's queue after the change is made and never holds it
        up: a full or locked disk cannot keep a fire door shut.
        """
        trigger_ns = now_ns()
        self._restored_fire.pop(alarm.id, None)
        scope = self._alarm_scope(alarm)
        source = fire_source(self._core.policy, alarm.id, scope, since=time.time())
        drills = self._drills.overlapping(self._core.campus.resolve(scope))
        doors, _ = self._core.commit_now(
            Change(put=(source,), remove=tuple(d.key for d in drills)),
            kind=AuditKind.FIRE,
            actor=f"input:{alarm.id}",
            data={"input": alarm.id, "active": True, "scope": str(scope)},
        )
        log.warning("fire.release", input=alarm.id, scope=str(scope), doors=len(doors))
        self._tasks.spawn(self._actuate(doors, trigger_ns, f"fire alarm {source.key}"),
                          f"fire:{alarm.id}")  # fmt: skip
        self._drills.announce_preempted(drills, why=f"fire alarm {alarm.id}")
        self._core.publisher.mark_dirty(scope)

    # --- fire rows of the last run ---------------------------------------------------------

    def restore_fire(self, sources: list[Source]) -> None:
        """Fire sources the journal had in force: applied only once their input is read.

        An input read quiet clears its row; one read active releases as usual. If an input
        cannot be read within ``FIRE_INPUT_WAIT_S`` (its board is down), the row is applied:
        a fire alarm nobody can see has ended is treated as still on.
        """
        for source in sources:
            input_id = source.key.removeprefix("fire:")
            if input_id not in self._core.campus.inputs:
                continue
            self._restored_fire[input_id] = source
            self._tasks.spawn(self._apply_unread(input_id), f"fire-restore:{input_id}")

    async def _apply_unread(self, input_id: str) -> None:
        await asyncio.sleep(FIRE_INPUT_WAIT_S)
        source = self._restored_fire.pop(input_id, None)
        if source is None:
            return
        log.critical(
            "fire.input_unread",
            input=input_id,
            wait_s=FIRE_INPUT_WAIT_S,
            note="the alarm was on when the gateway stopped: egress stays released",
        )
        self._fire_release(self._core.campus.inputs[input_id])

    async def _actuate(self, doors: list[str], trigger_ns: int, trigger: str) -> None:
        report = await self._core.actuator.apply(
            sorted(set(doors), key=self._core.campus.door_index.__getitem__), trigger_ns
        )
        self._core.reporting.record(report, trigger=trigger)

    def _alarm_scope(self, alarm: AlarmInput) -> Scope:
        return Scope("building", alarm.building) if alarm.building else CAMPUS

    def _panic(self, alarm: AlarmInput) -> None:
        scope = self._alarm_scope(alarm) if self._core.policy.panic_scope == "building" else CAMPUS
        command = Command(
            id=new_id(),
            ts=time.time(),
            actor=f"input:{alarm.id}",
            action=Action(str(self._core.policy.panic_state)),
            scope=str(scope),
        )
        log.warning(
            "panic.triggered",
            input=alarm.id,
            state=str(self._core.policy.panic_state),
            scope=str(scope),
        )
        self._tasks.spawn(self._run(command), f"panic:{alarm.id}")

    async def _run(self, command: Command) -> None:
        await self._commands.run_system(command)

    # --- rules -----------------------------------------------------------------------------

    def evaluate_rules(self, event: Mapping[str, Any]) -> None:
        """Fire matching rules; events a rule caused are not evaluated again (no loops)."""
        if not self._rules or str(event.get("source", "")).startswith("rule:"):
            return
        for rule in self._rules.match(event):
            self._tasks.spawn(self._fire_rule(rule, event), f"rule:{rule.id}")

    async def _fire_rule(self, rule: Rule, event: Mapping[str, Any]) -> None:
        drill = bool(event.get("drill"))
        log.info(
            "rule.fired",
            rule=rule.id,
            kind=event.get("kind"),
            source=event.get("source"),
            drill=drill,
        )
        for action in rule.do:
            try:
                await self._rule_action(rule, action, event, drill=drill)
            except KeyError as exc:
                log.error("rule.missing_field", rule=rule.id, action=action.action, field=str(exc))
            # A rule's side effect (a radio alert, a snapshot) must never take the gateway,
            # and with it every door, down: log it loudly and go on with the next action.
            except Exception:
                log.exception("rule.action_failed", rule=rule.id, action=action.action)

    async def _rule_action(
        self, rule: Rule, action: Any, event: Mapping[str, Any], *, drill: bool
    ) -> None:
        actor = f"rule:{rule.id}"
        location = event.get("location") or {}
        match action:
            case SetState():
                scope = render(action.scope, event)
                if drill:
                    # A drill's event never sets a real state; say what it would have done.
                    self._core.publisher.event(
                        "state",
                        actor,
                        {
                            "would_set": str(action.state),
                            "scope": scope,
                        },
                        life_safety=False,
                        drill=True,
                    )
                    return
                params = (
                    {"hazard": str(action.hazard)}
                    if action.state is SrpState.SHELTER and action.hazard
                    else {}
                )
                await self._commands.run_system(
                    Command(
                        id=new_id(),
                        ts=time.time(),
                        actor=actor,
                        action=Action(str(action.state)),
                        scope=scope,
                        params=params,
                    )
                )
            case Publish():
                self._core.publisher.event(
                    action.kind,
                    actor,
                    {
                        "message": render(action.message, event),
                        "severity": action.severity,
                        "event": event.get("id"),
                    },
                    life_safety=action.severity == "high",
                    location=location,
                    drill=drill,
                )
            case RadioAlert():
                await self._sink.dispatch(
                    ExternalAction(
                        "radio_alert",
                        rule.id,
                        drill,
                        text=render(action.text, event),
                        targets=(action.device,) if action.device else (),
                        location=location,
                    )
                )
            case Snapshot():
                await self._sink.dispatch(
                    ExternalAction(
                        "snapshot", rule.id, drill, targets=action.cameras, location=location
                    )
                )
