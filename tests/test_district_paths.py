"""Topology (b), real processes: each school bridged to two independent district brokers, every
command sent on both; the school decides once, and one path alone is enough."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from gatewayd.simulators.broker import Mosquitto
from tests.support.district import (
    DISTRICT_ACTOR,
    audit_records,
    bridged_broker,
    district_file,
    district_status,
    school,
    school_config,
)
from tests.support.gateway import Site, run_cli
from tests.support.waiting import eventually

SITES = ["school-a", "school-b"]


def records_of(site: Site, command_id: str) -> list[dict[str, Any]]:
    return [r for r in audit_records(site) if r["data"].get("command") == command_id]


def accepted(site: Site, action: str) -> list[dict[str, Any]]:
    """The district's commands of ``action`` the school carried out (one per decision)."""
    return [r for r in audit_records(site)
            if r["kind"] == "command" and r["actor"] == DISTRICT_ACTOR
            and r["data"].get("action") == action]  # fmt: skip


async def test_commands_go_out_on_both_district_brokers_run_once_and_one_broker_is_enough(
    tmp_path: Path,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(Mosquitto())
        b = await stack.enter_async_context(Mosquitto())
        district = district_file(tmp_path, SITES, a.url, b.url, resend_s=1.0)
        running = []
        for site_id in SITES:
            local = await stack.enter_async_context(bridged_broker(site_id, [a.url, b.url]))
            config = school_config(local, tmp_path / site_id, site_id, heartbeat_s=0.5,
                                   district_sites=(site_id,))  # fmt: skip
            running.append(await stack.enter_async_context(school(config)))

        async def both_paths_up() -> bool:
            rows = await district_status(district)
            return all(r["verdict"] == "ok" and r["reached"] == 2 for r in rows.values())

        await eventually(both_paths_up, timeout_s=30, interval_s=0.3)

        code, out, err = await run_cli("district", "lockdown", "-c", str(district),
                                       "--schools", "all", "--json")  # fmt: skip
        assert code == 0, out + err
        outcomes = {o["school"]: o for o in json.loads(out)}
        assert {s: o["result"] for s, o in outcomes.items()} == dict.fromkeys(SITES, "confirmed")
        for site in running:
            [decision] = accepted(site, "lockdown")
            ident = decision["data"]["command"]

            def copy_refused(site: Site = site, ident: str = ident) -> bool:
                return any(r["kind"] == "refusal" and r["data"].get("error") == "replayed"
                           for r in records_of(site, ident))  # fmt: skip

            # The copy from the other broker reached the school too, and was refused.
            await eventually(
                copy_refused, timeout_s=10, message="the other path's copy was not refused"
            )
            assert all(site.coil(d.id) for d in site.config.doors if d.kind == "classroom")

        # District broker A dies: release goes out on both, arrives on B alone.
        await asyncio.to_thread(a.kill)
        code, out, err = await run_cli("district", "release", "-c", str(district),
                                       "--schools", "all", "--json")  # fmt: skip
        assert code == 0, out + err
        outcomes = {o["school"]: o for o in json.loads(out)}
        assert {s: (o["result"], o["via"]) for s, o in outcomes.items()} == dict.fromkeys(
            SITES, ("confirmed", b.url)
        )
        for site in running:
            assert len(accepted(site, "release")) == 1
            assert not any(site.coil(d.id) for d in site.config.doors if d.kind == "classroom")
