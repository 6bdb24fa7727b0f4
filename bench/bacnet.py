"""BACnet driver against the controller simulator in another process, over loopback UDP.

Measures (ms): a lock write at priority 5 with read-back (``execute(WritePoints)``: the write,
the relinquish of the previous slot, one ReadPropertyMultiple of the output and the watched
inputs) and change-of-value latency: an output is written by a second client on the same
gateway application and the lock-sense input follows at once (``--actuation-ms 0``); the
sample runs from that write leaving to the driver's ``PointChanged`` from the COV
notification (so it includes the write's trip; polling is slowed to 60 s so only COV can
report it).

    python -m bench.bacnet --samples 300
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from typing import Any

import structlog

from bench._common import percentiles, report
from gatewayd.drivers.bacnet import BacnetConfig, BacnetDriver
from gatewayd.drivers.bacnet.cov import object_id
from gatewayd.drivers.bacnet.points import Point
from gatewayd.drivers.bacnet.transport import APPLICATIONS, BacnetLink
from gatewayd.kernel.events import DriverEvent, PointChanged, PointWrite, WritePoints

LOCAL = "127.0.0.1:0"


async def start_sim(doors: int) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gatewayd.simulators",
        "--log-level",
        "warning",
        "bacnet",
        "--port",
        "0",
        "--doors",
        str(doors),
        "--actuation-ms",
        "0",
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        line = await proc.stdout.readline()
    return proc, int(json.loads(line)["ports"]["bacnet"])


async def run_driver(
    config: BacnetConfig, points: frozenset[str], emit: Any
) -> tuple[BacnetDriver, asyncio.Task[None]]:
    driver = BacnetDriver(config, points, emit)
    started = asyncio.Event()
    task = asyncio.create_task(driver.run(started.set))
    await started.wait()
    return driver, task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def bench_writes(port: int, samples: int) -> list[float]:
    config = BacnetConfig(
        id="bench-w",
        driver="bacnet",
        address=f"127.0.0.1:{port}",
        device_instance=1001,
        local_address=LOCAL,
        timeout_ms=1000,
    )
    points = frozenset({"binary-output:0", "binary-input:0", "binary-input:16"})
    driver, task = await run_driver(config, points, lambda e: None)
    out = []
    try:
        for i in range(samples):
            command = WritePoints((PointWrite("binary-output:0", i % 2 == 0, 5 if i % 3 else 1),))
            t0 = time.perf_counter()
            await driver.execute(command)
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        await stop(task)
    return out


async def bench_cov(port: int, samples: int) -> list[float]:
    config = BacnetConfig(
        id="bench-c",
        driver="bacnet",
        address=f"127.0.0.1:{port}",
        device_instance=1001,
        local_address=LOCAL,
        timeout_ms=1000,
        poll_interval_ms=60_000,
        cov_poll_interval_ms=60_000,
    )
    arrived: asyncio.Queue[float] = asyncio.Queue()

    def emit(event: DriverEvent) -> None:
        if isinstance(event, PointChanged) and event.point == "binary-input:17":
            arrived.put_nowait(time.perf_counter())

    _, task = await run_driver(config, frozenset({"binary-input:17"}), emit)
    app = await APPLICATIONS.acquire(LOCAL, config.local_device_instance)
    writer = BacnetLink(config.address, 1000, 4)
    writer.attach(app)
    out = []
    try:
        await arrived.get()  # the first read
        lock = object_id(Point("binary-output", 1))
        for i in range(samples):
            t0 = time.perf_counter()
            await writer.write_present_value(lock, i % 2 == 0, 16)
            async with asyncio.timeout(2):
                t1 = await arrived.get()
            out.append((t1 - t0) * 1000)
    finally:
        APPLICATIONS.release(LOCAL)
        await stop(task)
    return out


async def main(samples: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    proc, port = await start_sim(16)
    try:
        writes = await bench_writes(port, samples)
        cov = await bench_cov(port, samples)
    finally:
        proc.terminate()
        await proc.wait()
    table = [
        ("write @priority + relinquish + read-back (ms)", percentiles(writes)),
        ("write -> COV PointChanged (ms)", percentiles(cov)),
    ]
    report(
        "BACnet driver vs simulator in another process (loopback UDP)",
        {"samples": samples, "write_readback_ms": table[0][1], "cov_latency_ms": table[1][1]},
        table,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    asyncio.run(main(parser.parse_args().samples))
