"""Rule evaluation cost per event: ~200 rules, indexed by (kind, source).

Each sample matches one event against the rule set (index lookup, then field comparison)
and renders the fired rules' action templates, as the gateway does before dispatching.

    python -m bench.rules --rules 200 --events 50000
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from bench._common import percentiles, report
from gatewayd.rules.rulefile import RadioAlert, RuleSet, parse_rules, render

KINDS = ("alarm", "camera", "door", "device", "state", "command")


def rule_file(n: int, rng: random.Random) -> dict[str, Any]:
    rules = []
    for i in range(n):
        when: dict[str, Any] = {"kind": rng.choice(KINDS)}
        if rng.random() < 0.7:
            when["source"] = f"dev-{rng.randrange(50)}"
        if rng.random() < 0.5:
            when["location"] = {"building": rng.choice("ABCD")}
        if rng.random() < 0.5:
            when["data"] = {"active": True}
        rules.append(
            {
                "id": f"r{i}",
                "when": when,
                "do": [
                    {
                        "action": "radio_alert",
                        "text": "{kind} at {location.building} from {source}",
                    },
                ],
            }
        )
    return {"rule": rules}


def events(n: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "id": str(i),
            "kind": rng.choice(KINDS),
            "source": f"dev-{rng.randrange(50)}",
            "location": {"building": rng.choice("ABCD")},
            "drill": False,
            "data": {"active": rng.random() < 0.5},
        }
        for i in range(n)
    ]


def run(rules: RuleSet, sample: list[dict[str, Any]]) -> tuple[list[float], float, int]:
    costs_us: list[float] = []
    fired = 0
    t0 = time.perf_counter()
    for event in sample:
        start = time.perf_counter_ns()
        for rule in rules.match(event):
            fired += 1
            for action in rule.do:
                if isinstance(action, RadioAlert):
                    render(action.text, event)
        costs_us.append((time.perf_counter_ns() - start) / 1e3)
    return costs_us, len(sample) / (time.perf_counter() - t0), fired


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    rng = random.Random(7)
    rules = parse_rules(rule_file(args.rules, rng))
    sample = events(args.events, rng)
    run(rules, sample[:1000])  # warm-up
    costs_us, rate, fired = run(rules, sample)
    stats = percentiles(costs_us)
    results = {
        "bench": "rules",
        "rules": len(rules),
        "events": len(sample),
        "rules_fired": fired,
        "events_per_s": round(rate),
        "per_event_us": stats,
    }
    report(
        f"Rule evaluation, {len(rules)} rules (µs per event)",
        results,
        [("match + render fired actions", stats)],
    )
    print(f"{round(rate):,} events/s")


if __name__ == "__main__":
    main()
