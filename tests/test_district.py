"""The district tier over real processes: heartbeat, the school's bridge to NATS, district ops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from gatewayd.simulators.broker import Mosquitto, free_port
from gatewayd.simulators.nats import NatsServer
from gatewayd.uplink.client import request, snapshot
from gatewayd.uplink.config import MqttConfig
from tests.support.district import (
    bridged_broker,
    campus_file,
    district_file,
    school,
    school_config,
)
from tests.support.gateway import run_cli
from tests.support.mqtt import Collector
from tests.support.waiting import eventually

HEARTBEAT = "gatewayd/demo-school/heartbeat"


async def test_heartbeat_is_retained_timestamped_and_carries_the_campus_state(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = school_config(mosquitto, tmp_path / "state", heartbeat_s=0.5)
    collector = await Collector(mosquitto.host, mosquitto.port, HEARTBEAT).start()
    try:
        async with school(config) as site:
            beats = await collector.wait_count(lambda m: m.topic == HEARTBEAT, 2)
            first, second = beats[0].json(), beats[1].json()
            assert beats[1].retain or beats[1].qos == 1
            assert second["seq"] == first["seq"] + 1
            assert datetime.fromisoformat(second["at"]) > datetime.fromisoformat(first["at"])
            assert first["state"] == "normal"
            await site.command("lockdown", scope="campus")
            await collector.wait_for(
                lambda m: m.topic == HEARTBEAT and m.json()["state"] == "lockdown"
            )
            retained = await snapshot(config.mqtt, "demo-school", timeout_s=3)
            assert retained["heartbeat"]["seq"] >= 2
            age = datetime.now(UTC) - datetime.fromisoformat(retained["heartbeat"]["at"])
            assert age.total_seconds() < 60
    finally:
        await collector.close()


async def test_bridge_config_is_one_persistent_311_bridge_per_district_broker(
    tmp_path: Path,
) -> None:
    campus = campus_file(tmp_path, url="mqtt://127.0.0.1:1883")
    code, out, err = await run_cli(
        "bridge-config", "-c", str(campus),
        "--district", "mqtt://d1.example:1883,mqtt://n1:4883|n2:4883|n3:4883",
    )  # fmt: skip
    assert code == 0, err
    blocks = out.split("\nconnection ")[1:]
    assert len(blocks) == 2
    assert "address n1:4883 n2:4883 n3:4883" in blocks[1]
    for block in blocks:
        assert "bridge_protocol_version mqttv311" in block
        assert "cleansession false" in block
        inbound = [line for line in block.splitlines() if line.endswith(" in 1")]
        assert inbound == ["topic gatewayd/demo-school/cmd in 1"]
        assert "topic gatewayd/demo-school/heartbeat out 1" in block
        assert "door/" not in block
    code, out, _ = await run_cli("bridge-config", "-c", str(campus), "--district", "x", "--doors")
    assert code == 2 and "not an mqtt://host[:port] URL: 'x'" in out + _


async def test_a_command_at_the_district_reaches_the_gateway_over_the_bridge_and_its_reply_returns(
    nats: NatsServer, tmp_path: Path
) -> None:
    district = MqttConfig(url=nats.url, protocol="3.1.1")
    async with bridged_broker("demo-school", [nats.url]) as local:
        config = school_config(local, tmp_path / "state", heartbeat_s=0.5)
        async with school(config) as site:
            # The heartbeat crossing the bridge says the link is up.
            async def seen() -> dict[str, object]:
                return await snapshot(district, "demo-school", timeout_s=2)

            retained: dict[str, object] = {}
            async with asyncio.timeout(20):
                while "heartbeat" not in retained:
                    retained = await seen()
            assert retained["availability"] == "online"
            assert "state/campus" in retained
            assert not any(k.startswith("door/") for k in retained)
            from gatewayd.security.keys import demo_private_key
            from gatewayd.security.signing import signed

            body = signed({"id": "d-1", "ts": __import__("time").time(), "actor": "demo-operator",
                           "action": "lockdown", "scope": "campus"},
                          demo_private_key("demo-operator"), site="demo-school")  # fmt: skip
            reply = await request(district, "demo-school", body, timeout_s=15)
            assert reply["id"] == "d-1" and reply["ok"], reply
            assert all(site.coil(d.id) for d in site.config.doors if d.kind == "classroom")


async def test_district_lockdown_confirmed_by_every_school_and_a_cut_school_reported_unreachable(
    nats: NatsServer, tmp_path: Path
) -> None:
    sites = ["school-a", "school-b", "school-c"]
    district = district_file(tmp_path, sites, nats.url, stale_after_s=2.0, resend_s=1.0)
    async with contextlib.AsyncExitStack() as stack:
        brokers, running = [], []
        for site_id in sites:
            local = await stack.enter_async_context(bridged_broker(site_id, [nats.url]))
            config = school_config(local, tmp_path / site_id, site_id, heartbeat_s=0.5,
                                   district_sites=(site_id,))  # fmt: skip
            brokers.append(local)
            running.append(await stack.enter_async_context(school(config)))

        async def status() -> list[dict[str, object]]:
            _, out, _ = await run_cli("district", "status", "-c", str(district), "--json")
            rows: list[dict[str, object]] = json.loads(out)
            return rows

        async def all_ok() -> bool:
            return all(r["verdict"] == "ok" for r in await status())

        await eventually(all_ok, timeout_s=30, interval_s=0.2)

        code, out, err = await run_cli("district", "lockdown", "-c", str(district),
                                       "--schools", "all", "--json")  # fmt: skip
        assert code == 0, out + err
        outcomes = {o["school"]: o for o in json.loads(out)}
        assert {s: o["result"] for s, o in outcomes.items()} == dict.fromkeys(sites, "confirmed")
        for site in running:
            assert all(site.coil(d.id) for d in site.config.doors if d.kind == "classroom")
        rows = {r["school"]: r for r in await status()}
        assert {s: r["state"] for s, r in rows.items()} == dict.fromkeys(sites, "lockdown")

        # School C's box loses its broker, bridge and all: the district still holds its
        # retained `online`, but its heartbeat stops.
        await asyncio.to_thread(brokers[2].kill)

        async def c_stale() -> bool:
            return {r["school"]: r["verdict"] for r in await status()}["school-c"] == "stale"

        await eventually(c_stale, timeout_s=30, interval_s=0.2)
        # Stale from the heartbeat's age alone: the district still holds C's `online`.
        row = {r["school"]: r for r in await status()}["school-c"]
        assert (row["availability"], row["reached"]) == ("online", 1), row
        code, out, err = await run_cli("district", "release", "-c", str(district),
                                       "--schools", "all", "--timeout", "6")  # fmt: skip
        assert code == 1, out + err
        table = {
            line.split()[0]: line.split()[1]
            for line in out.splitlines()
            if line.startswith("school-")
        }
        assert table == {
            "school-a": "CONFIRMED",
            "school-b": "CONFIRMED",
            "school-c": "UNREACHABLE",
        }
        assert "release: 2 confirmed, 0 failed, 1 unreachable" in out
        assert not any(
            running[0].coil(d.id) for d in running[0].config.doors if d.kind == "classroom"
        )


async def test_an_unknown_school_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    district = district_file(tmp_path, ["school-a"], "mqtt://127.0.0.1:9")
    code, _, err = await run_cli("district", "lockdown", "-c", str(district), "--schools", "nope")
    assert code == 2
    assert "not a school of this district: nope" in err


def run_on_terminal(*args: str, timeout_s: float = 60) -> tuple[int, str]:
    """``python -m gatewayd ARGS`` with a pseudo-terminal as its output, as a person sees it."""
    main, child = os.openpty()
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "gatewayd", *args], stdin=subprocess.DEVNULL,
                            stdout=child, stderr=child, env=env)  # fmt: skip
    os.close(child)
    chunks = []
    with contextlib.suppress(OSError):
        # EIO once the child has exited and closed its side.
        while chunk := os.read(main, 65536):
            chunks.append(chunk)
    os.close(main)
    code = proc.wait(timeout=timeout_s)
    return code, b"".join(chunks).decode(errors="replace")


async def test_on_a_terminal_the_lockdown_shows_a_live_table_and_an_unreachable_school_with_times(
    tmp_path: Path,
) -> None:
    # Nothing listens there: the school can never be reached.
    district = district_file(tmp_path, ["school-x"], f"mqtt://127.0.0.1:{free_port()}")
    code, out = await asyncio.to_thread(
        run_on_terminal, "district", "lockdown", "-c", str(district), "--schools", "all",
        "--timeout", "2",
    )  # fmt: skip
    assert code == 1, out
    assert "district lockdown: 0/1 schools answered" in out
    assert re.search(r"school-x\s.*UNREACHABLE", out), out
    assert re.search(r"\b2 s tried\b", out), out
    assert "lockdown: 0 confirmed, 0 failed, 1 unreachable; not confirmed: school-x" in out
