"""PSAP radio alert round trip: SendAlert -> EMG and TXT both acknowledged, over pty and TCP.

The driver and the radio simulator share this process and its event loop (the radio answers
from a loop callback), so the figures include both ends' Python. Each sample is one
``execute(SendAlert)``: EMG sent, ACK decoded, TXT sent, ACK decoded. Also reported: one
frame's round trip (the driver's ``last_rtt_ms`` after each alert, i.e. the TXT's).

    python -m bench.radio --alerts 500
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench._common import percentiles, report
from gatewayd.app.logs import configure
from gatewayd.drivers.psap_radio import PsapRadioConfig, PsapRadioDriver
from gatewayd.kernel.events import DeviceHealth, DriverEvent, Health, SendAlert
from gatewayd.simulators.psap_radio import Mode, PsapRadioSim

ALERT = SendAlert("LOCKDOWN", "LOCKDOWN, Building A, Room 114, 09:42")
WARM_UP = 20


async def measure(mode: Mode, alerts: int) -> dict[str, list[float]]:
    """Alert and frame round trips (ms) against a fresh radio in ``mode``."""
    sim = PsapRadioSim(mode, name=f"bench-{mode}")
    await sim.start()
    config = PsapRadioConfig(
        id=f"radio-{mode}",
        driver="psap_radio",
        url=sim.url,
        site_label="Bench High School",
        heartbeat_s=60,
    )
    online = asyncio.Event()

    def emit(event: DriverEvent) -> None:
        if isinstance(event, DeviceHealth) and event.health is Health.ONLINE:
            online.set()

    driver = PsapRadioDriver(config, frozenset(), emit)
    task = asyncio.create_task(driver.run(lambda: None))
    samples: dict[str, list[float]] = {"alert": [], "frame": []}
    try:
        await asyncio.wait_for(online.wait(), 5)
        for i in range(alerts + WARM_UP):
            start_ns = time.monotonic_ns()
            await driver.execute(ALERT)
            done_ns = time.monotonic_ns()
            if i >= WARM_UP:
                samples["alert"].append((done_ns - start_ns) / 1e6)
                samples["frame"].append(float(driver.statistics()["last_rtt_ms"]))
        assert driver.statistics()["retries"] == 0, "a retry means the bench measured a timeout"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()
    return samples


async def main(alerts: int) -> None:
    results: dict[str, Any] = {"alerts": alerts}
    table: list[tuple[str, dict[str, float]]] = []
    for mode in ("pty", "tcp"):
        samples = await measure(mode, alerts)
        stats = {name: percentiles(values) for name, values in samples.items()}
        results[mode] = stats
        table.append((f"{mode}: alert (EMG+TXT acknowledged), ms", stats["alert"]))
        table.append((f"{mode}: one frame -> ACK, ms", stats["frame"]))
    report("PSAP radio round trip (driver and simulator in one process)", results, table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=500)
    args = parser.parse_args()
    configure("warning")
    asyncio.run(main(args.alerts))
