"""The ONVIF camera driver's rig for the driver contract suite (``simulators/contract.py``)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from gatewayd.kernel.driver import DriverConfig
from gatewayd.kernel.events import DeviceCommand, TakeSnapshot
from gatewayd.simulators.onvif_camera import OnvifCameraSim


class OnvifCameraRig:
    """A PTZ camera; the wire command is a snapshot, garbage is non-XML SOAP and non-JPEG."""

    driver = "onvif_camera"

    def __init__(self) -> None:
        self.sim = OnvifCameraSim("rig-camera", frame_size=(320, 240))
        self._dir: Path | None = None

    async def start(self) -> tuple[DriverConfig, frozenset[str]]:
        from gatewayd.drivers.onvif_camera.config import OnvifCameraConfig

        await self.sim.start()
        self._dir = Path(tempfile.mkdtemp(prefix="gatewayd-rig-camera-"))
        config = OnvifCameraConfig(
            id="rig-camera",
            driver="onvif_camera",
            host=self.sim.host,
            port=self.sim.port,
            username=self.sim.username,
            password=self.sim.password,
            timeout_s=1.0,
            pull_timeout_s=0.5,
            subscription_s=10.0,
            snapshot_dir=self._dir,
            snapshot_max_mb=1.0,
            reconnect_min_ms=100,
            reconnect_max_ms=1_000,
        )
        return config, frozenset()

    async def stop(self) -> None:
        await self.sim.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def wire_command(self) -> DeviceCommand:
        return TakeSnapshot("contract suite")

    def saw_on_wire(self, command: DeviceCommand) -> bool:
        return len(self.sim.snapshot_log) > 0

    async def vanish(self) -> None:
        await self.sim.vanish()

    async def reappear(self) -> None:
        await self.sim.reappear()

    def garble(self, on: bool) -> None:
        self.sim.faults.corrupt = 1.0 if on else 0.0
