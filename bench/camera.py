"""ONVIF camera: snapshot round trip and event latency against the camera simulator.

Snapshot: ``execute(TakeSnapshot)`` from the request to the stored thumbnail (GetSnapshotUri
once, then HTTP digest GET, OpenCV decode + resize + encode in a thread, two files written,
store pruned). Events: ``inject`` on the simulator -> the driver emits the CameraEvent (the
pull point's long poll wakes, the reply is parsed by zeep, mapped, emitted).

The simulator runs in this process and loop (events must be injected), so both sides share
one core: figures are an upper bound of what the driver adds.

    python -m bench.camera --snapshots 200 --events 500
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import percentiles, report
from gatewayd.app.logs import configure
from gatewayd.drivers.onvif_camera import OnvifCameraConfig, OnvifCameraDriver
from gatewayd.kernel.events import CameraEvent, DeviceHealth, DriverEvent, Health, TakeSnapshot
from gatewayd.simulators.onvif_camera import MOTION, OnvifCameraSim


class Recorder:
    """The driver's emit callback: wakes a waiter on each camera event and health change."""

    def __init__(self) -> None:
        self.camera_ns: list[int] = []
        self.online = asyncio.Event()
        self.changed = asyncio.Event()

    def __call__(self, event: DriverEvent) -> None:
        if isinstance(event, CameraEvent):
            self.camera_ns.append(time.perf_counter_ns())
            self.changed.set()
        elif isinstance(event, DeviceHealth) and event.health is Health.ONLINE:
            self.online.set()


async def snapshot_samples(driver: OnvifCameraDriver, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        t0 = time.perf_counter_ns()
        await driver.execute(TakeSnapshot("bench"))
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return samples


async def event_samples(sim: OnvifCameraSim, rec: Recorder, count: int) -> list[float]:
    samples = []
    for i in range(count):
        seen = len(rec.camera_ns)
        rec.changed.clear()
        t0 = time.perf_counter_ns()
        sim.inject(MOTION, i % 2 == 0)
        async with asyncio.timeout(5):
            while len(rec.camera_ns) == seen:
                await rec.changed.wait()
                rec.changed.clear()
        samples.append((rec.camera_ns[seen] - t0) / 1e6)
    return samples


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sim = OnvifCameraSim("bench", frame_size=(args.width, args.height))
    await sim.start()
    rec = Recorder()
    with tempfile.TemporaryDirectory(prefix="gatewayd-bench-cam-") as tmp:
        config = OnvifCameraConfig(
            id="bench-cam",
            driver="onvif_camera",
            host=sim.host,
            port=sim.port,
            username=sim.username,
            password=sim.password,
            pull_timeout_s=2.0,
            subscription_s=60.0,
            snapshot_dir=Path(tmp),
            snapshot_max_mb=50.0,
            thumbnail_px=args.thumbnail_px,
        )
        driver = OnvifCameraDriver(config, frozenset(), rec)
        task = asyncio.create_task(driver.run(lambda: None))
        try:
            async with asyncio.timeout(10):
                await rec.online.wait()
                while sim.subscriptions == 0:  # noqa: ASYNC110 - sim state has no event
                    await asyncio.sleep(0.01)
            # Warm-up: WSDL parsing, connection pools, the first GetSnapshotUri.
            await snapshot_samples(driver, 3)
            await event_samples(sim, rec, 5)
            snaps = await snapshot_samples(driver, args.snapshots)
            events = await event_samples(sim, rec, args.events)
            stats = dict(driver.statistics())
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sim.stop()
    return {
        "bench": "camera",
        "frame": f"{args.width}x{args.height}",
        "thumbnail_px": args.thumbnail_px,
        "snapshot_to_stored_thumbnail_ms": percentiles(snaps),
        "inject_to_camera_event_ms": percentiles(events),
        "driver": {k: stats[k] for k in ("snapshots", "events", "subscriptions", "faults")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--snapshots", type=int, default=200)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--thumbnail-px", type=int, default=320)
    args = parser.parse_args()
    configure("warning")
    results = asyncio.run(main_async(args))
    report(
        f"ONVIF camera vs simulator ({results['frame']} JPEG, thumbnail {args.thumbnail_px} px;"
        " ms)",
        results,
        [
            ("snapshot: request -> stored thumbnail", results["snapshot_to_stored_thumbnail_ms"]),
            ("event: inject -> CameraEvent", results["inject_to_camera_event_ms"]),
        ],
    )


if __name__ == "__main__":
    main()
