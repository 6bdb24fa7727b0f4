"""A flood on ``cmd`` never stands between a signed lockdown and the doors."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiomqtt

from gatewayd.security.keys import demo_private_key
from gatewayd.security.signing import signed
from gatewayd.uplink.admission import (
    OTHER_LANE,
    TRUSTED_LANE,
    Admission,
    Incoming,
    looks_signed,
)
from tests.support.gateway import Site
from tests.support.waiting import eventually

ACTORS = frozenset({"demo-operator"})


def incoming(payload: bytes) -> Incoming:
    return Incoming(payload, time.monotonic_ns(), None)


def lockdown_body(site: Site, scope: str = "building/A") -> bytes:
    body = {"id": uuid.uuid4().hex, "ts": time.time(), "actor": "demo-operator",
            "action": "lockdown", "scope": scope}  # fmt: skip
    key = demo_private_key("demo-operator")
    return json.dumps(signed(body, key, site=site.config.site.id)).encode()


def test_a_command_that_looks_signed_goes_first_and_garbage_is_bounded() -> None:
    sig = "A" * 86 + "=="
    good = json.dumps({"actor": "demo-operator", "sig": sig}).encode()
    lanes = Admission(lambda p: looks_signed(p, ACTORS, 16 * 1024))
    for i in range(OTHER_LANE + 10):
        lanes.offer(incoming(str(i).encode()))
    lanes.offer(incoming(good))
    assert lanes.stats["dropped_other"] == 10  # the oldest garbage gave way
    first = asyncio.run(lanes.take())
    assert first.payload == good and first.trusted
    assert len(lanes) == OTHER_LANE


async def test_every_message_kept_after_overflow_is_taken_once_trusted_first() -> None:
    lanes = Admission(lambda p: p.startswith(b"s"))
    for i in range(OTHER_LANE + 5):
        lanes.offer(incoming(b"g%d" % i))
    for i in range(TRUSTED_LANE + 3):
        lanes.offer(incoming(b"s%d" % i))
    taken = [await lanes.take() for _ in range(OTHER_LANE + TRUSTED_LANE)]
    assert [m.payload for m in taken[:TRUSTED_LANE]] == [
        b"s%d" % i for i in range(3, TRUSTED_LANE + 3)
    ]
    assert [m.payload for m in taken[TRUSTED_LANE:]] == [
        b"g%d" % i for i in range(5, OTHER_LANE + 5)
    ]
    assert len(lanes) == 0
    lanes.offer(incoming(b"s-late"))
    assert (await lanes.take()).payload == b"s-late"


def test_unknown_actors_and_missing_signatures_are_not_trusted() -> None:
    sig = "A" * 86 + "=="
    assert not looks_signed(json.dumps({"actor": "mallory", "sig": sig}).encode(), ACTORS, 9999)
    assert not looks_signed(json.dumps({"actor": "demo-operator"}).encode(), ACTORS, 9999)
    big = json.dumps({"actor": "demo-operator", "sig": sig, "pad": "x" * 20000}).encode()
    assert not looks_signed(big, ACTORS, 16 * 1024)


def test_replies_to_refused_garbage_are_rate_limited_and_others_never_are() -> None:
    lanes = Admission(lambda p: p == b"signed")
    garbage, trusted = incoming(b"x"), incoming(b"signed")
    trusted.trusted = True
    allowed = sum(lanes.may_reply(garbage, refused=True) for _ in range(1000))
    assert allowed <= 21
    assert all(lanes.may_reply(trusted, refused=True) for _ in range(100))
    assert lanes.stats["replies_suppressed"] >= 979


async def test_a_signed_lockdown_confirms_during_a_flood_of_garbage(site: Site) -> None:
    gateway = site.gateway
    assert gateway is not None
    seq_before = gateway.journal.stats["records"]
    cmd = f"{site.config.mqtt.prefix}/{site.config.site.id}/cmd"
    async with aiomqtt.Client(site.config.mqtt.host, site.config.mqtt.port,
                              protocol=aiomqtt.ProtocolVersion.V5) as flood:  # fmt: skip
        for i in range(3000):
            await flood.publish(cmd, f"garbage {i}".encode(), qos=0)
        # Sent behind 3,000 messages: it is still well inside its timestamp window.
        reply = await site.send_raw(lockdown_body(site))
        for i in range(3000):
            await flood.publish(cmd, b"\x00" * (i % 64), qos=0)
    assert reply["ok"] is True, reply
    assert all(site.coil(d.id) for d in site.config.doors
               if d.building == "A" and d.kind == "classroom")  # fmt: skip
    stats = gateway.uplink.admission.statistics()
    assert stats["queued"] <= OTHER_LANE + 256
    # Garbage is counted, not recorded one by one: a few records, not thousands.
    gateway.guard.flush_refusals()
    await eventually(lambda: gateway.journal.stats["records"] > seq_before)
    assert gateway.journal.stats["records"] - seq_before < 50


async def test_a_retained_command_is_never_carried_out(site: Site) -> None:
    cmd = f"{site.config.mqtt.prefix}/{site.config.site.id}/cmd"
    before = {d.id: site.coil(d.id) for d in site.config.doors}
    await site.stop_gateway()
    # Planted while the gateway is away: the broker hands it over at every subscription.
    async with aiomqtt.Client(site.config.mqtt.host, site.config.mqtt.port,
                              protocol=aiomqtt.ProtocolVersion.V5) as planter:  # fmt: skip
        await planter.publish(cmd, lockdown_body(site, "campus"), qos=1, retain=True)
    try:
        gateway = await site.start_gateway()
        await eventually(lambda: int(gateway.uplink.statistics()["retained_commands_ignored"]) >= 1)
        assert {d.id: site.coil(d.id) for d in site.config.doors} == before
        assert gateway.engine.get("srp:campus") is None
    finally:
        async with aiomqtt.Client(site.config.mqtt.host, site.config.mqtt.port,
                                  protocol=aiomqtt.ProtocolVersion.V5) as cleaner:  # fmt: skip
            await cleaner.publish(cmd, b"", qos=1, retain=True)
