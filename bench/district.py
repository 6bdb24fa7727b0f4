"""District lockdown over the district tier, against each school's own broker, same run.

N schools, each a generated campus (relay boards in a child process), its gateway in this
process on its own Mosquitto, and that Mosquitto bridged (``gatewayd bridge-config``) to
the district tier. A school's time runs from the first publish of its command to its
confirmed reply; the reference sends the same command straight to each school's own broker.

Scenarios (``--scenario``):

- ``steady``: one NATS node (JetStream, MQTT 3.1.1); lockdown and release, ``--rounds``.
- ``failover``: a 3-node NATS cluster (MQTT streams R3); each round kills the node leading
  ``$MQTT_msgs`` just before a district lockdown: time from the kill to each school
  confirmed; the node is restarted between rounds.
- ``two-paths``: each school bridged to two independent district Mosquittos, commands on
  both; each round kills one of them just before the lockdown.
- ``unreachable``: each school's bridge reaches the NATS node through a relay that can be
  cut (the school's own Mosquitto and gateway keep running, as on a box whose uplink is
  down). Each round: a lockdown with every school reachable (the baseline), then one
  school's link cut just before the next lockdown: the others' confirm times against the
  baseline, the time until ``district status`` shows the cut school stale (in heartbeats),
  and, the link restored while the lockdown is still resending, restore to confirmed.
- ``rss``: resident memory of each school's gateway process and of its Mosquitto.

    python -m bench.district --schools 10 --rounds 5 --scenario all
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import (
    DaemonProcess,
    SimProcess,
    bench_campus,
    effective_campus,
    in_process_config,
    load_average,
    percentiles,
    report,
)
from gatewayd.app.bridge import bridge_config
from gatewayd.app.district import (
    District,
    DistrictSection,
    Outcome,
    SchoolEntry,
    district_command,
    school_status,
)
from gatewayd.app.logs import configure
from gatewayd.security.keys import demo_private_key
from gatewayd.service.gateway import Gateway
from gatewayd.simulators.broker import Mosquitto
from gatewayd.simulators.link import FlakyLink
from gatewayd.simulators.nats import NatsServer, leaders, meta_leader, nats_cluster, start_cluster

KEY = Path(__file__).resolve().parents[1] / "configs" / "demo-keys" / "demo-administrator.key"
TARGETS = {"p50_ratio": 1.2, "max_s": 2.0, "failover_s": 10.0, "two_paths_s": 2.0,
           "unreachable_p99_ratio": 1.2, "stale_heartbeats": 2.0}  # fmt: skip
#: The ``unreachable`` scenario: the schools' heartbeat, and the district's stale threshold.
HEARTBEAT_S = 1.0
STALE_AFTER_S = 1.5


def district_of(
    sites: Sequence[str], brokers: dict[str, tuple[str, ...]], stale_after_s: float = 15.0
) -> District:
    section = DistrictSection(actor="demo-administrator", key=str(KEY), resend_s=2.0,
                              stale_after_s=stale_after_s)  # fmt: skip
    schools = tuple(SchoolEntry(id=s, brokers=brokers[s]) for s in sites)
    return District(section, schools, KEY)


async def one_round(
    district: District,
    action: str,
    timeout_s: float = 30,
    progress: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    body: dict[str, Any] = {"actor": "demo-administrator", "action": action, "scope": "campus",
                            "params": {}}  # fmt: skip
    key = demo_private_key("demo-administrator")
    return await district_command(district, district.schools, body, key, timeout_s=timeout_s,
                                  progress=progress)  # fmt: skip


@dataclass
class Schools:
    sites: list[str]
    #: Each school's own Mosquitto URL.
    local: dict[str, str] = field(default_factory=dict)
    brokers: list[Mosquitto] = field(default_factory=list)
    #: Each school's cuttable link to the district tier (``schools_on(..., links=True)``).
    links: dict[str, FlakyLink] = field(default_factory=dict)

    def reference(self) -> District:
        return district_of(self.sites, {s: (u,) for s, u in self.local.items()})

    def via(self, *urls: str, stale_after_s: float = 15.0) -> District:
        return district_of(self.sites, dict.fromkeys(self.sites, urls), stale_after_s)


@contextlib.asynccontextmanager
async def schools_on(
    tmp: Path,
    count: int,
    doors: int,
    districts: list[str],
    *,
    links: bool = False,
    heartbeat_s: float | None = None,
) -> AsyncIterator[Schools]:
    """``count`` schools, each on its own Mosquitto bridged to ``districts`` (one node each),
    through a relay per school that can be cut if ``links``."""
    schools = Schools([f"school-{n:02d}" for n in range(count)])
    async with contextlib.AsyncExitStack() as stack:
        for site in schools.sites:
            path = bench_campus(tmp / f"{site}.toml", site, doors, poll_ms=100)
            sims = await stack.enter_async_context(SimProcess(path, actuation_ms=2))
            uplinks = districts
            if links:
                [node] = districts
                host, port = node.removeprefix("mqtt://").rsplit(":", 1)
                link = await FlakyLink(host, int(port)).start()
                stack.push_async_callback(link.close)
                schools.links[site] = link
                uplinks = [link.url]
            broker = Mosquitto(extra_config=bridge_config("gatewayd", site, uplinks))
            await stack.enter_async_context(broker)
            config = in_process_config(path, sims.ports, broker.url, tmp / site)
            if heartbeat_s is not None:
                mqtt = config.mqtt.model_copy(update={"heartbeat_s": heartbeat_s})
                config = config.model_copy(update={"mqtt": mqtt})
            gateway = Gateway(config)
            ready = asyncio.Event()
            task = asyncio.create_task(gateway.run(ready.set), name=f"bench:{site}")
            stack.callback(task.cancel)
            await asyncio.wait_for(ready.wait(), 30)
            schools.local[site] = broker.url
            schools.brokers.append(broker)
        yield schools


async def until_all_confirm(district: District, limit_s: float = 90) -> None:
    """Warm-up: lockdown + release until every school answers (the bridges connect)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        outcomes = await one_round(district, "lockdown")
        await one_round(district, "release")
        if all(o.result == "confirmed" for o in outcomes):
            return
    raise RuntimeError("the schools did not all answer over the district tier")


def failures_of(name: str, action: str, outcomes: list[Outcome]) -> list[str]:
    return [f"{name} {action} {o.school}: {o.result} {o.message}"
            for o in outcomes if o.result != "confirmed"]  # fmt: skip


def since(outcome: Outcome, t0: float) -> float | None:
    """Seconds from ``t0`` (monotonic) to the school's confirmed reply."""
    if outcome.result != "confirmed" or outcome.first_sent is None or outcome.seconds is None:
        return None
    return round(outcome.first_sent - t0 + outcome.seconds, 3)


async def paired_rounds(
    named: dict[str, District], rounds: int, samples: dict[str, list[float]], failures: list[str]
) -> None:
    for _ in range(rounds):
        for name, district in named.items():
            for action in ("lockdown", "release"):
                outcomes = await one_round(district, action)
                failures += failures_of(name, action, outcomes)
                if action == "lockdown":
                    samples.setdefault(name, []).extend(
                        o.seconds for o in outcomes if o.seconds is not None
                    )


# --- scenarios ----------------------------------------------------------------------------


async def steady(schools: int, rounds: int, doors: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-district-") as tmp, NatsServer() as nats:
        async with schools_on(Path(tmp), schools, doors, [nats.url]) as on:
            named = {"district": on.via(nats.url), "reference": on.reference()}
            await until_all_confirm(named["district"])
            await paired_rounds(named, rounds, samples, failures)
    district_p, reference_p = percentiles(samples["district"]), percentiles(samples["reference"])
    ratio = district_p["p50"] / reference_p["p50"] if reference_p.get("p50") else float("inf")
    return {
        "lockdown_s": {"district": district_p, "reference": reference_p},
        "p50_ratio": round(ratio, 3),
        "met": {
            "p50_ratio": ratio <= TARGETS["p50_ratio"],
            "max_s": district_p.get("max", 99) <= TARGETS["max_s"],
        },
        "failures": failures,
    }


async def failover(schools: int, rounds: int, doors: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {}
    every: list[float] = []
    per_school: list[float] = []
    victims: list[str] = []
    failures: list[str] = []
    nodes = nats_cluster(3)
    url = "mqtt://" + "|".join(f"{n.host}:{n.mqtt_port}" for n in nodes)
    try:
        await asyncio.to_thread(start_cluster, nodes)
        with tempfile.TemporaryDirectory(prefix="bench-district-") as tmp:
            async with schools_on(Path(tmp), schools, doors, [url]) as on:
                named = {"healthy cluster": on.via(url), "reference": on.reference()}
                await until_all_confirm(named["healthy cluster"])
                for _ in range(rounds):
                    await paired_rounds(named, 1, samples, failures)
                    victim = next(n for n in nodes if n.name == leaders(nodes)["$MQTT_msgs"])
                    victims.append(victim.name)
                    await asyncio.to_thread(victim.kill)
                    killed = time.monotonic()
                    outcomes = await one_round(named["healthy cluster"], "lockdown", 90)
                    failures += failures_of("after kill", "lockdown", outcomes)
                    times = [t for o in outcomes if (t := since(o, killed)) is not None]
                    per_school += times
                    if len(times) == len(outcomes):
                        every.append(max(times))
                    failures += failures_of(
                        "after kill",
                        "release",
                        await one_round(named["healthy cluster"], "release", 90),
                    )
                    victim.start()
                    await asyncio.to_thread(_rejoined, nodes)
                    await until_all_confirm(named["healthy cluster"])
    finally:
        for node in nodes:
            node.stop()
    every_p = percentiles(every)
    return {
        "killed": victims,
        "kill_to_every_school_confirmed_s": every_p,
        "kill_to_school_confirmed_s": percentiles(per_school),
        "lockdown_s": {k: percentiles(v) for k, v in samples.items()},
        "met": {"failover_s": bool(every) and every_p.get("max", 99) <= TARGETS["failover_s"]},
        "failures": failures,
    }


def _rejoined(nodes: list[NatsServer], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while meta_leader(nodes, complete=True) is None or len(leaders(nodes)) < 3:
        if time.monotonic() > deadline:
            raise RuntimeError("the killed NATS node did not rejoin")
        time.sleep(0.2)


async def two_paths(schools: int, rounds: int, doors: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {}
    every: list[float] = []
    per_school: list[float] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-district-") as tmp:
        async with (
            Mosquitto() as a,
            Mosquitto() as b,
            schools_on(Path(tmp), schools, doors, [a.url, b.url]) as on,
        ):
            named = {"two paths": on.via(a.url, b.url), "reference": on.reference()}
            await until_all_confirm(named["two paths"])
            for n in range(rounds):
                await paired_rounds(named, 1, samples, failures)
                cut = (a, b)[n % 2]
                await asyncio.to_thread(cut.kill)
                killed = time.monotonic()
                outcomes = await one_round(named["two paths"], "lockdown")
                failures += failures_of("one path cut", "lockdown", outcomes)
                times = [t for o in outcomes if (t := since(o, killed)) is not None]
                per_school += times
                if len(times) == len(outcomes):
                    every.append(max(times))
                failures += failures_of(
                    "one path cut", "release", await one_round(named["two paths"], "release")
                )
                await asyncio.to_thread(cut.start)
                # Both paths whole again (each bridge reconnected) before the next cut.
                await until_all_confirm(on.via(a.url))
                await until_all_confirm(on.via(b.url))
    every_p = percentiles(every)
    return {
        "cut_to_every_school_confirmed_s": every_p,
        "cut_to_school_confirmed_s": percentiles(per_school),
        "lockdown_s": {k: percentiles(v) for k, v in samples.items()},
        "met": {"two_paths_s": bool(every) and every_p.get("max", 99) <= TARGETS["two_paths_s"]},
        "failures": failures,
    }


async def unreachable(schools: int, rounds: int, doors: int) -> dict[str, Any]:
    baseline: list[float] = []
    others: list[float] = []
    stale_beats: list[float] = []
    restore_to_confirmed: list[float] = []
    cuts: list[str] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-district-") as tmp, NatsServer() as nats:
        async with schools_on(Path(tmp), schools, doors, [nats.url], links=True,
                              heartbeat_s=HEARTBEAT_S) as on:  # fmt: skip
            district = on.via(nats.url, stale_after_s=STALE_AFTER_S)
            await until_all_confirm(district)
            for n in range(rounds):
                victim = on.sites[n % len(on.sites)]
                cuts.append(victim)
                # The baseline: the same schools, every one reachable, this round.
                outcomes = await one_round(district, "lockdown")
                failures += failures_of("all reachable", "lockdown", outcomes)
                baseline += [o.seconds for o in outcomes
                             if o.school != victim and o.seconds is not None]  # fmt: skip
                failures += failures_of("all reachable", "release",
                                        await one_round(district, "release"))  # fmt: skip
                result = await cut_round(district, on.links[victim], victim)
                failures += result.failures
                others += result.others
                stale_beats.append(round(result.stale_s / HEARTBEAT_S, 2))
                if result.restored_to_confirmed is not None:
                    restore_to_confirmed.append(result.restored_to_confirmed)
                failures += failures_of("after restore", "release",
                                        await one_round(district, "release", 60))  # fmt: skip
    base_p, others_p = percentiles(baseline), percentiles(others)
    p99_ratio = others_p["p99"] / base_p["p99"] if base_p.get("p99") else float("inf")
    p50_ratio = others_p["p50"] / base_p["p50"] if base_p.get("p50") else float("inf")
    stale_p = percentiles(stale_beats)
    return {
        "heartbeat_s": HEARTBEAT_S,
        "stale_after_s": STALE_AFTER_S,
        "cut": cuts,
        "lockdown_s": {"all reachable": base_p, "others, one cut": others_p},
        "p50_ratio": round(p50_ratio, 3),
        "p99_ratio": round(p99_ratio, 3),
        "cut_to_stale_heartbeats": stale_p,
        "restore_to_confirmed_s": percentiles(restore_to_confirmed),
        "met": {
            "unreachable_p99_ratio": p99_ratio <= TARGETS["unreachable_p99_ratio"],
            "stale_heartbeats": stale_p.get("max", 99) <= TARGETS["stale_heartbeats"],
            "delivered_on_return": len(restore_to_confirmed) == rounds,
        },
        "failures": failures,
    }


@dataclass
class CutRound:
    others: list[float] = field(default_factory=list)
    stale_s: float = float("nan")
    restored_to_confirmed: float | None = None
    failures: list[str] = field(default_factory=list)


async def cut_round(district: District, link: FlakyLink, victim: str) -> CutRound:
    """Cut ``victim``'s link, lockdown every school; once the others are confirmed and the
    district shows the victim stale, restore the link while the lockdown still resends."""
    result = CutRound()
    others_done = asyncio.Event()
    victim_entry = next(s for s in district.schools if s.id == victim)
    decided: set[str] = set()

    def progress(outcome: Outcome) -> None:
        if outcome.decided.is_set():
            decided.add(outcome.school)
        if decided >= {s.id for s in district.schools} - {victim}:
            others_done.set()

    link.cut()
    cut_at = time.monotonic()
    command = asyncio.create_task(one_round(district, "lockdown", 90, progress))

    async def until_stale() -> float:
        while True:
            status = await school_status(district, victim_entry, 3)
            if status.verdict != "ok":
                return time.monotonic() - cut_at
            await asyncio.sleep(0.1)

    result.stale_s = await asyncio.wait_for(until_stale(), 60)
    await asyncio.wait_for(others_done.wait(), 60)
    if command.done():
        result.failures.append(f"cut {victim}: the lockdown ended before the link came back")
    link.restore()
    restored = time.monotonic()
    outcomes = await command
    for o in outcomes:
        if o.school == victim:
            if (t := since(o, restored)) is not None:
                result.restored_to_confirmed = t
        elif o.seconds is not None:
            result.others.append(o.seconds)
    result.failures += failures_of(f"cut {victim}", "lockdown", outcomes)
    return result


def broker_pid(broker: Mosquitto) -> int:
    # The simulator keeps its process private; a bench may look (simulators/broker.py).
    proc = broker._proc
    assert proc is not None
    return proc.pid


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def rss(schools: int, doors: int) -> dict[str, Any]:
    """Per school: ``gatewayd run`` (its own process; its simulators in another, not counted)
    and its bridged Mosquitto, idle and after a district lockdown and release."""
    kib: dict[str, list[float]] = {"gateway": [], "gateway_after": [], "mosquitto": []}
    with tempfile.TemporaryDirectory(prefix="bench-district-") as tmp, NatsServer() as nats:
        async with contextlib.AsyncExitStack() as stack:
            daemons, brokers, sites = [], [], []
            for n in range(schools):
                site = f"school-{n:02d}"
                template = bench_campus(Path(tmp) / f"{site}.template.toml", site, doors,
                                        poll_ms=100)  # fmt: skip
                sims = await stack.enter_async_context(SimProcess(template, actuation_ms=2))
                broker = Mosquitto(extra_config=bridge_config("gatewayd", site, [nats.url]))
                await stack.enter_async_context(broker)
                path = Path(tmp) / f"{site}.toml"
                path.write_text(effective_campus(template.read_text(), sims.ports, broker.url))
                daemon = DaemonProcess(path, {"GATEWAYD_STATE_DIR": f"{tmp}/{site}"})
                await daemon.start()
                stack.push_async_callback(daemon.stop)
                daemons.append(daemon)
                brokers.append(broker)
                sites.append(site)
            district = district_of(sites, dict.fromkeys(sites, (nats.url,)))
            await until_all_confirm(district)
            await asyncio.sleep(2)
            kib["gateway"] = [rss_kib(d.pid) for d in daemons]
            kib["mosquitto"] = [rss_kib(broker_pid(b)) for b in brokers]
            await one_round(district, "lockdown")
            await one_round(district, "release")
            kib["gateway_after"] = [rss_kib(d.pid) for d in daemons]
    mib = {k: percentiles([round(x / 1024, 1) for x in v]) for k, v in kib.items()}
    return {
        "gateway_rss_mib": mib["gateway"],
        "gateway_rss_after_lockdown_mib": mib["gateway_after"],
        "bridge_mosquitto_rss_mib": mib["mosquitto"],
    }


SCENARIOS = ("steady", "failover", "two-paths", "unreachable", "rss")


async def run(scenarios: Sequence[str], schools: int, rounds: int, doors: int) -> dict[str, Any]:
    results: dict[str, Any] = {"schools": schools, "doors_per_school": doors, "rounds": rounds,
                               "targets": TARGETS}  # fmt: skip
    if "steady" in scenarios:
        results["steady"] = await steady(schools, rounds, doors)
    if "failover" in scenarios:
        results["failover"] = await failover(schools, rounds, doors)
    if "two-paths" in scenarios:
        results["two_paths"] = await two_paths(schools, rounds, doors)
    if "unreachable" in scenarios:
        results["unreachable"] = await unreachable(schools, rounds, doors)
    if "rss" in scenarios:
        results["rss"] = await rss(schools, doors)
    results["load_average"] = load_average()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schools", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--doors", type=int, default=64, help="doors per school")
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    args = parser.parse_args()
    configure("warning")
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    results = asyncio.run(run(scenarios, args.schools, args.rounds, args.doors))
    table: list[tuple[str, dict[str, float]]] = []
    labels = (("steady", "steady"), ("failover", "failover"), ("two_paths", "2 paths"),
              ("unreachable", "1 cut"))  # fmt: skip
    for name, label in labels:
        for path, stats in (results.get(name) or {}).get("lockdown_s", {}).items():
            table.append((f"{label}: lockdown per school, {path}", stats))
    if "failover" in results:
        table.append(("failover: kill -> every school confirmed",
                      results["failover"]["kill_to_every_school_confirmed_s"]))  # fmt: skip
    if "two_paths" in results:
        table.append(("2 paths: cut -> every school confirmed",
                      results["two_paths"]["cut_to_every_school_confirmed_s"]))  # fmt: skip
    if "unreachable" in results:
        cut = results["unreachable"]
        table.append(("1 cut: cut -> shown stale, heartbeats", cut["cut_to_stale_heartbeats"]))
        table.append(("1 cut: link back -> cut school confirmed", cut["restore_to_confirmed_s"]))
    if "rss" in results:
        table.append(("rss: gatewayd per school, MiB", results["rss"]["gateway_rss_mib"]))
        table.append(("rss: bridge Mosquitto per school, MiB",
                      results["rss"]["bridge_mosquitto_rss_mib"]))  # fmt: skip
    report(
        f"District, {args.schools} schools x {args.doors} doors, seconds"
        f" (load {results['load_average']})",
        results,
        table,
    )


if __name__ == "__main__":
    main()
