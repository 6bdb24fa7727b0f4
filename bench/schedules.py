"""What a door schedule costs the daemon: one evaluation of the calendar, per window count.

The scheduler evaluates the calendar at every transition, after a reload or a clock step,
and lists the next transitions for the console every 5 s; between transitions a tick only
compares two floats. Measured here: ``Calendar.sources(now)`` (which windows hold now, as
sources) and ``Calendar.transitions(now, 4)`` (what the console and ``check`` show) for 1, 10
and 50 windows with the demo's 15 holidays, against the baseline of the same call on an empty
calendar in the same run. Prints one JSON line and a summary.

    python -m bench.schedules [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from functools import partial

from bench._common import percentiles
from gatewayd.rules.schedules import Calendar, SchedulesConfig, WindowConfig

HOLIDAYS = ("2026-11-26/2026-11-27", "2026-12-21/2027-01-01", "2027-01-18")


def calendar(windows: int) -> Calendar:
    config = SchedulesConfig(
        timezone="America/Chicago",
        holidays=HOLIDAYS,
        windows=tuple(
            WindowConfig(id=f"w{i}", doors=(f"D-{i}",), start="07:30", end="08:15")
            for i in range(windows)
        ),
    )
    return Calendar(config)


def timed_ms(call: Callable[[], object], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.schedules", description=__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    now = time.time()
    results: dict[str, object] = {"load": os.getloadavg()[0], "rounds": args.rounds}
    empty = calendar(0)
    results["baseline_empty"] = {
        "sources_ms": percentiles(timed_ms(lambda: empty.sources(now), args.rounds)),
        "transitions_ms": percentiles(timed_ms(lambda: empty.transitions(now, 4), args.rounds)),
    }
    for count in (1, 10, 50):
        cal = calendar(count)
        t0 = time.perf_counter_ns()
        # The first call expands each window's starts for the horizon (at start-up, at a
        # reload, off the event loop; then about once a year).
        cal.sources(now)
        expand_ms = round((time.perf_counter_ns() - t0) / 1e6, 3)
        results[f"windows_{count}"] = {
            "expand_ms": expand_ms,
            "sources_ms": percentiles(timed_ms(partial(cal.sources, now), args.rounds)),
            "transitions_ms": percentiles(timed_ms(partial(cal.transitions, now, 4), args.rounds)),
        }
    print(json.dumps(results))
    for key in ("baseline_empty", "windows_1", "windows_10", "windows_50"):
        entry = results[key]
        assert isinstance(entry, dict)
        sources, shown = entry["sources_ms"], entry["transitions_ms"]
        print(
            f"{key:15} first {entry.get('expand_ms', 0)} ms; sources p50 {sources['p50']} ms"
            f" p99 {sources['p99']} ms; transitions p50 {shown['p50']} ms"
            f" (load {results['load']:.2f})"
        )


if __name__ == "__main__":
    main()
