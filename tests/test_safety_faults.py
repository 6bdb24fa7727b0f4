"""Safety-path faults: a lost index at restart, fire in a drill on a locked store, clock steps.

Each runs the demo campus on simulated boards with the real broker; the gateway is stopped
and started in-process where the scenario is a restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gatewayd.kernel.site import DoorKind
from tests.support.disk import locked
from tests.support.gateway import Site
from tests.support.mqtt import Collector
from tests.support.waiting import eventually

Collect = Callable[[str], Awaitable[Collector]]


def doors(site: Site, building: str, *kinds: DoorKind) -> list[str]:
    return [
        d.id for d in site.config.doors if d.building == building and (not kinds or d.kind in kinds)
    ]


def alarms(site: Site) -> str:
    return f"{site.config.mqtt.prefix}/{site.config.site.id}/event/alarm"


def data(message: object) -> dict[str, object]:
    body = json.loads(getattr(message, "payload", b"{}"))
    return body["data"] if isinstance(body.get("data"), dict) else {}


@pytest.mark.parametrize("damage", ["deleted", "corrupt"])
async def test_a_lost_index_at_restart_restores_the_lockdown_from_the_log_and_says_so(
    site: Site, mqtt_collect: Collect, damage: str
) -> None:
    assert (await site.command("lockdown", scope="building/A"))["ok"] is True
    assert site.gateway is not None
    index = site.gateway.journal.index_path
    await site.stop_gateway()
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    if damage == "deleted":
        index.unlink()
    else:
        index.write_bytes(b"this is not a database " * 200)
    seen = await mqtt_collect(alarms(site))
    await site.start_gateway()
    await eventually(lambda: all(site.coil(d) for d in doors(site, "A", DoorKind.CLASSROOM)))
    alarm = await seen.wait_for(lambda m: data(m).get("type") == "bookkeeping", timeout_s=10)
    assert data(alarm).get("rebuilt") is True
    assert site.gateway is not None and site.gateway.engine.get("srp:building/A") is not None
    if damage == "corrupt":
        assert list(index.parent.glob(f"{index.name}.corrupt-*"))


async def test_fire_during_a_drill_with_a_locked_store_releases_egress_and_the_gateway_lives(
    site: Site,
) -> None:
    assert site.gateway is not None
    reply = await site.command(
        "drill", params={"state": "lockdown", "scope": "building/A", "duration_s": 60}
    )
    assert reply["ok"] is True, reply
    egress = doors(site, "A", DoorKind.EGRESS)
    with locked(site.gateway.journal.index_path):
        site.sim.boards["relay-a1"].set_input(64, True)
        await eventually(lambda: not any(site.coil(d) for d in egress))
    # Still serving: a status answers and the fire source is in force.
    status = await site.command("status")
    assert status["ok"] is True
    assert any(s["key"].startswith("fire:") for s in status["sources"])


@pytest.mark.parametrize("step_s", [-3600.0, 86_400.0])
async def test_a_responder_unlock_lasts_its_duration_whatever_the_wall_clock_does(
    site: Site, mqtt_collect: Collect, monkeypatch: pytest.MonkeyPatch, step_s: float
) -> None:
    seen = await mqtt_collect(alarms(site))
    assert (await site.command("lockdown", scope="building/A"))["ok"] is True
    reply = await site.command("unlock", door="A-101", params={"duration_s": 1.0})
    assert reply["ok"] is True and site.coil("A-101") is False
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + step_s)
    started = time.monotonic()
    alarm = await seen.wait_for(lambda m: data(m).get("type") == "clock_step", timeout_s=10)
    assert abs(float(str(data(alarm)["step_s"])) - step_s) < 60
    # Relocks after its second, neither an hour later nor at once... and never stays open.
    await eventually(lambda: site.coil("A-101"), timeout_s=5)
    assert time.monotonic() - started < 5
    assert site.gateway is not None and site.gateway.engine.get("responder:door/A-101") is None


@pytest.mark.parametrize("still_active", [False, True])
async def test_a_fire_row_from_the_last_run_waits_for_its_input(
    site: Site, still_active: bool
) -> None:
    assert (await site.command("lockdown", scope="building/A"))["ok"] is True
    egress = doors(site, "A", DoorKind.EGRESS)
    board = site.sim.boards["relay-a1"]
    board.set_input(64, True)
    await eventually(lambda: not any(site.coil(d) for d in egress))
    await site.stop_gateway()  # stopped with the fire source in force
    board.set_input(64, still_active)
    await site.start_gateway()
    assert site.gateway is not None
    gateway = site.gateway
    if still_active:
        await eventually(lambda: not any(site.coil(d) for d in egress))
        assert gateway.engine.get("fire:fire-A") is not None
    else:
        # Read quiet: the row ends and the lockdown holds the exits, without a 5 s wait.
        await eventually(lambda: gateway.engine.get("fire:fire-A") is None, timeout_s=4)
        await eventually(lambda: all(site.coil(d) for d in egress), timeout_s=4)


async def test_deeply_nested_json_is_a_bad_request_and_is_audited(site: Site) -> None:
    assert site.gateway is not None
    payload = b"[" * 50_000 + b"]" * 50_000
    reply = await site.gateway.handle_command(payload)
    assert reply["error"] in ("bad_request", "too_large"), reply
    nested = b'{"id": "n", "params": ' + b'{"a": ' * 2000 + b"1" + b"}" * 2000 + b"}"
    reply = await site.gateway.handle_command(nested)
    assert reply["error"] == "bad_request", reply
    site.gateway.guard.flush_refusals()
    log = Path(site.config.state_dir) / site.config.security.audit_log
    await eventually(lambda: b"bad_request" in log.read_bytes())
