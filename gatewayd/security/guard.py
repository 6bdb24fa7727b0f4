"""The gate every command passes: authorized by the authorizer, then audited, or refused."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from gatewayd.kernel.command import Action, Command
from gatewayd.kernel.errors import CommandError
from gatewayd.security.actors import Actor, SecurityConfig
from gatewayd.security.audit import AuditKind, AuditLog, AuditRecord, AuditUnavailable
from gatewayd.security.authorizer import Authorizer

log = structlog.get_logger(__name__)

#: Actions that may run when the audit log cannot be written: they change nothing.
UNAUDITED_ACTIONS = frozenset({Action.STATUS})
#: Actions that only tighten: a lockdown is never refused for bookkeeping. Run unaudited
#: with a critical log line when the audit log is down (docs/security.md, section 7).
TIGHTENING_ACTIONS = frozenset({Action.LOCKDOWN})
#: The audit actor of what the gateway does on its own (rules, alarm inputs, fire, expiry).
SYSTEM_ACTOR = "system"


class CommandGuard:
    """Authorizes and audits each command; only an admitted command may move a door."""

    def __init__(
        self,
        authorizer: Authorizer,
        audit: AuditLog | None,
        *,
        site: str,
        on_record: Callable[[AuditRecord], None] = lambda record: None,
    ) -> None:
        self.authorizer = authorizer
        #: ``None`` when the log could not be opened: every safety command is then refused.
        self.audit = audit
        self.site = site
        self._on_record = on_record

    def admit(self, command: Command, *, payload: bytes, now: float) -> Actor:
        """The authorized actor, after the command is audited; else raise ``CommandError``."""
        try:
            actor = self.authorizer.check(command, payload=payload, site=self.site, now=now)
        except CommandError as exc:
            self.refused(exc, payload=payload, command=command)
            raise
        data = {
            "command": command.id,
            "action": str(command.action),
            "scope": command.scope,
            "door": command.door,
            "params": _without_sigs(command),
        }
        try:
            self._append(AuditKind.COMMAND, actor.id, data)
        except AuditUnavailable as exc:
            if command.action in UNAUDITED_ACTIONS:
                return actor
            if command.action in TIGHTENING_ACTIONS:
                log.critical(
                    "audit.unavailable.lockdown_proceeds",
                    command=command.id,
                    actor=actor.id,
                    scope=command.scope,
                    error=str(exc),
                    note="a lockdown is never refused for bookkeeping; NOT AUDITED",
                )
                return actor
            log.error("audit.unavailable", command=command.id, actor=actor.id, error=str(exc))
            raise CommandError("audit_unavailable", f"refused: cannot audit it ({exc})") from exc
        return actor

    def refused(self, exc: CommandError, *, payload: bytes, command: Command | None = None) -> None:
        """Audit a refusal (unparsable or unauthorized); never raises."""
        data: dict[str, Any] = {
            "error": exc.code,
            "message": str(exc),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "payload_bytes": len(payload),
        }
        if command is not None:
            # Who the command *claims* to be from: unauthenticated, so not in ``actor``.
            data.update(
                command=command.id,
                claimed_actor=command.actor,
                action=str(command.action),
                scope=command.scope,
                door=command.door,
            )
        try:
            self._append(AuditKind.REFUSAL, "-", data)
        except AuditUnavailable as audit_exc:
            log.error("audit.unavailable", refusal=exc.code, error=str(audit_exc))

    def record(self, kind: AuditKind, actor: str, data: dict[str, Any]) -> None:
        """Audit and publish a state change, override, fire event or budget breach.

        Raises :class:`AuditUnavailable`; a fire release catches it and goes ahead regardless.
        """
        self._append(kind, actor, data)

    def note(self, kind: AuditKind, actor: str, data: dict[str, Any]) -> None:
        """:meth:`record` what has been done already; a log that is down is logged, not raised.

        For state changes, overrides, fire events and budget breaches: the doors have moved
        (or must move) whatever the bookkeeping says.
        """
        who = audit_actor(actor)
        if who != actor:
            data = {**data, "via": actor}
        try:
            self._append(kind, who, data)
        except AuditUnavailable as exc:
            log.error("audit.unavailable", kind=str(kind), actor=actor, error=str(exc), data=data)

    def system(self, command: Command) -> None:
        """Audit a command the gateway gives itself (a rule, an alarm input); never blocks it."""
        self.note(
            AuditKind.COMMAND,
            command.actor,
            {
                "command": command.id,
                "action": str(command.action),
                "scope": command.scope,
                "door": command.door,
                "params": _without_sigs(command),
            },
        )

    def close(self) -> None:
        self.authorizer.close()
        if self.audit is not None:
            self.audit.close()

    def _append(self, kind: AuditKind, actor: str, data: dict[str, Any]) -> None:
        if self.audit is None:
            raise AuditUnavailable("the audit log could not be opened at start-up")
        self._on_record(self.audit.append(kind, actor, data))

    def statistics(self) -> dict[str, Any]:
        return {
            "auth": self.authorizer.statistics(),
            "audit": self.audit.statistics() if self.audit else None,
        }


def _without_sigs(command: Command) -> dict[str, Any]:
    # Signatures prove nothing once checked and only bloat the log.
    return {k: v for k, v in command.params.items() if k != "cosig"}


def audit_actor(actor: str) -> str:
    """``system`` for the gateway's own actors (``rule:ID``, ``input:ID``), else ``actor``."""
    # Configured actor ids cannot hold ":" (ACTOR_ID_PATTERN), so no signed command can
    # pass itself off as the gateway, nor the gateway as a person.
    return SYSTEM_ACTOR if ":" in actor or actor == SYSTEM_ACTOR else actor


def open_guard(
    security: SecurityConfig,
    *,
    state_dir: Path | str,
    site: str,
    demo: bool,
    responder_max_s: float,
    on_record: Callable[[AuditRecord], None] = lambda record: None,
) -> CommandGuard:
    """The site's command gate: authorizer, replay cache and audit log under ``state_dir``."""
    state_dir = Path(state_dir)
    authorizer = Authorizer(
        security, state_dir=state_dir, demo=demo, responder_max_s=responder_max_s
    )
    audit: AuditLog | None
    try:
        audit = AuditLog(state_dir / security.audit_log)
    except AuditUnavailable as exc:
        # Start anyway: fire release and lockdown must still work; everything else is refused.
        log.critical(
            "audit.unavailable_at_start",
            error=str(exc),
            note="safety commands other than lockdown are refused until fixed",
        )
        audit = None
    return CommandGuard(authorizer, audit, site=site, on_record=on_record)
