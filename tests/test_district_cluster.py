"""Topology (a), real processes: schools bridged to a 3-node NATS JetStream cluster, and the
node leading the MQTT streams killed just before a district lockdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from gatewayd.simulators.nats import NatsServer, leaders
from tests.support.district import (
    DISTRICT_ACTOR,
    audit_records,
    bridged_broker,
    cluster_url,
    district_file,
    district_status,
    school,
    school_config,
)
from tests.support.gateway import Site, run_cli
from tests.support.waiting import eventually

SITES = ["school-a", "school-b", "school-c"]
MQTT_STREAMS = ("$MQTT_sess", "$MQTT_msgs", "$MQTT_rmsgs")


def decisions(site: Site, action: str) -> list[dict[str, Any]]:
    """The audit's accepted commands of ``action`` by the district actor (one per decision)."""
    return [
        r
        for r in audit_records(site)
        if r["kind"] == "command"
        and r["actor"] == DISTRICT_ACTOR
        and r["data"].get("action") == action
    ]


async def test_a_district_lockdown_is_confirmed_by_every_school_after_the_stream_leader_dies(
    nats3: list[NatsServer], tmp_path: Path
) -> None:
    url = cluster_url(nats3)
    district = district_file(tmp_path, SITES, url, resend_s=1.0, timeout_s=90.0)
    async with contextlib.AsyncExitStack() as stack:
        running = []
        for site_id in SITES:
            local = await stack.enter_async_context(bridged_broker(site_id, [url]))
            config = school_config(local, tmp_path / site_id, site_id, heartbeat_s=0.5,
                                   district_sites=(site_id,))  # fmt: skip
            running.append(await stack.enter_async_context(school(config)))

        async def every_school_ok() -> bool:
            return all(r["verdict"] == "ok" for r in (await district_status(district)).values())

        await eventually(every_school_ok, timeout_s=60, interval_s=0.5)
        # The streams are R3: every node holds them, and a quorum survives one node.
        led = leaders(nats3)
        assert set(MQTT_STREAMS) <= set(led), led
        victim = next(n for n in nats3 if n.name == led["$MQTT_msgs"])
        await asyncio.to_thread(victim.kill)

        code, out, err = await run_cli(
            "district", "lockdown", "-c", str(district), "--schools", "all", "--json",
            timeout_s=150,
        )  # fmt: skip
        assert code == 0, out + err + "\n".join(n.log_tail() for n in nats3 if n.running)
        outcomes = {o["school"]: o for o in json.loads(out)}
        assert {s: o["result"] for s, o in outcomes.items()} == dict.fromkeys(SITES, "confirmed")
        # Confirmed through a node that survived: the district tool moved to another node.
        assert {o["via"] for o in outcomes.values()} <= {n.url for n in nats3 if n.running}
        for site in running:
            assert all(site.coil(d.id) for d in site.config.doors if d.kind == "classroom")
            # However many copies were re-signed and resent, the school decided once.
            assert len(decisions(site, "lockdown")) == 1

        code, out, err = await run_cli(
            "district", "release", "-c", str(district), "--schools", "all", timeout_s=150
        )
        assert code == 0, out + err
        assert "release: 3 confirmed, 0 failed, 0 unreachable" in out
        for site in running:
            assert not any(site.coil(d.id) for d in site.config.doors if d.kind == "classroom")
