"""Drills: scoped, timed, tagged end to end, dry-run unless asked; a real incident always wins."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from gatewayd.kernel.command import Command, DrillParams, parse_params
from gatewayd.kernel.errors import CommandError, ErrorCode
from gatewayd.kernel.scope import Scope
from gatewayd.kernel.site import SrpState
from gatewayd.rules.policy import srp_source
from gatewayd.rules.sources import Source
from gatewayd.service.core import Core

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LiveDrill:
    """A live drill now holding doors: the caller actuates ``doors``."""

    source: Source
    doors: list[str]


class Drills:
    """Starts drills and ends them when a real incident overlaps them."""

    def __init__(self, core: Core, *, expiry_changed: Callable[[], None]) -> None:
        self._core = core
        self._expiry_changed = expiry_changed

    def start(self, command: Command) -> LiveDrill | dict[str, Any]:
        """Begin the drill ``command`` asks for: a live drill to actuate, or a dry run's reply."""
        params = parse_params(DrillParams, command)
        text = params.scope or command.scope
        if text is None:
            raise CommandError(ErrorCode.BAD_REQUEST, "drill needs params.scope (or scope)")
        scope = Scope.parse(text)
        doors = self._core.campus.resolve(scope)
        if params.state in (SrpState.NORMAL,):
            raise CommandError(ErrorCode.BAD_REQUEST, "params.state: a drill needs an SRP state")
        if params.duration_s > self._core.policy.drill_max_s:
            raise CommandError(
                ErrorCode.OUT_OF_BOUNDS,
                f"params.duration_s {params.duration_s:g}"
                f" exceeds the site's drill_max_s {self._core.policy.drill_max_s:g}",
            )
        self._refuse_if_incident(doors, scope)
        now = time.time()
        source = srp_source(
            self._core.policy,
            params.state,
            scope,
            actor=command.actor,
            since=now,
            hazard=params.hazard,
            drill=True,
            dry_run=params.dry_run,
            expires_at=now + params.duration_s,
        )
        self._core.publisher.event(
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
                self._core.policy, params.state, scope, actor=command.actor, since=now,
                hazard=params.hazard,
            )  # fmt: skip
            return self._dry_run(command, source, preview, doors)
        moved = self._core.engine.put(source)
        self._expiry_changed()
        return LiveDrill(source, moved)

    def preempt(self, doors: Iterable[str], *, why: str) -> list[str]:
        """End every drill overlapping these doors: a real incident always wins."""
        wanted = set(doors)
        moved: list[str] = []
        for source in list(self._core.engine.sources.values()):
            if source.drill and wanted & set(self._core.campus.resolve(source.scope)):
                moved += self._core.engine.remove(source.key)
                self._core.publisher.mark_dirty(source.scope)
                log.warning("drill.preempted", scope=str(source.scope), by=why)
                self._core.publisher.event(
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

    def _refuse_if_incident(self, doors: list[str], scope: Scope) -> None:
        wanted = set(doors)
        for source in self._core.engine.sources.values():
            real = source.key.startswith(("srp:", "fire:")) and source.state != "released"
            if real and wanted & set(self._core.campus.resolve(source.scope)):
                raise CommandError(
                    ErrorCode.INCIDENT_ACTIVE,
                    f"{source.reason} is in force; no drill may overlap a real incident ({scope})",
                )

    def _dry_run(
        self, command: Command, source: Source, preview: Source, doors: list[str]
    ) -> dict[str, Any]:
        """Publish what a drill would do, hold the drill state for its time, move nothing."""
        scope = source.scope
        would: dict[str, list[str]] = {"lock": [], "unlock": []}
        for door_id in doors:
            claim = preview.claim_for(self._core.campus.doors[door_id].kind)
            if claim is not None:
                would["lock" if claim.locked else "unlock"].append(door_id)
        self._core.engine.put(source)
        self._expiry_changed()
        self._core.publisher.mark_dirty(scope)
        self._core.publisher.event(
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
