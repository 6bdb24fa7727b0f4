"""A real daemon process on a campus file: relay boards in another process, signed commands.

``python -m gatewayd run`` and ``python -m gatewayd.simulators campus`` as a person runs them
(tests of kill -9, broken log pipes, SIGHUP reloads).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
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

__all__ = ["campus_file", "command", "free_base_port", "spawn", "start_simulator", "until_ready"]

ACTORS = Path(__file__).resolve().parents[2] / "configs" / "demo-keys" / "actors.toml"


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
