"""Shared by the fault tests and the soak: a durable broker, a recording subscriber, checks.

The recorder keeps a persistent MQTT session on a broker with persistence on, so messages
published while it reconnects wait for it, even across a broker restart; what it then
misses was lost by the gateway (or by a broker crash, see :func:`check_delivery`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gatewayd.simulators.broker import Mosquitto


class DurableMosquitto(Mosquitto):
    """The private broker with persistence, saved every second and at a clean stop."""

    def _config(self) -> str:
        assert self._dir is not None
        return (
            super()
            ._config()
            .replace(
                "persistence false",
                f"persistence true\npersistence_location {self._dir}/\nautosave_interval 1",
            )
        )


@dataclass(slots=True)
class Got:
    id: str
    source: str
    n: int
    #: ``time.monotonic()`` at receipt.
    at: float


class Recorder:
    """Subscribes with a persistent session (QoS 1) and records every event, reconnecting."""

    def __init__(self, broker: Mosquitto, topic_filter: str, client_id: str = "recorder") -> None:
        self.broker = broker
        self.topic_filter = topic_filter
        self.client_id = client_id
        self.got: list[Got] = []
        self.connections = 0
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def __aenter__(self) -> Recorder:
        self._task = asyncio.create_task(self._run(), name="recorder")
        async with asyncio.timeout(5):
            await self._connected.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def ids(self) -> set[str]:
        return {g.id for g in self.got}

    async def wait_for_ids(self, wanted: set[str], timeout_s: float) -> set[str]:
        """Wait until every id in ``wanted`` arrived; return those still missing."""
        deadline = time.monotonic() + timeout_s
        missing = wanted - self.ids()
        while missing and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            missing -= self.ids()
        return missing

    async def _run(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        while True:
            client = aiomqtt.Client(
                self.broker.host, self.broker.port, identifier=self.client_id,
                protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props,
                timeout=2.0,
            )  # fmt: skip
            try:
                async with client:
                    await client.subscribe(self.topic_filter, qos=1)
                    self.connections += 1
                    self._connected.set()
                    async for m in client.messages:
                        self._record(m.payload)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.02)

    def _record(self, payload: Any) -> None:
        body = json.loads(payload)
        self.got.append(Got(body["id"], body["source"], body["data"]["n"], time.monotonic()))


@dataclass
class Delivery:
    """What a recorder saw against what the gateway accepted."""

    accepted: int
    received: int
    lost: list[str]
    duplicates: list[Got]
    out_of_order: list[str]
    #: Outages as (start, end) in ``time.monotonic()``.
    outages: list[tuple[float, float]] = field(default_factory=list)

    def duplicates_outside(self, slack_s: float) -> list[Got]:
        """Duplicates received far from any outage (should be none)."""
        return [
            d for d in self.duplicates
            if not any(a - slack_s <= d.at <= b + slack_s for a, b in self.outages)
        ]  # fmt: skip

    def summary(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "received": self.received,
            "lost": len(self.lost),
            "duplicates": len(self.duplicates),
            "out_of_order": len(self.out_of_order),
            "outages": len(self.outages),
        }


def check_delivery(accepted: Iterable[str], got: list[Got]) -> Delivery:
    """Lost ids, duplicates, and sources whose first deliveries went backwards."""
    accepted_ids = list(accepted)
    seen: set[str] = set()
    last_n: dict[str, int] = {}
    duplicates: list[Got] = []
    out_of_order: list[str] = []
    for g in got:
        if g.id in seen:
            duplicates.append(g)
            continue
        seen.add(g.id)
        if g.n <= last_n.get(g.source, -1):
            out_of_order.append(g.id)
        last_n[g.source] = g.n
    lost = [i for i in accepted_ids if i not in seen]
    return Delivery(len(accepted_ids), len(got), lost, duplicates, out_of_order)


def read_accepted(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


def integrity(path: Path) -> str:
    """``PRAGMA quick_check`` of an outbox file, as a fresh process would see it."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute("PRAGMA quick_check").fetchone()
        return str(row[0])
