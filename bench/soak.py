"""Soak: the uplink process under load for minutes while the broker is killed again and again.

The long form of tests/test_faults.py: 0 accepted events lost, order per source kept,
duplicates only around outages. Outages are clean broker stops by default; with
``--hard-kills`` half are SIGKILLs, where Mosquitto loses what it PUBACKed but had not yet
delivered or saved (the runner's ``left == 0`` still shows the gateway delivered everything).
Prints the delivery summary as JSON; exit status 1 on loss.

    .venv/bin/python -m bench.soak --minutes 5 --rate 1000 --outage-every 20 --down 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.uplink_runner import Runner
from gatewayd.app.logs import configure
from gatewayd.simulators.faultkit import DurableMosquitto, Recorder, check_delivery, read_accepted


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    seconds = args.minutes * 60
    outages: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="gatewayd-soak-") as tmp:
        broker = DurableMosquitto()
        broker.start()
        try:
            async with Recorder(broker, "gatewayd/fault/event/#") as recorder:
                runner = await Runner(
                    broker.url, Path(tmp), rate=args.rate, seconds=seconds, run="soak"
                ).start()
                try:
                    end = time.monotonic() + seconds - args.down
                    while time.monotonic() + args.outage_every < end:
                        await asyncio.sleep(args.outage_every)
                        began = time.monotonic()
                        await broker.restart_async(
                            down_s=rng.uniform(1, args.down),
                            hard=args.hard_kills and rng.random() < 0.5,
                        )
                        outages.append((began, time.monotonic()))
                    result = await runner.wait(timeout_s=seconds + 300)
                finally:
                    await runner.kill()
                accepted = read_accepted(runner.accepted_path)
                missing = await recorder.wait_for_ids(set(accepted), timeout_s=30)
                delivery = check_delivery(accepted, recorder.got)
        finally:
            broker.stop()
    delivery.outages = outages
    return {
        **delivery.summary(),
        "missing": len(missing),
        "duplicates_outside_outages": len(delivery.duplicates_outside(slack_s=3.0)),
        "runner": {k: result.get(k) for k in ("reconnects", "acked", "left", "commits")},
        "minutes": args.minutes,
        "hard_kills": args.hard_kills,
        "rate": args.rate,
    }


def main() -> None:
    configure("warning", json=False)
    p = argparse.ArgumentParser(prog="python -m bench.soak")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--outage-every", type=float, default=20.0, help="seconds between outages")
    p.add_argument("--down", type=float, default=5.0, help="longest outage, seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--hard-kills",
        action="store_true",
        help="SIGKILL the broker in half the outages; Mosquitto then loses a few"
        " messages it had PUBACKed, so 'lost' measures the broker, not the gateway",
    )
    summary = asyncio.run(soak(p.parse_args()))
    print(json.dumps(summary, indent=2))
    ok = not summary["missing"] and not summary["out_of_order"]
    sys.exit(0 if ok and not summary["duplicates_outside_outages"] else 1)


if __name__ == "__main__":
    main()
