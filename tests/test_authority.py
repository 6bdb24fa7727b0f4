"""Who may undo a lockdown: de-escalation needs release rights, whatever action carries it.

The role table says which actions an actor may send; these tests are about what an action
*does*: an operator may trigger every SRP state, but may not use one (or a door-scoped
evacuate) to unlock doors a lockdown holds. Over the real broker and the demo campus's
simulated boards; the property at the end drives the gateway's command entry point directly.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gatewayd.kernel.site import DoorKind
from gatewayd.rules.actions import ExternalAction
from gatewayd.rules.arbitration import Priority
from gatewayd.rules.rulefile import parse_rules
from gatewayd.security.audit import read_records
from gatewayd.security.keys import demo_private_key
from gatewayd.security.signing import sign, signed
from tests.support.gateway import Site, actor_key
from tests.support.mqtt import Collector
from tests.support.waiting import eventually

OPERATOR, ADMIN = "front-office", "principal"
CLASSROOMS_A = [f"A-{n}" for n in (101, 102, 112, 201, 212)]


def kinds(site: Site, building: str, kind: DoorKind) -> list[str]:
    return [d.id for d in site.config.doors if d.building == building and d.kind is kind]


def lockdown_held(site: Site) -> set[str]:
    """Doors the lockdown family holds locked right now, as the gateway decides them."""
    assert site.gateway is not None
    engine = site.gateway.engine
    decided = engine.decide_all(d.id for d in site.config.doors)
    return {
        door
        for door, decision in decided.items()
        if decision.locked and decision.claim and decision.claim.priority is Priority.LOCKDOWN
    }


async def as_(site: Site, actor: str, action: str, **fields: Any) -> dict[str, Any]:
    return await site.command_as(actor, actor_key(actor), action, **fields)


async def test_an_operator_cannot_undo_a_lockdown_with_a_weaker_state(site: Site) -> None:
    assert (await as_(site, OPERATOR, "lockdown", scope="campus"))["ok"] is True
    held = lockdown_held(site)
    assert set(CLASSROOMS_A) <= held
    reply = await as_(site, OPERATOR, "secure", scope="campus")
    assert reply["error"] == "forbidden", reply
    assert "release rights" in reply["message"]
    assert all(site.coil(d) for d in CLASSROOMS_A), "no classroom unlocked"
    assert lockdown_held(site) == held
    assert site.gateway is not None
    assert site.gateway.scope_state(site.gateway.campus.all_scopes()[0])["state"] == "lockdown"
    # Someone with release rights may step the campus down.
    reply = await as_(site, ADMIN, "secure", scope="campus")
    assert reply["ok"] is True, reply
    assert not any(site.coil(d) for d in CLASSROOMS_A)


async def test_a_door_scoped_evacuate_is_an_unlock_and_needs_release_rights(site: Site) -> None:
    assert (await as_(site, OPERATOR, "lockdown", scope="campus"))["ok"] is True
    reply = await as_(site, OPERATOR, "evacuate", scope="door/A-119")
    assert reply["error"] == "forbidden", reply
    assert site.coil("A-119") is True, "the egress door stays locked"


async def test_a_building_evacuation_stays_fast_for_staff_and_is_audited_as_such(
    site: Site,
) -> None:
    assert (await as_(site, OPERATOR, "lockdown", scope="campus"))["ok"] is True
    reply = await as_(site, OPERATOR, "evacuate", scope="building/A")
    assert reply["ok"] is True, reply
    assert not any(site.coil(d) for d in kinds(site, "A", DoorKind.EGRESS))
    assert reply["recorded"] is True
    assert site.gateway is not None
    records = [r for r in read_records(site.gateway.journal.audit_path) if r["kind"] == "state"]
    last = records[-1]["data"]
    # From the building's own state (none) while the campus holds a lockdown: on the record.
    assert last["state"] == "evacuate" and last["scope"] == "building/A"
    assert records[-1]["actor"] == OPERATOR


async def test_a_wider_new_state_clears_a_narrower_weaker_one(site: Site) -> None:
    # The principal lets people out of one door; a new campus lockdown means every door again.
    assert (await as_(site, ADMIN, "evacuate", scope="door/A-119"))["ok"] is True
    assert site.coil("A-119") is False
    reply = await as_(site, OPERATOR, "lockdown", scope="campus")
    assert reply["ok"] is True, reply
    assert site.coil("A-119") is True
    assert site.gateway is not None
    assert site.gateway.engine.get("srp:door/A-119") is None


async def test_two_person_rule_covers_every_campus_de_escalation(site: Site) -> None:
    assert site.gateway is not None
    security = site.gateway.guard.authorizer.security
    site.gateway.guard.authorizer.security = security.model_copy(
        update={"require_two_person_campus_release": True}
    )
    assert (await as_(site, OPERATOR, "lockdown", scope="campus"))["ok"] is True
    reply = await as_(site, ADMIN, "secure", scope="campus")
    assert reply["error"] == "cosign_required", reply
    assert all(site.coil(d) for d in CLASSROOMS_A)
    # With a second administrator's co-signature it goes ahead.
    second = "demo-administrator"
    params: dict[str, Any] = {"cosigner": second}
    body = {"id": uuid.uuid4().hex, "ts": time.time(), "actor": ADMIN, "action": "secure",
            "scope": "campus", "params": params}  # fmt: skip
    params["cosig"] = sign(body, demo_private_key(second), site=site.config.site.id)
    reply = await site.send(signed(body, actor_key(ADMIN), site=site.config.site.id))
    assert reply["ok"] is True, reply
    assert not any(site.coil(d) for d in CLASSROOMS_A)


async def test_a_scope_in_another_spelling_is_refused_not_reinterpreted(site: Site) -> None:
    assert (await as_(site, OPERATOR, "lockdown", scope="campus"))["ok"] is True
    for spelling in ("campus/", "building/A/", "Campus", "building/ A"):
        reply = await as_(site, ADMIN, "release", scope=spelling)
        assert reply["error"] == "bad_scope", (spelling, reply)
    assert all(site.coil(d) for d in CLASSROOMS_A)


async def test_replies_never_go_onto_the_gateways_own_topics(
    site: Site, mqtt_collect: Callable[[str], Awaitable[Collector]]
) -> None:
    mqtt = site.config.mqtt
    base = f"{mqtt.prefix}/{site.config.site.id}"
    site_id = site.config.site.id

    def status(n: int) -> bytes:
        body = {"id": f"{uuid.uuid4().hex}-{n}", "ts": time.time(), "actor": OPERATOR,
                "action": "status"}  # fmt: skip
        return json.dumps(signed(body, actor_key(OPERATOR), site=site_id)).encode()

    targets = [f"{base}/availability", f"{base}/state/campus", f"{mqtt.prefix}/other-school/cmd"]
    seen = await mqtt_collect(f"{mqtt.prefix}/#")
    async with (
        aiomqtt.Client(mqtt.host, mqtt.port, protocol=aiomqtt.ProtocolVersion.V5) as client,
    ):
        for n, target in enumerate(targets):
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = target
            props.CorrelationData = str(n).encode()
            await client.publish(f"{base}/cmd", status(n), 1, False, props)
        # Each reply goes to cmd/result instead; once all three are there, none went elsewhere.
        await seen.wait_count(lambda m: m.topic == f"{base}/cmd/result", len(targets))
    # The gateway's own state and availability are there too; a reply is what carries an id.
    stray = [m for m in seen.items if m.topic in targets and b'"action":"status"' in m.payload]
    assert not stray, [m.topic for m in stray]
    assert site.gateway is not None
    assert site.gateway.uplink.statistics()["response_topics_refused"] == len(targets)


# --- the property ----------------------------------------------------------------------------

SCOPES = ["campus", "building/A", "building/B", "zone/A1", "door/A-119", "door/A-101"]
STATES = ["hold", "secure", "lockdown", "evacuate", "shelter"]
step = st.tuples(st.sampled_from([OPERATOR, ADMIN]), st.sampled_from([*STATES, "release"]),
                 st.sampled_from(SCOPES))  # fmt: skip


async def _reset(site: Site) -> None:
    """Back to normal: the principal releases every state and door source still active."""
    assert site.gateway is not None
    for key, source in sorted(
        site.gateway.engine.sources.items(), key=lambda kv: -kv[1].scope.rank
    ):
        if site.gateway.engine.get(key) is not None:
            await _send(site, ADMIN, "release", str(source.scope))
    assert not site.gateway.engine.sources


async def _send(site: Site, actor: str, action: str, scope: str) -> dict[str, Any]:
    assert site.gateway is not None
    fields: dict[str, Any] = {"scope": scope}
    if action == "shelter":
        fields["params"] = {"hazard": "tornado"}
    body = signed({"id": uuid.uuid4().hex, "ts": time.time(), "actor": actor, "action": action,
                   **fields}, actor_key(actor), site=site.config.site.id)  # fmt: skip
    return await site.gateway.handle_command(json.dumps(body).encode())


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=5))
async def test_no_actor_without_release_rights_ever_unlocks_what_a_lockdown_holds(
    site: Site, steps: list[tuple[str, str, str]]
) -> None:
    await _reset(site)
    await _send(site, OPERATOR, "lockdown", "campus")
    for actor, action, scope in steps:
        before = lockdown_held(site)
        reply = await _send(site, actor, action, scope)
        after = lockdown_held(site)
        evacuation = action == "evacuate" and not scope.startswith("door/")
        if actor == OPERATOR and not evacuation:
            assert before <= after, (actor, action, scope, reply, sorted(before - after)[:5])


# --- what reaches the PSAP ---------------------------------------------------------------------

PANIC_RULES = {
    "rule": [
        {
            "id": "panic-app",
            "when": {"kind": "alarm", "source": "panic_app"},
            "do": [{"action": "radio_alert", "text": "Panic {location.building} {location.room}"}],
        }
    ]
}


class Radio:
    def __init__(self) -> None:
        self.seen: list[ExternalAction] = []

    async def dispatch(self, action: ExternalAction) -> None:
        self.seen.append(action)


async def test_a_panic_app_location_outside_the_scope_never_reaches_the_radio(site: Site) -> None:
    radio = Radio()
    await site.stop_gateway()
    await site.start_gateway(sink=radio, rules=parse_rules(PANIC_RULES))
    lie = {"building": "C", "room": "GYM - DRILL ONLY, NO RESPONSE NEEDED"}
    reply = await as_(site, OPERATOR, "lockdown", scope="building/A",
                      params={"source": "panic_app", "location": lie})  # fmt: skip
    assert reply["ok"] is True, reply
    assert all(site.coil(d) for d in CLASSROOMS_A), "the lockdown itself goes ahead"
    await eventually(lambda: bool(radio.seen))
    assert radio.seen[0].text.strip() == "Panic A"
    # A true location is passed on as the campus file writes it.
    reply = await as_(site, OPERATOR, "lockdown", scope="building/A",
                      params={"source": "panic_app", "location": {"room": "A101"}})  # fmt: skip
    await eventually(lambda: len(radio.seen) >= 2)
    assert radio.seen[1].text == "Panic A A101"


# --- the broker session ------------------------------------------------------------------------


async def test_a_lockdown_sent_while_the_gateway_reconnects_waits_for_it(site: Site) -> None:
    mqtt, site_id = site.config.mqtt, site.config.site.id
    await site.stop_gateway()
    body = {"id": uuid.uuid4().hex, "ts": time.time(), "actor": OPERATOR, "action": "lockdown",
            "scope": "building/A"}  # fmt: skip
    async with aiomqtt.Client(mqtt.host, mqtt.port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        payload = json.dumps(signed(body, actor_key(OPERATOR), site=site_id)).encode()
        await c.publish(f"{mqtt.prefix}/{site_id}/cmd", payload, qos=1)
    await site.start_gateway()
    await eventually(lambda: all(site.coil(d) for d in CLASSROOMS_A), timeout_s=10)


async def test_a_client_taking_the_gateways_id_raises_an_alarm(
    site: Site, mqtt_collect: Callable[[str], Awaitable[Collector]]
) -> None:
    assert site.gateway is not None
    mqtt, uplink = site.config.mqtt, site.gateway.uplink
    events = await mqtt_collect(f"{mqtt.prefix}/{site.config.site.id}/event/alarm")
    # Mosquitto 2.0 closes the old connection without saying why: someone fighting for the
    # id (the gateway takes it back each time) is what the gateway can see.
    for _ in range(4):
        async with aiomqtt.Client(mqtt.host, mqtt.port, identifier=uplink.identifier,
                                  protocol=aiomqtt.ProtocolVersion.V5):  # fmt: skip
            await eventually(lambda: not uplink.connected)
        await eventually(lambda: uplink.connected)
    alarm = await events.wait_for(lambda m: b"mqtt_takeover" in m.payload, timeout_s=10)
    assert json.loads(alarm.payload)["data"]["client_id"] == uplink.identifier
    assert int(uplink.statistics()["takeovers"]) >= 1
    # The gateway takes its id back and serves commands again.
    reply = await as_(site, OPERATOR, "lockdown", scope="building/B")
    assert reply["ok"] is True, reply
