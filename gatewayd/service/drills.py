"""Drills: scoped, timed, tagged end to end, dry-run unless asked; a real incident always wins.

The drill service plans and announces; the command service makes the change (through the
journal, like every other change of a safety source) and actuates it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from gatewayd.kernel.command import Command, DrillParams, parse_params
from gatewayd.kernel.errors import CommandError, ErrorCode
from gatewayd.kernel.scope import Scope
from gatewayd.kernel.siteinfo import SrpState
from gatewayd.rules.policy import srp_source
from gatewayd.rules.sources import Source
from gatewayd.service.core import Core

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DrillPlan:
    """The drill source a command asks for, and for a dry run what it would do."""

    source: Source
    #: Dry run: door ids that would lock and unlock; None for a live drill.
    would: dict[str, list[str]] | None


class Drills:
    """Plans drills and ends them when a real incident overlaps them."""

    def __init__(self, core: Core) -> None:
        self._core = core

    def plan(self, command: Command) -> DrillPlan:
        """Check a drill command against the site's bounds and any incident in force."""
        core = self._core
        params = parse_params(DrillParams, command)
        text = params.scope or command.scope
        if text is None:
            raise CommandError(ErrorCode.BAD_REQUEST, "drill needs params.scope (or scope)")
        scope = Scope.parse(text)
        doors = core.campus.resolve(scope)
        if params.state is SrpState.NORMAL:
            raise CommandError(ErrorCode.BAD_REQUEST, "params.state: a drill needs an SRP state")
        if params.duration_s > core.policy.drill_max_s:
            raise CommandError(
                ErrorCode.OUT_OF_BOUNDS,
                f"params.duration_s {params.duration_s:g}"
                f" exceeds the site's drill_max_s {core.policy.drill_max_s:g}",
            )
        self._refuse_if_incident(doors, scope)
        now = time.time()
        source = srp_source(
            core.policy,
            params.state,
            scope,
            actor=command.actor,
            since=now,
            hazard=params.hazard,
            drill=True,
            dry_run=params.dry_run,
            expires_at=now + params.duration_s,
        )
        if not params.dry_run:
            return DrillPlan(source, None)
        preview = srp_source(core.policy, params.state, scope, actor=command.actor, since=now,
                             hazard=params.hazard)  # fmt: skip
        would: dict[str, list[str]] = {"lock": [], "unlock": []}
        for door_id in doors:
            claim = preview.claim_for(core.campus.doors[door_id].kind)
            if claim is not None:
                would["lock" if claim.locked else "unlock"].append(door_id)
        return DrillPlan(source, would)

    def announce(self, plan: DrillPlan) -> None:
        """The drill is in force: say so (and, for a dry run, what it would have done)."""
        source = plan.source
        data: dict[str, Any] = {
            "scope": str(source.scope),
            "state": source.state,
            "dry_run": source.dry_run,
            "until": source.expires_at,
        }
        if plan.would is not None:
            data.update(would_lock=plan.would["lock"], would_unlock=plan.would["unlock"])
        self._core.publisher.event("state", source.actor, data, life_safety=False, drill=True)
        self._core.publisher.mark_dirty(source.scope)

    def dry_run_reply(self, command: Command, plan: DrillPlan) -> dict[str, Any]:
        assert plan.would is not None
        source = plan.source
        return {
            "id": command.id,
            "ok": True,
            "error": None,
            "action": "drill",
            "scope": str(source.scope),
            "drill": True,
            "dry_run": True,
            "until": source.expires_at,
            "message": f"dry run: {len(plan.would['lock'])} doors would lock,"
            f" {len(plan.would['unlock'])} would unlock",
            "decisions": plan.would,
        }

    def overlapping(self, doors: Iterable[str]) -> list[Source]:
        """The drills over any of these doors: a real incident there ends them."""
        wanted = set(doors)
        campus, engine = self._core.campus, self._core.engine
        return [s for s in engine.sources.values()
                if s.drill and wanted & set(campus.resolve(s.scope))]  # fmt: skip

    def announce_preempted(self, drills: Iterable[Source], *, why: str) -> None:
        for source in drills:
            self._core.publisher.mark_dirty(source.scope)
            log.warning("drill.preempted", scope=str(source.scope), by=why)
            self._core.publisher.event(
                "state",
                source.actor,
                {"scope": str(source.scope), "state": source.state, "ended": "preempted",
                 "by": why},
                life_safety=True,
                drill=True,
            )  # fmt: skip

    def _refuse_if_incident(self, doors: list[str], scope: Scope) -> None:
        wanted = set(doors)
        campus, engine = self._core.campus, self._core.engine
        for source in engine.sources.values():
            real = source.key.startswith(("srp:", "fire:")) and source.state != "released"
            if real and wanted & set(campus.resolve(source.scope)):
                raise CommandError(
                    ErrorCode.INCIDENT_ACTIVE,
                    f"{source.reason} is in force; no drill may overlap a real incident ({scope})",
                )
