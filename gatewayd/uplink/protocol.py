"""What differs between MQTT 5 and 3.1.1 on the uplink, and the broker's refusals made plain.

MQTT 3.1.1 (``[mqtt] protocol = "3.1.1"``) is for brokers that speak nothing newer: NATS,
RabbitMQ 3.10, a Mosquitto bridge's far side. It has no response topics, correlation data,
session expiry or subscription options: replies go to ``<prefix>/<site>/cmd/result`` and are
matched by the command's ``id``; the session is kept with ``clean_session = false``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gatewayd.uplink.config import MqttConfig

Protocol = Literal["5", "3.1.1"]
#: CONNACK "Unsupported protocol version" (MQTT 5), and its 3.1.1 spelling (return code 1).
UNSUPPORTED_PROTOCOL_V5 = 0x84
UNSUPPORTED_PROTOCOL_V311 = 0x01
#: SUBACK reason codes from here on are refusals (both versions).
SUBACK_REFUSED = 0x80


class SubscriptionRefused(aiomqtt.MqttError):
    """The broker answered a SUBSCRIBE with a failure code: no commands would ever arrive."""


def version(config: MqttConfig) -> aiomqtt.ProtocolVersion:
    return aiomqtt.ProtocolVersion.V5 if config.protocol == "5" else aiomqtt.ProtocolVersion.V311


def session_options(config: MqttConfig, *, persistent: bool) -> dict[str, Any]:
    """aiomqtt keyword arguments for a persistent (or clean) session in this protocol."""
    if config.protocol == "5":
        return {"clean_start": not persistent}
    return {"clean_session": not persistent}


def reason_code(exc: BaseException) -> int | None:
    """The MQTT reason (or 3.1.1 return) code a broker gave with an error, if it gave one."""
    rc = getattr(exc, "rc", None)
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else None


def refused_protocol(config: MqttConfig, exc: BaseException) -> str | None:
    """The one clear sentence for a broker that refuses our protocol version, else None."""
    code = reason_code(exc)
    if config.protocol == "5" and code == UNSUPPORTED_PROTOCOL_V5:
        return (
            f"the broker at {config.url} refuses MQTT 5 (CONNACK 0x84, unsupported protocol"
            ' version): set protocol = "3.1.1" in [mqtt] of the campus file'
        )
    if config.protocol == "3.1.1" and code == UNSUPPORTED_PROTOCOL_V311:
        return (
            f"the broker at {config.url} refuses MQTT 3.1.1 (CONNACK 1, unacceptable protocol"
            ' version): set protocol = "5" in [mqtt] of the campus file'
        )
    return None


def check_granted(topic: str, granted: Sequence[int | ReasonCode] | None) -> None:
    """Raise :class:`SubscriptionRefused`, naming ``topic``, if the SUBACK refused it."""
    for code in granted or ():
        value = code.value if isinstance(code, ReasonCode) else int(code)
        if value >= SUBACK_REFUSED:
            name = code.getName() if isinstance(code, ReasonCode) else "failure"
            raise SubscriptionRefused(
                f"the broker refused the subscription to {topic} (SUBACK 0x{value:02X}, {name}):"
                " no command would reach this gateway; check the broker's ACL and health"
            )


async def subscribe(
    client: aiomqtt.Client, config: MqttConfig, topic: str, *, keep_retain_flag: bool = False
) -> None:
    """Subscribe at QoS 1; a refused SUBACK raises :class:`SubscriptionRefused`.

    ``keep_retain_flag`` (MQTT 5 only): deliver the retain flag as published and skip the
    retained copy at subscription, so that a command planted as retained can be ignored.
    3.1.1 has no such options: its retained copy arrives with the flag set, and is ignored
    the same way.
    """
    if config.protocol == "5" and keep_retain_flag:
        options = SubscribeOptions(qos=1, retainAsPublished=True,
                                   retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)  # fmt: skip
        granted = await client.subscribe(topic, options=options)
    else:
        granted = await client.subscribe(topic, qos=1)
    check_granted(topic, granted)
