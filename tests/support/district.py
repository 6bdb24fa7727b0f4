"""Fixtures for the district tier: NATS nodes, campus files on disk, schools under site ids."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.app.bridge import bridge_config
from gatewayd.security.actors import Actor
from gatewayd.security.keys import public_key_text, write_key_pair
from gatewayd.security.roles import Role
from gatewayd.service.config import Config
from gatewayd.simulators.broker import Mosquitto
from gatewayd.simulators.nats import NatsServer, nats_binary, nats_cluster, start_cluster
from tests.support.gateway import DEMO, HasUrl, Site, actor_key, demo_config, run_cli, site_of

__all__ = [
    "DISTRICT_ACTOR",
    "RefusingBroker",
    "audit_records",
    "bridged_broker",
    "campus_file",
    "cluster_url",
    "district_file",
    "district_status",
    "nats",
    "nats3",
    "school",
    "school_config",
]

#: The district operations actor the test schools trust (its key: ``actor_key(...)``).
DISTRICT_ACTOR = "district-ops"


@pytest.fixture
def nats() -> Iterator[NatsServer]:
    """A private single-node nats-server with JetStream and MQTT on free ports."""
    if nats_binary() is None:
        pytest.fail("nats-server is not installed (.ci/run installs it)")
    server = NatsServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats3() -> Iterator[list[NatsServer]]:
    """A 3-node nats-server cluster (JetStream, MQTT streams R3) on free loopback ports."""
    if nats_binary() is None:
        pytest.fail("nats-server is not installed (.ci/run installs it)")
    nodes = nats_cluster(3)
    try:
        start_cluster(nodes)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def cluster_url(nodes: list[NatsServer]) -> str:
    """One district broker made of ``nodes``: ``mqtt://h:p1|h:p2|h:p3``."""
    return "mqtt://" + "|".join(f"{n.host}:{n.mqtt_port}" for n in nodes)


@contextlib.asynccontextmanager
async def bridged_broker(site: str, districts: list[str]) -> AsyncIterator[Mosquitto]:
    """The school's own Mosquitto, with the configuration bridge-config writes."""
    async with Mosquitto(extra_config=bridge_config("gatewayd", site, districts)) as broker:
        yield broker


def district_file(folder: Path, sites: list[str], *urls: str, **extra: object) -> Path:
    """A district.toml for ``sites``, every school on the brokers ``urls``."""
    key = district_key(folder / "keys")
    brokers = ", ".join(json.dumps(u) for u in urls)
    lines = ["[district]", f'actor = "{DISTRICT_ACTOR}"', f'key = "{key}"']
    lines.append(f"brokers = [{brokers}]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    for site in sites:
        lines += ["", "[[schools]]", f'id = "{site}"']
    path = folder / "district.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def district_status(district: Path) -> dict[str, dict[str, Any]]:
    """``gatewayd district status --json``, by school."""
    _, out, err = await run_cli("district", "status", "-c", str(district), "--json")
    try:
        rows: list[dict[str, Any]] = json.loads(out)
    except ValueError as exc:
        raise AssertionError(f"district status printed no JSON: {out}{err}") from exc
    return {str(r["school"]): r for r in rows}


def audit_records(site: Site) -> list[dict[str, Any]]:
    """The school gateway's audit log, record by record."""
    path = Path(site.config.state_dir) / site.config.security.audit_log
    return [json.loads(line) for line in path.read_text().splitlines()]


def school_config(
    broker: HasUrl,
    state_dir: Path,
    site_id: str = "demo-school",
    *,
    protocol: str = "5",
    heartbeat_s: float = 5.0,
    district_sites: tuple[str, ...] = (),
) -> Config:
    """The demo campus as school ``site_id`` on ``broker``; trusts the district actor."""
    config = demo_config(broker, state_dir)
    actors = config.security.actors
    if district_sites:
        actors += (
            Actor(id=DISTRICT_ACTOR, public_key=public_key_text(actor_key(DISTRICT_ACTOR)),
                  roles=frozenset({Role.DISTRICT}), sites=frozenset(district_sites)),
        )  # fmt: skip
    return config.model_copy(
        update={
            "site": config.site.model_copy(update={"id": site_id}),
            "mqtt": config.mqtt.model_copy(
                update={"protocol": protocol, "heartbeat_s": heartbeat_s}
            ),
            "security": config.security.model_copy(update={"actors": actors}),
        }
    )


def district_key(folder: Path) -> Path:
    """The district actor's private key file, written into ``folder``."""
    return write_key_pair(actor_key(DISTRICT_ACTOR), folder, DISTRICT_ACTOR, overwrite=True).private


def campus_file(
    folder: Path, *, url: str, site_id: str = "demo-school", protocol: str = "5"
) -> Path:
    """The demo campus file (its rules, its credentials) copied into ``folder``, edited as a
    person would."""
    folder.mkdir(parents=True, exist_ok=True)
    for beside in ("demo-rules.toml", "demo-credentials.toml"):
        shutil.copy(DEMO.parent / beside, folder / beside)
    text = DEMO.read_text(encoding="utf-8")
    text = text.replace('id = "demo-school"', f'id = "{site_id}"', 1)
    text = text.replace(
        'url = "mqtt://127.0.0.1:1883"', f'url = "{url}"\nprotocol = "{protocol}"', 1
    )
    path = folder / "campus.toml"
    path.write_text(text, encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def school(config: Config) -> AsyncIterator[Site]:
    """One school running in the test's loop: its simulated boards and its gateway."""
    async with site_of(config) as running:
        yield running


class RefusingBroker:
    """An MQTT broker reduced to refusing every subscription (SUBACK 0x80; 0x87 on MQTT 5).

    What a degraded NATS answers, made on demand: no broker that installs here refuses a
    plain subscription otherwise (Mosquitto 2.0 grants it and filters at delivery).
    """

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.Server | None = None
        #: Topic filters refused so far.
        self.refused: list[str] = []

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def __aenter__(self) -> RefusingBroker:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        level = 4
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                kind, body = await _packet(reader)
                if kind == 1:  # CONNECT: protocol name (2 + 4 bytes), then the level
                    level = body[6]
                    writer.write(b"\x20\x03\x00\x00\x00" if level == 5 else b"\x20\x02\x00\x00")
                elif kind == 8:  # SUBSCRIBE
                    packet_id, rest = body[:2], body[2:]
                    if level == 5:
                        rest = rest[1 + rest[0] :]  # properties (short, so one length byte)
                    filters = []
                    while rest:
                        size = int.from_bytes(rest[:2], "big")
                        filters.append(rest[2 : 2 + size].decode())
                        rest = rest[3 + size :]
                    self.refused += filters
                    codes = (b"\x87" if level == 5 else b"\x80") * len(filters)
                    payload = packet_id + (b"\x00" if level == 5 else b"") + codes
                    writer.write(bytes([0x90, len(payload)]) + payload)
                elif kind == 12:  # PINGREQ
                    writer.write(b"\xd0\x00")
                elif kind == 14:  # DISCONNECT
                    break
                await writer.drain()
        writer.close()


async def _packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    size, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        size += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first >> 4, await reader.readexactly(size)
