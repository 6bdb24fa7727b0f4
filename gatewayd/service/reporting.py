"""After each trigger: latencies kept, doors that failed and budgets overrun made loud."""

from __future__ import annotations

import time
from collections import Counter, deque
from itertools import chain
from typing import Any

import structlog

from gatewayd.kernel.campus import Campus
from gatewayd.kernel.events import now_ns
from gatewayd.rules.config import PolicyConfig
from gatewayd.security.audit import AuditKind
from gatewayd.security.guard import CommandGuard
from gatewayd.service.doors import ActuationReport
from gatewayd.service.publisher import Publisher

log = structlog.get_logger(__name__)

#: Triggers kept for latency statistics.
LATENCY_WINDOW = 500
#: Latency statistics go to the log once per this many triggers.
STATISTICS_EVERY = 50
#: Actuation reports kept (for status and tests).
REPORTS_KEPT = 1000


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


class Reporting:
    """Records every actuation; raises ``door`` and ``budget`` events when they are due."""

    def __init__(
        self, campus: Campus, policy: PolicyConfig, publisher: Publisher, guard: CommandGuard
    ) -> None:
        self._campus = campus
        self._policy = policy
        self._publisher = publisher
        self._guard = guard
        #: The latest actuation reports, oldest first.
        self.reports: deque[ActuationReport] = deque(maxlen=REPORTS_KEPT)
        self._latencies: deque[dict[str, float | None]] = deque(maxlen=LATENCY_WINDOW)
        #: Triggers recorded since start (the window above stops growing at its size).
        self._triggers = 0
        #: The building and zone scopes of each door, for the outcome record's time to secure.
        self._scopes: dict[str, tuple[str, ...]] = {
            d.id: (f"building/{d.building}", *((f"zone/{d.zone}",) if d.zone else ()))
            for d in campus.doors.values()
        }

    def record(
        self,
        report: ActuationReport,
        *,
        trigger: str,
        drill: bool = False,
        command: str | None = None,
    ) -> None:
        """Keep a trigger's latencies; raise ``budget`` and ``door`` events when due.

        What the actuation did goes into the audit log as an ``outcome`` record (written on
        the journal's thread, after the doors): the after-action report is built from it.
        """
        self.reports.append(report)
        lat = report.latencies_ms()
        if report.commanded:
            self._record_outcome(report, lat, trigger=trigger, drill=drill, command=command)
        if report.commanded:
            self._latencies.append(lat)
            self._triggers += 1
        for door_id, why in report.failed.items():
            door = self._campus.doors[door_id]
            self._publisher.event(
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
        if report.commanded and (report.failed or total_ms / 1e6 > self._policy.budget_ms):
            self._publisher.event(
                "budget",
                "gateway",
                {
                    "trigger": trigger,
                    "budget_ms": self._policy.budget_ms,
                    "latency_ms": lat,
                    "failed": len(report.failed),
                },
                life_safety=False,
                drill=drill,
            )
            log.warning(
                "budget.exceeded",
                trigger=trigger,
                budget_ms=self._policy.budget_ms,
                **{f"{k}_ms": v for k, v in lat.items()},
            )
            self._guard.record(
                AuditKind.BUDGET,
                "system:budget",
                {
                    "trigger": trigger,
                    "budget_ms": self._policy.budget_ms,
                    "latency_ms": lat,
                    "failed": len(report.failed),
                    "drill": drill,
                },
            )
        if report.commanded and self._triggers % STATISTICS_EVERY == 0:
            log.info("latency.statistics", **self.latency_statistics())

    def _record_outcome(
        self,
        report: ActuationReport,
        lat: dict[str, float | None],
        *,
        trigger: str,
        drill: bool,
        command: str | None,
    ) -> None:
        # The trigger's wall-clock time, from the monotonic clock the latencies use.
        at = time.time() - (now_ns() - report.trigger_ns) / 1e9
        data: dict[str, Any] = {
            "trigger": trigger,
            "command_id": command,
            "drill": drill,
            "at": round(at, 6),
            "latency_ms": lat,
            "commanded": len(report.commanded),
            "confirmed": len(report.confirmed),
            "failed": dict(report.failed),
        }
        data["scopes"] = self._secure_times(report)
        self._guard.record(AuditKind.OUTCOME, "system:report", data)

    def _secure_times(self, report: ActuationReport) -> dict[str, dict[str, Any]]:
        """Per building and zone: doors, confirmed, and when the last confirmed (ms), if all did.

        A handful of numbers, not one per door: the journal's thread encodes every record in
        canonical JSON, and a thousand door entries there would hold the interpreter for tens
        of milliseconds while the next command waits for it.
        """
        scopes_of = self._scopes.__getitem__
        # Counted in C (Counter over chained tuples); only the few distinct confirmation
        # times (one per device read) are looped over here.
        doors = Counter(chain.from_iterable(map(scopes_of, report.commanded)))
        confirmed = Counter(chain.from_iterable(map(scopes_of, report.confirmed_at_ns)))
        by_time: dict[int, list[str]] = {}
        for door_id, at_ns in report.confirmed_at_ns.items():
            by_time.setdefault(at_ns, []).append(door_id)
        last: dict[str, int] = {}
        for at_ns in sorted(by_time):
            last.update(dict.fromkeys(chain.from_iterable(map(scopes_of, by_time[at_ns])), at_ns))
        return {
            scope: {
                "doors": n,
                "confirmed": confirmed.get(scope, 0),
                "ms": round((last[scope] - report.trigger_ns) / 1e6, 3)
                if confirmed.get(scope, 0) == n
                else None,
            }
            for scope, n in sorted(doors.items())
        }

    def latency_statistics(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "triggers": len(self._latencies),
            "budget_ms": self._policy.budget_ms,
        }
        for stage in ("decided", "on_wire", "confirmed"):
            values = [v for t in self._latencies if (v := t.get(stage)) is not None]
            out[stage] = {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99)}
        return out
