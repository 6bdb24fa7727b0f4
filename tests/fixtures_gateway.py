"""A whole gateway in the test's loop: the demo campus on simulated boards, a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.modbus_relay.config import ModbusRelayConfig
from gatewayd.config import Config, load_config
from gatewayd.devbroker import Mosquitto
from gatewayd.gateway import Gateway
from gatewayd.mqtt import request
from simulators.bacnet_device import BacnetDeviceSim
from simulators.campus import CampusSim, scratch

__all__ = ["Site", "demo_config", "site"]

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo-campus.toml"


def demo_config(broker: Mosquitto, state_dir: Path, *, poll_interval_ms: int = 100) -> Config:
    """The demo campus pointed at a test broker, polling fast so faults show quickly."""
    config = load_config(DEMO)
    devices = tuple(
        d.model_copy(update={"poll_interval_ms": poll_interval_ms, "timeout_ms": 300})
        if isinstance(d, ModbusRelayConfig) else d
        for d in config.devices
    )
    return scratch(config, state_dir).model_copy(update={
        "devices": devices,
        "mqtt": config.mqtt.model_copy(update={"url": broker.url}),
    })


class Site:
    """A running campus: simulators, gateway task and a command helper."""

    def __init__(self, sim: CampusSim, config: Config) -> None:
        self.sim = sim
        self.config = config
        self.gateway: Gateway | None = None
        self._task: asyncio.Task[None] | None = None

    async def start_gateway(self) -> Gateway:
        ready = asyncio.Event()
        self.gateway = Gateway(self.config)
        self._task = asyncio.create_task(self.gateway.run(ready.set), name="test-gateway")
        async with asyncio.timeout(10):
            waiter = asyncio.create_task(ready.wait())
            done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
            if self._task in done:
                waiter.cancel()
                self._task.result()
        return self.gateway

    async def stop_gateway(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def command(self, action: str, **fields: Any) -> dict[str, Any]:
        body = {"id": uuid.uuid4().hex, "ts": time.time(), "actor": "test-operator",
                "action": action, **fields}
        return await request(self.config.mqtt, self.config.site.id, body, timeout_s=10)

    def coil(self, door_id: str) -> bool:
        """The lock output of a door as its simulated board or controller holds it."""
        ref = next(d for d in self.config.doors if d.id == door_id).lock
        index = int(ref.point.split(":")[1])
        if ref.device in self.sim.boards:
            return self.sim.boards[ref.device].coil(index)
        controller = self.sim.devices[ref.device]
        assert isinstance(controller, BacnetDeviceSim)
        return controller.locked(index)

    def doors_on(self, device: str) -> list[str]:
        return [d.id for d in self.config.doors if d.lock.device == device]


@pytest.fixture
async def site(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Site]:
    base = demo_config(mosquitto, tmp_path / "state")
    sim = CampusSim(base, free_ports=True, actuation_ms=2)
    async with sim:
        running = Site(sim, sim.config())
        await running.start_gateway()
        try:
            yield running
        finally:
            await running.stop_gateway()


SiteFactory = Callable[[], Awaitable[Site]]
