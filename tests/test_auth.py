"""Signed commands: every bad command is refused with its code; a good one runs exactly once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.kernel.command import parse_command
from gatewayd.kernel.errors import CommandError
from gatewayd.security.actors import Actor, SecurityConfig
from gatewayd.security.audit import AuditKind, verify
from gatewayd.security.authorizer import Authorizer
from gatewayd.security.guard import CommandGuard, is_unauthenticated
from gatewayd.security.journal import Journal
from gatewayd.security.keys import demo_private_key, public_key_text
from gatewayd.security.roles import Authority, Role
from gatewayd.security.signing import sign, signed, signing_bytes

SITE = "site-a"
NOW = 1_795_945_323.25
WINDOW = 30.0
RESPONDER_MAX_S = 300.0
TRIGGERS = ["hold", "secure", "lockdown", "evacuate", "shelter", "drill", "lock", "status"]


def _key(name: str) -> Ed25519PrivateKey:
    # Deterministic keys keep failures reproducible.
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(name.encode()).digest())


KEYS = {
    name: _key(name)
    for name in (
        "op",
        "admin",
        "admin2",
        "resp",
        "dist",
        "dist-elsewhere",
        "engine",
        "attacker",
    )
}
ROLES = {
    "op": {Role.OPERATOR},
    "admin": {Role.ADMINISTRATOR},
    "admin2": {Role.ADMINISTRATOR},
    "resp": {Role.RESPONDER},
    "dist": {Role.DISTRICT},
    "dist-elsewhere": {Role.DISTRICT},
    "engine": {Role.SYSTEM},
}
SITES = {"dist": {SITE, "site-b"}, "dist-elsewhere": {"site-z"}}


def security(**overrides: Any) -> SecurityConfig:
    actors = [
        Actor(
            id=name,
            public_key=public_key_text(KEYS[name]),
            roles=frozenset(roles),
            sites=frozenset(SITES.get(name, ())),
        )
        for name, roles in ROLES.items()
    ]
    return SecurityConfig(actors=tuple(actors), timestamp_window_s=WINDOW, **overrides)


def authorizer(state: Path | None = None, **overrides: Any) -> Authorizer:
    return Authorizer(security(**overrides), demo=False, responder_max_s=RESPONDER_MAX_S)


def body(actor: str, action: str, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "ts": NOW,
        "actor": actor,
        "action": action,
        "params": {},
    }
    if action in ("unlock", "lock"):
        out["door"] = "A-101"
    elif action != "status":
        out["scope"] = "campus"
    out.update(fields)
    return out


def encode(b: dict[str, Any]) -> bytes:
    return json.dumps(b, ensure_ascii=False).encode()


def check(auth: Authorizer, payload: bytes, now: float = NOW) -> Authority:
    return auth.check(parse_command(payload), payload=payload, site=SITE, now=now)


def refusal(auth: Authorizer, payload: bytes, now: float = NOW) -> str:
    """The code a payload is refused with, parse errors included; fails if it is accepted."""
    try:
        authority = check(auth, payload, now)
    except CommandError as exc:
        return exc.code
    raise AssertionError(f"accepted as {authority.actor}: {payload!r}")


@pytest.fixture
def auth(tmp_path: Path) -> Iterator[Authorizer]:
    yield authorizer(tmp_path)


# --- the canonical form -----------------------------------------------------------------------


def test_signing_bytes_match_the_documented_test_vector() -> None:
    b = {
        "id": "7f3c2a",
        "ts": 1795945323.5,
        "actor": "demo-operator",
        "action": "lockdown",
        "scope": "building/A",
        "params": {},
        "sig": "ignored",
    }
    expected = (
        b'{"action":"lockdown","actor":"demo-operator","id":"7f3c2a","params":{},'
        b'"scope":"building/A","site":"demo-school","ts":1795945323.5}'
    )
    assert signing_bytes(b, "demo-school") == expected
    sig = sign(b, demo_private_key("demo-operator"), site="demo-school")
    # Ed25519 is deterministic: docs/security.md quotes this exact signature.
    assert sig == DOC_VECTOR_SIG


DOC_VECTOR_SIG = (
    "4Km4ayb3q9m+eTBLZhk07iv6TMqPR8HzYapqntqSv1/6zwYGICb+e369tX0t1CxkPW46VWzdiePpHViV44ytAg=="
)


def test_ts_is_signed_as_written_so_integer_and_float_forms_agree(auth: Authorizer) -> None:
    b = body("op", "lockdown", ts=int(NOW))
    text = encode(signed(b, KEYS["op"], site=SITE)).replace(
        f'"ts": {int(NOW)}'.encode(), f'"ts": {int(NOW)}.0'.encode()
    )
    assert f"{int(NOW)}.0".encode() in text
    assert check(auth, text, now=int(NOW)).actor == "op"


def test_iso_timestamps_are_signed_as_the_string(auth: Authorizer) -> None:
    b = body("op", "lockdown", ts="2026-11-29T09:42:03.250Z")
    assert check(auth, encode(signed(b, KEYS["op"], site=SITE))).actor == "op"


# --- accepted commands ------------------------------------------------------------------------


@pytest.mark.parametrize("action", TRIGGERS)
def test_operator_may_trigger(auth: Authorizer, action: str) -> None:
    assert check(auth, encode(signed(body("op", action), KEYS["op"], site=SITE))).actor == "op"


@pytest.mark.parametrize("action", [*TRIGGERS, "release", "unlock"])
def test_administrator_and_district_may_release_and_unlock(auth: Authorizer, action: str) -> None:
    for name in ("admin", "dist"):
        assert check(auth, encode(signed(body(name, action), KEYS[name], site=SITE))).actor == name


@pytest.mark.parametrize("params", [{"duration_s": 300}, {"duration_s": 0.5}, {"momentary": True}])
def test_responder_may_unlock_one_door_for_a_bounded_time(
    auth: Authorizer, params: dict[str, Any]
) -> None:
    b = body("resp", "unlock", params=params)
    assert check(auth, encode(signed(b, KEYS["resp"], site=SITE))).actor == "resp"


def test_command_delivered_twice_is_accepted_once(auth: Authorizer) -> None:
    payload = encode(signed(body("op", "lockdown"), KEYS["op"], site=SITE))
    assert check(auth, payload).actor == "op"
    assert refusal(auth, payload, now=NOW + 1) == "replayed"


async def test_replay_cache_survives_a_restart_through_the_journal(tmp_path: Path) -> None:
    # Real time: the journal keeps the ids of the last two windows of the wall clock.
    now = time.time()
    payload = encode(signed(body("op", "lockdown", ts=now), KEYS["op"], site=SITE))
    first = open_journal(tmp_path)
    guard = CommandGuard(authorizer(), first, site=SITE)
    command = parse_command(payload)
    assert await guard.admitted(command, guard.check(command, payload=payload, now=now)).written(5)
    first.close()
    again = Journal(tmp_path, window_s=WINDOW)
    second = authorizer()
    second.replay.load(again.open().commands)
    again.close()
    assert refusal(second, payload, now=now + 5) == "replayed"


def test_an_id_is_remembered_whatever_the_wall_clock_does(auth: Authorizer) -> None:
    old = encode(signed(body("op", "lockdown"), KEYS["op"], site=SITE))
    check(auth, old)
    # The wall clock steps back and forth within the window: the id stays used.
    assert refusal(auth, old, now=NOW - WINDOW / 2) == "replayed"
    assert refusal(auth, old, now=NOW + WINDOW / 2) == "replayed"
    # Beyond the window it is expired, whatever the cache holds.
    assert refusal(auth, old, now=NOW + 10 * WINDOW) == "expired"


@pytest.mark.parametrize(("demo", "accepted"), [(True, True), (False, False)])
def test_demo_keys_sign_only_in_demo_mode(tmp_path: Path, demo: bool, accepted: bool) -> None:
    key = demo_private_key("demo-operator")
    actor = Actor(
        id="demo-operator", public_key=public_key_text(key), roles=frozenset({Role.OPERATOR})
    )
    auth = Authorizer(
        SecurityConfig(actors=(actor,)),
        demo=demo,
        responder_max_s=RESPONDER_MAX_S,
    )
    payload = encode(signed(body("demo-operator", "lockdown"), key, site=SITE))
    if accepted:
        assert check(auth, payload).actor == "demo-operator"
    else:
        assert refusal(auth, payload) == "bad_signature"


# --- two-person campus release ----------------------------------------------------------------


def cosigned(primary: str, cosigner: str, *, cosig_key: str | None = None, **params: Any) -> bytes:
    b = body(primary, "release", params={"cosigner": cosigner, **params})
    cosig = sign(b, KEYS[cosig_key or cosigner], site=SITE)
    b["params"]["cosig"] = cosig
    return encode(signed(b, KEYS[primary], site=SITE))


def test_two_person_release_needs_a_valid_second_administrator(tmp_path: Path) -> None:
    auth = authorizer(tmp_path, require_two_person_campus_release=True)
    alone = encode(signed(body("admin", "release"), KEYS["admin"], site=SITE))
    assert refusal(auth, alone) == "cosign_required"
    assert refusal(auth, cosigned("admin", "admin")) == "cosign_required"
    assert refusal(auth, cosigned("admin", "op")) == "forbidden"
    assert refusal(auth, cosigned("admin", "admin2", cosig_key="attacker")) == "bad_signature"
    assert refusal(auth, cosigned("admin", "nobody", cosig_key="attacker")) == "bad_signature"
    assert refusal(auth, cosigned("admin", "dist-elsewhere")) == "forbidden"
    assert check(auth, cosigned("admin", "admin2")).actor == "admin"
    # A building release is not campus-wide: one administrator is enough.
    building = body("admin", "release", scope="building/A")
    assert check(auth, encode(signed(building, KEYS["admin"], site=SITE))).actor == "admin"


# --- the negative corpus ----------------------------------------------------------------------


@dataclass
class Corpus:
    rng: random.Random
    cases: list[tuple[str, bytes, float]] = field(default_factory=list)

    def add(self, code: str, b: dict[str, Any] | bytes, now: float = NOW) -> None:
        self.cases.append((code, b if isinstance(b, bytes) else encode(b), now))

    def valid(self) -> tuple[str, dict[str, Any]]:
        name = self.rng.choice(["op", "admin", "dist", "resp"])
        if name == "resp":
            return name, body(name, "unlock", params={"duration_s": self.rng.uniform(1, 300)})
        actions = TRIGGERS + (["release", "unlock"] if name != "op" else [])
        ts = NOW + self.rng.uniform(-WINDOW + 1, WINDOW - 1)
        return name, body(name, self.rng.choice(actions), ts=ts)


def _tamper(rng: random.Random, b: dict[str, Any]) -> dict[str, Any]:
    b = json.loads(json.dumps(b))
    match rng.randrange(7):
        case 0:
            b["id"] += "x"
        case 1:
            b["ts"] = b["ts"] + rng.choice([0.001, -1.0, 1e-6])
        case 2:
            b["action"] = "release" if b["action"] != "release" else "lockdown"
        case 3:
            b["scope"] = "building/B"
            b.pop("door", None)
        case 4:
            b["params"]["duration_s"] = 3600
        case 5:
            b["actor"] = "admin" if b["actor"] != "admin" else "admin2"
        case _:
            b["door"] = "A-999"
            b.pop("scope", None)
    return b


def _garbage_sigs(rng: random.Random, good: str) -> list[str]:
    raw = base64.b64decode(good)
    flipped = bytearray(raw)
    flipped[rng.randrange(64)] ^= 1 << rng.randrange(8)
    out = [
        good.rstrip("="),  # padding removed
        " " + good,  # whitespace
        good[:-4] + "!!==",  # not the alphabet
        base64.b64encode(raw[:63]).decode(),  # short
        base64.b64encode(raw + b"\0").decode(),  # long
        base64.b64encode(bytes(64)).decode(),  # zeros
        base64.b64encode(bytes(flipped)).decode(),  # one bit off
        base64.b64encode(rng.randbytes(64)).decode(),  # random
        raw.hex()[:88],  # hex, not base64
        "é" * 10,  # not ASCII
    ]
    urlsafe = good.replace("+", "-").replace("/", "_")
    if urlsafe != good:
        out.append(urlsafe)
    return out


def build_corpus(seed: int, bases: int) -> tuple[Corpus, list[bytes]]:
    """Bad commands by category with their expected code, and the valid commands they came from."""
    c = Corpus(random.Random(seed))
    valid: list[bytes] = []
    for _ in range(bases):
        name, b = c.valid()
        good = signed(b, KEYS[name], site=SITE)
        valid.append(encode(good))
        c.add("unsigned", b)
        c.add("unsigned", {**b, "sig": ""})
        c.add("bad_signature", signed(b, KEYS["attacker"], site=SITE))
        c.add("bad_signature", {**_tamper(c.rng, good), "sig": good["sig"]})
        c.add("bad_signature", signed(b, KEYS[name], site="site-b"))
        c.add("bad_signature", signed({**b, "actor": "mallory"}, KEYS["attacker"], site=SITE))
        skew = WINDOW + c.rng.uniform(0.01, 1e6)
        c.add("expired", signed({**b, "ts": NOW - skew}, KEYS[name], site=SITE))
        c.add("expired", signed({**b, "ts": NOW + skew}, KEYS[name], site=SITE))
        for sig in _garbage_sigs(c.rng, good["sig"]):
            c.add("bad_signature", {**b, "sig": sig})
        _wrong_role_and_site(c)
    return c, valid


def _wrong_role_and_site(c: Corpus) -> None:
    rng = c.rng
    forbidden = [
        ("op", body("op", rng.choice(["release", "unlock"]))),
        ("resp", body("resp", rng.choice([*TRIGGERS, "release"]))),
        ("resp", body("resp", "unlock", params={"duration_s": rng.uniform(300.001, 1e6)})),
        ("resp", body("resp", "unlock")),
        ("resp", body("resp", "unlock", door=None, scope="building/A", params={"momentary": True})),
        ("engine", body("engine", rng.choice(TRIGGERS))),
    ]
    name, b = rng.choice(forbidden)
    c.add("forbidden", signed({k: v for k, v in b.items() if v is not None}, KEYS[name], site=SITE))
    c.add(
        "wrong_site",
        signed(body("dist-elsewhere", rng.choice(TRIGGERS)), KEYS["dist-elsewhere"], site=SITE),
    )


def test_negative_corpus_is_refused_with_the_right_code_and_valid_commands_run_once(
    tmp_path: Path,
) -> None:
    corpus, valid = build_corpus(seed=6, bases=250)
    assert len(corpus.cases) >= 4000
    auth = authorizer(tmp_path)
    wrong: list[tuple[str, str, bytes]] = []
    for code, payload, now in corpus.cases:
        got = refusal(auth, payload, now)
        if got != code:
            wrong.append((code, got, payload))
    assert not wrong, f"{len(wrong)} refused with the wrong code, e.g. {wrong[:3]}"
    # The corpus consumed no valid id: each original runs once, and only once.
    for payload in valid:
        check(auth, payload)
    assert all(refusal(auth, p) == "replayed" for p in valid)
    assert Counter(code for code, _, _ in corpus.cases).keys() >= {
        "unsigned",
        "bad_signature",
        "expired",
        "forbidden",
        "wrong_site",
    }


def open_journal(state: Path) -> Journal:
    journal = Journal(state, window_s=WINDOW)
    journal.open()
    journal.start(asyncio.get_running_loop())
    return journal


async def test_every_refusal_is_recorded_or_counted_and_the_log_verifies(tmp_path: Path) -> None:
    corpus, _ = build_corpus(seed=7, bases=40)
    journal = open_journal(tmp_path)
    guard = CommandGuard(authorizer(), journal, site=SITE)
    signed_refusals = 0
    for _code, payload, now in corpus.cases:
        command = parse_command(payload)
        with pytest.raises(CommandError) as refused:
            guard.check(command, payload=payload, now=now)
        guard.refused(refused.value, payload=payload, command=command)
        signed_refusals += not is_unauthenticated(refused.value.code)
    guard.flush_refusals()
    journal.close()
    assert verify(journal.audit_path).ok
    records = [json.loads(line) for line in journal.audit_path.read_bytes().splitlines()]
    refusals = [r for r in records if r["kind"] == "refusal"]
    # Signed commands refused are recorded one by one; garbage is counted in one record.
    one_by_one = [r for r in refusals if not r["data"].get("counted")]
    counted = [r for r in refusals if r["data"].get("counted")]
    assert len(one_by_one) + sum(r["data"]["total"] for r in counted) == len(corpus.cases)
    assert len(one_by_one) <= signed_refusals
    assert len(counted) == 1


async def test_a_flood_of_garbage_becomes_one_record_per_interval(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    guard = CommandGuard(authorizer(), journal, site=SITE)
    for i in range(5000):
        guard.refused(CommandError("bad_request", "not JSON"), payload=bytes([i % 256]),
                      command=None)  # fmt: skip
    guard.flush_refusals()
    journal.close()
    records = [json.loads(line) for line in journal.audit_path.read_bytes().splitlines()]
    assert len(records) == 1
    assert records[0]["data"]["total"] == 5000
    assert len(records[0]["data"]["samples"]) <= 5


async def test_an_accepted_command_is_recorded_under_the_authenticated_actor(
    tmp_path: Path,
) -> None:
    journal = open_journal(tmp_path)
    guard = CommandGuard(authorizer(), journal, site=SITE)
    b = body("resp", "unlock", params={"duration_s": 60})
    payload = encode(signed(b, KEYS["resp"], site=SITE))
    command = parse_command(payload)
    record = await guard.admitted(command, guard.check(command, payload=payload, now=NOW)
                                  ).durable(5)  # fmt: skip
    assert (record.kind, record.actor, record.data["command"]) == ("command", "resp", b["id"])
    assert record.data["sent_ts"] == NOW
    override = await guard.record(AuditKind.OVERRIDE, "input:x", {"door": "A-101"}).durable(5)
    # The gateway's own actors are recorded as the system, with who they were.
    assert (override.kind, override.actor, override.data["via"]) == ("override", "system",
                                                                     "input:x")  # fmt: skip
    journal.close()


# --- properties -------------------------------------------------------------------------------


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


@given(key=st.sampled_from(["id", "scope", "extra_param", "ts"]), value=json_leaf)
def test_any_change_to_a_signed_field_breaks_the_signature(
    tmp_path_factory: pytest.TempPathFactory, key: str, value: Any
) -> None:
    good = signed(body("admin", "lockdown", params={"note": "x"}), KEYS["admin"], site=SITE)
    changed = json.loads(json.dumps(good))
    if key == "extra_param":
        changed["params"]["hazard"] = value
    else:
        changed[key] = value
    if changed == good:
        return
    auth = authorizer(tmp_path_factory.mktemp("auth"))
    assert refusal(auth, encode(changed)) in {"bad_signature", "bad_request", "expired"}
