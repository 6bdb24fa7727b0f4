"""The ONVIF camera driver against the camera simulator, over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import cv2
import pytest
from pydantic import ValidationError

from gatewayd.drivers.onvif_camera import OnvifCameraConfig, OnvifCameraDriver
from gatewayd.drivers.onvif_camera.events import Notification, to_camera_event, topic_path
from gatewayd.kernel.errors import (
    BadDeviceReply,
    BadPoint,
    DeviceError,
    DeviceOffline,
    UnsupportedCommand,
)
from gatewayd.kernel.events import (
    CameraEvent,
    DeviceFault,
    DriverEvent,
    GotoPreset,
    Health,
    ReadPoints,
    TakeSnapshot,
)
from gatewayd.simulators.onvif_camera import (
    CELL_MOTION,
    DIGITAL_INPUT,
    MOTION,
    SCENE_CHANGE,
    TAMPER,
    OnvifCameraSim,
)
from tests.support.harness import DriverHarness, Harnesses, health
from tests.support.waiting import eventually

Camera = DriverHarness[OnvifCameraDriver, OnvifCameraSim]
Start = Callable[..., Awaitable[Camera]]


def camera_event(topic: str, active: bool) -> Callable[[DriverEvent], bool]:
    return lambda e: isinstance(e, CameraEvent) and e.topic == topic and e.active is active


def exists(path: str) -> bool:
    return Path(path).exists()


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir())


def folder_files(folder: Path) -> int:
    return len(list(folder.glob("*.jpg")))


@pytest.fixture
async def start(tmp_path: Path, harnesses: Harnesses) -> AsyncIterator[Start]:
    """Factory: a simulator and a driver (fast timings) against it; both stopped afterwards."""
    sims: list[OnvifCameraSim] = []

    async def start_camera(
        sim: OnvifCameraSim | None = None, online: bool = True, **settings: Any
    ) -> Camera:
        sim = sim or OnvifCameraSim("test-cam")
        await sim.start()
        sims.append(sim)
        values: dict[str, Any] = {
            "id": "cam-1",
            "driver": "onvif_camera",
            "host": sim.host,
            "port": sim.port,
            "username": sim.username,
            "password": sim.password,
            "timeout_s": 1.0,
            "pull_timeout_s": 0.5,
            "subscription_s": 10.0,
            "snapshot_dir": tmp_path,
            "thumbnail_px": 160,
            "reconnect_min_ms": 100,
            "reconnect_max_ms": 1_000,
        }
        config = OnvifCameraConfig.model_validate({**values, **settings})
        camera = await harnesses.start(
            lambda emit: OnvifCameraDriver(config, frozenset(), emit), sim
        )
        if online:
            await camera.wait_for(health(Health.ONLINE))
            await eventually(lambda: sim.subscriptions == 1)
        return camera

    try:
        yield start_camera
    finally:
        await harnesses.stop_all()
        for sim in sims:
            await sim.stop()


async def test_injected_camera_events_become_neutral_camera_events(start: Start) -> None:
    cam = await start()
    cam.sim.inject(MOTION, True)
    cam.sim.inject(CELL_MOTION, False)
    cam.sim.inject(SCENE_CHANGE, True)
    cam.sim.inject(DIGITAL_INPUT, True)
    cam.sim.inject("tns1:Monitoring/ProcessorUsage", True)
    event = await cam.wait_for(camera_event("motion", True))
    assert isinstance(event, CameraEvent)
    assert event.device == "cam-1"
    assert event.data["onvif_topic"] == MOTION
    assert event.data["source.Source"] == "VideoSource_1"
    await cam.wait_for(camera_event("motion", False))
    await cam.wait_for(camera_event("tamper", True))
    await cam.wait_for(camera_event("digital_input", True))
    await eventually(lambda: cam.stat("unknown_topics") == 1)
    assert cam.stat("events") == 4


async def test_subscription_is_renewed_before_it_lapses(start: Start) -> None:
    cam = await start(subscription_s=2.0, pull_timeout_s=0.5)
    await eventually(lambda: cam.sim.counts["Renew"] >= 2, timeout_s=6)
    assert cam.stat("subscriptions") == 1
    assert cam.sim.counts["subscriptions_expired"] == 0
    cam.sim.inject(MOTION, True)
    await cam.wait_for(camera_event("motion", True))


async def test_reboot_recreates_the_subscription_and_events_flow_again(start: Start) -> None:
    cam = await start()
    mark = cam.mark()
    await cam.sim.reboot(down_s=0.5)
    await cam.wait_for(health(Health.OFFLINE), since=mark)
    await cam.wait_for(health(Health.ONLINE), since=mark)
    await eventually(lambda: cam.sim.subscriptions == 1)
    cam.sim.inject(MOTION, True)
    await cam.wait_for(camera_event("motion", True), since=mark)
    assert cam.stat("connects") == 2


async def test_dropped_subscription_is_recreated_without_reconnecting(start: Start) -> None:
    cam = await start()
    cam.sim.drop_subscriptions()
    await eventually(lambda: cam.stat("subscriptions") == 2)
    await eventually(lambda: cam.sim.subscriptions == 1)
    cam.sim.inject(DIGITAL_INPUT, True)
    await cam.wait_for(camera_event("digital_input", True))
    assert cam.stat("connects") == 1
    assert cam.stat("subscriptions_lost") == 1


async def test_snapshot_is_stored_with_a_thumbnail(start: Start) -> None:
    cam = await start()
    result = await cam.driver.execute(TakeSnapshot("alarm"))
    assert result.done_ns >= result.on_wire_ns > 0
    assert (result.detail["width"], result.detail["height"]) == ("640", "480")
    full = cv2.imread(result.detail["path"])
    thumb = cv2.imread(result.detail["thumbnail"])
    assert full is not None and thumb is not None
    assert full.shape == (480, 640, 3)
    assert thumb.shape == (120, 160, 3)
    assert Path(result.detail["path"]).parent.name == "cam-1"
    assert len(cam.sim.snapshot_log) == 1


async def test_snapshot_store_deletes_the_oldest_beyond_its_bound(start: Start) -> None:
    cam = await start(snapshot_max_mb=0.1)
    paths = [(await cam.driver.execute(TakeSnapshot())).detail["path"] for _ in range(12)]
    assert folder_bytes(Path(paths[0]).parent) <= 0.1 * 1024 * 1024
    assert not exists(paths[0])
    assert exists(paths[-1])
    assert exists(paths[-1].replace(".jpg", ".thumb.jpg"))
    assert int(cam.stat("snapshots_deleted")) > 0


async def test_wrong_password_is_a_clear_error_offline_and_no_tight_loop(start: Start) -> None:
    cam = await start(password="wrong", online=False)
    await cam.wait_for(health(Health.OFFLINE, "camera refused the credentials"))
    first = cam.sim.counts["auth_refused"]
    # The retry proves the driver went round its backoff; it comes alone, after the slowest
    # backoff (1 s here), not in a burst.
    await eventually(lambda: cam.sim.counts["auth_refused"] > first)
    assert cam.sim.counts["auth_refused"] <= 2 * first
    assert cam.stat("connects") == 0
    with pytest.raises(DeviceOffline, match="refused the credentials"):
        await cam.driver.execute(TakeSnapshot())


async def test_goto_preset_by_name_moves_the_camera(start: Start) -> None:
    cam = await start(ptz_presets={"Lobby": "3"})
    result = await cam.driver.execute(GotoPreset("Entrance"))
    assert result.detail == {"preset": "Entrance", "token": "2"}
    await cam.driver.execute(GotoPreset("Lobby"))
    assert cam.sim.ptz_log == ["2", "3"]
    with pytest.raises(DeviceError, match="no PTZ preset 'Roof'"):
        await cam.driver.execute(GotoPreset("Roof"))


async def test_goto_preset_on_a_camera_without_ptz_is_unsupported(start: Start) -> None:
    cam = await start(OnvifCameraSim("fixed", ptz=False))
    with pytest.raises(UnsupportedCommand):
        await cam.driver.execute(GotoPreset("Home"))
    with pytest.raises(UnsupportedCommand):
        await cam.driver.execute(ReadPoints(("input:0",)))


async def test_garbage_snapshot_is_a_device_fault(start: Start) -> None:
    cam = await start()
    await cam.driver.execute(TakeSnapshot())
    mark = cam.mark()
    cam.sim.faults.corrupt = 1.0
    with pytest.raises(BadDeviceReply, match="not an image"):
        await cam.driver.execute(TakeSnapshot())
    await cam.wait_for(
        lambda e: isinstance(e, DeviceFault) and "not an image" in e.detail, since=mark
    )
    assert folder_files(cam.driver.config.snapshot_dir / "cam-1") == 2


def test_a_camera_has_no_points() -> None:
    with pytest.raises(BadPoint, match="no binary points"):
        OnvifCameraDriver.parse_point("input:0")


def test_vendor_topic_prefixes_are_ignored_and_unknown_topics_map_to_nothing() -> None:
    assert topic_path("tns1:RuleEngine/tnsaxis:CellMotionDetector/Motion") == (
        "RuleEngine/CellMotionDetector/Motion"
    )
    note = Notification("tns1:RuleEngine/CellMotionDetector/Motion", data={"IsMotion": "1"})
    event = to_camera_event("c", note)
    assert event is not None and event.topic == "motion" and event.active
    assert to_camera_event("c", Notification("tns1:Monitoring/OperatingTime")) is None


def test_a_pull_longer_than_the_renewal_point_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="pull_timeout_s"):
        OnvifCameraConfig(
            id="c",
            driver="onvif_camera",
            host="h",
            username="u",
            password="p",
            subscription_s=5,
            pull_timeout_s=4.5,
        )


async def test_a_state_already_on_at_subscription_is_an_event_and_quiet_ones_are_not(
    start: Start,
) -> None:
    sim = OnvifCameraSim("test-cam")
    sim.inject(TAMPER, True)  # someone covered the lens before the gateway came up
    cam = await start(sim)
    event = await cam.wait_for(camera_event("tamper", True))
    assert isinstance(event, CameraEvent) and event.data["operation"] == "Initialized"
    # Motion and the digital input were told too, quiet: counted, not events.
    await eventually(lambda: int(cam.stat("initial_states")) >= 2)
    assert not any(isinstance(e, CameraEvent) and e.topic != "tamper" for e in cam.events)
