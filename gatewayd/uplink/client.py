"""The client side of the contract: one command and its reply, and a snapshot of the retained
topics (what the CLI's ``lockdown`` and ``status`` use)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gatewayd.security.tls import ssl_context
from gatewayd.uplink import protocol
from gatewayd.uplink.config import MqttConfig
from gatewayd.uplink.wire import BrokerUnreachable, NoReply, UplinkError, encode, set_nodelay


def _client_for(config: MqttConfig, timeout_s: float) -> aiomqtt.Client:
    return aiomqtt.Client(
        config.host,
        config.port,
        username=config.username,
        password=config.password,
        identifier=f"gatewayd-cli-{uuid.uuid4().hex[:12]}",
        protocol=protocol.version(config),
        timeout=timeout_s,
        tls_context=ssl_context(config.tls) if config.tls_enabled else None,
    )


async def request(
    config: MqttConfig, site: str, body: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """Send one command to a gateway and return its reply.

    MQTT 5: request/response with a private reply topic. 3.1.1: the reply is the message on
    ``cmd/result`` that echoes the command's ``id``.
    """
    base = f"{config.prefix}/{site}"
    correlation = uuid.uuid4().hex
    correlation_data = correlation.encode("ascii")
    props: Properties | None = None
    if config.protocol == "5":
        reply_topic = f"{base}/cmd/reply/{correlation}"
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = reply_topic
        props.CorrelationData = correlation_data
        props.ContentType = "application/json"
    else:
        reply_topic = f"{base}/cmd/result"
    connected = False
    try:
        async with asyncio.timeout(timeout_s), _client_for(config, timeout_s) as client:
            connected = True
            set_nodelay(client)
            await protocol.subscribe(client, config, reply_topic)
            await client.publish(f"{base}/cmd", encode(body), 1, False, props)
            async for message in client.messages:
                if props is not None:
                    if getattr(message.properties, "CorrelationData", None) == correlation_data:
                        return _decode_reply(message.payload)
                    continue
                # cmd/result is shared: anyone's reply, or junk, may pass by first.
                with contextlib.suppress(UplinkError):
                    reply = _decode_reply(message.payload)
                    if reply.get("id") == body.get("id"):
                        return reply
    except TimeoutError as exc:
        if not connected:
            raise BrokerUnreachable(f"no connection to {config.url} within {timeout_s} s") from exc
        raise NoReply(
            f"no reply from {site!r} on {config.url} within {timeout_s} s (is the gateway"
            " online, and is this its broker? --mqtt URL names another)"
        ) from exc
    except aiomqtt.MqttError as exc:
        raise _unreachable(config, exc) from exc
    raise BrokerUnreachable(f"connection to {config.url} closed before the reply")


def _unreachable(config: MqttConfig, exc: aiomqtt.MqttError) -> UplinkError:
    if isinstance(exc, protocol.SubscriptionRefused):
        return UplinkError(str(exc).replace("this gateway", "this client"))
    problem = protocol.refused_protocol(config, exc)
    return BrokerUnreachable(problem or f"cannot reach {config.url}: {exc}")


def _decode_reply(payload: Any) -> dict[str, Any]:
    try:
        reply = json.loads(payload)
    except (TypeError, ValueError) as exc:
        raise UplinkError(f"reply is not JSON: {exc}") from exc
    if not isinstance(reply, dict):
        raise UplinkError("reply is not a JSON object")
    return reply


async def snapshot(config: MqttConfig, site: str, timeout_s: float) -> dict[str, Any]:
    """The retained topics of one gateway (suffix -> JSON value, or text such as ``online``).

    Retained messages arrive right after the subscription; collection ends when none has
    arrived for a short quiet period, or at ``timeout_s``.
    """
    base = f"{config.prefix}/{site}"
    quiet_s = min(0.25, timeout_s / 4)
    found: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout_s), _client_for(config, timeout_s) as client:
            await protocol.subscribe(client, config, f"{base}/#")
            messages = client.messages
            while True:
                try:
                    async with asyncio.timeout(quiet_s):
                        message = await anext(messages)
                except TimeoutError:
                    break
                if message.retain and isinstance(message.payload, bytes):
                    found[message.topic.value.removeprefix(base + "/")] = _decode_value(
                        message.payload
                    )
    except TimeoutError as exc:
        if not found:
            raise BrokerUnreachable(f"no connection to {config.url} within {timeout_s} s") from exc
    except aiomqtt.MqttError as exc:
        raise _unreachable(config, exc) from exc
    return found


def _decode_value(payload: bytes) -> Any:
    with contextlib.suppress(ValueError):
        return json.loads(payload)
    return payload.decode("utf-8", errors="replace")
