"""systemd integration: sd_notify messages on a fake NOTIFY_SOCKET, and the unit file.

The notify socket is a real AF_UNIX datagram socket in the test; the daemon is the real
``python -m gatewayd run`` against simulated boards in another process and a private broker.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bench._common import DaemonProcess, SimProcess, effective_campus
from gatewayd.app.sdnotify import Notifier
from gatewayd.simulators.broker import Mosquitto
from gatewayd.simulators.campusgen import bench_plans, render
from tests.support.recorder import Recorder

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "gatewayd.service"


class NotifySocket(Recorder[tuple[float, str]]):
    """What systemd listens on: records each datagram with its arrival time, as it arrives."""

    def __init__(self) -> None:
        super().__init__("notify datagrams")
        # Abstract namespace: no path-length limit, nothing to clean up on disk.
        self.address = f"@gatewayd-test-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._receive)

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            self((time.monotonic(), data.decode()))

    def texts(self, since: int = 0) -> list[str]:
        return [message for _, message in self.items[since:]]

    async def wait_field(self, field: str, timeout_s: float = 5.0, *, since: int = 0) -> str:
        """The first message from ``since`` on containing the line ``field``, waiting if needed."""
        _, message = await self.wait_for(has_field(field), timeout_s, since=since)
        return message

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


def has_field(field: str) -> Callable[[tuple[float, str]], bool]:
    return lambda item: field in item[1].splitlines()


@pytest.fixture
async def notify_socket() -> AsyncIterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


# --- the Notifier on its own ------------------------------------------------------------------


async def test_notifier_sends_ready_with_status_and_stopping(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.address)
    notifier.ready("ready: 3 doors")
    notifier.status("degraded: relay-b1 offline")
    notifier.stopping()
    notifier.close()
    assert await notify_socket.wait_field("READY=1", 1) == "READY=1\nSTATUS=ready: 3 doors"
    await notify_socket.wait_field("STOPPING=1", 1)
    assert notify_socket.texts()[1] == "STATUS=degraded: relay-b1 offline"


async def test_watchdog_is_fed_at_half_its_interval(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    notifier = Notifier(notify_socket.address)
    assert notifier.watchdog_s == 0.2
    feeder = asyncio.create_task(notifier.feed_watchdog())
    await notify_socket.wait_count(has_field("WATCHDOG=1"), 4, 4)
    feeder.cancel()
    await asyncio.gather(feeder, return_exceptions=True)
    notifier.close()


async def test_outside_systemd_every_call_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready("x")
    # No socket: the watchdog feeder ends at once instead of spinning.
    async with asyncio.timeout(1):
        await notifier.feed_watchdog()


# --- the real daemon --------------------------------------------------------------------------


@pytest.fixture
async def campus_file(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[Path]:
    """A two-board campus on simulators in another process, pointed at the test broker."""
    template = tmp_path / "template.toml"
    text = render("svc", "Service test", bench_plans(64, 32), base_port=1)
    # Not a demo site: the daemon starts only with broker credentials (the test broker takes
    # any; the password only has to be neither empty nor a well-known default).
    template.write_text(
        text.replace("[mqtt]\n", '[mqtt]\nusername = "svc"\npassword = "svc-test-3f9c1e"\n', 1)
    )
    async with SimProcess(template, actuation_ms=1) as sim:
        path = tmp_path / "campus.toml"
        path.write_text(effective_campus(template.read_text(), sim.ports, mosquitto.url))
        yield path


async def test_daemon_says_ready_feeds_the_watchdog_and_says_stopping_on_sigterm(
    campus_file: Path, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    daemon = await DaemonProcess(campus_file, {
        "NOTIFY_SOCKET": notify_socket.address,
        "WATCHDOG_USEC": "400000",
        "GATEWAYD_STATE_DIR": str(tmp_path / "state"),
    }).start()  # fmt: skip
    try:
        ready = await notify_socket.wait_field("READY=1", 20)
        assert "STATUS=ready: 64 doors, 2 devices" in ready.splitlines(), ready
        mark = notify_socket.mark()
        fed = await notify_socket.wait_count(has_field("WATCHDOG=1"), 6, 5, since=mark)
        gaps = [b - a for (a, _), (b, _) in itertools.pairwise(fed)]
        # Half of 0.4 s; loose bounds, a shared CI machine is noisy.
        assert 0.1 <= statistics.median(gaps) <= 0.3, gaps
        mark = notify_socket.mark()
        daemon.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        await notify_socket.wait_field("STOPPING=1", 5, since=mark)
        assert await daemon.stop(timeout_s=10) == 0, daemon.log_tail()
    finally:
        await daemon.stop(signal.SIGKILL)


# --- the unit file ----------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_restarts_forever_under_a_watchdog_as_a_confined_user() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["WatchdogSec"] and s["Restart"] == ["always"]
    # Never give up restarting a safety device.
    assert s["StartLimitIntervalSec"] == ["0"]
    assert s["User"] == ["gatewayd"] and s["StateDirectory"] == ["gatewayd"]
    assert s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["strict"]
    assert s["PrivateTmp"] == ["yes"] and s["CapabilityBoundingSet"] == [""]
    assert "ReadWritePaths" not in s


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify() -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(UNIT)], check=False, capture_output=True, text=True,
        timeout=30,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )  # fmt: skip
    # Missing ExecStart binaries are expected on a development machine; syntax errors are not.
    problems = [
        line
        for line in result.stderr.splitlines()
        if "is not executable" not in line
        and "No such file" not in line
        and "Failed to prepare filename" not in line
    ]
    assert not problems, result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_exposure_stays_low() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    line = next(x for x in (result.stdout + result.stderr).splitlines() if "Overall exposure" in x)
    # systemd's scale: 0 (confined) to 10 (exposed); "OK" is below 5.
    assert float(line.split(":")[1].split()[0]) <= 3.0, line
