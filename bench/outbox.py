"""Outbox -> Mosquitto (QoS 1): sustained rate, event -> PUBACK latency, backlog drain.

Every figure is measured for the durable :class:`Outbox` and for the in-memory
:class:`MemoryQueue` in the same run, so the ratio shows what durability costs here.

    .venv/bin/python -m bench.outbox [--events 50000] [--paced-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import aiomqtt

from bench._common import percentiles, report
from gatewayd.app.logs import configure
from gatewayd.simulators.broker import Mosquitto
from gatewayd.uplink.config import MqttConfig
from gatewayd.uplink.daemon import Uplink
from gatewayd.uplink.outbox import MemoryQueue, Outbox, Outgoing, PublishQueue

TARGETS = {"sustained_per_s": 10_000, "puback_p99_ms": 20.0}


class TimedQueue:
    """Wraps a queue and records enqueue -> PUBACK per event (ms), keyed by payload."""

    def __init__(self, inner: PublishQueue) -> None:
        self.inner = inner
        self.put_at: dict[bytes, float] = {}
        self.puback_ms: list[float] = []

    def put(self, topic: str, payload: bytes, *, life_safety: bool) -> None:
        self.put_at[payload] = time.perf_counter()
        self.inner.put(topic, payload, life_safety=life_safety)

    async def get(self) -> Outgoing:
        return await self.inner.get()

    def ack(self, entry: Outgoing) -> None:
        began = self.put_at.get(entry.payload)
        if began is not None:
            self.puback_ms.append((time.perf_counter() - began) * 1000)
        self.inner.ack(entry)

    def rewind(self) -> None:
        self.inner.rewind()

    def close(self) -> None:
        self.inner.close()

    def __len__(self) -> int:
        return len(self.inner)

    def statistics(self) -> dict[str, int]:
        return self.inner.statistics()


async def _no_commands(body: bytes, arrived_ns: int) -> dict[str, Any]:
    return {"ok": False}


async def until_empty(queue: PublishQueue, timeout_s: float = 120.0) -> None:
    async with asyncio.timeout(timeout_s):
        while len(queue):  # noqa: ASYNC110 - the queue has no "empty" event; 1 ms is fine here
            await asyncio.sleep(0.001)


class Rig:
    """One uplink over one queue, connected to a broker, and a subscriber timing receipts."""

    def __init__(
        self, broker: Mosquitto, make_queue: Callable[[], PublishQueue], *, subscriber: bool = True
    ) -> None:
        self.subscriber = subscriber
        self.queue = TimedQueue(make_queue())
        self.uplink = Uplink(
            MqttConfig(url=broker.url, client_id="bench-outbox"),
            "bench",
            _no_commands,
            queue=self.queue,
        )
        self.broker = broker
        self.received_at: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Rig:
        if self.subscriber:
            subscribed = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._subscribe(subscribed)))
            await subscribed.wait()
        started = asyncio.Event()
        self._tasks.append(asyncio.create_task(self.uplink.run(started.set)))
        await started.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task

    async def _subscribe(self, subscribed: asyncio.Event) -> None:
        async with aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier="bench-sub",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client:
            await client.subscribe("gatewayd/bench/event/#", qos=1)
            subscribed.set()
            async for message in client.messages:
                if isinstance(message.payload, bytes):
                    event_id = json.loads(message.payload)["id"]
                    self.received_at[event_id] = time.perf_counter()

    def publish(self, n: int, *, life_safety: bool) -> str:
        event_id = f"e{n}"
        self.uplink.publish_event(
            "alarm" if life_safety else "telemetry",
            {"id": event_id, "ts": time.time(), "data": {"n": n}},
            life_safety=life_safety,
        )
        return event_id


async def sustained(broker: Mosquitto, make: Callable[[], PublishQueue], events: int) -> float:
    """Events/s from the first put to the last PUBACK, telemetry enqueued as fast as possible.

    No subscriber in this process: it would take half the CPU the uplink is measured on.
    """
    async with Rig(broker, make, subscriber=False) as rig:
        began = time.perf_counter()
        for n in range(events):
            rig.publish(n, life_safety=False)
            if n % 500 == 0:
                # Let the publishers run, as a real producer would between bursts.
                await asyncio.sleep(0)
        await until_empty(rig.queue)
        return events / (time.perf_counter() - began)


async def paced(
    broker: Mosquitto,
    make: Callable[[], PublishQueue],
    rate: float,
    seconds: float,
    *,
    life_safety: bool,
) -> dict[str, dict[str, float]]:
    """Latency at a paced rate: enqueue -> PUBACK, and enqueue -> subscriber receipt."""
    async with Rig(broker, make) as rig:
        put_at: dict[str, float] = {}
        began = time.perf_counter()
        n = 0
        while (elapsed := time.perf_counter() - began) < seconds:
            while n < elapsed * rate:
                put_at[rig.publish(n, life_safety=life_safety)] = time.perf_counter()
                n += 1
            await asyncio.sleep(0.001)
        await until_empty(rig.queue)
        await asyncio.sleep(0.2)
        receipt = [
            (rig.received_at[i] - t) * 1000 for i, t in put_at.items() if i in rig.received_at
        ]
        return {"puback_ms": percentiles(rig.queue.puback_ms), "receipt_ms": percentiles(receipt)}


async def drain(broker: Mosquitto, make: Callable[[], PublishQueue], backlog: int) -> float:
    """Events/s to empty a backlog queued while the broker was down."""
    broker.kill()
    queue = make()
    uplink = Uplink(
        MqttConfig(url=broker.url, client_id="bench-drain"), "bench", _no_commands, queue=queue
    )
    for n in range(backlog):
        uplink.publish_event(
            "telemetry", {"id": f"d{n}", "data": {"n": n}}, life_safety=n % 10 == 0
        )
    await asyncio.sleep(0.05)
    broker.start()
    connected = asyncio.Event()
    task = asyncio.create_task(uplink.run(connected.set))
    try:
        await connected.wait()
        began = time.perf_counter()
        await until_empty(queue)
        return backlog / (time.perf_counter() - began)
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"bench": "outbox", "targets": TARGETS}
    with tempfile.TemporaryDirectory(prefix="gatewayd-bench-") as tmp:
        files = iter(range(1000))

        def outbox() -> PublishQueue:
            return Outbox(Path(tmp) / f"outbox-{next(files)}.sqlite", max_rows=200_000)

        def memory() -> PublishQueue:
            return MemoryQueue(telemetry_max=200_000)

        async with Mosquitto() as broker:
            for name, make in (("outbox", outbox), ("memory", memory)):
                results[name] = {
                    "sustained_per_s": round(await sustained(broker, make, args.events)),
                    "paced_telemetry": await paced(
                        broker, make, args.rate, args.paced_seconds, life_safety=False
                    ),
                    "paced_life_safety": await paced(
                        broker, make, args.rate, args.paced_seconds, life_safety=True
                    ),
                    "drain_per_s": round(await drain(broker, make, args.backlog)),
                }
    out, mem = results["outbox"], results["memory"]
    results["ratio_outbox_to_memory"] = {
        "sustained": round(out["sustained_per_s"] / mem["sustained_per_s"], 2),
        "drain": round(out["drain_per_s"] / mem["drain_per_s"], 2),
    }
    results["meets_targets"] = (
        out["sustained_per_s"] >= TARGETS["sustained_per_s"]
        and out["paced_telemetry"]["puback_ms"]["p99"] <= TARGETS["puback_p99_ms"]
        and out["paced_life_safety"]["puback_ms"]["p99"] <= TARGETS["puback_p99_ms"]
    )
    return results


def main() -> None:
    configure("warning", json=False)
    p = argparse.ArgumentParser(prog="python -m bench.outbox")
    p.add_argument("--events", type=int, default=50_000, help="for the sustained rate")
    p.add_argument("--rate", type=float, default=1000.0, help="paced events/s")
    p.add_argument("--paced-seconds", type=float, default=10.0)
    p.add_argument("--backlog", type=int, default=20_000, help="events queued during the outage")
    results = asyncio.run(main_async(p.parse_args()))
    table = []
    for name in ("outbox", "memory"):
        for kind in ("paced_telemetry", "paced_life_safety"):
            for measure in ("puback_ms", "receipt_ms"):
                table.append((f"{name} {kind} {measure}", results[name][kind][measure]))
    report("Outbox -> Mosquitto, QoS 1", results, table)
    for name in ("outbox", "memory"):
        print(
            f"{name:<8} sustained {results[name]['sustained_per_s']:>7} ev/s   "
            f"drain {results[name]['drain_per_s']:>7} ev/s"
        )


if __name__ == "__main__":
    main()
