"""The MQTT uplink against a real Mosquitto: availability, retained state, events, commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gatewayd.kernel.backoff import Backoff
from gatewayd.kernel.command import command_id_of, parse_command
from gatewayd.kernel.errors import CommandError
from gatewayd.simulators.broker import Mosquitto, free_port
from gatewayd.uplink.client import request, snapshot
from gatewayd.uplink.config import MqttConfig
from gatewayd.uplink.daemon import Uplink
from gatewayd.uplink.outbox import MemoryQueue, PublishQueueFull
from gatewayd.uplink.wire import BrokerUnreachable, NoReply
from tests.support.mqtt import Collector, FlakyLink, Received
from tests.support.waiting import eventually

SITE = "lincoln-hs"
BASE = f"gatewayd/{SITE}"
FAST = Backoff(min_s=0.05, max_s=0.2)

Collect = Callable[[str], Awaitable[Collector]]


async def handler(payload: bytes, arrived_ns: int = 0) -> dict[str, Any]:
    """What the daemon does, reduced: parse strictly, then obey ``params`` for tests."""
    try:
        command = parse_command(payload)
    except CommandError as exc:
        return {"id": command_id_of(payload), "ok": False, "error": exc.code, "message": str(exc)}
    await asyncio.sleep(float(command.params.get("sleep_s", 0)))
    if command.params.get("raise"):
        raise RuntimeError("handler bug")
    return {"id": command.id, "ok": True, "error": None, "action": str(command.action)}


def command(ident: str, **params: Any) -> bytes:
    body = {"id": ident, "ts": 1_795_945_323, "actor": "t", "action": "lockdown",
            "scope": "campus", "params": params}  # fmt: skip
    return json.dumps(body).encode()


@contextlib.asynccontextmanager
async def running(url: str, **kwargs: Any) -> AsyncIterator[Uplink]:
    uplink = Uplink(MqttConfig(url=url, keepalive_s=5), SITE, handler, backoff=FAST, **kwargs)
    started = asyncio.Event()
    task = asyncio.create_task(uplink.run(started.set), name="uplink")
    async with asyncio.timeout(5):
        await started.wait()
    try:
        yield uplink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def on(topic: str) -> Callable[[Received], bool]:
    return lambda m: m.topic == f"{BASE}/{topic}"


# --- availability -----------------------------------------------------------------------------


async def test_availability_is_online_retained_then_offline_after_clean_stop(
    mosquitto: Mosquitto, mqtt_collect: Collect
) -> None:
    async with running(mosquitto.url) as uplink:
        assert uplink.connected
        late = await mqtt_collect(f"{BASE}/availability")
        first = await late.wait_for(on("availability"))
        assert (first.text, first.retain) == ("online", True)
    offline = await late.wait_for(lambda m: m.text == "offline")
    assert offline.topic == f"{BASE}/availability"
    # Retained: a newcomer learns it too.
    newcomer = await mqtt_collect(f"{BASE}/availability")
    assert (await newcomer.wait_for(on("availability"))).text == "offline"


async def test_the_broker_socket_sends_small_packets_at_once(mosquitto: Mosquitto) -> None:
    # Nagle would hold a reply behind the broker's delayed ACK of the packets before it.
    async with running(mosquitto.url) as uplink:
        await eventually(lambda: uplink.connected)
        assert uplink._client is not None
        sock = uplink._client._client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


async def test_last_will_says_offline_when_the_connection_drops_uncleanly(
    flaky_link: FlakyLink, mqtt_collect: Collect
) -> None:
    watcher = await mqtt_collect(f"{BASE}/availability")
    async with running(flaky_link.url) as uplink:
        await watcher.wait_for(lambda m: m.text == "online")
        flaky_link.cut()
        await watcher.wait_for(lambda m: m.text == "offline", since=1)
        await eventually(lambda: not uplink.connected)
        mark = watcher.mark()
        flaky_link.restore()
        await watcher.wait_for(lambda m: m.text == "online", since=mark)
        await eventually(lambda: uplink.statistics()["reconnects"] == 1)


_CHILD = """
import asyncio, sys
from gatewayd.uplink.config import MqttConfig
from gatewayd.uplink.daemon import Uplink

async def handler(payload, arrived_ns=0):
    return {}

async def main():
    uplink = Uplink(MqttConfig(url=sys.argv[1], keepalive_s=5), sys.argv[2], handler)
    await uplink.run(lambda: None)

asyncio.run(main())
"""


async def test_last_will_says_offline_when_the_gateway_process_is_killed(
    mosquitto: Mosquitto, mqtt_collect: Collect, tmp_path: Path
) -> None:
    watcher = await mqtt_collect(f"{BASE}/availability")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(_CHILD), mosquitto.url, SITE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    try:
        await watcher.wait_for(lambda m: m.text == "online", timeout_s=10)
        os.kill(child.pid, signal.SIGKILL)
        await watcher.wait_for(lambda m: m.text == "offline")
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()


async def test_stopping_is_bounded_when_the_broker_hangs(mosquitto: Mosquitto) -> None:
    loop = asyncio.get_running_loop()
    uplink = Uplink(MqttConfig(url=mosquitto.url), SITE, handler, goodbye_timeout_s=0.3)
    started = asyncio.Event()
    task = asyncio.create_task(uplink.run(started.set), name="uplink")
    await started.wait()
    mosquitto.pause()
    try:
        began = loop.time()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # Saying "offline" and disconnecting each wait at most goodbye_timeout_s.
        assert loop.time() - began < 1.0
    finally:
        mosquitto.resume()


# --- retained state ---------------------------------------------------------------------------


async def test_retained_door_and_state_are_republished_after_a_broker_restart(
    mosquitto: Mosquitto, mqtt_collect: Collect
) -> None:
    async with running(mosquitto.url) as uplink:
        uplink.set_retained("door/A-101", {"door": "A-101", "locked": True, "room": "101 — Art"})
        uplink.set_retained("state/campus", {"state": "lockdown"})
        watcher = await mqtt_collect(f"{BASE}/#")
        door = await watcher.wait_for(on("door/A-101"))
        assert door.json()["room"] == "101 — Art"

        # The broker runs without persistence: after a crash it knows nothing until we tell it.
        await mosquitto.restart_async(hard=True)
        await watcher.wait_connected(2)
        again = await watcher.wait_for(lambda m: m.generation == 2 and on("door/A-101")(m))
        assert again.json()["locked"] is True
        await watcher.wait_for(lambda m: m.generation == 2 and on("state/campus")(m))
        await watcher.wait_for(lambda m: m.generation == 2 and m.text == "online")
        # The latest value wins, now and after the next reconnect.
        uplink.set_retained("door/A-101", {"door": "A-101", "locked": False})
        await watcher.wait_for(lambda m: on("door/A-101")(m) and m.json()["locked"] is False)
    fresh = await mqtt_collect(f"{BASE}/door/#")
    assert (await fresh.wait_for(on("door/A-101"))).json()["locked"] is False


async def test_snapshot_returns_the_retained_topics(mosquitto: Mosquitto) -> None:
    async with running(mosquitto.url) as uplink:
        uplink.set_retained("door/A-101", {"locked": True})
        uplink.set_retained("state/building/A", {"state": "secure"})
        await eventually(lambda: uplink.statistics()["retained_published"] == 2)
        found = await snapshot(MqttConfig(url=mosquitto.url), SITE, timeout_s=2.0)
    assert found == {
        "availability": "online",
        "door/A-101": {"locked": True},
        "state/building/A": {"state": "secure"},
    }


async def test_retained_topics_wait_while_doors_are_written_and_events_do_not(
    mosquitto: Mosquitto, mqtt_collect: Collect
) -> None:
    busy = True
    watcher = await mqtt_collect(f"{BASE}/#")
    async with running(mosquitto.url, busy=lambda: busy) as uplink:
        uplink.set_retained("door/A-101", {"locked": True})
        uplink.publish_event("alarm", {"n": 1}, life_safety=True)
        await watcher.wait_for(on("event/alarm"))
        await eventually(lambda: uplink.statistics()["retained_held"] == 1)
        assert watcher.on(f"{BASE}/door/A-101") == []
        # The doors confirmed: the topic goes out with the value it holds by then.
        uplink.set_retained("door/A-101", {"locked": False})
        busy = False
        door = await watcher.wait_for(on("door/A-101"))
        assert door.json() == {"locked": False}


async def test_retained_topics_go_out_after_a_quarter_second_though_doors_stay_busy(
    mosquitto: Mosquitto, mqtt_collect: Collect
) -> None:
    watcher = await mqtt_collect(f"{BASE}/#")
    async with running(mosquitto.url, busy=lambda: True) as uplink:
        loop = asyncio.get_running_loop()
        set_at = loop.time()
        for i in range(48):
            uplink.set_retained(f"door/D-{i}", {"locked": True})
        await watcher.wait_count(lambda m: m.topic.startswith(f"{BASE}/door/"), 48)
        # One hold of RETAINED_HOLD_S (0.25 s) for the round, shared by its 16 workers, then
        # every topic is sent although the doors are still busy: not a hold per topic.
        assert loop.time() - set_at >= 0.25
        assert uplink.statistics()["retained_held"] == 1


# --- events -----------------------------------------------------------------------------------


async def test_events_queued_while_the_broker_is_unreachable_arrive_in_order_life_safety_first(
    flaky_link: FlakyLink, mqtt_collect: Collect
) -> None:
    watcher = await mqtt_collect(f"{BASE}/event/#")
    async with running(flaky_link.url) as uplink:
        flaky_link.cut()
        await eventually(lambda: not uplink.connected)
        for i in range(3):
            uplink.publish_event("door", {"n": f"t{i}"}, life_safety=False)
            uplink.publish_event("alarm", {"n": f"a{i}"}, life_safety=True)
        assert uplink.statistics()["queued"] == 6
        flaky_link.restore()
        got = await watcher.wait_count(lambda m: True, 6)
        assert [m.json()["n"] for m in got] == ["a0", "a1", "a2", "t0", "t1", "t2"]
        assert all(m.qos == 1 for m in got)
        await eventually(lambda: uplink.statistics()["acked"] == 6)
        assert uplink.statistics()["queued"] == 0


async def test_events_survive_a_broker_crash_and_keep_their_payload(
    mosquitto: Mosquitto, mqtt_collect: Collect
) -> None:
    async with running(mosquitto.url) as uplink:
        await mosquitto.kill_async()
        await eventually(lambda: not uplink.connected)
        uplink.publish_event("alarm", {"id": "e-1", "note": "café"}, life_safety=True)
        await mosquitto.start_async()
        watcher = await mqtt_collect(f"{BASE}/event/#")
        # The uplink may have delivered before the watcher subscribed: the ack proves delivery.
        await eventually(lambda: uplink.statistics()["acked"] == 1)
        assert uplink.connected
    assert all(m.json() == {"id": "e-1", "note": "café"} for m in watcher.items)


def test_a_full_telemetry_queue_drops_its_oldest_and_life_safety_is_never_dropped() -> None:
    queue = MemoryQueue(telemetry_max=2, life_safety_max=1)
    for i in range(4):
        queue.put("event/door", str(i).encode(), life_safety=False)
    queue.put("event/alarm", b"fire", life_safety=True)
    with pytest.raises(PublishQueueFull):
        queue.put("event/alarm", b"second fire", life_safety=True)
    assert queue.statistics()["dropped_telemetry"] == 2

    async def drain() -> list[bytes]:
        return [(await queue.get()).payload for _ in range(3)]

    assert asyncio.run(drain()) == [b"fire", b"2", b"3"]
    # Unacked entries come back first, in order, after a lost connection.
    queue.rewind()
    assert len(queue) == 3
    assert asyncio.run(drain()) == [b"fire", b"2", b"3"]


# --- commands ---------------------------------------------------------------------------------


async def _send(
    broker: Mosquitto, payload: bytes, *, response_topic: str | None, correlation: bytes | None
) -> None:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if response_topic is not None:
        props.ResponseTopic = response_topic
    if correlation is not None:
        props.CorrelationData = correlation
    async with aiomqtt.Client(
        broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.publish(f"{BASE}/cmd", payload, qos=1, properties=props)


async def test_a_command_is_answered_on_its_response_topic_with_its_correlation_data(
    mosquitto: Mosquitto, mqtt_collect: Collect
) -> None:
    replies = await mqtt_collect("me/replies")
    async with running(mosquitto.url):
        await _send(
            mosquitto, command("c-1"), response_topic="me/replies", correlation=b"\x00req-7"
        )
        reply = await replies.wait_for(lambda m: True)
    assert reply.correlation_data == b"\x00req-7"
    assert reply.json() == {"id": "c-1", "ok": True, "error": None, "action": "lockdown"}


async def test_a_command_without_response_topic_is_answered_on_cmd_result(
    mosquitto: Mosquitto, mqtt_collect: Collect
) -> None:
    results = await mqtt_collect(f"{BASE}/cmd/result")
    async with running(mosquitto.url) as uplink:
        await _send(mosquitto, command("c-2"), response_topic=None, correlation=None)
        reply = await results.wait_for(lambda m: True)
        assert reply.json()["id"] == "c-2"
        assert uplink.statistics()["commands"] == 1


async def test_garbage_commands_get_error_replies_and_the_uplink_keeps_serving(
    mosquitto: Mosquitto, mqtt_collect: Collect
) -> None:
    results = await mqtt_collect(f"{BASE}/cmd/result")
    garbage = [b"\xff\xfe\x80 not utf-8", os.urandom(32 * 1024), b"", b"[1,2]"]
    async with running(mosquitto.url) as uplink:
        # Larger than the gateway's Maximum Packet Size: the broker never delivers it.
        await _send(mosquitto, os.urandom(1024 * 1024), response_topic=None, correlation=None)
        for payload in garbage:
            await _send(mosquitto, payload, response_topic=None, correlation=None)
        # A handler that raises becomes an "internal" reply, not a dead uplink.
        await _send(mosquitto, command("c-bug", **{"raise": True}), response_topic=None,
                    correlation=None)  # fmt: skip
        # A response topic with a wildcard is unusable: the reply falls back to cmd/result.
        await _send(mosquitto, b"{}", response_topic="bad/+/topic", correlation=b"x")
        errors = await results.wait_count(lambda m: m.json()["ok"] is False, len(garbage) + 2)
        codes = sorted(m.json()["error"] for m in errors)
        assert codes == ["bad_request"] * 4 + ["internal", "too_large"]
        internal = next(m.json() for m in errors if m.json()["error"] == "internal")
        assert internal["id"] is None and "handler bug" in internal["message"]
        await _send(mosquitto, command("c-ok"), response_topic=None, correlation=None)
        await results.wait_for(lambda m: m.json()["id"] == "c-ok")
        assert uplink.connected
        assert uplink.statistics()["command_errors"] == 1
        assert uplink.statistics()["commands"] == len(garbage) + 3


async def test_a_slow_command_does_not_delay_the_next_one(
    mosquitto: Mosquitto, mqtt_collect: Collect
) -> None:
    results = await mqtt_collect(f"{BASE}/cmd/result")
    async with running(mosquitto.url):
        await _send(mosquitto, command("slow", sleep_s=1.0), response_topic=None, correlation=None)
        await _send(mosquitto, command("fast"), response_topic=None, correlation=None)
        first = await results.wait_for(lambda m: True, timeout_s=0.8)
        assert first.json()["id"] == "fast"
        await results.wait_for(lambda m: m.json()["id"] == "slow")


async def test_request_round_trip(mosquitto: Mosquitto) -> None:
    config = MqttConfig(url=mosquitto.url)
    async with running(mosquitto.url):
        body = {"id": "r-1", "ts": 1_795_945_323, "actor": "cli", "action": "release",
                "scope": "campus"}  # fmt: skip
        reply = await request(config, SITE, body, timeout_s=3.0)
    assert reply == {"id": "r-1", "ok": True, "error": None, "action": "release"}


async def test_request_fails_clearly_without_broker_or_without_gateway(
    mosquitto: Mosquitto,
) -> None:
    with pytest.raises(BrokerUnreachable):
        await request(MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}"), SITE, {}, timeout_s=1.0)
    with pytest.raises(NoReply, match="no reply"):
        await request(MqttConfig(url=mosquitto.url), f"nobody-{uuid.uuid4().hex[:6]}", {}, 0.3)


async def test_run_reports_started_once_even_when_the_broker_is_unreachable() -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    calls: list[float] = []
    uplink = Uplink(MqttConfig(url=url), SITE, handler, backoff=FAST)
    task = asyncio.create_task(uplink.run(lambda: calls.append(0.0)), name="uplink")
    try:
        await eventually(lambda: int(uplink.statistics()["connect_failures"]) >= 3)
        assert calls == [0.0]
        assert not uplink.connected
        uplink.publish_event("alarm", {"n": 1}, life_safety=True)
        assert uplink.statistics()["queued"] == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
