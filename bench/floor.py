"""How close the gateway runs to the wire's floor, measured side by side in one run.

The relay boards run in one child process (``python -m gatewayd.simulators campus``) and a
private Mosquitto beside them. Against those same boards, in this one run:

- **Lockdown** (1,024 doors on 32 boards by default): the gateway's command path
  (``Gateway.handle_command``: parse, check, decide, persist, actuate, confirm) next to the
  floor, raw pymodbus doing only the wire's work: one FC15 per board, all boards in
  parallel, each acknowledged, then one read-back of the lock senses per board (again until
  they agree). "On the wire" is the last board's acknowledgement in both.
- **One door** at 2.5 commands/s over MQTT: the real daemon (``python -m gatewayd run``) next
  to a naive paho + pymodbus bridge (``bench/naive_bridge.py``): publish -> coil written
  (the board's own log) and publish -> reply received.
- **32 separate door commands to one board**, published at once: first publish -> last coil
  written, daemon against the naive bridge.
- **Input flip -> MQTT** at the poll interval: a door's position input flipped through the
  simulators' control interface -> the door's retained topic (daemon) or the bridge's
  ``naive/input/...`` message, flips spaced at random against the poll's phase.
- **50 commands/s for 10 s** to the 32 doors of one board: publish -> coil written, and the CPU
  the process used meanwhile (``/proc/<pid>/stat``).
- **Idle with 20 boards** polled at the poll interval (a campus of its own, its own
  simulators): CPU and resident memory of the daemon against the bridge polling the same boards,
  and the CPU of pymodbus's async client polling them alone, a task per board
  (``bench/async_poller.py``): the part of the gap that asyncio and that client cost.

The daemon logs at ``info`` (as ``gatewayd run`` and the systemd unit run it), to a file.

    python -m bench.floor [--doors 1024] [--cycles 30] [--daemon-log-level info] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pymodbus.client import AsyncModbusTcpClient

from bench._common import DaemonProcess, SimProcess, effective_campus, percentiles, signed_command
from bench.lockdown import gateway_cycles
from gatewayd.app.logs import configure
from gatewayd.service.config import Config, load_config
from gatewayd.simulators.broker import Mosquitto
from gatewayd.simulators.campus import with_ports
from gatewayd.simulators.campusgen import bench_plans, render, with_demo_actors

#: Issue 13's bar: every figure within this factor of its floor.
RATIO_TARGET = 2.0


# --- the lockdown floor: raw pymodbus -----------------------------------------------------


@dataclass(frozen=True)
class Board:
    device: str
    host: str
    port: int
    coils: tuple[int, int]
    senses: tuple[int, int]


def boards_of(config: Config) -> list[Board]:
    """Per board: the span of lock coils and of lock senses the campus's doors use."""
    locks: dict[str, list[int]] = {}
    senses: dict[str, list[int]] = {}
    for door in config.doors:
        locks.setdefault(door.lock.device, []).append(int(door.lock.point.split(":")[1]))
        if door.sense is not None:
            senses.setdefault(door.sense.device, []).append(int(door.sense.point.split(":")[1]))
    out = []
    for dev in config.devices:
        if dev.id not in locks:
            continue
        c, s = locks[dev.id], senses.get(dev.id, locks[dev.id])
        host, port = dev.host, dev.port  # type: ignore[attr-defined]
        out.append(Board(dev.id, host, port, (min(c), max(c)), (min(s), max(s))))
    return out


async def floor_cycles(config: Config, cycles: int) -> dict[str, list[float]]:
    """One FC15 per board in parallel, each acknowledged; then read back per board."""
    boards = boards_of(config)
    clients = {b.device: AsyncModbusTcpClient(b.host, port=b.port) for b in boards}
    for client in clients.values():
        await client.connect()
    sensed = any(d.sense is not None for d in config.doors)

    async def write(board: Board, value: bool) -> int:
        lo, hi = board.coils
        reply = await clients[board.device].write_coils(lo, [value] * (hi - lo + 1), device_id=1)
        assert not reply.isError(), reply
        return time.monotonic_ns()

    async def confirm(board: Board, value: bool) -> int:
        lo, hi = board.senses
        client = clients[board.device]
        while True:
            if sensed:
                reply = await client.read_discrete_inputs(lo, count=hi - lo + 1, device_id=1)
            else:
                reply = await client.read_coils(lo, count=hi - lo + 1, device_id=1)
            if all(bit is value for bit in reply.bits[: hi - lo + 1]):
                return time.monotonic_ns()

    samples: dict[str, list[float]] = {"on_wire": [], "confirmed": []}
    try:
        for i in range(cycles + 3):
            for value in (True, False):
                t0 = time.monotonic_ns()
                acked = await asyncio.gather(*(write(b, value) for b in boards))
                done = await asyncio.gather(*(confirm(b, value) for b in boards))
                if value and i >= 3:
                    samples["on_wire"].append((max(acked) - t0) / 1e6)
                    samples["confirmed"].append((max(done) - t0) / 1e6)
            await asyncio.sleep(0.05)
    finally:
        for client in clients.values():
            client.close()
    return samples


# --- single-door paths over MQTT ----------------------------------------------------------


def nodelay(client: aiomqtt.Client) -> None:
    sock = client._client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Requester:
    """One MQTT 5 client sending requests and timing replies by correlation data."""

    def __init__(self, client: aiomqtt.Client, reply_base: str) -> None:
        self._client = client
        self._base = reply_base
        self._waiting: dict[bytes, asyncio.Future[int]] = {}

    async def listen(self) -> None:
        await self._client.subscribe(f"{self._base}/#", qos=1)
        async for message in self._client.messages:
            correlation = getattr(message.properties, "CorrelationData", None)
            future = self._waiting.pop(correlation, None) if correlation else None
            if future is not None and not future.done():
                future.set_result(time.monotonic_ns())

    async def send(self, topic: str, body: dict[str, Any]) -> tuple[int, asyncio.Future[int]]:
        """Publish; return the publish time and a future of the reply's arrival (ns)."""
        correlation = uuid.uuid4().hex.encode()
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = f"{self._base}/{correlation.decode()}"
        props.CorrelationData = correlation
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[correlation] = future
        sent = time.monotonic_ns()
        await self._client.publish(topic, json.dumps(body).encode(), 1, False, props)
        return sent, future


class Control:
    """The simulators' control interface (JSON lines over TCP)."""

    def __init__(self, port: int) -> None:
        self._port = port

    async def ask(self, op: str, **fields: Any) -> Any:
        reader, writer = await asyncio.open_connection(
            # A board's whole write log comes back in one line.
            "127.0.0.1",
            self._port,
            limit=1 << 26,
        )
        try:
            writer.write(json.dumps({"op": op, **fields}).encode() + b"\n")
            answer = json.loads(await reader.readline())
        finally:
            writer.close()
        assert answer["ok"], answer
        return answer["out"]


def first_writes(
    writes: Sequence[dict[str, Any]], asked: Sequence[tuple[int, int, bool]]
) -> list[int | None]:
    """For each (published ns, coil, value): the first write of that coil and value after it."""
    out: list[int | None] = []
    for sent, coil, value in asked:
        hit = next(
            (
                w["ns"]
                for w in writes
                if w["ns"] >= sent and w["address"] == coil and w["value"] is value
            ),
            None,
        )
        out.append(hit)
    return out


@dataclass
class Route:
    """How one system under test is addressed: topic and the body of 'set door N to v'."""

    name: str
    topic: str
    reply_base: str
    body: Any  # Callable[[str, int, bool], dict[str, Any]]


async def single_door(
    path: Route, *, client: aiomqtt.Client, control: Control, board: Board, doors: list[str], n: int
) -> dict[str, Any]:
    """Publish -> coil and publish -> reply at 2.5/s, then bursts of 32 commands to one board."""
    requester = Requester(client, path.reply_base)
    listener = asyncio.create_task(requester.listen())
    await asyncio.sleep(0.2)
    lo = board.coils[0]
    coil_ms: list[float] = []
    reply_ms: list[float] = []
    burst_ms: list[float] = []
    failed = 0
    try:
        asked: list[tuple[int, int, bool]] = []
        replies: list[int] = []
        for i in range(n + 2):
            value = i % 2 == 1
            sent, future = await requester.send(path.topic, path.body(doors[0], lo, value))
            replies.append(await asyncio.wait_for(future, 10) - sent)
            asked.append((sent, lo, value))
            await asyncio.sleep(0.4)
        writes = await control.ask("writes", device=board.device)
        for (sent, _, _), at, rtt in list(
            zip(asked, first_writes(writes, asked), replies, strict=True)
        )[2:]:
            if at is None:
                failed += 1
                continue
            coil_ms.append((at - sent) / 1e6)
            reply_ms.append(rtt / 1e6)
        for r in range(max(2, n // 10)):
            value = r % 2 == 1
            burst: list[tuple[int, int, bool]] = []
            futures = []
            for k, door in enumerate(doors):
                sent, future = await requester.send(path.topic, path.body(door, lo + k, value))
                burst.append((sent, lo + k, value))
                futures.append(future)
            await asyncio.wait_for(asyncio.gather(*futures), 30)
            writes = await control.ask("writes", device=board.device)
            hits = first_writes(writes, burst)
            if None in hits:
                failed += 1
                continue
            burst_ms.append((max(h for h in hits if h is not None) - burst[0][0]) / 1e6)
            await asyncio.sleep(0.3)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    return {
        "publish_to_coil": percentiles(coil_ms),
        "publish_to_reply": percentiles(reply_ms),
        "burst_32_all_written": percentiles(burst_ms),
        "missing_writes": failed,
    }


async def with_client(url: str, run: Any) -> Any:
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    async with aiomqtt.Client(host, int(port), protocol=aiomqtt.ProtocolVersion.V5) as client:
        nodelay(client)
        return await run(client)


def daemon_campus(tmp: Path, template: Path, ports: dict[str, int], url: str) -> Path:
    """The campus file for the daemon: the simulators' ports, the private broker."""
    path = tmp / "daemon.toml"
    path.write_text(effective_campus(template.read_text(), ports, url))
    return path


async def gateway_single(
    path: Path, *, state_dir: Path, mq: Mosquitto, control: Control, args: argparse.Namespace
) -> dict[str, Any]:
    n = args.commands
    config = load_config(path)
    board = boards_of(config)[0]
    doors = [d.id for d in config.doors if d.lock.device == board.device][:32]
    site = config.site.id
    base = f"{config.mqtt.prefix}/{site}"
    daemon = await DaemonProcess(
        path, {"GATEWAYD_STATE_DIR": str(state_dir)}, log_level=args.daemon_log_level
    ).start()

    def body(door: str, _coil: int, value: bool) -> dict[str, Any]:
        return signed_command("lock" if value else "unlock", site, door=door)

    try:

        async def run(client: aiomqtt.Client) -> dict[str, Any]:
            requester = Requester(client, f"{base}/cmd/reply/bench")
            listener = asyncio.create_task(requester.listen())
            try:
                async with asyncio.timeout(60):
                    while True:
                        await asyncio.sleep(0.5)
                        _, future = await requester.send(
                            f"{base}/cmd", signed_command("status", site)
                        )
                        try:
                            await asyncio.wait_for(future, 2)
                            break
                        except TimeoutError:
                            continue
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
            route = Route("gateway", f"{base}/cmd", f"{base}/cmd/reply/bench", body)
            out = await single_door(
                route, client=client, control=control, board=board, doors=doors, n=n
            )
            out["rate"] = await rate_run(route, client=client, control=control, board=board,
                                         doors=doors, pid=daemon.pid, args=args)  # fmt: skip
            return out

        result: dict[str, Any] = await with_client(mq.url, run)
        position = door_position(config, doors[0])
        word = {True: "closed", False: "open"}

        def door_flipped(_topic: str, payload: bytes, value: bool) -> bool:
            return bool(json.loads(payload).get("position") == word[value])

        result["input_flip_to_mqtt"] = await input_flips(
            mq.url, f"{base}/door/{doors[0]}", flipped=door_flipped, control=control,
            position=position, n=args.flips,
        )  # fmt: skip
        result["cli_lockdown_s"] = await cli_side_by_side(path, config, runs=args.cli_runs)
    finally:
        await daemon.stop()
    return result


#: Both processes as installed: compiled modules kept (a shell that sets
#: PYTHONDONTWRITEBYTECODE would otherwise have every run compile every module it imports).
WARM_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


async def wall_s(*argv: str) -> float:
    """One whole process, spawn to exit (s); a failed run is an error, not a sample."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=WARM_ENV
    )
    out, err = await proc.communicate()
    took = time.perf_counter() - t0
    assert proc.returncode == 0, (argv, out.decode()[-500:], err.decode()[-500:])
    return took


#: What an operator command cannot do without, imported and nothing else: the broker client,
#: the signing key's type, pydantic (the site and broker models) and the TOML parser.
OPERATOR_LIBRARIES = (
    "import aiomqtt, pydantic.main, tomli;"
    " from cryptography.hazmat.primitives.asymmetric import ed25519"
)


async def cli_side_by_side(path: Path, config: Config, *, runs: int) -> dict[str, Any]:
    """``gatewayd lockdown`` against the running daemon, next to the import floor.

    The floor is the issue's: ``python -c "import aiomqtt, cryptography"``, run alternately
    with the CLI so both see the same machine, and beside it :data:`OPERATOR_LIBRARIES`
    imported alone. Each CLI run locks a building down and waits for the reply (doors
    confirmed); a release between runs is not timed.
    """
    building = config.doors[0].building
    floor: list[float] = []
    libraries: list[float] = []
    cli: list[float] = []
    gatewayd = (sys.executable, "-m", "gatewayd")
    for i in range(runs + 1):
        if i == 0:
            # Untimed: writes the bytecode both sides then find.
            await wall_s(sys.executable, "-c", "import aiomqtt, cryptography")
            await wall_s(sys.executable, "-c", OPERATOR_LIBRARIES)
            await wall_s(*gatewayd, "lockdown", "-c", str(path), "--scope", f"building/{building}")
            await wall_s(*gatewayd, "release", "-c", str(path), "--scope", f"building/{building}")
            continue
        floor.append(await wall_s(sys.executable, "-c", "import aiomqtt, cryptography"))
        libraries.append(await wall_s(sys.executable, "-c", OPERATOR_LIBRARIES))
        cli.append(await wall_s(*gatewayd, "lockdown", "-c", str(path), "--scope",
                                f"building/{building}"))  # fmt: skip
        await wall_s(*gatewayd, "release", "-c", str(path), "--scope", f"building/{building}")
    return {"floor": percentiles(floor), "libraries": percentiles(libraries),
            "cli": percentiles(cli),
            "ratio_p50": round(statistics.median(cli) / statistics.median(floor), 2)}  # fmt: skip


async def start_bridge(
    mq: Mosquitto, boards: Sequence[Board], *, poll_ms: int, inputs: int
) -> asyncio.subprocess.Process:
    """The naive paho + pymodbus bridge (bench.naive_bridge) on ``mq``."""
    return await start_poller(naive_bridge(mq), boards, poll_ms=poll_ms, inputs=inputs)


def naive_bridge(mq: Mosquitto) -> tuple[str, ...]:
    return ("bench.naive_bridge", "--mqtt", mq.url)


async def start_poller(
    program: Sequence[str], boards: Sequence[Board], *, poll_ms: int, inputs: int
) -> asyncio.subprocess.Process:
    """``python -m PROGRAM`` polling ``boards``, once it has said it is ready."""
    args = [f"--board={b.device}={b.host}:{b.port}" for b in boards]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *program, *args, f"--poll-ms={poll_ms}", f"--inputs={inputs}",
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        assert (await proc.stdout.readline()).strip() == b"ready"
    return proc


def board_inputs(config: Config, device: str) -> int:
    return int(next(d for d in config.devices if d.id == device).inputs)  # type: ignore[attr-defined]


async def naive_single(
    config: Config, mq: Mosquitto, control: Control, args: argparse.Namespace
) -> dict[str, Any]:
    n = args.commands
    board = boards_of(config)[0]
    doors = [d.id for d in config.doors if d.lock.device == board.device][:32]
    # Commands without polling (the bridge's best case: its poll thread takes the GIL from
    # paho's); the flips with it.
    proc = await start_bridge(mq, [board], poll_ms=0, inputs=0)
    try:

        def body(_door: str, coil: int, value: bool) -> dict[str, Any]:
            return {"id": uuid.uuid4().hex, "board": board.device, "coil": coil, "value": value}

        route = Route("naive", "naive/cmd", "naive/reply", body)
        result: dict[str, Any] = await with_client(
            mq.url,
            lambda c: single_door(route, client=c, control=control, board=board, doors=doors, n=n),
        )
        result["rate"] = await with_client(
            mq.url,
            lambda c: rate_run(
                route, client=c, control=control, board=board, doors=doors, pid=proc.pid, args=args
            ),
        )
    finally:
        proc.terminate()
        await proc.wait()
    proc = await start_bridge(
        mq, [board], poll_ms=args.poll_ms, inputs=board_inputs(config, board.device)
    )
    try:
        position = door_position(config, doors[0])

        def naive_flipped(topic: str, payload: bytes, value: bool) -> bool:
            return topic.endswith(f"/{position[1]}") and json.loads(payload) is value

        result["input_flip_to_mqtt"] = await input_flips(
            mq.url, f"naive/input/{board.device}/#", flipped=naive_flipped, control=control,
            position=position, n=args.flips,
        )  # fmt: skip
    finally:
        proc.terminate()
        await proc.wait()
    return result


def door_position(config: Config, door_id: str) -> tuple[str, int]:
    """(device, input address) of a door's position contact."""
    door = next(d for d in config.doors if d.id == door_id)
    assert door.position is not None, f"{door_id} has no position input"
    return door.position.device, int(door.position.point.split(":")[1])


async def input_flips(
    url: str,
    topic: str,
    *,
    flipped: Any,  # Callable[[str, bytes, bool], bool]
    control: Control,
    position: tuple[str, int],
    n: int,
) -> dict[str, float]:
    """Flip a door's position ``n`` times; each time until ``flipped(topic, payload, value)``."""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    samples: list[float] = []
    want: list[tuple[bool, asyncio.Future[int]]] = []
    async with aiomqtt.Client(host, int(port), protocol=aiomqtt.ProtocolVersion.V5) as client:
        nodelay(client)

        async def listen() -> None:
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                for value, future in want:
                    if not future.done() and flipped(str(message.topic), payload, value):
                        future.set_result(time.monotonic_ns())

        await client.subscribe(topic, qos=1)
        listener = asyncio.create_task(listen())
        device, address = position
        try:
            await asyncio.sleep(0.3)
            # An even count: the door ends closed, as it started (the next side starts there).
            for i in range(2 * ((n + 2) // 2)):
                value = i % 2 == 1  # open first (doors start closed), then closed again
                future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                want[:] = [(value, future)]
                t0 = time.monotonic_ns()
                await control.ask("input", device=device, input=f"input:{address}", value=value)
                seen = await asyncio.wait_for(future, 10)
                if i:
                    samples.append((seen - t0) / 1e6)
                # Spaced at random against the poll's phase.
                await asyncio.sleep(random.uniform(0.15, 0.35))
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    return percentiles(samples)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


async def usage(pid: int, seconds: float) -> dict[str, float]:
    """CPU % (of one core) over ``seconds``, and resident memory at the end."""
    cpu0, t0 = cpu_s(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return {
        "cpu_percent": round(100 * (cpu_s(pid) - cpu0) / (time.monotonic() - t0), 2),
        "rss_mb": rss_mb(pid),
    }


async def rate_run(
    path: Route,
    *,
    client: aiomqtt.Client,
    control: Control,
    board: Board,
    doors: list[str],
    pid: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """``args.rate`` commands/s for ``args.rate_s`` s over the board's doors: publish -> coil."""
    requester = Requester(client, path.reply_base + "/rate")
    listener = asyncio.create_task(requester.listen())
    await asyncio.sleep(0.2)
    lo = board.coils[0]
    asked: list[tuple[int, int, bool]] = []
    futures: list[asyncio.Future[int]] = []
    total = int(args.rate * args.rate_s)
    try:
        cpu0, started = cpu_s(pid), time.monotonic()
        for k in range(total):
            await asyncio.sleep(max(0.0, started + k / args.rate - time.monotonic()))
            door = k % len(doors)
            value = (k // len(doors)) % 2 == 0
            sent, future = await requester.send(
                path.topic, path.body(doors[door], lo + door, value)
            )
            asked.append((sent, lo + door, value))
            futures.append(future)
        await asyncio.wait_for(asyncio.gather(*futures), 30)
        cpu = 100 * (cpu_s(pid) - cpu0) / (time.monotonic() - started)
        writes = await control.ask("writes", device=board.device)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    hits = first_writes(writes, asked)
    coil_ms = [(at - sent) / 1e6 for (sent, _, _), at in zip(asked, hits, strict=True) if at]
    return {
        "commands": total,
        "publish_to_coil": percentiles(coil_ms),
        "missing_writes": sum(at is None for at in hits),
        "cpu_percent": round(cpu, 2),
    }


async def idle_side_by_side(tmp: Path, mq: Mosquitto, args: argparse.Namespace) -> dict[str, Any]:
    """A campus of ``args.idle_boards`` boards polled at the poll interval, nothing else."""
    template = tmp / "idle.toml"
    template.write_text(
        render(
            "bench", f"Idle bench, {args.idle_boards} boards",
            with_demo_actors(bench_plans(32 * args.idle_boards, 32)),
            base_port=21000, poll_interval_ms=args.poll_ms, demo=True,
        )
    )  # fmt: skip
    out: dict[str, Any] = {"boards": args.idle_boards, "seconds": args.idle_s}
    async with SimProcess(template, actuation_ms=args.actuation_ms) as sim:
        base = load_config(template)
        config = with_ports(base, sim.ports)
        boards = boards_of(config)
        inputs = board_inputs(config, boards[0].device)
        programs = (("naive", naive_bridge(mq)), ("async_floor", ("bench.async_poller",)))
        for name, program in programs:
            proc = await start_poller(program, boards, poll_ms=args.poll_ms, inputs=inputs)
            try:
                await asyncio.sleep(1.0)
                out[name] = await usage(proc.pid, args.idle_s)
            finally:
                proc.terminate()
                await proc.wait()
        path = tmp / "idle-daemon.toml"
        path.write_text(effective_campus(template.read_text(), sim.ports, mq.url))
        daemon = await DaemonProcess(
            path, {"GATEWAYD_STATE_DIR": str(tmp / "idle-state")}, log_level=args.daemon_log_level
        ).start()
        try:
            # Start-up (imports, first polls, re-assertion, retained topics) is not idle.
            await asyncio.sleep(4.0)
            out["gateway"] = await usage(daemon.pid, args.idle_s)
        finally:
            await daemon.stop()
    out["ratio_cpu"] = round(
        out["gateway"]["cpu_percent"] / max(out["naive"]["cpu_percent"], 0.01), 2
    )
    out["ratio_cpu_async"] = round(
        out["gateway"]["cpu_percent"] / max(out["async_floor"]["cpu_percent"], 0.01), 2
    )
    return out


# --- the run ------------------------------------------------------------------------------


def ratio(ours: dict[str, float], floor: dict[str, float], key: str) -> float:
    if not ours.get(key) or not floor.get(key):
        return float("nan")
    return round(ours[key] / floor[key], 2)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gatewayd-floor-") as tmp_name:
        tmp = Path(tmp_name)
        template = tmp / "campus.toml"
        template.write_text(
            render(
                # bench.lockdown signs its commands for the site "bench".
                "bench",
                f"Floor bench, {args.doors} doors",
                with_demo_actors(bench_plans(args.doors, 32)),
                base_port=20000,
                poll_interval_ms=args.poll_ms,
                demo=True,
            )
        )
        async with (
            SimProcess(template, actuation_ms=args.actuation_ms, control=True) as sim,
            Mosquitto() as mq,
        ):
            base = load_config(template)
            device_ports = {k: v for k, v in sim.ports.items() if k != "control"}
            config = with_ports(base, device_ports).model_copy(
                update={
                    "mqtt": base.mqtt.model_copy(update={"url": mq.url}),
                    "state_dir": str(tmp / "state"),
                }
            )
            assert sim.control_port is not None
            control = Control(sim.control_port)
            floor = await floor_cycles(config, args.cycles)
            gw = await gateway_cycles(config, args.cycles)
            naive = await naive_single(config, mq, control, args)
            path = daemon_campus(tmp, template, sim.ports, mq.url)
            daemon = await gateway_single(
                path, state_dir=tmp / "dstate", mq=mq, control=control, args=args
            )
        async with Mosquitto() as mq:
            idle = await idle_side_by_side(tmp, mq, args)
    load_after = os.getloadavg()
    lock: dict[str, Any] = {
        "floor": {
            "on_wire": percentiles(floor["on_wire"]),
            "confirmed": percentiles(floor["confirmed"]),
        },
        "gateway": {
            "on_wire": percentiles(gw["on_wire"]),
            "confirmed": percentiles(gw["confirmed"]),
        },
    }
    for key in ("on_wire", "confirmed"):
        lock[f"ratio_{key}"] = {
            q: ratio(lock["gateway"][key], lock["floor"][key], q) for q in ("p50", "p99")
        }
    single = {"naive": naive, "gateway": daemon}
    single["ratio"] = {
        k: {q: ratio(daemon[k], naive[k], q) for q in ("p50", "p99")}
        for k in (
            "publish_to_coil",
            "publish_to_reply",
            "burst_32_all_written",
            "input_flip_to_mqtt",
        )
    }
    single["ratio"]["rate_publish_to_coil"] = {
        q: ratio(daemon["rate"]["publish_to_coil"], naive["rate"]["publish_to_coil"], q)
        for q in ("p50", "p99")
    }
    return {
        "bench": "floor",
        "doors": len(config.doors),
        "boards": len(config.devices),
        "cycles": args.cycles,
        "commands": args.commands,
        "poll_interval_ms": args.poll_ms,
        "sim_actuation_ms": args.actuation_ms,
        "daemon_log_level": args.daemon_log_level,
        "failed_doors": int(gw["failed_doors"][0]),
        "lockdown_ms": lock,
        "single_door_ms": single,
        "idle": idle,
        "rate_per_s": args.rate,
        "rate_s": args.rate_s,
        "load_average": {"before": load_before, "after": load_after},
        "ratio_target": RATIO_TARGET,
    }


def summary(results: dict[str, Any]) -> None:
    print(json.dumps(results, indent=2))
    lock, single = results["lockdown_ms"], results["single_door_ms"]
    print(
        f"\nFloor bench: {results['doors']} doors on {results['boards']} boards, "
        f"sim bolt travel {results['sim_actuation_ms']} ms, poll {results['poll_interval_ms']} ms"
    )
    heads = ("floor p50", "p99", "ours p50", "p99", "x p50", "x p99")
    print(f"{'figure (ms)':<40} " + " ".join(f"{h:>9}" for h in heads))

    def row(name: str, floor: dict[str, float], ours: dict[str, float]) -> None:
        cells = [floor.get("p50"), floor.get("p99"), ours.get("p50"), ours.get("p99")]
        text = " ".join(f"{c if c is not None else float('nan'):>9.2f}" for c in cells)
        print(f"{name:<40} {text} {ratio(ours, floor, 'p50'):>6} {ratio(ours, floor, 'p99'):>6}")

    row("lockdown: every write acknowledged", lock["floor"]["on_wire"], lock["gateway"]["on_wire"])
    row("lockdown: every door confirmed", lock["floor"]["confirmed"], lock["gateway"]["confirmed"])
    for key, name in (
        ("publish_to_coil", "one door: publish -> coil written"),
        ("publish_to_reply", "one door: publish -> reply"),
        ("burst_32_all_written", "32 commands, one board: all written"),
    ):
        row(name, single["naive"][key], single["gateway"][key])
    row(
        f"input flip -> MQTT (poll {results['poll_interval_ms']} ms)",
        single["naive"]["input_flip_to_mqtt"],
        single["gateway"]["input_flip_to_mqtt"],
    )
    rate = f"{results['rate_per_s']:g}/s for {results['rate_s']:g} s: publish -> coil"
    row(
        rate,
        single["naive"]["rate"]["publish_to_coil"],
        single["gateway"]["rate"]["publish_to_coil"],
    )
    print(
        f"{'  CPU % during it':<40} naive {single['naive']['rate']['cpu_percent']:>6.1f}"
        f"   gateway {single['gateway']['rate']['cpu_percent']:>6.1f}"
    )
    idle = results["idle"]
    naive_idle, gw_idle = idle["naive"], idle["gateway"]
    print(f"idle, {idle['boards']} boards polled at {results['poll_interval_ms']} ms:"
          f" CPU % naive {naive_idle['cpu_percent']:.1f}, gateway {gw_idle['cpu_percent']:.1f}"
          f" (x{idle['ratio_cpu']}); RSS MB naive {naive_idle['rss_mb']}, gateway"
          f" {gw_idle['rss_mb']}")  # fmt: skip
    print(
        f"  pymodbus's async client alone, a task per board (bench.async_poller): CPU %"
        f" {idle['async_floor']['cpu_percent']:.1f} (gateway x{idle['ratio_cpu_async']})"
    )
    before, after = results["load_average"]["before"], results["load_average"]["after"]
    print(
        f"load average before {before[0]:.2f} {before[1]:.2f}, after {after[0]:.2f} {after[1]:.2f}"
    )
    cli = single["gateway"]["cli_lockdown_s"]
    print(f"CLI lockdown, whole process (s): p50 {cli['cli']['p50']:.3f}, p99"
          f" {cli['cli']['p99']:.3f}; python -c 'import aiomqtt, cryptography' p50"
          f" {cli['floor']['p50']:.3f} (x{cli['ratio_p50']}); the libraries an operator"
          f" command needs, imported alone: p50 {cli['libraries']['p50']:.3f}")  # fmt: skip
    print("floor: raw pymodbus for lockdown, the naive paho+pymodbus bridge for one-door rows")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--doors", type=int, default=1024)
    parser.add_argument("--cycles", type=int, default=30, help="lockdown cycles per side")
    parser.add_argument("--commands", type=int, default=40, help="single-door commands per side")
    parser.add_argument("--poll-ms", type=int, default=100, help="device poll interval")
    parser.add_argument("--actuation-ms", type=float, default=0.0, help="simulated bolt travel")
    parser.add_argument("--flips", type=int, default=30, help="input flips per side")
    parser.add_argument("--rate", type=float, default=50.0, help="commands/s in the rate row")
    parser.add_argument("--rate-s", type=float, default=10.0, help="seconds of the rate row")
    parser.add_argument("--idle-boards", type=int, default=20)
    parser.add_argument("--idle-s", type=float, default=10.0, help="seconds measured idle")
    parser.add_argument("--cli-runs", type=int, default=10, help="CLI lockdowns timed")
    parser.add_argument(
        "--daemon-log-level",
        default="info",
        help="the daemon's --log-level (info, as `gatewayd run` and the systemd unit run it)",
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run (tests)")
    args = parser.parse_args()
    if args.quick:
        args.doors, args.cycles, args.commands = 64, 2, 4
        args.flips, args.rate_s, args.idle_boards, args.idle_s = 4, 1.0, 2, 1.0
        args.cli_runs = 1
    configure("warning", json=False)
    summary(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
