"""A running daemon on a 1,000-door campus: RSS, start -> ready, lockdown re-asserted after kill -9.

The daemon is the real ``python -m gatewayd run`` (systemd's view: READY=1 on a notify
socket); the boards are simulators in another process; the broker is a private Mosquitto.

    .venv/bin/python -m bench.memory [--doors 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._common import (
    DaemonProcess,
    SimProcess,
    effective_campus,
    load_average,
    signed_command,
)
from gatewayd.app.logs import configure
from gatewayd.service.config import load_config
from gatewayd.simulators.broker import Mosquitto
from gatewayd.simulators.campusgen import bench_plans, render, with_demo_actors
from gatewayd.uplink.client import request

#: SPEC.md's figures for a 1,000-door campus.
TARGETS = {"rss_mb": 60.0, "start_to_ready_s": 2.0, "reasserted_after_restart_s": 1.0}


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


#: The baseline: a process that imports what the daemon imports of its libraries and nothing
#: of gatewayd (structlog without rich, pygments and greenlet, as ``gatewayd run`` loads it).
LIBRARIES_ONLY = """
import sys
for name in ("rich", "pygments", "greenlet"):
    sys.modules[name] = None
import asyncio, sqlite3, ssl, tomli
import cryptography.hazmat.primitives.asymmetric.ed25519, pydantic.main, structlog
import aiomqtt, pymodbus.client
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.read()
"""


def resident(pid: int) -> dict[str, Any]:
    """VmRSS split into anonymous (the heap) and file-backed pages, and the largest files."""
    status = {line.split(":")[0]: line.split()[1:] for line in
              Path(f"/proc/{pid}/status").read_text().splitlines()}  # fmt: skip
    files: dict[str, int] = {}
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if "-" in parts[0] and len(parts) >= 5:
            name = parts[5] if len(parts) > 5 and parts[5].startswith("/") else ""
        elif parts[0] == "Rss:" and name:
            files[name] = files.get(name, 0) + int(parts[1])
    largest = sorted(files.items(), key=lambda item: -item[1])[:5]
    return {
        "rss_mb": round(int(status["VmRSS"][0]) / 1024, 1),
        "anon_mb": round(int(status["RssAnon"][0]) / 1024, 1),
        "file_mb": round(int(status["RssFile"][0]) / 1024, 1),
        "largest_files_mb": {Path(k).name: round(v / 1024, 1) for k, v in largest},
    }


async def libraries_only() -> dict[str, Any]:
    """:data:`LIBRARIES_ONLY`'s resident memory, measured like the daemon's."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LIBRARIES_ONLY, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdin is not None
    await proc.stdout.readline()
    try:
        return resident(proc.pid)
    finally:
        proc.stdin.close()
        await proc.wait()


async def wait_ready(sock: socket.socket, timeout_s: float = 30.0) -> float:
    """``time.time()`` at which READY=1 arrived."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        while True:
            data = await loop.sock_recv(sock, 4096)
            if b"READY=1" in data.splitlines():
                return time.time()


def logged_at(log: Path, event: str) -> tuple[float, dict[str, Any]]:
    """Wall time and fields of the last ``event`` in a JSON daemon log."""
    found: tuple[float, dict[str, Any]] = (float("nan"), {})
    for line in log.read_text().splitlines():
        if f'"{event}"' in line:
            entry = json.loads(line)
            found = (datetime.fromisoformat(entry["timestamp"]).timestamp(), entry)
    return found


async def start(
    path: Path, env: dict[str, str], sock: socket.socket
) -> tuple[DaemonProcess, float, float]:
    daemon = DaemonProcess(path, env, log_level="info")
    daemon.args.append("--log-json")
    spawned = time.time()
    await daemon.start()
    ready = await wait_ready(sock)
    return daemon, spawned, ready


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gatewayd-bench-") as tmp:
        template = Path(tmp) / "template.toml"
        plan = with_demo_actors(bench_plans(args.doors, 32))
        template.write_text(render("mem", f"{args.doors} doors", plan, base_port=1, demo=True))
        address = f"gatewayd-bench-{uuid.uuid4().hex[:8]}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("\0" + address)
        sock.setblocking(False)
        env = {"NOTIFY_SOCKET": "@" + address, "GATEWAYD_STATE_DIR": f"{tmp}/state"}
        async with SimProcess(template, actuation_ms=1) as sim, Mosquitto() as broker:
            path = Path(tmp) / "campus.toml"
            path.write_text(effective_campus(template.read_text(), sim.ports, broker.url))
            config = load_config(path)
            daemon, spawned, ready = await start(path, env, sock)
            await asyncio.sleep(args.settle_s)
            idle = rss_mb(daemon.pid)
            split = resident(daemon.pid)
            body = signed_command("lockdown", config.site.id, scope="campus")
            reply = await request(config.mqtt, config.site.id, body, timeout_s=10)
            await asyncio.sleep(1.0)
            busy, peak = rss_mb(daemon.pid), rss_mb(daemon.pid, "VmHWM")
            await daemon.stop(signal.SIGKILL)
            daemon.log_path.rename(daemon.log_path.with_suffix(".first.log"))
            again, respawned, ready_again = await start(path, env, sock)
            reasserted_at, entry = logged_at(again.log_path, "gateway.reasserted")
            await again.stop()
        sock.close()
    return {
        "bench": "memory",
        "doors": len(config.doors),
        "boards": len(config.devices),
        "rss_mb": {"idle": idle, "after_lockdown": busy, "peak": peak},
        "resident_idle": split,
        "libraries_only": await libraries_only(),
        "start_to_ready_s": round(ready - spawned, 3),
        "lockdown_ok": reply.get("ok"),
        "after_kill_9": {
            "start_to_ready_s": round(ready_again - respawned, 3),
            "reasserted_after_restart_s": round(reasserted_at - respawned, 3),
            "reassert_ms_in_process": entry.get("ms"),
            "doors_confirmed": entry.get("confirmed"),
            "doors_failed": entry.get("failed"),
        },
        "targets": TARGETS,
        "load_average": load_average(),
    }


def main() -> None:
    configure("warning", json=False)
    p = argparse.ArgumentParser(prog="python -m bench.memory")
    p.add_argument("--doors", type=int, default=1000)
    p.add_argument("--settle-s", type=float, default=3.0, help="idle time before measuring RSS")
    results = asyncio.run(main_async(p.parse_args()))
    print(json.dumps(results, indent=2))
    after = results["after_kill_9"]
    print(f"\nGateway, {results['doors']} doors on {results['boards']} boards")
    print(
        f"RSS idle / after lockdown / peak  {results['rss_mb']['idle']} / "
        f"{results['rss_mb']['after_lockdown']} / {results['rss_mb']['peak']} MB "
        f"(target < {TARGETS['rss_mb']})"
    )
    split, floor = results["resident_idle"], results["libraries_only"]
    print(
        f"  of which heap {split['anon_mb']} MB, files mapped {split['file_mb']} MB"
        f" (largest: {', '.join(f'{k} {v}' for k, v in split['largest_files_mb'].items())})"
    )
    print(
        f"  baseline, the same libraries imported and nothing else: {floor['rss_mb']} MB"
        f" (heap {floor['anon_mb']}, files {floor['file_mb']})"
    )
    print(
        f"spawn -> READY=1                  {results['start_to_ready_s']} s "
        f"(target <= {TARGETS['start_to_ready_s']})"
    )
    print(
        f"kill -9, spawn -> re-asserted     {after['reasserted_after_restart_s']} s, "
        f"{after['doors_confirmed']} doors confirmed "
        f"(target <= {TARGETS['reasserted_after_restart_s']})"
    )
    print(f"load average {results['load_average']}")


if __name__ == "__main__":
    main()
