"""A signed lockdown under a flood of unauthenticated garbage on ``cmd``, against no flood.

The gateway is the real daemon (``python -m gatewayd run``, a child process, so its RSS is
its own); the relay boards are simulators in another process, the broker a private
Mosquitto, and the flood comes from a third process (``bench._flooder``, paho) publishing
``--rate`` one-byte messages a second on the gateway's ``cmd`` topic. In one run:

1. baseline: lockdown + release cycles of one building, paced ``--gap-s`` apart, no flood;
2. flood: the same cycles while the garbage flows.

A lockdown's time to confirmed is publish -> reply (the gateway replies once every door is
confirmed), as the sender sees it; the gateway's own ``confirmed`` (from the message's
arrival) is quoted beside it. The daemon's RSS is sampled every 100 ms from
``/proc/PID/status``. After the flood the daemon is stopped (it writes the refusals it has
counted) and the audit log is read back: bytes of refusal records per garbage message.
Targets: lockdown confirmed p99 under flood <= 2x the baseline p99; RSS growth <= 20 MB.

    python -m bench.flood --rate 2000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    Control,
    DaemonProcess,
    Requester,
    SimProcess,
    bench_campus,
    command_bytes,
    effective_campus,
    last_write_ns,
    load_average,
    percentiles,
    report,
)
from gatewayd.app.logs import configure
from gatewayd.security.audit import log_files
from gatewayd.service.config import load_config
from gatewayd.simulators.broker import Mosquitto

SITE = "bench-flood"
SCOPE = "building/B01"
TARGETS = {"flood_over_baseline_p99": 2.0, "rss_growth_mb": 20.0}


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """The daemon's RSS every ``period_s``, and its CPU time, per phase."""

    def __init__(self, pid: int, period_s: float = 0.1) -> None:
        self.pid, self.period_s = pid, period_s
        self.phase = "start"
        self.samples: list[tuple[str, float]] = []
        #: phase -> (CPU seconds, wall seconds) spent in it.
        self.cpu: dict[str, list[float]] = {}

    async def run(self) -> None:
        last_cpu, last_wall = cpu_s(self.pid), time.monotonic()
        while True:
            self.samples.append((self.phase, rss_mb(self.pid)))
            await asyncio.sleep(self.period_s)
            now_cpu, now_wall = cpu_s(self.pid), time.monotonic()
            spent = self.cpu.setdefault(self.phase, [0.0, 0.0])
            spent[0] += now_cpu - last_cpu
            spent[1] += now_wall - last_wall
            last_cpu, last_wall = now_cpu, now_wall

    def of(self, *phases: str) -> list[float]:
        return [mb for phase, mb in self.samples if phase in phases]

    def cpu_percent(self) -> dict[str, float]:
        """The daemon's CPU use per phase, in % of one core."""
        return {p: round(100 * c / w, 1) for p, (c, w) in self.cpu.items() if w > 0}


async def until_ready(requester: Requester, timeout_s: float = 30.0) -> dict[str, Any]:
    """Ask for ``status`` until the daemon answers; its answer."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                reply, _, _ = await requester.send(command_bytes("status", SITE), timeout_s=1.0)
            except TimeoutError:
                continue
            if reply.get("ok"):
                return reply


async def cycles(
    requester: Requester,
    ctl: Control,
    boards: list[str],
    n: int,
    gap_s: float,
    *,
    flooder: asyncio.subprocess.Process | None = None,
) -> list[dict[str, float]]:
    """``n`` lockdown + release cycles (fewer if ``flooder`` ends first); per lockdown:
    publish -> last coil write, -> reply, and the gateway's own confirmed (from arrival)."""
    out = []
    for _ in range(n):
        if flooder is not None and flooder.returncode is not None:
            break
        lock, sent_ns, replied_ns = await requester.send(
            command_bytes("lockdown", SITE, scope=SCOPE)
        )
        door_ns = await last_write_ns(ctl, boards, sent_ns, replied_ns)
        release, _, _ = await requester.send(command_bytes("release", SITE, scope=SCOPE))
        ok = bool(lock.get("ok")) and bool(release.get("ok")) and not lock["doors"]["failed"]
        confirmed = (lock.get("latency_ms") or {}).get("confirmed")
        out.append({
            "ok": float(ok and door_ns is not None),
            "publish_to_doors_ms": (door_ns - sent_ns) / 1e6 if door_ns else float("inf"),
            "publish_to_confirmed_reply_ms": (replied_ns - sent_ns) / 1e6,
            "gateway_confirmed_ms": float(confirmed) if confirmed is not None else float("inf"),
        })  # fmt: skip
        await asyncio.sleep(gap_s)
    return out


def audit_bytes(audit_path: Path) -> dict[str, int]:
    """Bytes of the audit log by record kind, over every file of it."""
    by_kind: dict[str, int] = {}
    for path in log_files(audit_path):
        for line in path.read_bytes().splitlines(keepends=True):
            try:
                kind = str(json.loads(line).get("kind"))
            except ValueError:
                kind = "unreadable"
            by_kind[kind] = by_kind.get(kind, 0) + len(line)
    return by_kind


async def start_flood(
    args: argparse.Namespace, port: int, topic: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench._flooder", "--port", str(port), "--topic", topic,
        "--rate", str(args.rate), "--seconds", str(args.seconds),
        stdout=subprocess.PIPE,
    )  # fmt: skip


def summarize(samples: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "all_ok": all(s["ok"] for s in samples),
        "publish_to_confirmed_reply_ms": percentiles(
            [s["publish_to_confirmed_reply_ms"] for s in samples]
        ),
        "publish_to_doors_ms": percentiles([s["publish_to_doors_ms"] for s in samples]),
        "gateway_confirmed_ms": percentiles([s["gateway_confirmed_ms"] for s in samples]),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="gatewayd-bench-flood-") as tmp:
        state = Path(tmp) / "state"
        template = bench_campus(Path(tmp) / "template.toml", SITE, args.doors, poll_ms=250)
        async with (
            SimProcess(template, actuation_ms=5.0, control=True) as sim,
            Mosquitto() as broker,
        ):
            path = Path(tmp) / "campus.toml"
            path.write_text(effective_campus(template.read_text(), sim.ports, broker.url))
            config = load_config(path)
            boards = sorted({d.lock.device for d in config.doors if d.building == "B01"})
            assert sim.control_port is not None
            topic = f"{config.mqtt.prefix}/{SITE}/cmd"
            daemon = await DaemonProcess(path, {"GATEWAYD_STATE_DIR": str(state)}).start()
            sampler = RssSampler(daemon.pid)
            sampling = asyncio.create_task(sampler.run())
            try:
                async with (
                    Requester(config.mqtt, SITE) as requester,
                    Control(sim.control_port) as ctl,
                ):
                    await until_ready(requester)
                    # Warm-up: first connections to every board, caches.
                    await cycles(requester, ctl, boards, 2, args.gap_s)
                    sampler.phase = "baseline"
                    audit_start = audit_bytes(state / "audit.log")
                    baseline = await cycles(requester, ctl, boards, args.cycles, args.gap_s)
                    audit_baseline = audit_bytes(state / "audit.log")
                    sampler.phase = "flood"
                    flooder = await start_flood(args, broker.port, topic)
                    # Let the flood reach its rate before the first lockdown.
                    await asyncio.sleep(min(1.0, args.seconds / 4))
                    flooded = await cycles(requester, ctl, boards, args.cycles, args.gap_s,
                                           flooder=flooder)  # fmt: skip
                    assert flooder.stdout is not None
                    sent = json.loads(await flooder.stdout.readline())
                    await flooder.wait()
                    sampler.phase = "after"
                    await asyncio.sleep(args.settle_s)
                    status = await until_ready(requester)
            finally:
                sampling.cancel()
                await asyncio.gather(sampling, return_exceptions=True)
                peak = rss_mb(daemon.pid, "VmHWM")
                code = await daemon.stop()
            audit_end = audit_bytes(state / "audit.log")
    uplink = status["statistics"]["uplink"]
    admission = {k.removeprefix("admission_"): v for k, v in uplink.items()
                 if k.startswith("admission_")}  # fmt: skip
    base, flood = summarize(baseline), summarize(flooded)
    ratio = round(
        flood["publish_to_confirmed_reply_ms"]["p99"]
        / baseline_p99(base["publish_to_confirmed_reply_ms"]),
        2,
    )
    doors_ratio = round(
        flood["publish_to_doors_ms"]["p99"] / baseline_p99(base["publish_to_doors_ms"]), 2
    )
    rss_base = statistics.median(sampler.of("baseline"))
    rss_growth = max(sampler.of("flood", "after")) - rss_base
    refusal_bytes = audit_end.get("refusal", 0) - audit_baseline.get("refusal", 0)
    return {
        "bench": "flood",
        "doors": len(config.doors),
        "scope": SCOPE,
        "cycles": {"baseline": len(baseline), "during_flood": len(flooded)},
        "flood": {**sent, "target_rate": args.rate, "bytes_per_message": 1},
        "gateway": "subprocess `python -m gatewayd run` (RSS from /proc/PID/status)",
        "baseline_no_flood": base,
        "under_flood": flood,
        "p99_ratio_flood_over_baseline": ratio,
        "p99_ratio_doors_flood_over_baseline": doors_ratio,
        "rss_mb": {
            "baseline_median": round(rss_base, 1),
            "max_during_and_after_flood": round(max(sampler.of("flood", "after")), 1),
            "growth": round(rss_growth, 1),
            "peak_vmhwm": round(peak, 1),
        },
        "gateway_cpu_percent_of_one_core": sampler.cpu_percent(),
        "audit": {
            "bytes_by_kind_baseline_phase": _minus(audit_baseline, audit_start),
            "bytes_by_kind_flood_phase_and_stop": _minus(audit_end, audit_baseline),
            "refusal_bytes_per_garbage_message": round(refusal_bytes / max(1, sent["sent"]), 4),
        },
        "admission": admission,
        "garbage_received_by_gateway": admission.get("other", 0),
        "security": {
            k: status["statistics"]["security"][k]
            for k in ("refusals_recorded", "refusals_counted")
        },
        "daemon_exit_code": code,
        "targets": TARGETS,
        "meets_targets": base["all_ok"]
        and flood["all_ok"]
        and ratio <= TARGETS["flood_over_baseline_p99"]
        and rss_growth <= TARGETS["rss_growth_mb"],
        "load_average": {"before": load_before, "after": load_average()},
    }


def baseline_p99(stats: dict[str, float]) -> float:
    return max(stats.get("p99", 0.0), 1e-3)


def _minus(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--doors", type=int, default=256)
    parser.add_argument("--rate", type=float, default=2000.0, help="garbage messages per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the flood lasts")
    parser.add_argument("--cycles", type=int, default=100, help="lockdowns per phase")
    parser.add_argument("--gap-s", type=float, default=0.05, help="pause between cycles")
    parser.add_argument("--settle-s", type=float, default=1.0, help="RSS watched after the flood")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 s, 3 cycles")
    args = parser.parse_args()
    if args.quick:
        args.doors, args.seconds, args.cycles, args.gap_s, args.settle_s = 64, 2.0, 3, 0.2, 0.2
    configure("warning", json=False)
    results = asyncio.run(main_async(args))
    report(
        f"Signed lockdown of {SCOPE}, no flood vs {results['flood']['rate']:g} garbage msg/s"
        f" ({results['doors']} doors; ms)",
        results,
        [
            (f"{label}: {what}", results[phase][key])
            for what, key in (
                ("publish -> last coil write", "publish_to_doors_ms"),
                ("publish -> confirmed reply", "publish_to_confirmed_reply_ms"),
                ("gateway confirmed (from arrival)", "gateway_confirmed_ms"),
            )
            for label, phase in (("no flood", "baseline_no_flood"), ("flood", "under_flood"))
        ],
    )
    rss, audit = results["rss_mb"], results["audit"]
    print(
        f"p99 ratio flood/no flood: confirmed reply {results['p99_ratio_flood_over_baseline']}"
        f" (target <= 2), last coil write {results['p99_ratio_doors_flood_over_baseline']};"
        f" RSS growth {rss['growth']} MB (target <= 20);"
        f" gateway CPU % of a core {results['gateway_cpu_percent_of_one_core']};"
        f" audit {audit['refusal_bytes_per_garbage_message']} bytes per garbage message;"
        f" admission {results['admission']}"
    )
    print(f"targets {'met' if results['meets_targets'] else 'NOT met'};"
          f" load average {results['load_average']}")  # fmt: skip


if __name__ == "__main__":
    main()
