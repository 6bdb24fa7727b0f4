"""What every deciding service works with, and the one way a safety source changes.

A change of the safety sources is made durable by an audit record (the journal). A change
that leaves a door unlocked that is locked now waits for its record to be on disk and is
refused if it cannot be written; any other change (and a life-safety one, a fire alarm or an
evacuation) takes effect at once and its record follows: bookkeeping never stands between a
trigger and the doors that lock or release for safety.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatewayd.kernel.campus import Campus
from gatewayd.kernel.errors import CommandError, ErrorCode
from gatewayd.kernel.scope import CAMPUS, Scope
from gatewayd.rules.arbitration import Priority
from gatewayd.rules.config import PolicyConfig
from gatewayd.rules.engine import Change, Engine
from gatewayd.security.audit import AuditKind, AuditUnavailable
from gatewayd.security.guard import CommandGuard
from gatewayd.security.journal import Pending
from gatewayd.security.roles import Authority
from gatewayd.service.actuation import Actuator
from gatewayd.service.publisher import Publisher
from gatewayd.service.reporting import Reporting

#: How long a change that unlocks doors waits for the audit log to take its record.
RECORD_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Core:
    """The campus, its policy and sources, the command gate, and the way out to doors and world."""

    campus: Campus
    policy: PolicyConfig
    engine: Engine
    #: Audits every decision (and admits commands).
    guard: CommandGuard
    publisher: Publisher
    actuator: Actuator
    reporting: Reporting

    async def commit(
        self,
        change: Change,
        *,
        kind: AuditKind,
        actor: str,
        data: dict[str, Any],
        records: list[Pending] | None = None,
        life_safety: bool = False,
        authority: Authority | None = None,
        scope: Scope | None = None,
    ) -> list[str]:
        """Make a change of the sources (recorded first if it unlocks); the doors it moves.

        ``authority`` is who asked (None: the gateway itself). Whoever asks, a change that
        leaves doors unlocked which the lockdown family holds locked needs release rights, and
        at ``scope`` campus the site's two-person rule: the role table says who may send an
        action, this says who may undo a lockdown with it (docs/rules.md, "Who may unlock").
        """
        unlocking = [] if life_safety else self.engine.unlocks(change)
        if unlocking and authority is not None:
            self._authorize(unlocking, authority, scope)
        before = self.engine.versions(change)
        pending = self.guard.record(kind, actor, data, sources=change.as_record(),
                                    required=bool(unlocking))  # fmt: skip
        if records is not None:
            records.append(pending)
        if unlocking:
            try:
                await pending.durable(RECORD_TIMEOUT_S)
            except AuditUnavailable as exc:
                raise CommandError(
                    ErrorCode.STORE_FAILED,
                    f"this would unlock {len(unlocking)} doors and cannot be recorded ({exc});"
                    " refused, no door moved",
                ) from exc
            if self.engine.versions(change) != before:
                # A later change of the same sources is in force (and recorded after this
                # one): it wins, in memory as in the log.
                raise CommandError(ErrorCode.OVERTAKEN, "another change of the same state"
                                   " arrived while this one was recorded; it stands")  # fmt: skip
        return self.engine.apply(change)

    def _authorize(self, unlocking: list[str], authority: Authority, scope: Scope | None) -> None:
        if authority.is_system:
            return
        held = [d for d in unlocking if _held_by_lockdown(self.engine, d)]
        if not held:
            return
        named = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        if not authority.may_release:
            raise CommandError(
                ErrorCode.FORBIDDEN,
                f"{authority.actor} may not unlock what a lockdown holds: this would leave"
                f" {len(held)} doors unlocked ({named}); that needs release rights",
            )
        two_person = self.guard.authorizer.security.require_two_person_campus_release
        if two_person and scope == CAMPUS and authority.cosigner is None:
            raise CommandError(
                ErrorCode.COSIGN_REQUIRED,
                f"this would leave {len(held)} doors unlocked across the campus; the site asks"
                " for a second person (params.cosigner and params.cosig)",
            )

    def commit_now(
        self, change: Change, *, kind: AuditKind, actor: str, data: dict[str, Any]
    ) -> tuple[list[str], Pending]:
        """Make a change at once and record it after (fire, expiry, what only locks)."""
        doors = self.engine.apply(change)
        pending = self.guard.record(kind, actor, data, sources=change.as_record())
        return doors, pending


def _held_by_lockdown(engine: Engine, door_id: str) -> bool:
    """Whether a door is held locked by the SRP lockdown family (not manual, not normal)."""
    claim = engine.decide(door_id).claim
    return claim is not None and claim.locked and claim.priority is Priority.LOCKDOWN
