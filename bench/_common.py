"""Shared bench helpers: percentiles, a campus simulator in another process, printing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gatewayd.security.keys import demo_private_key
from gatewayd.security.signing import signed
from gatewayd.service.config import Config, load_config
from gatewayd.service.gateway import Gateway
from gatewayd.simulators.campus import with_ports
from gatewayd.simulators.campusgen import bench_plans, render, with_demo_actors
from gatewayd.uplink.config import MqttConfig


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
    """``python -m gatewayd.simulators campus`` in a child process, on free ports.

    ``control``: serve the control interface too (docs/simulators.md); its port is
    :attr:`control_port`, kept out of :attr:`ports` (which names devices only).
    """

    def __init__(self, config_path: Path, *, actuation_ms: float, control: bool = False) -> None:
        self.config_path = config_path
        self.actuation_ms = actuation_ms
        self.control = control
        self.proc: asyncio.subprocess.Process | None = None
        self.ports: dict[str, int] = {}
        self.control_port: int | None = None

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
        if self.control:
            self.control_port = self.ports.pop("control")
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

    Works on the layout ``gatewayd.simulators.campusgen`` writes: ``port = N`` after
    ``id = "..."`` in each ``[[devices]]`` table, and one ``url = ...`` under ``[mqtt]``.
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


def load_average() -> dict[str, float]:
    """``os.getloadavg()`` (what ``uptime`` prints), so a figure says how busy the machine was."""
    one, five, fifteen = os.getloadavg()
    return {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2)}


def bench_campus(path: Path, site: str, doors: int, *, poll_ms: int) -> Path:
    """A generated demo-mode campus of ``doors`` doors (relay boards only) written to ``path``."""
    plan = with_demo_actors(bench_plans(doors, 32))
    path.write_text(
        render(
            site,
            f"Bench campus, {doors} doors",
            plan,
            base_port=20000,
            poll_interval_ms=poll_ms,
            demo=True,
        )
    )
    return path


def in_process_config(path: Path, ports: dict[str, int], mqtt_url: str, state_dir: Path) -> Config:
    """The campus at ``path`` pointed at running simulators, a private broker and ``state_dir``."""
    base = load_config(path)
    return with_ports(base, ports).model_copy(
        update={
            "mqtt": base.mqtt.model_copy(update={"url": mqtt_url}),
            "state_dir": str(state_dir),
        }
    )


class Control:
    """A client of the simulators' control interface: one JSON line out, one back."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Control:
        # A board's write log runs to megabytes of JSON on one line.
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, limit=64 * 1024 * 1024
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()

    async def call(self, op: str, **fields: Any) -> Any:
        """Send one request; its ``out``, or :class:`RuntimeError` with the simulator's error."""
        assert self._reader is not None and self._writer is not None
        self._writer.write(json.dumps({"op": op, **fields}).encode() + b"\n")
        await self._writer.drain()
        answer = json.loads(await self._reader.readline())
        if not answer.get("ok"):
            raise RuntimeError(f"control {op}: {answer.get('error')}")
        return answer["out"]


def no_delay(client: aiomqtt.Client) -> None:
    """Turn Nagle off on a connected client's socket (paho leaves it on).

    With it on, a publish written right after a PUBACK waits for the broker's delayed ACK
    (40 ms on Linux): the bench's own client would add that to every figure.
    """
    # paho exposes no option for it.
    sock = client._client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Requester:
    """MQTT 5 request/response to a gateway over one kept connection, one request at a time."""

    def __init__(self, config: MqttConfig, site: str) -> None:
        self.base = f"{config.prefix}/{site}"
        self.reply_topic = f"{self.base}/cmd/reply/{uuid.uuid4().hex}"
        self._client = aiomqtt.Client(config.host, config.port,
                                      protocol=aiomqtt.ProtocolVersion.V5)  # fmt: skip
        self._n = 0

    async def __aenter__(self) -> Requester:
        await self._client.__aenter__()
        no_delay(self._client)
        await self._client.subscribe(self.reply_topic, qos=1)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._client.__aexit__(*exc)

    async def send(
        self, payload: bytes, timeout_s: float = 30.0
    ) -> tuple[dict[str, Any], int, int]:
        """Publish on ``cmd``: (reply, publish ns, reply ns), both ``time.monotonic_ns()``."""
        self._n += 1
        correlation = str(self._n).encode()
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = correlation
        async with asyncio.timeout(timeout_s):
            sent_ns = time.monotonic_ns()
            await self._client.publish(f"{self.base}/cmd", payload, 1, False, props)
            async for message in self._client.messages:
                if getattr(message.properties, "CorrelationData", None) == correlation:
                    assert isinstance(message.payload, bytes)
                    return json.loads(message.payload), sent_ns, time.monotonic_ns()
        raise RuntimeError("the broker connection closed before the reply")


async def run_gateway(config: Config) -> tuple[Gateway, asyncio.Task[None]]:
    """A gateway running in this loop, ready (its uplink connected); cancel the task to stop."""
    gateway = Gateway(config)
    ready = asyncio.Event()
    task = asyncio.create_task(gateway.run(ready.set), name="bench-gateway")
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({waiter, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()
    if not done:
        raise TimeoutError("the gateway was not ready within 30 s")
    return gateway, task


async def stop_gateway(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def command_bytes(action: str, site: str, **fields: Any) -> bytes:
    return json.dumps(signed_command(action, site, **fields)).encode()


async def last_write_ns(ctl: Control, boards: list[str], start_ns: int, end_ns: int) -> int | None:
    """When the last coil write in ``[start_ns, end_ns]`` reached a board (monotonic ns)."""
    latest: int | None = None
    for board in boards:
        for write in await ctl.call("writes", device=board):
            if start_ns <= write["ns"] <= end_ns and (latest is None or write["ns"] > latest):
                latest = write["ns"]
    return latest
