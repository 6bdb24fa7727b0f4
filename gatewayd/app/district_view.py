"""What ``gatewayd district`` shows a person: the live per-school table while a command runs
(rich, on a terminal; one plain line per decided school otherwise) and the final summary."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from gatewayd.app.district import Outcome, SchoolStatus

RESULTS = ("confirmed", "failed", "unreachable")
STYLE = {"confirmed": "green", "failed": "bold red", "unreachable": "bold red"}


def phase(outcome: Outcome, *, finished: bool) -> str:
    """``confirmed``/``failed``/``unreachable`` once decided; before, where the command is."""
    if outcome.decided.is_set() or finished:
        return outcome.result
    if outcome.sends == 0:
        return "connecting"
    return "resending" if outcome.sends > 1 else "sent"


class LiveTable:
    """The per-school table, redrawn while the command runs (``rich.live``)."""

    def __init__(self, action: str, outcomes: Sequence[Outcome], stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self.action = action
        self.outcomes = list(outcomes)
        self.started = time.monotonic()
        self.finished = False
        self._live = Live(
            get_renderable=self.render,
            console=Console(file=stream),
            refresh_per_second=4,
            transient=False,
        )

    def __enter__(self) -> LiveTable:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finished = True
        self._live.refresh()
        self._live.stop()

    def progress(self, outcome: Outcome) -> None:
        """Redrawn on its own; a decision is shown at the next refresh."""

    def render(self) -> Any:
        from rich.table import Table

        now = time.monotonic()
        decided = sum(o.decided.is_set() for o in self.outcomes)
        table = Table(
            title=f"district {self.action}: {decided}/{len(self.outcomes)} schools answered,"
            f" {now - self.started:.1f} s",
            title_justify="left",
        )
        for column in ("school", "result", "time", "sends", "via", "message"):
            table.add_column(column, no_wrap=column != "message")
        for o in self.outcomes:
            state = phase(o, finished=self.finished)
            table.add_row(
                o.school,
                f"[{STYLE.get(state, 'yellow')}]{state.upper()}[/]",
                seconds_text(o, now),
                str(o.sends),
                o.via or "-",
                o.message[:60],
            )
        return table


class PlainProgress:
    """One line per school as it is decided: for pipes, logs and tests."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def progress(self, outcome: Outcome) -> None:
        if outcome.decided.is_set():
            seconds = "" if outcome.seconds is None else f" {outcome.seconds:.2f} s"
            print(f"  {outcome.school}: {outcome.result}{seconds} {outcome.message[:60]}",
                  file=self.stream, flush=True)  # fmt: skip


def seconds_text(outcome: Outcome, now: float | None = None) -> str:
    if outcome.seconds is not None:
        return f"{outcome.seconds:.2f} s"
    if outcome.gave_up_s is not None:
        return f"{outcome.gave_up_s:.0f} s tried"
    if outcome.first_sent is not None and now is not None:
        return f"{now - outcome.first_sent:.1f} s..."
    return "-"


def summary(outcomes: Sequence[Outcome], action: str) -> str:
    """``lockdown: 9 confirmed, 0 failed, 1 unreachable; confirmed within 1.2 s (...)``."""
    counts = {r: sum(o.result == r for o in outcomes) for r in RESULTS}
    line = f"{action}: " + ", ".join(f"{n} {r}" for r, n in counts.items())
    times = [(o.seconds, o.school) for o in outcomes if o.result == "confirmed" and o.seconds]
    if times:
        slowest, school = max(times)
        line += f"; every confirmed school within {slowest:.2f} s (slowest {school})"
    missing = [o.school for o in outcomes if o.result != "confirmed"]
    if missing:
        line += f"; not confirmed: {', '.join(missing)}"
    return line


def format_outcomes(outcomes: Sequence[Outcome], action: str, *, color: bool) -> str:
    lines = [f"{'SCHOOL':<20} {'RESULT':<12} {'TIME':<12} {'SENDS':<6} MESSAGE"]
    for o in outcomes:
        result = o.result.upper()
        if color and o.result != "confirmed":
            result = f"\x1b[31m{result:<12}\x1b[0m"
        lines.append(
            f"{o.school:<20} {result:<12} {seconds_text(o):<12} {o.sends:<6} {o.message[:60]}"
        )
    lines.append(summary(outcomes, action))
    return "\n".join(lines)


def format_status(rows: Sequence[SchoolStatus], *, color: bool) -> str:
    head = f"{'SCHOOL':<20} {'STATE':<10} {'DOORS':<26} {'HEARTBEAT':<10} {'BROKERS':<8} STATUS"
    lines = [head]
    for r in rows:
        doors = " ".join(f"{k} {v}" for k, v in r.doors.items() if v) or "-"
        age = "-" if r.heartbeat_age_s is None else f"{r.heartbeat_age_s:g} s"
        verdict = r.verdict.upper()
        if color and r.verdict != "ok":
            verdict = f"\x1b[31m{verdict}\x1b[0m"
        lines.append(f"{r.school:<20} {r.state or '-':<10} {doors:<26} {age:<10}"
                     f" {r.reached}/{r.brokers:<6} {verdict}")  # fmt: skip
    return "\n".join(lines)
