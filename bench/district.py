"""District lockdown over the district tier, against each school's own broker, same run.

N schools, each a generated campus (relay boards in a child process), its gateway in this
process on its own Mosquitto, and that Mosquitto bridged (``gatewayd bridge-config``) to a
NATS district broker (JetStream, MQTT 3.1.1). Each round sends a district lockdown then a
release to every school twice: through NATS (the district tier) and, as the reference,
straight to each school's own broker. A school's time runs from the first publish of its
command to its confirmed reply.

    python -m bench.district --schools 10 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    SimProcess,
    bench_campus,
    in_process_config,
    load_average,
    percentiles,
    report,
)
from gatewayd.app.bridge import bridge_config
from gatewayd.app.district import District, DistrictSection, Outcome, SchoolEntry, district_command
from gatewayd.app.logs import configure
from gatewayd.security.keys import demo_private_key
from gatewayd.service.gateway import Gateway
from gatewayd.simulators.broker import Mosquitto
from gatewayd.simulators.nats import NatsServer

KEY = Path(__file__).resolve().parents[1] / "configs" / "demo-keys" / "demo-administrator.key"
TARGETS = {"p50_ratio": 1.2, "max_s": 2.0}


def district_of(sites: list[str], brokers: dict[str, str]) -> District:
    section = DistrictSection(actor="demo-administrator", key=str(KEY), resend_s=2.0)
    schools = tuple(SchoolEntry(id=s, brokers=(brokers[s],)) for s in sites)
    return District(section, schools, KEY)


async def one_round(district: District, action: str) -> list[Outcome]:
    body: dict[str, Any] = {"actor": "demo-administrator", "action": action, "scope": "campus",
                            "params": {}}  # fmt: skip
    key = demo_private_key("demo-administrator")
    return await district_command(district, district.schools, body, key, timeout_s=30)


async def run(schools: int, rounds: int, doors: int) -> dict[str, Any]:
    sites = [f"school-{n:02d}" for n in range(schools)]
    samples: dict[str, list[float]] = {"district": [], "reference": []}
    rounds_all: dict[str, list[float]] = {"district": [], "reference": []}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-district-") as tmp, NatsServer() as nats:
        async with contextlib.AsyncExitStack() as stack:
            local: dict[str, str] = {}
            gateways = []
            for site in sites:
                path = bench_campus(Path(tmp) / f"{site}.toml", site, doors, poll_ms=100)
                sims = await stack.enter_async_context(SimProcess(path, actuation_ms=2))
                broker = Mosquitto(extra_config=bridge_config("gatewayd", site, [nats.url]))
                await stack.enter_async_context(broker)
                config = in_process_config(path, sims.ports, broker.url, Path(tmp) / site)
                gateway = Gateway(config)
                ready = asyncio.Event()
                task = asyncio.create_task(gateway.run(ready.set), name=f"bench:{site}")
                stack.callback(task.cancel)
                await asyncio.wait_for(ready.wait(), 30)
                gateways.append(gateway)
                local[site] = broker.url
            paths = {
                "reference": district_of(sites, local),
                "district": district_of(sites, dict.fromkeys(sites, nats.url)),
            }
            # Warm-up: the bridges connect, every school answers once over NATS.
            for action in ("lockdown", "release"):
                await one_round(paths["district"], action)
            for _ in range(rounds):
                for name, district in paths.items():
                    for action in ("lockdown", "release"):
                        t0 = time.monotonic()
                        outcomes = await one_round(district, action)
                        bad = [o for o in outcomes if o.result != "confirmed" or o.seconds is None]
                        failures += [f"{name} {action} {o.school}: {o.result} {o.message}"
                                     for o in bad]  # fmt: skip
                        if action == "lockdown":
                            samples[name] += [o.seconds for o in outcomes if o.seconds is not None]
                            rounds_all[name].append(round(time.monotonic() - t0, 3))
    district_p, reference_p = percentiles(samples["district"]), percentiles(samples["reference"])
    ratio = district_p["p50"] / reference_p["p50"] if reference_p.get("p50") else float("inf")
    return {
        "schools": schools,
        "doors_per_school": doors,
        "rounds": rounds,
        "lockdown_s": {"district": district_p, "reference": reference_p},
        "every_school_confirmed_s": {k: percentiles(v) for k, v in rounds_all.items()},
        "p50_ratio": round(ratio, 3),
        "targets": TARGETS,
        "met": {
            "p50_ratio": ratio <= TARGETS["p50_ratio"],
            "max_s": district_p.get("max", 99) <= TARGETS["max_s"],
        },
        "failures": failures,
        "load_average": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schools", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--doors", type=int, default=64, help="doors per school")
    args = parser.parse_args()
    configure("warning")
    results = asyncio.run(run(args.schools, args.rounds, args.doors))
    report(
        f"District lockdown, {args.schools} schools x {args.doors} doors, seconds"
        f" (load {results['load_average']})",
        results,
        [
            ("per school, through NATS (district tier)", results["lockdown_s"]["district"]),
            ("per school, own broker (reference)", results["lockdown_s"]["reference"]),
            (
                "whole operation incl. connecting, NATS",
                results["every_school_confirmed_s"]["district"],
            ),
            (
                "whole operation incl. connecting, own",
                results["every_school_confirmed_s"]["reference"],
            ),
        ],
    )


if __name__ == "__main__":
    main()
