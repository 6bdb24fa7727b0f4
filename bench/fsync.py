"""Fsyncs on a command's critical path, and the command path on a fast disk against a slow one.

The gateway runs in this process; the relay boards in another (``python -m
gatewayd.simulators campus --control``), whose write log stamps every coil write with
``CLOCK_MONOTONIC``, the clock this process stamps its publishes and fsyncs with. Each cycle
publishes a signed lockdown of one building, then its release, over MQTT and waits for each
reply. ``os.fsync`` and ``os.fdatasync`` are wrapped in this process (bench/_disk.py): every
call is counted with when it ran, and on the slow disk each is made ``--slow-ms`` longer
first. Cycles alternate fast and slow, so both see the same machine.

Per command: fsyncs finished between the publish and the last coil write of the command
("before the doors") and between the publish and the reply ("before the reply"), and the
latencies publish -> last coil write and publish -> reply. A lockdown should need none before
its doors and none before its reply (the reply says whether its records are on disk yet); a
release (it unlocks, so it is recorded first) one before its doors. SQLite syncs from C (the
outbox, the journal's index) and is neither counted nor slowed here; neither is on the command
path by design.

    python -m bench.fsync --cycles 40
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    Control,
    Requester,
    SimProcess,
    bench_campus,
    command_bytes,
    in_process_config,
    last_write_ns,
    load_average,
    percentiles,
    report,
    run_gateway,
    stop_gateway,
)
from bench._disk import FsyncProbe
from gatewayd.app.logs import configure
from gatewayd.service.gateway import Gateway
from gatewayd.simulators.broker import Mosquitto

SITE = "bench-fsync"
SCOPE = "building/B01"
ACTIONS = ("lockdown", "release")
WARMUP = 2


class Timeline:
    """When each command reached the gateway and when its handler returned (monotonic ns)."""

    def __init__(self, gateway: Gateway) -> None:
        self.seen: dict[str, tuple[int, int]] = {}
        inner = gateway.commands.handle_command

        async def timed(payload: bytes, arrived_ns: int | None = None) -> dict[str, Any]:
            reply = await inner(payload, arrived_ns)
            self.seen[str(reply.get("id"))] = (arrived_ns or 0, time.monotonic_ns())
            return reply

        gateway.commands.handle_command = timed  # type: ignore[method-assign]


async def one_command(
    gateway: Gateway,
    requester: Requester,
    ctl: Control,
    probe: FsyncProbe,
    timeline: Timeline,
    *,
    boards: list[str],
    action: str,
) -> dict[str, float]:
    journal_before = gateway.journal.stats["fsyncs"]
    reply, sent_ns, replied_ns = await requester.send(command_bytes(action, SITE, scope=SCOPE))
    if not reply.get("ok"):
        raise RuntimeError(f"{action} refused: {reply}")
    door_ns = await last_write_ns(ctl, boards, sent_ns, replied_ns)
    if door_ns is None:
        raise RuntimeError(f"{action} wrote no coil: {reply}")
    # The reply does not wait for the disk: give the journal its group (bounded) before
    # counting what it wrote for this command.
    for _ in range(500):
        if gateway.journal.stats["fsyncs"] > journal_before:
            break
        await asyncio.sleep(0.01)
    syncs = probe.between(sent_ns, replied_ns)
    arrived_ns, handled_ns = timeline.seen[str(reply["id"])]
    return {
        "to_arrival_ms": (arrived_ns - sent_ns) / 1e6,
        "to_handled_ms": (handled_ns - sent_ns) / 1e6,
        "to_doors_ms": (door_ns - sent_ns) / 1e6,
        "to_reply_ms": (replied_ns - sent_ns) / 1e6,
        "fsyncs_before_doors": float(sum(s.end_ns <= door_ns for s in syncs)),
        "fsyncs_before_reply": float(sum(s.end_ns <= replied_ns for s in syncs)),
        "fsync_ms": max(((s.end_ns - s.start_ns) / 1e6 for s in syncs), default=-1.0),
        "journal_fsyncs": float(gateway.journal.stats["fsyncs"] - journal_before),
        "confirmed_in_gateway_ms": float(reply["latency_ms"]["confirmed"] or "inf"),
    }


def summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "to_doors_ms": percentiles([s["to_doors_ms"] for s in samples]),
        "to_reply_ms": percentiles([s["to_reply_ms"] for s in samples]),
        "to_arrival_ms": percentiles([s["to_arrival_ms"] for s in samples]),
        "to_handled_ms": percentiles([s["to_handled_ms"] for s in samples]),
        "confirmed_in_gateway_ms": percentiles([s["confirmed_in_gateway_ms"] for s in samples]),
        "fsyncs_before_doors": _count(samples, "fsyncs_before_doors"),
        "fsyncs_before_reply": _count(samples, "fsyncs_before_reply"),
        "fsync_ms": percentiles([s["fsync_ms"] for s in samples if s["fsync_ms"] >= 0]),
        "journal_fsyncs_per_command": _mean(samples, "journal_fsyncs"),
    }


def _count(samples: list[dict[str, float]], key: str) -> dict[str, float]:
    return {"max": max(s[key] for s in samples), "mean": _mean(samples, key)}


def _mean(samples: list[dict[str, float]], key: str) -> float:
    return round(sum(s[key] for s in samples) / len(samples), 2)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    samples: dict[str, dict[str, list[dict[str, float]]]] = {
        disk: {a: [] for a in ACTIONS} for disk in ("fast", "slow")
    }
    with tempfile.TemporaryDirectory(prefix="gatewayd-bench-fsync-") as tmp:
        path = bench_campus(Path(tmp) / "campus.toml", SITE, args.doors, poll_ms=args.poll_ms)
        async with (
            SimProcess(path, actuation_ms=args.actuation_ms, control=True) as sim,
            Mosquitto() as mq,
        ):
            assert sim.control_port is not None
            config = in_process_config(path, sim.ports, mq.url, Path(tmp) / "state")
            boards = sorted({d.lock.device for d in config.doors if d.building == "B01"})
            with FsyncProbe() as probe:
                gateway, task = await run_gateway(config)
                timeline = Timeline(gateway)
                try:
                    async with (
                        Control(sim.control_port) as ctl,
                        Requester(config.mqtt, SITE) as requester,
                    ):
                        for cycle in range(2 * args.cycles + WARMUP):
                            disk = "slow" if cycle % 2 else "fast"
                            probe.delay_s = args.slow_ms / 1e3 if disk == "slow" else 0.0
                            for action in ACTIONS:
                                sample = await one_command(
                                    gateway,
                                    requester,
                                    ctl,
                                    probe,
                                    timeline,
                                    boards=boards,
                                    action=action,
                                )
                                if cycle >= WARMUP:
                                    samples[disk][action].append(sample)
                            probe.delay_s = 0.0
                            # A few poll cycles between commands, as in real life.
                            await asyncio.sleep(args.gap_s)
                finally:
                    await stop_gateway(task)
                threads = sorted({c.thread for c in probe.calls})
    results = {disk: {a: summary(s) for a, s in per.items()} for disk, per in samples.items()}
    slowdown = {
        a: {
            m: round(results["slow"][a][m]["p50"] - results["fast"][a][m]["p50"], 3)
            for m in ("to_doors_ms", "to_handled_ms", "to_reply_ms")
        }
        for a in ACTIONS
    }
    # Counted on the slow disk: there a sync that merely races the doors (the writer thread
    # on its own) ends after them; on the fast one it may end first without being waited for.
    critical = {
        a: {
            "before_doors": results["slow"][a]["fsyncs_before_doors"]["max"],
            "before_reply": results["slow"][a]["fsyncs_before_reply"]["max"],
            "implied_by_latency": round(slowdown[a]["to_doors_ms"] / args.slow_ms, 2),
        }
        for a in ACTIONS
    }
    return {
        "bench": "fsync",
        "doors": len(config.doors),
        "scope": SCOPE,
        "cycles_per_disk": args.cycles,
        "slow_fsync_ms": args.slow_ms,
        "fsync_threads": threads,
        "fast_disk": results["fast"],
        "slow_disk": results["slow"],
        "baseline": "fast_disk",
        "slow_minus_fast_p50_ms": slowdown,
        "critical_path_fsyncs": critical,
        "targets": {"lockdown_before_doors": 0, "release_before_doors": 1, "before_reply": 1},
        "meets_targets": critical["lockdown"]["before_doors"] == 0
        and critical["release"]["before_doors"] <= 1
        and all(c["before_reply"] <= 1 for c in critical.values()),
        "load_average": {"before": load_before, "after": load_average()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--doors", type=int, default=256)
    parser.add_argument("--cycles", type=int, default=40, help="lockdown + release, per disk")
    parser.add_argument("--slow-ms", type=float, default=20.0, help="added to each fsync")
    parser.add_argument("--poll-ms", type=int, default=250, help="device poll interval")
    parser.add_argument("--actuation-ms", type=float, default=5.0, help="sim bolt travel")
    parser.add_argument("--gap-s", type=float, default=0.05, help="pause between cycles")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 cycles, 64 doors")
    args = parser.parse_args()
    if args.quick:
        args.doors, args.cycles = 64, 2
    configure("error")
    results = asyncio.run(main_async(args))
    table = [
        (f"{disk} disk: {action} publish -> {what}", results[f"{disk}_disk"][action][key])
        for disk in ("fast", "slow")
        for action in ACTIONS
        for what, key in (("last coil write", "to_doors_ms"), ("reply", "to_reply_ms"))
    ]
    report(
        f"Command path, {results['doors']} doors, {SCOPE}; fast disk vs +{args.slow_ms:g} ms"
        " per fsync (ms from publish)",
        results,
        table,
    )
    for disk in ("fast", "slow"):
        for action in ACTIONS:
            r = results[f"{disk}_disk"][action]
            print(
                f"{disk} {action:<8} fsyncs before doors max {r['fsyncs_before_doors']['max']:g}"
                f" (mean {r['fsyncs_before_doors']['mean']}), before reply max"
                f" {r['fsyncs_before_reply']['max']:g} (mean {r['fsyncs_before_reply']['mean']}),"
                f" journal fsyncs/command {r['journal_fsyncs_per_command']}"
            )
    print(f"slow - fast at p50 (ms): {results['slow_minus_fast_p50_ms']}")
    print(f"fsyncs on the critical path (slow disk, max): {results['critical_path_fsyncs']}")
    print(f"targets: {results['targets']}: {'met' if results['meets_targets'] else 'NOT met'}")
    print(f"load average {results['load_average']}")


if __name__ == "__main__":
    main()
