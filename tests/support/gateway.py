"""A whole gateway in the test's loop: the demo campus on simulated boards, a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gatewayd.drivers.modbus_relay.config import ModbusRelayConfig
from gatewayd.kernel.command import Action
from gatewayd.security.actors import Actor
from gatewayd.security.keys import demo_private_key, public_key_text, write_key_pair
from gatewayd.security.roles import Role, least_role
from gatewayd.security.signing import signed
from gatewayd.service.config import Config, load_config, with_state_dir
from gatewayd.service.gateway import Gateway
from gatewayd.simulators.bacnet_device import BacnetDeviceSim
from gatewayd.simulators.broker import Mosquitto
from gatewayd.simulators.campus import CampusSim
from gatewayd.uplink.client import request
from gatewayd.uplink.config import MqttConfig

__all__ = ["TEST_ACTORS", "Site", "actor_key", "demo_config", "raw_requests", "run_cli", "site"]

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo-campus.toml"
#: People the tests act as besides the DEMO actors (the console's users): id -> role.
TEST_ACTORS = {
    "front-office": Role.OPERATOR,
    "principal": Role.ADMINISTRATOR,
    "unit-12": Role.RESPONDER,
}


def actor_key(actor: str) -> Ed25519PrivateKey:
    """A fixed key per test actor (a throwaway seed, like the DEMO keys, never trusted)."""
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(b"gatewayd TEST key: " + actor.encode()).digest()
    )


def _with_test_actors(config: Config, key_dir: Path) -> Config:
    """``config`` also trusting :data:`TEST_ACTORS`, whose keys the console holds in ``key_dir``."""
    actors = tuple(
        Actor(id=actor, public_key=public_key_text(actor_key(actor)), roles=frozenset({role}))
        for actor, role in TEST_ACTORS.items()
    )
    for actor in TEST_ACTORS:
        write_key_pair(actor_key(actor), key_dir, actor, overwrite=True)
    security = config.security.model_copy(
        update={"actors": config.security.actors + actors, "console_keys": str(key_dir)}
    )
    return config.model_copy(update={"security": security})


class HasUrl(Protocol):
    """A broker a test started (Mosquitto, a NATS node): where clients connect."""

    @property
    def url(self) -> str: ...


def demo_config(
    broker: HasUrl, state_dir: Path, *, poll_interval_ms: int = 100, schedules: bool = False
) -> Config:
    """The demo campus pointed at a test broker, polling fast so faults show quickly.

    Its door schedules follow the real clock, so they are left out unless ``schedules``: a
    test that meets the morning window would see the main entrance unlocked.
    """
    config = load_config(DEMO)
    if not schedules:
        config = config.model_copy(update={"schedules": None})
    devices = tuple(
        d.model_copy(update={"poll_interval_ms": poll_interval_ms, "timeout_ms": 300})
        if isinstance(d, ModbusRelayConfig)
        else d
        for d in config.devices
    )
    return _with_test_actors(
        with_state_dir(config, state_dir).model_copy(
            update={
                "devices": devices,
                "mqtt": config.mqtt.model_copy(update={"url": broker.url}),
            }
        ),
        state_dir.parent / "console-keys",
    )


class Site:
    """A running campus: simulators, gateway task and a command helper."""

    def __init__(self, sim: CampusSim[Config], config: Config) -> None:
        self.sim = sim
        self.config = config
        self.gateway: Gateway | None = None
        self._task: asyncio.Task[None] | None = None

    async def start_gateway(self, **collaborators: Any) -> Gateway:
        """Start the gateway; ``collaborators`` replace its sink or rules (see Gateway)."""
        ready = asyncio.Event()
        self.gateway = Gateway(self.config, **collaborators)
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
        """Send a command signed by the DEMO actor of the least role that may send it."""
        actor = f"demo-{least_role(Action(action), fields.get('params') or {})}"
        return await self.command_as(actor, demo_private_key(actor), action, **fields)

    async def command_as(
        self, actor: str, key: Ed25519PrivateKey, action: str, **fields: Any
    ) -> dict[str, Any]:
        """Send a command as ``actor``, signed with ``key`` (the right one or not)."""
        body = {
            "id": uuid.uuid4().hex,
            "ts": time.time(),
            "actor": actor,
            "action": action,
            **fields,
        }
        return await self.send(signed(body, key, site=self.config.site.id))

    async def send(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send a body exactly as given (signed or not)."""
        return await request(self.config.mqtt, self.config.site.id, body, timeout_s=10)

    async def send_raw(self, payload: bytes) -> dict[str, Any]:
        """Send any bytes as a command and return the gateway's reply."""
        [reply] = await raw_requests(self.config.mqtt, self.config.site.id, [payload])
        return reply

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


async def raw_requests(
    config: MqttConfig, site: str, payloads: Sequence[bytes], timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """Send each payload to a gateway's command topic over one connection; the replies."""
    base = f"{config.prefix}/{site}"
    reply_topic = f"{base}/cmd/reply/{uuid.uuid4().hex}"
    replies: list[dict[str, Any]] = []
    async with (
        asyncio.timeout(timeout_s),
        aiomqtt.Client(config.host, config.port, protocol=aiomqtt.ProtocolVersion.V5) as client,
    ):
        await client.subscribe(reply_topic, qos=1)
        for n, payload in enumerate(payloads):
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = reply_topic
            props.CorrelationData = str(n).encode()
            await client.publish(f"{base}/cmd", payload, 1, False, props)
            # One at a time, so that each reply is known to belong to its payload.
            async for message in client.messages:
                if (
                    message.properties is not None
                    and getattr(message.properties, "CorrelationData", None) == str(n).encode()
                ):
                    assert isinstance(message.payload, bytes)
                    replies.append(json.loads(message.payload))
                    break
    return replies


@contextlib.asynccontextmanager
async def running_site(
    mosquitto: Mosquitto, tmp_path: Path, *, actuation_ms: float = 2
) -> AsyncIterator[Site]:
    """The demo campus on simulators (bolts that take ``actuation_ms``) and its gateway."""
    config = demo_config(mosquitto, tmp_path / "state")
    async with site_of(config, actuation_ms=actuation_ms) as running:
        yield running


@contextlib.asynccontextmanager
async def site_of(
    config: Config, *, actuation_ms: float = 2, **collaborators: Any
) -> AsyncIterator[Site]:
    """A campus running in the test's loop: its simulated devices and its gateway.

    ``collaborators`` go to the gateway (a sink, rules, the wall clock its schedules follow).
    """
    async with CampusSim(config, free_ports=True, actuation_ms=actuation_ms) as sim:
        running = Site(sim, sim.config())
        await running.start_gateway(**collaborators)
        try:
            yield running
        finally:
            await running.stop_gateway()


@pytest.fixture
async def site(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Site]:
    async with running_site(mosquitto, tmp_path) as running:
        yield running


SiteFactory = Callable[[], Awaitable[Site]]


async def run_cli(*args: str, timeout_s: float = 30) -> tuple[int, str, str]:
    """``python -m gatewayd ARGS`` as a person runs it: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gatewayd",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout_s):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
