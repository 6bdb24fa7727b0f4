"""The camera simulator against onvif-zeep-async used directly (not through our driver).

If the library's own flow (update_xaddrs, media, snapshot helpers, PullPointManager) runs
against the simulator, the simulator speaks ONVIF the way the library expects of a camera.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import cv2
import numpy as np
import pytest
import zeep.exceptions

# The library's own class, taken from the module that imports onvif without its
# logging.basicConfig side effect; nothing of our driver is in the path under test.
from gatewayd.drivers.onvif_camera.client import ONVIFCamera  # type: ignore[attr-defined]
from gatewayd.simulators.onvif_camera import CELL_MOTION, MOTION, OnvifCameraSim

EVENTS_NS = "http://www.onvif.org/ver10/events/wsdl"


@pytest.fixture
async def sim() -> AsyncIterator[OnvifCameraSim]:
    camera = OnvifCameraSim("honest", frame_size=(320, 240))
    await camera.start()
    try:
        yield camera
    finally:
        await camera.stop()


@pytest.fixture
async def client(sim: OnvifCameraSim) -> AsyncIterator[ONVIFCamera]:
    camera = ONVIFCamera(
        sim.host, sim.port, sim.username, sim.password, no_cache=True, adjust_time=True
    )
    try:
        await camera.update_xaddrs()
        yield camera
    finally:
        await camera.close()


async def test_library_discovers_services_device_information_and_profiles(
    sim: OnvifCameraSim,
    client: ONVIFCamera,
) -> None:
    assert client.xaddrs[EVENTS_NS] == f"{sim.base_url}/onvif/events_service"
    device = await client.create_devicemgmt_service()
    info = await device.GetDeviceInformation()
    assert info.Manufacturer == "gatewayd"
    media = await client.create_media_service()
    profiles = await media.GetProfiles()
    assert [p.token for p in profiles] == ["profile_1"]
    assert sim.counts["GetSystemDateAndTime"] >= 1


@pytest.mark.parametrize("basic_auth", [False, True], ids=["digest", "basic"])
async def test_library_snapshot_helpers_fetch_a_decodable_jpeg(
    client: ONVIFCamera,
    basic_auth: bool,
) -> None:
    uri = await client.get_snapshot_uri("profile_1")
    assert uri.endswith("/snapshot.jpg")
    jpeg = await client.get_snapshot("profile_1", basic_auth=basic_auth)
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (240, 320, 3)


async def test_library_pullpoint_manager_receives_injected_events(
    sim: OnvifCameraSim,
    client: ONVIFCamera,
) -> None:
    lost: list[bool] = []
    manager = await client.create_pullpoint_manager(
        dt.timedelta(seconds=60), lambda: lost.append(True)
    )
    try:
        assert sim.subscriptions == 1
        sim.inject(MOTION, True)
        sim.inject(CELL_MOTION, False)
        reply = await manager.get_service().PullMessages(
            {"Timeout": dt.timedelta(seconds=1), "MessageLimit": 10}
        )
        # After the "Initialized" state of each property, what happened since, in order.
        changed = [m for m in reply.NotificationMessage
                   if m.Message._value_1.PropertyOperation == "Changed"]  # fmt: skip
        topics = [m.Topic._value_1 for m in changed]
        assert topics == [MOTION, CELL_MOTION]
        data = changed[1].Message._value_1.Data.SimpleItem[0]
        assert (data.Name, data.Value) == ("IsMotion", "false")
    finally:
        await manager.shutdown()
    assert sim.subscriptions == 0
    assert not lost


async def test_library_ptz_lists_presets_and_moves(
    sim: OnvifCameraSim, client: ONVIFCamera
) -> None:
    ptz = await client.create_ptz_service()
    presets = await ptz.GetPresets({"ProfileToken": "profile_1"})
    assert [p.Name for p in presets] == ["Home", "Entrance", "Hallway"]
    await ptz.GotoPreset({"ProfileToken": "profile_1", "PresetToken": "2"})
    assert sim.ptz_log == ["2"]


async def test_wrong_password_is_a_not_authorized_soap_fault(sim: OnvifCameraSim) -> None:
    camera = ONVIFCamera(sim.host, sim.port, sim.username, "wrong", no_cache=True)
    try:
        with pytest.raises(zeep.exceptions.Fault) as caught:
            await camera.update_xaddrs()
    finally:
        await camera.close()
    assert any("NotAuthorized" in str(code) for code in caught.value.subcodes)
    assert sim.counts["auth_refused"] >= 1


async def test_garbled_camera_is_unreadable_to_the_library(
    sim: OnvifCameraSim,
    client: ONVIFCamera,
) -> None:
    device = await client.create_devicemgmt_service()
    sim.faults.corrupt = 1.0
    # zeep's recovering parser turns some garbage into None and then fails on it with an
    # AttributeError: the driver translates that too.
    with pytest.raises((zeep.exceptions.Error, AttributeError)):
        await device.GetDeviceInformation()


async def test_a_new_subscription_is_told_every_propertys_state_first(
    sim: OnvifCameraSim, client: ONVIFCamera
) -> None:
    sim.inject(MOTION, True)  # before anyone subscribes: the state is kept
    manager = await client.create_pullpoint_manager(dt.timedelta(seconds=60), lambda: None)
    try:
        reply = await manager.get_service().PullMessages(
            {"Timeout": dt.timedelta(seconds=1), "MessageLimit": 10}
        )
        initial = {
            m.Topic._value_1: (
                m.Message._value_1.PropertyOperation,
                m.Message._value_1.Data.SimpleItem[0].Value,
            )
            for m in reply.NotificationMessage
        }
    finally:
        await manager.shutdown()
    assert initial[MOTION] == ("Initialized", "true")
    assert all(op == "Initialized" for op, _ in initial.values()) and len(initial) >= 3


async def test_library_reads_scopes_interfaces_stream_uri_event_properties_and_ptz_status(
    sim: OnvifCameraSim, client: ONVIFCamera
) -> None:
    device = await client.create_devicemgmt_service()
    scopes = [s.ScopeItem for s in await device.GetScopes()]
    assert any(s.endswith("/name/honest") for s in scopes)
    interfaces = await device.GetNetworkInterfaces()
    assert interfaces[0].IPv4.Config.Manual[0].Address == sim.host
    media = await client.create_media_service()
    uri = await media.GetStreamUri({"ProfileToken": "profile_1", "StreamSetup": {
        "Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}})  # fmt: skip
    assert uri.Uri.startswith("rtsp://")
    events = await client.create_events_service()
    properties = await events.GetEventProperties()
    assert properties.FixedTopicSet is True
    ptz = await client.create_ptz_service()
    await ptz.GotoPreset({"ProfileToken": "profile_1", "PresetToken": "2"})
    status = await ptz.GetStatus({"ProfileToken": "profile_1"})
    assert status.MoveStatus.PanTilt == "IDLE"
