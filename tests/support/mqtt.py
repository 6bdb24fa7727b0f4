"""Fixtures for MQTT tests: a private Mosquitto, a message collector, a link that can be cut.

A private broker starts in ~15 ms, so every test gets its own (function scope).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.properties import Properties

from gatewayd.simulators.broker import Mosquitto
from gatewayd.simulators.link import FlakyLink
from tests.support.recorder import Recorder

__all__ = ["Collector", "FlakyLink", "Received", "flaky_link", "mosquitto", "mqtt_collect"]


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    properties: Properties | None
    #: Which connection of the collector received it (1 = first; goes up after a reconnect).
    generation: int

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", errors="replace")

    @property
    def correlation_data(self) -> bytes | None:
        value = getattr(self.properties, "CorrelationData", None)
        return value if isinstance(value, bytes) else None


class Collector(Recorder[Received]):
    """Subscribes to a topic filter and keeps every message; reconnects if the broker restarts."""

    def __init__(self, host: str, port: int, topic_filter: str) -> None:
        super().__init__(f"messages on {topic_filter}")
        self.host = host
        self.port = port
        self.topic_filter = topic_filter
        #: Number of successful subscriptions so far.
        self.generation = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 3.0) -> Collector:
        self._task = asyncio.create_task(self._run(), name=f"collector:{self.topic_filter}")
        await self.wait_connected(1, timeout_s)
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_connected(self, generation: int, timeout_s: float = 5.0) -> None:
        """Wait until the collector has subscribed ``generation`` times."""
        await self.wait_until(
            lambda: self.generation >= generation, timeout_s, f"subscription #{generation}"
        )

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.items if m.topic == topic]

    async def _run(self) -> None:
        while True:
            try:
                client = aiomqtt.Client(
                    self.host, self.port, protocol=aiomqtt.ProtocolVersion.V5, timeout=2.0
                )
                async with client:
                    await client.subscribe(self.topic_filter, qos=1)
                    self.generation += 1
                    self.notify()
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else b""
                        self(
                            Received(
                                m.topic.value, payload, m.retain, m.qos, m.properties,
                                self.generation,
                            )
                        )  # fmt: skip
            except aiomqtt.MqttError:
                await asyncio.sleep(0.01)


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A private broker on a free loopback port, stopped after the test."""
    broker = Mosquitto()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def mqtt_collect(
    mosquitto: Mosquitto,
) -> AsyncIterator[Callable[[str], Awaitable[Collector]]]:
    """``collector = await mqtt_collect("gatewayd/site/#")``: subscribed when it returns."""
    collectors: list[Collector] = []

    async def collect(topic_filter: str) -> Collector:
        collector = Collector(mosquitto.host, mosquitto.port, topic_filter)
        collectors.append(collector)
        return await collector.start()

    yield collect
    for collector in collectors:
        await collector.close()


@pytest.fixture
async def flaky_link(mosquitto: Mosquitto) -> AsyncIterator[FlakyLink]:
    """A cuttable relay to the test's broker; point the client under test at ``link.url``."""
    link = await FlakyLink(mosquitto.host, mosquitto.port).start()
    yield link
    await link.close()
