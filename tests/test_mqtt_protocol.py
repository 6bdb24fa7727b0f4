"""``[mqtt] protocol``: the gateway and the CLI on MQTT 3.1.1 (NATS), and the broker's refusals."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest
from structlog.testing import capture_logs

from gatewayd.kernel.backoff import Backoff
from gatewayd.simulators.nats import NatsServer
from gatewayd.uplink.client import request
from gatewayd.uplink.config import MqttConfig
from gatewayd.uplink.daemon import Uplink
from gatewayd.uplink.wire import BrokerUnreachable, UplinkError
from tests.support.district import RefusingBroker, campus_file, school, school_config
from tests.support.gateway import run_cli
from tests.support.waiting import eventually

FAST = Backoff(min_s=0.05, max_s=0.2)


async def answer(payload: bytes, arrived_ns: int = 0) -> dict[str, Any]:
    return {"id": json.loads(payload)["id"], "ok": True}


@contextlib.asynccontextmanager
async def uplink_on(config: MqttConfig, site: str = "lincoln-hs") -> AsyncIterator[Uplink]:
    uplink = Uplink(config, site, answer, backoff=FAST)
    task = asyncio.create_task(uplink.run(lambda: None), name="uplink")
    try:
        yield uplink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_gateway_on_mqtt_311_runs_a_lockdown_through_nats_and_the_cli_gets_its_reply(
    nats: NatsServer, tmp_path: Path
) -> None:
    config = school_config(nats, tmp_path / "state", protocol="3.1.1")
    async with school(config) as site:
        await eventually(
            lambda: site.gateway is not None and site.gateway.uplink.connected, timeout_s=10
        )
        campus = campus_file(tmp_path / "cli", url=nats.url, protocol="3.1.1")
        code, out, err = await run_cli("lockdown", "-c", str(campus), "--scope", "campus")
        assert code == 0, err
        doors = len(site.config.doors)
        assert out.startswith(f"OK       lockdown campus: {doors}/{doors} doors confirmed")
        assert all(site.coil(d.id) for d in site.config.doors if d.kind == "classroom")


async def test_a_311_reply_is_matched_by_command_id_among_others_on_cmd_result(
    nats: NatsServer,
) -> None:
    config = MqttConfig(url=nats.url, protocol="3.1.1")
    async with uplink_on(config) as uplink:
        await eventually(lambda: uplink.connected, timeout_s=10)
        replies = await asyncio.gather(
            *(request(config, "lincoln-hs", {"id": f"c-{n}"}, timeout_s=10) for n in range(5))
        )
    assert [r["id"] for r in replies] == [f"c-{n}" for n in range(5)]


async def test_mqtt_5_against_nats_is_one_clear_error_saying_to_set_311(
    nats: NatsServer, tmp_path: Path
) -> None:
    campus = campus_file(tmp_path, url=nats.url, protocol="5")
    code, _, err = await run_cli("lockdown", "-c", str(campus), "--scope", "campus")
    assert code == 1
    assert "refuses MQTT 5 (CONNACK 0x84" in err and 'set protocol = "3.1.1"' in err
    assert "Traceback" not in err
    with capture_logs() as logs:
        async with uplink_on(MqttConfig(url=nats.url)) as uplink:
            await eventually(
                lambda: int(uplink.statistics()["connect_failures"]) >= 3, timeout_s=10
            )
            assert not uplink.connected
    refused = [e for e in logs if e["event"] == "mqtt.protocol_refused"]
    assert len(refused) == 1
    assert 'set protocol = "3.1.1"' in refused[0]["problem"]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_refused_command_subscription_is_a_failed_connection_naming_the_topic(
    protocol: Literal["5", "3.1.1"],
) -> None:
    async with RefusingBroker() as broker:
        config = MqttConfig(url=broker.url, protocol=protocol)
        with capture_logs() as logs:
            async with uplink_on(config) as uplink:
                await eventually(
                    lambda: int(uplink.statistics()["connect_failures"]) >= 2, timeout_s=10
                )
                assert not uplink.connected
        failures = [e for e in logs if e["event"] == "mqtt.connect_failed"]
        assert (
            "refused the subscription to gatewayd/lincoln-hs/cmd (SUBACK 0x8"
            in (failures[0]["error"])
        )
        assert not any(e["event"] == "mqtt.connected" for e in logs)
        with pytest.raises(UplinkError) as caught:
            await request(config, "lincoln-hs", {"id": "x"}, timeout_s=5)
        assert not isinstance(caught.value, BrokerUnreachable)
        reply_topic = "cmd/reply/" if protocol == "5" else "cmd/result"
        assert f"refused the subscription to gatewayd/lincoln-hs/{reply_topic}" in str(caught.value)
