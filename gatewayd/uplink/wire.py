"""What both ends of the MQTT link share: payload encoding, topic checks, errors, aiomqtt quirks."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from typing import Any, TypeGuard

import aiomqtt

from gatewayd.kernel.errors import ErrorCode, GatewayError


class UplinkError(GatewayError):
    """The MQTT uplink or a client request failed."""

    code: str = ErrorCode.MQTT_ERROR


class BrokerUnreachable(UplinkError):
    code: str = ErrorCode.BROKER_UNREACHABLE


class NoReply(UplinkError):
    code: str = ErrorCode.NO_REPLY


def encode(payload: Mapping[str, Any] | str) -> bytes:
    """JSON, compact, UTF-8; a plain string (``online``) is sent as its bytes."""
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def check_suffix(suffix: str) -> None:
    if not suffix or any(c in suffix for c in "+#\0") or suffix.startswith("/"):
        raise ValueError(f"not a valid topic suffix: {suffix!r}")


def first_leaf(group: BaseExceptionGroup[aiomqtt.MqttError]) -> aiomqtt.MqttError:
    first = group.exceptions[0]
    return first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def valid_topic(topic: object) -> TypeGuard[str]:
    return (
        isinstance(topic, str)
        and 0 < len(topic.encode("utf-8")) < 65_536
        and not any(c in topic for c in "+#\0")
    )


def set_nodelay(client: aiomqtt.Client) -> bool:
    """Turn Nagle off on a connected client's socket; True if it is off now.

    Neither paho nor aiomqtt does it, so a reply that follows a few small packets waits ~40 ms
    on loopback for the broker's delayed ACK. aiomqtt exposes no socket: paho's is reached
    through its ``_client`` (paho's ``socket()``), once ``async with client`` has connected.
    """
    sock = client._client.socket()
    if not isinstance(sock, socket.socket) or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return True
