"""A process that runs the uplink over a durable outbox and feeds it paced events.

Fault tests and the soak kill it, the broker, or the link under it. Each event is
``{"id": "<source>-<n>", "source": ..., "data": {"n": n}}``, numbered per source, so a
subscriber can check loss, order and duplicates. After each tick's events are committed
(``Outbox.flush``), their ids are appended to ``--accepted`` with fsync: that file lists what
the process accepted, whatever happens to it next.

    python -m bench.uplink_runner --url mqtt://127.0.0.1:1883 --outbox o.sqlite \\
        --accepted acc.txt --run r1 --rate 1000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from gatewayd.app.logs import configure
from gatewayd.kernel.backoff import Backoff
from gatewayd.uplink.config import MqttConfig
from gatewayd.uplink.daemon import Uplink
from gatewayd.uplink.outbox import Outbox

#: Events are produced in ticks of this length.
TICK_S = 0.01


async def _no_commands(body: bytes, arrived_ns: int) -> dict[str, Any]:
    return {"ok": False, "error": "not_supported"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.uplink_runner")
    p.add_argument("--url", required=True)
    p.add_argument("--site", default="fault")
    p.add_argument("--outbox", type=Path, required=True)
    p.add_argument("--accepted", type=Path, required=True, help="ids accepted, one a line")
    p.add_argument("--run", default="r1", help="tag in source names, one per process start")
    p.add_argument("--rate", type=float, default=1000.0, help="events per second")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to produce events")
    p.add_argument("--sources", type=int, default=4)
    p.add_argument(
        "--life-safety-sources",
        type=int,
        default=1,
        help="how many of the sources send life-safety events",
    )
    p.add_argument("--drain-timeout", type=float, default=60.0)
    return p.parse_args(argv)


async def produce(uplink: Uplink, outbox: Outbox, args: argparse.Namespace) -> int:
    """Paced events for ``args.seconds``; returns how many were accepted."""
    sources = [f"{args.run}-s{k}" for k in range(args.sources)]
    counters = dict.fromkeys(sources, 0)
    fd = os.open(args.accepted, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    accepted = 0
    began = time.monotonic()
    try:
        while (elapsed := time.monotonic() - began) < args.seconds:
            due = int(elapsed * args.rate) + 1
            ids: list[str] = []
            while accepted + len(ids) < due:
                k = (accepted + len(ids)) % len(sources)
                source = sources[k]
                n = counters[source]
                counters[source] = n + 1
                event_id = f"{source}-{n}"
                uplink.publish_event(
                    "alarm" if k < args.life_safety_sources else "telemetry",
                    {"id": event_id, "ts": time.time(), "source": source, "data": {"n": n}},
                    life_safety=k < args.life_safety_sources,
                )
                ids.append(event_id)
            # Accepted means on disk: commit, then record, so the record never runs ahead.
            outbox.flush()
            if ids:
                os.write(fd, ("\n".join(ids) + "\n").encode())
                os.fsync(fd)
            accepted += len(ids)
            await asyncio.sleep(TICK_S)
    finally:
        os.close(fd)
    return accepted


async def main_async(args: argparse.Namespace) -> int:
    outbox = Outbox(args.outbox)
    recovered = len(outbox)
    config = MqttConfig(url=args.url, client_id=f"runner-{args.site}", keepalive_s=5)
    uplink = Uplink(
        config,
        args.site,
        _no_commands,
        queue=outbox,
        backoff=Backoff(min_s=0.05, max_s=0.5),
        connect_timeout_s=2.0,
    )
    started = asyncio.Event()
    task = asyncio.create_task(uplink.run(started.set), name="uplink")
    await started.wait()
    print(json.dumps({"ready": True, "recovered": recovered, "pid": os.getpid()}), flush=True)
    accepted = await produce(uplink, outbox, args)
    deadline = time.monotonic() + args.drain_timeout
    # The outbox has no "empty" event; a 50 ms poll is fine for a test harness.
    while len(outbox) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    stats = uplink.statistics()
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    print(
        json.dumps({"done": True, "accepted": accepted, "left": stats["queued"], **stats}),
        flush=True,
    )
    return 0 if not stats["queued"] else 1


class Runner:
    """This module as a child process that can be killed (the fault tests and the soak)."""

    def __init__(
        self, url: str, workdir: Path, *, rate: float, seconds: float, run: str, site: str = "fault"
    ) -> None:
        self.workdir = workdir
        self.args = [
            sys.executable, "-m", "bench.uplink_runner", "--url", url, "--site", site,
            "--outbox", str(workdir / "outbox.sqlite"), "--accepted", str(self.accepted_path),
            "--rate", str(rate), "--seconds", str(seconds), "--run", run,
        ]  # fmt: skip
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}
        self.result: dict[str, Any] = {}

    @property
    def accepted_path(self) -> Path:
        return self.workdir / "accepted.txt"

    async def start(self) -> Runner:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(15):
            self.ready = json.loads(await self.proc.stdout.readline())
        return self

    async def wait(self, timeout_s: float) -> dict[str, Any]:
        """Wait for a clean end; return the runner's final statistics."""
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            line = await self.proc.stdout.readline()
            await self.proc.wait()
        self.result = json.loads(line) if line else {}
        return self.result

    async def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def __aenter__(self) -> Runner:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.kill()


def main() -> None:
    configure(os.environ.get("RUNNER_LOG_LEVEL", "warning"), json=False)
    sys.exit(asyncio.run(main_async(parse_args())))


if __name__ == "__main__":
    main()
