"""Signed commands end to end: real broker, real gateway, simulated boards, audit log on disk.

A negative corpus of generated bad commands is sent over MQTT: every one is refused with the
right code, no simulator sees a single write, and every refusal is in the hash-chained log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatewayd.kernel.command import MAX_COMMAND_BYTES
from gatewayd.kernel.site import DoorKind
from gatewayd.security.audit import verify
from gatewayd.security.keys import demo_private_key
from gatewayd.security.signing import signed
from gatewayd.security.startup import EX_CONFIG
from tests.support.disk import Disk
from tests.support.gateway import DEMO, Site, raw_requests, run_cli
from tests.support.waiting import eventually

OPERATOR, ADMIN, RESPONDER = "demo-operator", "demo-administrator", "demo-responder"
#: Generated bad commands per kind of fault.
PER_KIND = 30
#: The widest timestamp window a site may set: sending the corpus takes a while on a busy
#: machine, and the replays must still be inside the window to be refused as replays.
WINDOW_S = 600.0


def body(actor: str, action: str, ts: float | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "ts": time.time() if ts is None else ts,
        "actor": actor,
        "action": action,
        **fields,
    }


def sign(
    site: Site,
    command: dict[str, Any],
    actor: str | None = None,
    key: Ed25519PrivateKey | None = None,
    *,
    to: str | None = None,
) -> dict[str, Any]:
    key = key or demo_private_key(actor or command["actor"])
    return signed(command, key, site=to or site.config.site.id)


def encode(command: dict[str, Any]) -> bytes:
    return json.dumps(command).encode()


def writes(site: Site) -> dict[str, int]:
    """Lock writes each relay board and BACnet controller has received."""
    # Controllers only: the radio and the cameras log writes too, as rule actions, later.
    return {name: len(site.sim.devices[name].write_log) for name in site.sim.controllers}


def audit_records(site: Site) -> list[dict[str, Any]]:
    path = Path(site.config.state_dir) / site.config.security.audit_log
    return [json.loads(line) for line in path.read_text().splitlines()]


def door_moving(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """An action and its target that would move doors if it were accepted."""
    choices: list[tuple[str, dict[str, Any]]] = [
        ("lockdown", {"scope": "campus"}),
        ("evacuate", {"scope": "building/B"}),
        ("release", {"scope": "building/A"}),
        ("unlock", {"door": "A-101"}),
        ("lock", {"door": "B-101"}),
        ("secure", {"scope": "building/D"}),
        ("unlock", {"door": "A-102", "params": {"duration_s": 60}}),
    ]
    return rng.choice(choices)


def corpus(site: Site, rng: random.Random) -> list[tuple[bytes, str]]:
    """(payload, expected code) for every fault but replays."""
    cases: list[tuple[bytes, str]] = []
    stranger = Ed25519PrivateKey.generate()
    for _ in range(PER_KIND):
        action, target = door_moving(rng)
        cases.append((encode(body(ADMIN, action, **target)), "unsigned"))
        cases.append((encode({**body(ADMIN, action, **target), "sig": ""}), "unsigned"))
        # Forged: signed by someone else, or changed after signing.
        cases.append(
            (encode(sign(site, body(ADMIN, action, **target), key=stranger)), "bad_signature")
        )
        tampered = sign(site, body(ADMIN, "lock", door="A-101"))
        cases.append((encode({**tampered, "action": "unlock"}), "bad_signature"))
        junk = base64.b64encode(rng.randbytes(rng.choice([10, 64, 63]))).decode()
        cases.append((encode({**body(ADMIN, action, **target), "sig": junk}), "bad_signature"))
        cases.append(
            (encode(sign(site, body("intruder", action, **target), key=stranger)), "bad_signature")
        )
        skew = rng.choice([-1, 1]) * rng.uniform(WINDOW_S + 1, 86_400)
        cases.append(
            (encode(sign(site, body(ADMIN, action, ts=time.time() + skew, **target))), "expired")
        )
        # Wrong role: an operator releasing or unlocking, a responder locking down.
        wrongs: list[tuple[str, str, dict[str, Any]]] = [
            (OPERATOR, "release", {"scope": "campus"}),
            (OPERATOR, "unlock", {"door": "A-103"}),
            (RESPONDER, "lockdown", {"scope": "campus"}),
            (RESPONDER, "unlock", {"scope": "building/A", "params": {"momentary": True}}),
            (RESPONDER, "unlock", {"door": "A-101", "params": {"duration_s": 86_400}}),
        ]
        actor, wrong, target = rng.choice(wrongs)
        cases.append((encode(sign(site, body(actor, wrong, **target))), "forbidden"))
        # Signed for another school: says so (wrong_site), or does not (then it cannot verify).
        other = sign(site, body(ADMIN, action, site="roosevelt-ms", **target), to="roosevelt-ms")
        cases.append((encode(other), "wrong_site"))
        unnamed = sign(site, body(ADMIN, action, **target), to="roosevelt-ms")
        cases.append((encode(unnamed), "bad_signature"))
        cases.append((rng.randbytes(rng.randint(1, 200)), "bad_request"))
        cases.append(
            (
                rng.choice(
                    [
                        b"[]",
                        b"null",
                        b"42",
                        b'"lockdown"',
                        b"{",
                        b"{}",
                        b'{"id": 1}',
                        b'{"action": "lockdown", "scope": "campus"}',
                    ]
                ),
                "bad_request",
            )
        )
        cases.append((b'{"id": "x", "id": "y"}', "bad_request"))
        cases.append((b"{" + b" " * MAX_COMMAND_BYTES + b"}", "too_large"))
    rng.shuffle(cases)
    return cases


async def widen_window(site: Site) -> None:
    security = site.config.security.model_copy(update={"timestamp_window_s": WINDOW_S})
    site.config = site.config.model_copy(update={"security": security})
    await site.stop_gateway()
    await site.start_gateway()


async def replays(site: Site, count: int) -> list[tuple[bytes, str]]:
    """Valid commands that run once now; copies of them, to be refused later as replays."""
    commands = [body(OPERATOR, "status") for _ in range(count)]
    originals = [encode(sign(site, command)) for command in commands]
    replies = await raw_requests(site.config.mqtt, site.config.site.id, originals)
    assert all(r["ok"] for r in replies), replies
    # A reply goes out before its audit record is on disk (reply first, record after):
    # wait for the records, so that what the corpus adds is counted from here.
    ids = {command["id"] for command in commands}

    def recorded() -> bool:
        seen = {r["data"].get("command") for r in audit_records(site) if r["kind"] == "command"}
        return ids <= seen

    await eventually(recorded, timeout_s=30, message="the originals' audit records")
    return [(payload, "replayed") for payload in originals]


async def send(site: Site, cases: list[tuple[bytes, str]]) -> None:
    replies = await raw_requests(
        site.config.mqtt, site.config.site.id, [payload for payload, _ in cases], timeout_s=120
    )
    wrong = [
        (expected, reply)
        for (_, expected), reply in zip(cases, replies, strict=True)
        if reply.get("ok") is not False or reply.get("error") != expected
    ]
    assert not wrong, f"{len(wrong)} of {len(cases)} misjudged, e.g. {wrong[:3]}"


async def test_negative_corpus_is_refused_unwritten_and_audited(site: Site) -> None:
    rng = random.Random(20261129)
    await widen_window(site)
    lockdown = await site.command("lockdown", scope="building/A")
    assert lockdown["ok"] is True, lockdown
    replayed = await replays(site, PER_KIND)
    before, seq_before = writes(site), len(audit_records(site))
    cases = corpus(site, rng) + replayed
    await send(site, cases)
    assert writes(site) == before
    # The replay cache is on disk: a restarted gateway refuses the same copies again.
    await site.stop_gateway()
    await site.start_gateway()
    # (Start-up re-asserts every door: those writes are the restart's, not the corpus's.)
    before = writes(site)
    after_restart = [(payload, "replayed") for payload, _ in replayed]
    await send(site, after_restart)
    assert writes(site) == before
    path = Path(site.config.state_dir) / site.config.security.audit_log
    result = verify(path)
    assert result.ok, str(result)
    await site.stop_gateway()  # writes the last interval's counted refusals
    new = audit_records(site)[seq_before:]
    refusals = [r for r in new if r["kind"] == "refusal"]
    # The gateway's own start and stop are recorded too; nothing else happened.
    assert not [r for r in new if r["kind"] not in ("refusal", "log", "daemon")]
    # Signed refusals are recorded one by one; garbage is counted, a record per interval.
    one_by_one = [r for r in refusals if not r["data"].get("counted")]
    counted = [r for r in refusals if r["data"].get("counted")]
    assert len(one_by_one) + sum(r["data"]["total"] for r in counted) == len(cases) + len(
        after_restart
    )
    sent = Counter(hashlib.sha256(p).hexdigest() for p, _ in cases + after_restart)
    assert Counter(r["data"]["payload_sha256"] for r in one_by_one) <= sent
    codes = Counter(r["data"]["error"] for r in one_by_one)
    for record in counted:
        codes.update({key.split(":")[0]: n for key, n in record["data"]["by_error"].items()})
    assert set(codes) == {
        "unsigned",
        "bad_signature",
        "expired",
        "forbidden",
        "wrong_site",
        "bad_request",
        "too_large",
        "replayed",
    }
    assert all(r["actor"] == "-" for r in refusals)


async def test_a_valid_command_delivered_twice_runs_once(site: Site) -> None:
    command = encode(sign(site, body(OPERATOR, "lockdown", scope="building/D")))
    [first] = await raw_requests(site.config.mqtt, site.config.site.id, [command])
    assert first["ok"] is True, first
    moved = writes(site)
    [second] = await raw_requests(site.config.mqtt, site.config.site.id, [command])
    assert (second["ok"], second["error"]) == (False, "replayed")
    assert writes(site) == moved
    ident = json.loads(command)["id"]
    kinds = [r["kind"] for r in audit_records(site) if r["data"].get("command") == ident]
    assert kinds == ["command", "state", "refusal"]
    record = next(r for r in audit_records(site) if r["data"].get("command") == ident)
    assert record["actor"] == OPERATOR


async def test_audit_verify_cli_accepts_the_log_of_a_running_gateway(site: Site) -> None:
    await site.command("lockdown", scope="building/B")
    await site.command("release", scope="building/B")
    await site.send_raw(b"not json")
    path = Path(site.config.state_dir) / site.config.security.audit_log
    code, out, _ = await run_cli("audit", "verify", "--file", str(path))
    assert code == 0, out
    assert out.startswith(f"{path}: OK ")


async def test_lockdown_runs_and_release_is_refused_when_the_disk_is_full(
    site_on_disk: tuple[Site, Disk],
) -> None:
    site, disk = site_on_disk
    classrooms = [d.id for d in site.config.doors
                  if d.building == "D" and d.kind is DoorKind.CLASSROOM]  # fmt: skip
    disk.fill()  # the state directory's disk is full under the daemon
    lockdown = await site.command("lockdown", scope="building/D")
    assert lockdown["ok"] is True, lockdown
    assert all(site.coil(d) for d in classrooms)
    # The log's last page may still take a few records (they are then on disk, and said to
    # be); once it cannot, a lockdown still runs and its reply says it is not recorded yet.
    for _ in range(40):
        if lockdown["recorded"] is False:
            break
        lockdown = await site.command("lockdown", scope="building/D")
        assert lockdown["ok"] is True, lockdown
    assert lockdown["recorded"] is False
    # Leaving doors unlocked needs a record first: refused, nothing moves.
    release = await site.command("release", scope="building/D")
    assert (release["ok"], release["error"]) == (False, "store_failed"), release
    assert all(site.coil(d) for d in classrooms)
    # Evacuating is life safety, like a fire alarm: never held up by a disk.
    evacuate = await site.command("evacuate", scope="building/D")
    assert evacuate["ok"] is True, evacuate
    status = await site.command("status")
    assert status["ok"] is True
    # Room again: the next release is recorded and runs.
    disk.free()
    release = await site.command("release", scope="building/D")
    assert release["ok"] is True, release


async def test_a_gateway_started_on_a_read_only_disk_still_locks_and_releases_for_fire(
    site_on_disk: tuple[Site, Disk],
) -> None:
    site, disk = site_on_disk
    await site.stop_gateway()
    disk.read_only()  # what a file system does after an error; here before the restart
    await site.start_gateway()
    lockdown = await site.command("lockdown", scope="building/B")
    assert lockdown["ok"] is True, lockdown
    assert lockdown["recorded"] is False
    fire = next(i for i in site.config.inputs if i.id == "fire-B").point
    site.sim.boards[fire.device].set_input(int(fire.point.split(":")[1]), True)
    egress = [d.id for d in site.config.doors if d.building == "B" and d.kind is DoorKind.EGRESS]
    await eventually(lambda: not any(site.coil(d) for d in egress))
    release = await site.command("release", scope="building/B")
    assert release["error"] == "store_failed", release


async def test_fire_alarm_releases_egress_when_the_disk_is_full(
    site_on_disk: tuple[Site, Disk],
) -> None:
    site, disk = site_on_disk
    await site.command("lockdown", scope="building/B")
    disk.fill()
    fire = next(i for i in site.config.inputs if i.id == "fire-B").point
    site.sim.boards[fire.device].set_input(int(fire.point.split(":")[1]), True)
    egress = [d.id for d in site.config.doors if d.building == "B" and d.kind is DoorKind.EGRESS]
    await eventually(lambda: not any(site.coil(d) for d in egress))
    gateway = site.gateway
    assert gateway is not None
    # The doors go first; the journal learns of the full disk when it writes, after them.
    await eventually(lambda: gateway.journal.healthy is False)


async def test_daemon_refuses_demo_keys_outside_demo_mode(tmp_path: Path) -> None:
    campus = tmp_path / "campus.toml"
    for beside in ("demo-rules.toml", "demo-credentials.toml"):
        (tmp_path / beside).write_text((DEMO.parent / beside).read_text())
    text = DEMO.read_text()
    assert "demo = true" in text
    campus.write_text(text.replace("demo = true", "demo = false", 1))
    code, _, err = await run_cli("run", "-c", str(campus), "--log-level", "critical")
    assert code == EX_CONFIG, err
    assert "refusing to start: actors use the shipped DEMO keys" in err
    assert "access.site_key is the shipped DEMO key" in err
    code, out, _ = await run_cli("check", "-c", str(campus))
    assert code == EX_CONFIG
    assert "ERROR     actors use the shipped DEMO keys" in out
