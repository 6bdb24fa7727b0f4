"""The gate every command passes: authorized by the authorizer, recorded in the journal.

A refusal of a message nobody authenticated (garbage, unsigned, an unknown actor, a bad
signature) is counted, not recorded one by one: a flood of them becomes one audit record per
interval with the counts and a few samples, so it can neither fill the disk nor slow the
gateway. Refusals of signed commands are recorded each, up to a rate per actor.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

from gatewayd.kernel.command import Command
from gatewayd.kernel.errors import CommandError, ErrorCode
from gatewayd.security.actors import SecurityConfig
from gatewayd.security.audit import AuditKind
from gatewayd.security.authorizer import Authorizer
from gatewayd.security.journal import Journal, Pending
from gatewayd.security.roles import Authority

log = structlog.get_logger(__name__)

#: The audit actor of what the gateway does on its own (rules, alarm inputs, fire, expiry).
SYSTEM_ACTOR = "system"
#: Refusals decided before a signature was verified: nobody is known to have sent them.
UNAUTHENTICATED = frozenset({
    ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE, ErrorCode.UNSIGNED, ErrorCode.UNKNOWN_ACTOR,
    ErrorCode.BAD_SIGNATURE,
})  # fmt: skip
#: Counted refusals go into one record this often.
REFUSAL_INTERVAL_S = 10.0
#: Samples of counted refusals kept in that record.
REFUSAL_SAMPLES = 5
#: Refusals of one actor's signed commands recorded one by one per interval; then counted.
ACTOR_REFUSALS_RECORDED = 20

#: Told of every interval's counted refusals (to publish them as one event).
AggregateListener = Callable[[dict[str, Any]], None]


def is_unauthenticated(code: str) -> bool:
    return code in UNAUTHENTICATED


class CommandGuard:
    """Authorizes each command and records what is decided; only an admitted command acts."""

    def __init__(self, authorizer: Authorizer, journal: Journal, *, site: str) -> None:
        self.authorizer = authorizer
        self.journal = journal
        self.site = site
        self._listeners: list[AggregateListener] = []
        self._counts: Counter[str] = Counter()
        self._by_actor: Counter[str] = Counter()
        self._samples: list[dict[str, Any]] = []
        self._interval_started = time.monotonic()
        self.refusals_recorded = 0
        self.refusals_counted = 0

    def listen(self, listener: AggregateListener) -> None:
        self._listeners.append(listener)

    def check(self, command: Command, *, payload: bytes, now: float) -> Authority:
        """The authorized actor; else raise ``CommandError`` (nothing is written here)."""
        return self.authorizer.check(command, payload=payload, site=self.site, now=now)

    def admitted(self, command: Command, authority: Authority) -> Pending:
        """Record an accepted command (with its id and ``ts``, the replay cache's record)."""
        data = _command_data(command)
        if authority.cosigner is not None:
            data["cosigner"] = authority.cosigner
        return self.journal.record(AuditKind.COMMAND, authority.actor, data)

    def undo_admission(self, command: Command) -> None:
        """A command refused after all: its id may be used again."""
        self.authorizer.replay.forget(command.id)

    def refused(self, exc: CommandError, *, payload: bytes, command: Command | None) -> None:
        """Record a refusal, or count it when nobody authenticated the message; never raises."""
        data: dict[str, Any] = {
            "error": exc.code,
            "message": str(exc)[:500],
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "payload_bytes": len(payload),
        }
        if command is not None:
            # Who the command *claims* to be from: unauthenticated, so not in ``actor``.
            data.update(command=command.id, claimed_actor=command.actor,
                        action=str(command.action), scope=command.scope,
                        door=command.door)  # fmt: skip
        self._maybe_flush()
        if is_unauthenticated(exc.code):
            self._count(exc.code, data)
            return
        actor = command.actor if command is not None else "-"
        self._by_actor[actor] += 1
        if self._by_actor[actor] > ACTOR_REFUSALS_RECORDED:
            self._count(f"{exc.code}:{actor}", data)
            return
        self.refusals_recorded += 1
        self.journal.record(AuditKind.REFUSAL, "-", data)

    def record(
        self,
        kind: AuditKind,
        actor: str,
        data: dict[str, Any],
        *,
        sources: dict[str, Any] | None = None,
        required: bool = False,
    ) -> Pending:
        """Record a decision: a state change, an override, a fire event, a budget breach.

        ``sources`` is the change of safety sources it makes (the journal's index follows it);
        ``required``: the caller waits for it and refuses the change if it cannot be written.
        """
        who = audit_actor(actor)
        body = {**data, "via": actor} if who != actor else dict(data)
        if sources:
            body["change"] = sources
        return self.journal.record(kind, who, body, required=required)

    def system(self, command: Command) -> Pending:
        """Record a command the gateway gives itself (a rule, an alarm input); never blocks it."""
        return self.record(AuditKind.COMMAND, command.actor, _command_data(command))

    async def run(self) -> None:
        """Write the counted refusals once an interval, until cancelled."""
        while True:
            await asyncio.sleep(REFUSAL_INTERVAL_S)
            self.flush_refusals()

    def flush_refusals(self) -> None:
        """One record (and one event) for the refusals counted since the last one."""
        now = time.monotonic()
        counts, self._counts = self._counts, Counter()
        samples, self._samples = self._samples, []
        interval_s, self._interval_started = now - self._interval_started, now
        self._by_actor.clear()
        if not counts:
            return
        data = {
            "counted": True,
            "interval_s": round(interval_s, 1),
            "total": sum(counts.values()),
            "by_error": dict(counts),
            "samples": samples,
        }
        self.journal.record(AuditKind.REFUSAL, "-", data)
        log.warning("command.refusals_counted", total=data["total"], by_error=dict(counts))
        for listener in self._listeners:
            listener(data)

    def _count(self, key: str, data: dict[str, Any]) -> None:
        self.refusals_counted += 1
        self._counts[key] += 1
        if len(self._samples) < REFUSAL_SAMPLES:
            self._samples.append(data)

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._interval_started >= REFUSAL_INTERVAL_S:
            self.flush_refusals()

    def statistics(self) -> dict[str, Any]:
        return {
            "auth": self.authorizer.statistics(),
            "journal": self.journal.statistics(),
            "refusals_recorded": self.refusals_recorded,
            "refusals_counted": self.refusals_counted,
        }


def _command_data(command: Command) -> dict[str, Any]:
    return {
        "command": command.id,
        "sent_ts": command.ts,
        "action": str(command.action),
        "scope": command.scope,
        "door": command.door,
        # Signatures prove nothing once checked and only bloat the log.
        "params": {k: v for k, v in command.params.items() if k != "cosig"},
    }


def audit_actor(actor: str) -> str:
    """``system`` for the gateway's own actors (``rule:ID``, ``input:ID``), else ``actor``."""
    # Configured actor ids cannot hold ":" (ACTOR_ID_PATTERN), so no signed command can
    # pass itself off as the gateway, nor the gateway as a person.
    return SYSTEM_ACTOR if ":" in actor or actor == SYSTEM_ACTOR else actor


def open_guard(
    security: SecurityConfig, *, state_dir: str, site: str, demo: bool, responder_max_s: float
) -> CommandGuard:
    """The site's command gate over a journal in ``state_dir`` (opened later, at start-up)."""
    journal = Journal(
        state_dir,
        audit_name=security.audit_log,
        index_name=security.journal_index,
        window_s=security.timestamp_window_s,
        max_file_bytes=int(security.audit_file_mb * 1024 * 1024),
        keep_files=security.audit_keep_files,
    )
    authorizer = Authorizer(security, demo=demo, responder_max_s=responder_max_s)
    return CommandGuard(authorizer, journal, site=site)
