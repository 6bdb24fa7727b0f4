"""District paths over real processes. Topology (b): each school bridged to two independent
district brokers, every command sent on both; the school decides once, and one path alone is
enough. And a school whose link is cut during a district lockdown, back before the timeout."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from gatewayd.app.district import Outcome, district_command, load_district
from gatewayd.security.keys import load_private_key
from gatewayd.simulators.broker import Mosquitto
from gatewayd.simulators.link import FlakyLink
from gatewayd.simulators.nats import NatsServer
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


async def test_a_school_cut_off_during_a_district_lockdown_confirms_once_its_link_is_back(
    nats: NatsServer, tmp_path: Path
) -> None:
    district_path = district_file(tmp_path, SITES, nats.url, stale_after_s=2.0, resend_s=1.0)
    district = load_district(district_path)
    async with contextlib.AsyncExitStack() as stack:
        # School B's bridge reaches the district through a link that can be cut; its own
        # Mosquitto and gateway keep running, as on a box whose uplink went down.
        link = await FlakyLink(nats.host, nats.mqtt_port).start()
        stack.push_async_callback(link.close)
        running = []
        for site_id, uplink in zip(SITES, (nats.url, link.url), strict=True):
            local = await stack.enter_async_context(bridged_broker(site_id, [uplink]))
            config = school_config(local, tmp_path / site_id, site_id, heartbeat_s=0.5,
                                   district_sites=(site_id,))  # fmt: skip
            running.append(await stack.enter_async_context(school(config)))
        a, b = running

        async def verdicts() -> dict[str, str]:
            return {s: r["verdict"] for s, r in (await district_status(district_path)).items()}

        async def all_ok() -> bool:
            return set((await verdicts()).values()) == {"ok"}

        await eventually(all_ok, timeout_s=30, interval_s=0.3)

        link.cut()
        seen: dict[str, Outcome] = {}
        body: dict[str, Any] = {"actor": DISTRICT_ACTOR, "action": "lockdown", "scope": "campus",
                                "params": {}}  # fmt: skip

        def progress(outcome: Outcome) -> None:
            seen[outcome.school] = outcome

        key = load_private_key(district.key_path)
        command = asyncio.create_task(
            district_command(district, district.schools, body, key, timeout_s=90,
                             progress=progress)
        )  # fmt: skip

        def a_confirmed_and_b_resent() -> bool:
            a_seen, b_seen = seen.get("school-a"), seen.get("school-b")
            return bool(a_seen and a_seen.result == "confirmed" and b_seen and b_seen.sends >= 2)

        await eventually(a_confirmed_and_b_resent, timeout_s=45, interval_s=0.1,
                         message="school A not confirmed, or B's command not resent")  # fmt: skip

        async def b_stale() -> bool:
            return (await verdicts())["school-b"] == "stale"

        await eventually(b_stale, timeout_s=30, interval_s=0.2)
        assert not command.done(), "the lockdown ended before the link came back"
        assert not any(b.coil(d.id) for d in b.config.doors if d.kind == "classroom")

        link.restore()
        outcomes = {o.school: o for o in await command}
        assert {s: o.result for s, o in outcomes.items()} == dict.fromkeys(SITES, "confirmed")
        assert outcomes["school-b"].sends >= 2
        for site in (a, b):
            assert all(site.coil(d.id) for d in site.config.doors if d.kind == "classroom")
            # The copies queued during the cut and the re-signed resends: one decision.
            assert len(accepted(site, "lockdown")) == 1
