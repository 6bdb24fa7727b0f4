"""Shared bench helpers: percentiles, a campus simulator in another process, printing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gatewayd.security.keys import demo_private_key
from gatewayd.security.signing import signed


def signed_command(action: str, site: str, **fields: Any) -> dict[str, Any]:
    """A command body signed by the DEMO actor whose role the action needs."""
    actor = "demo-administrator" if action in ("release", "unlock") else "demo-operator"
    body = {"id": uuid.uuid4().hex, "ts": time.time(), "actor": actor, "action": action, **fields}
    return signed(body, demo_private_key(actor), site=site)


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / max of a sample, in the sample's unit, rounded to 3 decimals."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 3),
        "p95": round(pick(0.95), 3),
        "p99": round(pick(0.99), 3),
        "max": round(ordered[-1], 3),
    }


class SimProcess:
    """``python -m gatewayd.simulators campus`` in a child process, on free ports."""

    def __init__(self, config_path: Path, *, actuation_ms: float, control: bool = False) -> None:
        self.config_path = config_path
        self.actuation_ms = actuation_ms
        #: Serve the control interface too (its port is ``ports["control"]``).
        self.control = control
        self.proc: asyncio.subprocess.Process | None = None
        self.ports: dict[str, int] = {}

    async def __aenter__(self) -> SimProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gatewayd.simulators",
            "--log-level",
            "warning",
            "campus",
            "-c",
            str(self.config_path),
            "--free-ports",
            "--actuation-ms",
            str(self.actuation_ms),
            *(["--control", "127.0.0.1:0"] if self.control else []),
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            line = await self.proc.stdout.readline()
        ready = json.loads(line)
        self.ports = {str(k): int(v) for k, v in ready["ports"].items()}
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


def report(title: str, results: dict[str, Any], table: list[tuple[str, dict[str, float]]]) -> None:
    """JSON first (for scripts), then a short human table."""
    print(json.dumps(results, indent=2))
    print(f"\n{title}")
    print(f"{'measure':<44} {'n':>5} {'p50':>9} {'p95':>9} {'p99':>9} {'max':>9}")
    for name, stats in table:
        cells = " ".join(
            f"{stats.get(k, float('nan')):>9.3f}" for k in ("p50", "p95", "p99", "max")
        )
        print(f"{name:<44} {stats.get('n', 0):>5} {cells}")


def effective_campus(text: str, ports: dict[str, int], mqtt_url: str) -> str:
    """A campus file rewritten for the running simulators' ports and a private broker.

    Works on the layout ``simulators gen`` writes: ``port = N`` after ``id = "..."`` in each
    ``[[devices]]`` table, and one ``url = ...`` under ``[mqtt]``.
    """
    out: list[str] = []
    device: str | None = None
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition("="))
        if line.startswith("["):
            device = None
        if key == "id" and line.startswith("id"):
            device = value.strip('"')
        if key == "port" and device in ports:
            out.append(f"port = {ports[device]}")
        elif key == "url" and line.startswith("url"):
            out.append(f'url = "{mqtt_url}"')
        else:
            out.append(line)
    return "\n".join(out) + "\n"


class DaemonProcess:
    """``python -m gatewayd run -c FILE`` as a child process; ``env`` adds to the environment."""

    def __init__(self, config_path: Path, env: dict[str, str], *, log_level: str = "warning"):
        self.args = [
            sys.executable,
            "-m",
            "gatewayd",
            "run",
            "-c",
            str(config_path),
            "--log-level",
            log_level,
        ]
        self.env = {**os.environ, **env}
        #: The daemon's log (a file, so a chatty daemon never blocks on a full pipe).
        self.log_path = config_path.with_suffix(".log")
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> DaemonProcess:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=log
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int:
        """Send ``sig`` and wait for the exit status; SIGKILL after ``timeout_s``."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(timeout_s):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()

    def log_tail(self) -> str:
        """The end of the daemon's log (for assertion messages)."""
        return self.log_path.read_bytes()[-3000:].decode(errors="replace")
