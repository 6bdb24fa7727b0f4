"""Broker TLS: only a gateway with the right CA and a valid client certificate gets in, and
then only under its own site prefix."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiomqtt
import pytest

from gatewayd.security.tls import TlsConfig, TlsError, ssl_context
from tests.support.tls import Issued, TlsWorld
from tests.support.waiting import eventually


def client(
    world: TlsWorld, cfg: TlsConfig, host: str = "127.0.0.1", timeout_s: float = 3.0
) -> aiomqtt.Client:
    return aiomqtt.Client(
        host,
        world.broker.port,
        tls_context=ssl_context(cfg),
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=timeout_s,
    )


def tls(
    world: TlsWorld, who: Issued | None, *, ca: Path | None = None, **extra: object
) -> TlsConfig:
    return TlsConfig.model_validate(
        {
            "ca_file": str(ca or world.ca.ca_file),
            "cert_file": str(who.cert) if who else None,
            "key_file": str(who.key) if who else None,
            **extra,
        }
    )


async def connects(
    world: TlsWorld, cfg: TlsConfig, host: str = "127.0.0.1", timeout_s: float = 3.0
) -> bool:
    try:
        async with client(world, cfg, host, timeout_s) as c:
            # The broker checks the certificate in the handshake, but may only close the
            # connection afterwards: a round trip proves the session is really up.
            await c.subscribe("gatewayd/site-a/cmd", qos=1)
    except aiomqtt.MqttError:
        return False
    return True


async def test_gateway_with_the_right_ca_and_client_certificate_connects(
    tls_broker: TlsWorld,
) -> None:
    assert await connects(tls_broker, tls(tls_broker, tls_broker.gateway))


async def test_broker_signed_by_another_ca_is_refused_by_the_gateway(
    tls_broker: TlsWorld,
) -> None:
    cfg = tls(tls_broker, tls_broker.gateway, ca=tls_broker.other_ca.ca_file)
    assert not await connects(tls_broker, cfg)


def _bad_certificate(world: TlsWorld, kind: str) -> Issued | None:
    if kind == "other_ca":
        return world.other_ca.issue("site-a")
    if kind == "none":
        return None
    return world.ca.issue("site-a", expired=kind == "expired", self_signed=kind == "self_signed")


async def broker_logged(world: TlsWorld, offset: int, text: str) -> None:
    """Wait until the broker has logged ``text`` after byte ``offset`` of its log."""

    def logged() -> bool:
        with world.broker.log_path.open("rb") as log:
            log.seek(offset)
            return text.encode() in log.read()

    await eventually(logged, timeout_s=2, message=f"broker log line {text!r}")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("other_ca", "certificate verify failed"),
        ("expired", "certificate verify failed"),
        ("self_signed", "certificate verify failed"),
        ("none", "peer did not return a certificate"),
    ],
)
async def test_broker_refuses_a_bad_client_certificate(
    tls_broker: TlsWorld, kind: str, reason: str
) -> None:
    who = _bad_certificate(tls_broker, kind)
    offset = tls_broker.broker.log_path.stat().st_size
    # With TLS 1.3 the client learns of the refusal only from an alert after its handshake,
    # which paho does not surface: it waits for a CONNACK. A short timeout keeps this fast,
    # and the broker's log proves the refusal was the certificate, not the clock.
    assert not await connects(tls_broker, tls(tls_broker, who), timeout_s=1.0)
    await broker_logged(tls_broker, offset, reason)


async def test_server_hostname_names_the_certificate_when_the_url_is_an_address(
    tls_broker: TlsWorld,
) -> None:
    good = tls(tls_broker, tls_broker.gateway, server_hostname="broker.test")
    wrong = tls(tls_broker, tls_broker.gateway, server_hostname="not-the-broker.test")
    assert await connects(tls_broker, good)
    assert not await connects(tls_broker, wrong)


async def test_gateway_may_publish_only_under_its_own_site(tls_broker: TlsWorld) -> None:
    seen: list[str] = []
    async with client(tls_broker, tls(tls_broker, tls_broker.ops)) as ops:
        await ops.subscribe("gatewayd/#", qos=1)
        async with client(tls_broker, tls(tls_broker, tls_broker.gateway)) as gateway:
            await gateway.publish("gatewayd/site-b/state/campus", b"forged", qos=1)
            await gateway.publish("elsewhere/x", b"forged", qos=1)
            await gateway.publish("gatewayd/site-a/state/campus", b"ours", qos=1)
        async with asyncio.timeout(3):
            async for message in ops.messages:
                seen.append(message.topic.value)
                if message.topic.value == "gatewayd/site-a/state/campus":
                    break
    # Messages from one client arrive in order: had the forged one passed, it came first.
    assert seen == ["gatewayd/site-a/state/campus"]


async def test_another_certificate_cannot_take_the_gateways_client_id(
    tls_broker: TlsWorld,
) -> None:
    gateway_cfg, ops_cfg = tls(tls_broker, tls_broker.gateway), tls(tls_broker, tls_broker.ops)
    seen: list[bytes] = []
    async with aiomqtt.Client(
        "127.0.0.1", tls_broker.broker.port, identifier="gatewayd-site-a",
        tls_context=ssl_context(gateway_cfg), protocol=aiomqtt.ProtocolVersion.V5,
    ) as gateway:  # fmt: skip
        await gateway.subscribe("gatewayd/site-a/cmd", qos=1)
        # Another holder of a valid certificate asks for the gateway's id: the broker names
        # its session after its own certificate, so the gateway's session is not touched.
        async with aiomqtt.Client(
            "127.0.0.1", tls_broker.broker.port, identifier="gatewayd-site-a",
            tls_context=ssl_context(ops_cfg), protocol=aiomqtt.ProtocolVersion.V5,
        ) as thief:  # fmt: skip
            await thief.publish("gatewayd/site-a/cmd", b"still here?", qos=1)
        async with asyncio.timeout(3):
            async for message in gateway.messages:
                assert isinstance(message.payload, bytes)
                seen.append(message.payload)
                break
    assert seen == [b"still here?"]


def test_context_requires_tls_1_2_and_verifies_by_default(tls_broker: TlsWorld) -> None:
    ctx = ssl_context(tls(tls_broker, tls_broker.gateway))
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname


def test_missing_tls_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="not found"):
        ssl_context(TlsConfig(ca_file=str(tmp_path / "nope.crt")))
