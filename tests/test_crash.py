"""``kill -9`` of a real daemon process during a lockdown: restored, and no unlock ever written.

The relay boards run in another process (``python -m gatewayd.simulators campus --write-log``); the
daemon runs as ``python -m gatewayd run``. After the last restart the simulator is stopped
and its write log read back: once a door was written locked, it was never written unlocked.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from gatewayd.service.config import load_config
from tests.support.daemon import command, spawn, start_simulator, until_ready

RESTARTS = 3


async def test_kill_9_during_lockdown_restores_it_and_never_writes_an_unlock(
    campus_file: Path, tmp_path: Path
) -> None:
    args = ("-m", "gatewayd", "run", "-c", str(campus_file), "--log-level", "warning")
    sim = await start_simulator(campus_file, tmp_path)
    daemon: asyncio.subprocess.Process | None = None
    try:
        daemon = await spawn(*args, log=tmp_path / "daemon.log")
        await until_ready(campus_file)
        if importlib.util.find_spec("greenlet") is not None:
            # Installed, and imported by structlog unless `run` keeps it out (cli.DAEMON_UNUSED);
            # its C extension shows in the daemon's mappings if it was loaded.
            maps = Path(f"/proc/{daemon.pid}/maps").read_text()
            assert "greenlet" not in maps, "the daemon loaded greenlet"
        reply = await command(campus_file, "lockdown", scope="campus")
        assert reply["ok"] is True, reply
        for _ in range(RESTARTS):
            daemon.send_signal(signal.SIGKILL)
            await daemon.wait()
            daemon = await spawn(*args, log=tmp_path / "daemon.log")
            status = await until_ready(campus_file)
            assert "sources" in status, f"status refused after a restart: {status}"
            assert any(s["key"] == "srp:campus" for s in status["sources"]), status
    finally:
        if daemon is not None and daemon.returncode is None:
            daemon.send_signal(signal.SIGKILL)
            await daemon.wait()
        sim.send_signal(signal.SIGTERM)
        await sim.wait()
    writes = [json.loads(line) for line in (tmp_path / "writes.jsonl").read_text().splitlines()]
    locked: set[tuple[str, int]] = set()
    unlocks_after_lockdown = []
    for write in sorted(writes, key=lambda w: w["ns"]):
        coil = (write["device"], write["coil"])
        if write["value"]:
            locked.add(coil)
        elif coil in locked:
            unlocks_after_lockdown.append(write)
    doors = load_config(campus_file).doors
    assert len(locked) == len(doors)
    assert unlocks_after_lockdown == []


async def test_a_broken_log_pipe_neither_kills_the_daemon_nor_eats_sigterm(
    campus_file: Path, tmp_path: Path
) -> None:
    sim = await start_simulator(campus_file, tmp_path)
    try:
        # Logs go to a pipe whose reader goes away (journald restarting, `| tee` killed).
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatewayd", "run", "-c", str(campus_file),
            "--log-level", "info", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        await until_ready(campus_file)
        assert daemon.stderr is not None
        # Close the reading end: every later log write meets EPIPE.
        transport = daemon._transport  # type: ignore[attr-defined]
        transport.get_pipe_transport(2).close()
        for scope in ("building/A", "building/B"):
            reply = await command(campus_file, "lockdown", scope=scope)
            assert reply["ok"] is True, reply
        daemon.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            code = await daemon.wait()
        assert code == 0
    finally:
        sim.send_signal(signal.SIGTERM)
        await sim.wait()
