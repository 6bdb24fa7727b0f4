"""``kill -9`` of a real daemon process during a lockdown: restored, and no unlock ever written.

The relay boards run in another process (``python -m gatewayd.simulators campus --write-log``); the
daemon runs as ``python -m gatewayd run``. After the last restart the simulator is stopped
and its write log read back: once a door was written locked, it was never written unlocked.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from gatewayd.security.keys import demo_private_key
from gatewayd.security.signing import signed
from gatewayd.service.config import load_config
from gatewayd.simulators.broker import Mosquitto
from gatewayd.simulators.campusgen import DEMO_RELAYS, render
from gatewayd.uplink.client import request
from gatewayd.uplink.wire import NoReply
from tests.support.waiting import eventually

RESTARTS = 3
ACTORS = Path(__file__).resolve().parents[1] / "configs" / "demo-keys" / "actors.toml"


def free_base_port(count: int) -> int:
    """A base port with ``count`` free ports after it (checked by binding each)."""
    for _ in range(50):
        base = random.randrange(20_000, 60_000)
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        else:
            return base
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port range")


@pytest.fixture
def campus_file(tmp_path: Path, mosquitto: Mosquitto) -> Path:
    text = render(
        "demo-school",
        "Crash test school",
        DEMO_RELAYS,
        base_port=free_base_port(8),
        demo=True,
        poll_interval_ms=100,
    )
    path = tmp_path / "campus.toml"
    # The demo actors: commands are signed, with DEMO keys in demo mode.
    path.write_text(
        text.replace("mqtt://127.0.0.1:1883", mosquitto.url) + "\n" + ACTORS.read_text()
    )
    return path


async def spawn(*args: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


async def start_simulator(campus_file: Path, tmp_path: Path) -> asyncio.subprocess.Process:
    proc = await spawn(
        "-m",
        "gatewayd.simulators",
        "--log-level",
        "warning",
        "campus",
        "-c",
        str(campus_file),
        "--actuation-ms",
        "2",
        "--write-log",
        str(tmp_path / "writes.jsonl"),
        log=tmp_path / "sim.log",
    )
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        assert json.loads(await proc.stdout.readline())["ready"] is True
    return proc


async def command(path: Path, action: str, timeout_s: float = 2.0, **fields: Any) -> Any:
    config = load_config(path)
    body = {
        "id": uuid.uuid4().hex,
        "ts": time.time(),
        "actor": "demo-operator",
        "action": action,
        **fields,
    }
    body = signed(body, demo_private_key("demo-operator"), site=config.site.id)
    return await request(config.mqtt, config.site.id, body, timeout_s=timeout_s)


async def until_ready(path: Path) -> dict[str, Any]:
    async def status() -> dict[str, Any] | None:
        try:
            reply: dict[str, Any] = await command(path, "status", timeout_s=1.0)
        except NoReply:
            return None
        return reply

    ready: dict[str, Any] | None = await eventually(
        status, timeout_s=20, interval_s=0.1, message="a status reply"
    )
    assert ready is not None
    return ready


async def test_kill_9_during_lockdown_restores_it_and_never_writes_an_unlock(
    campus_file: Path, tmp_path: Path
) -> None:
    args = ("-m", "gatewayd", "run", "-c", str(campus_file), "--log-level", "warning")
    sim = await start_simulator(campus_file, tmp_path)
    daemon: asyncio.subprocess.Process | None = None
    try:
        daemon = await spawn(*args, log=tmp_path / "daemon.log")
        await until_ready(campus_file)
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
