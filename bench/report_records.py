"""What the after-action report's ``outcome`` record costs the event loop, per actuation.

``Reporting.record`` runs in a command's path before its reply. For a 1,000-door campus
lockdown (every door confirmed) it is timed with the outcome record (the door list and each
door's confirmation time, handed to the journal's queue) and, as the baseline in the same run,
without it. The journal writes on its own thread, as in the daemon; its write time is quoted
too. ``python -m bench.report_records [--doors 1000] [--rounds 300]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from bench._common import percentiles
from gatewayd.kernel.campus import Campus
from gatewayd.kernel.events import now_ns
from gatewayd.security.actors import SecurityConfig
from gatewayd.security.audit import read_records
from gatewayd.security.guard import open_guard
from gatewayd.service.config import parse_config
from gatewayd.service.doors import ActuationReport
from gatewayd.service.reporting import Reporting
from gatewayd.simulators.campusgen import bench_plans, render


class _Quiet:
    """Publisher stand-in: the record path raises no event when every door confirmed."""

    def event(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("no event expected")


def _report(doors: list[str]) -> ActuationReport:
    t0 = now_ns()
    report = ActuationReport(trigger_ns=t0, decided_ns=t0 + 100_000)
    report.commanded = list(doors)
    report.confirmed = list(doors)
    report.on_wire_ns = t0 + 3_000_000
    report.confirmed_ns = t0 + 9_000_000
    # One confirmation time per board read (32 doors), as DoorService._settle gives them.
    report.confirmed_at_ns = {d: t0 + 5_000_000 + (i // 32) * 100_000 for i, d in enumerate(doors)}
    return report


async def run(doors: int, rounds: int) -> dict[str, object]:
    raw = render("bench", "Bench", bench_plans(doors, 32), base_port=20000)
    import tomllib

    config = parse_config(tomllib.loads(raw))
    campus = Campus(config)
    with tempfile.TemporaryDirectory() as folder:
        guard = open_guard(SecurityConfig(), state_dir=folder, site="bench", demo=True,
                           responder_max_s=300)  # fmt: skip
        await asyncio.to_thread(guard.journal.open)
        guard.journal.start(asyncio.get_running_loop())
        reporting = Reporting(campus, config.policy, _Quiet(), guard)  # type: ignore[arg-type]
        ids = list(campus.doors)
        timings: dict[str, list[float]] = {"baseline": [], "with_outcome": []}
        outcome = reporting._record_outcome
        for n in range(rounds * 2):
            with_record = n % 2 == 1
            reporting._record_outcome = outcome if with_record else (lambda *a, **k: None)  # type: ignore[method-assign]
            report = _report(ids)
            t = time.perf_counter()
            reporting.record(report, trigger="lockdown campus", command=f"c{n}")
            timings["with_outcome" if with_record else "baseline"].append(
                (time.perf_counter() - t) * 1000
            )
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.5)
        written = guard.journal.statistics()
        await asyncio.to_thread(guard.journal.close)
        log = Path(folder) / "audit.log"
        sizes = [len(json.dumps(r["data"])) for r in read_records(log) if r["kind"] == "outcome"]
    load = os.getloadavg()
    return {
        "doors": len(ids),
        "rounds": rounds,
        "record_ms": {k: percentiles(v) for k, v in timings.items()},
        "outcome_record_bytes": max(sizes) if sizes else 0,
        "outcome_records": len(sizes),
        "journal": {k: written.get(k) for k in ("batches", "records", "write_ms")},
        "load_average": [round(x, 2) for x in load],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doors", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    result = asyncio.run(run(args.doors, args.rounds))
    print(json.dumps(result, indent=2))
    base, with_ = result["record_ms"]["baseline"], result["record_ms"]["with_outcome"]  # type: ignore[index]
    print(f"\nReporting.record, {result['doors']} doors: baseline p50 {base['p50']} ms"
          f" p99 {base['p99']} ms; with the outcome record p50 {with_['p50']} ms"
          f" p99 {with_['p99']} ms; record {result['outcome_record_bytes']} bytes;"
          f" load {result['load_average']}")  # fmt: skip


if __name__ == "__main__":
    main()
