"""The lifecycle every simulator shares (simulators/base.py), checked on each of them."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from gatewayd.simulators.bacnet_device import BacnetDeviceSim
from gatewayd.simulators.base import Listener
from gatewayd.simulators.campus import Simulated
from gatewayd.simulators.onvif_camera import OnvifCameraSim
from gatewayd.simulators.psap_radio import PsapRadioSim
from gatewayd.simulators.relay_board import RelayBoardSim
from tests.support.waiting import eventually

_instances = itertools.count(1501)
SIMULATORS: dict[str, Callable[[], Simulated]] = {
    "relay_board": lambda: RelayBoardSim(2, extra_inputs=1),
    "bacnet_device": lambda: BacnetDeviceSim(2, device_instance=next(_instances)),
    "onvif_camera": lambda: OnvifCameraSim("cam", frame_size=(64, 48)),
    "psap_radio": lambda: PsapRadioSim("tcp"),
}


@pytest.fixture(params=sorted(SIMULATORS))
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulated]:
    device = SIMULATORS[request.param]()
    try:
        yield device
    finally:
        await device.stop()


def tcp_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


async def test_port_zero_is_read_back_and_a_second_start_is_a_no_op(sim: Simulated) -> None:
    assert (sim.port, sim.listening) == (0, False)
    await sim.start()
    port = sim.port
    assert port != 0 and sim.listening
    await sim.start()
    assert sim.port == port


async def test_stop_twice_is_harmless_and_async_with_stops_on_exit(sim: Simulated) -> None:
    await sim.stop()
    async with sim as same:
        assert same is sim and sim.listening
    assert not sim.listening
    await sim.stop()
    assert not sim.listening


async def test_vanish_and_reappear_keep_the_port(sim: Simulated) -> None:
    await sim.start()
    port = sim.port
    await sim.vanish()
    await sim.vanish()
    assert not sim.listening and sim.counts["vanished"] == 1
    if sim.kind != "bacnet_device":
        assert not tcp_accepts(port)
    await sim.reappear()
    await sim.reappear()
    assert sim.listening and sim.port == port
    if sim.kind != "bacnet_device":
        assert tcp_accepts(port)


async def test_kind_names_the_simulator_and_statistics_count_power_losses(
    sim: Simulated,
) -> None:
    await sim.start()
    await sim.vanish()
    await sim.reappear()
    assert sim.kind in SIMULATORS
    stats = sim.statistics()
    assert (stats["vanished"], stats["in_flight"]) == (1, 0)


async def test_a_delayed_modbus_reply_is_cancelled_by_stop() -> None:
    board = RelayBoardSim(2)
    await board.start()
    client = AsyncModbusTcpClient("127.0.0.1", port=board.port, timeout=5, retries=0)
    try:
        assert await client.connect()
        board.faults.delay_ms = 60_000
        pending = asyncio.ensure_future(client.read_coils(0, count=2, device_id=1))
        await eventually(lambda: board.in_flight == 1)
        await board.stop()
        assert board.in_flight == 0
        with pytest.raises(ModbusIOException):
            await pending
    finally:
        client.close()


async def test_a_hung_camera_request_does_not_hold_up_stop() -> None:
    camera = OnvifCameraSim("hung", frame_size=(64, 48))
    await camera.start()
    camera.faults.hang = True
    async with aiohttp.ClientSession() as session:
        pending = asyncio.ensure_future(session.get(f"{camera.base_url}/snapshot.jpg"))
        await eventually(lambda: camera.in_flight == 1)
        await camera.stop()
        assert camera.in_flight == 0
        with pytest.raises(aiohttp.ClientError):
            await pending


class _Stuck(Listener):
    """A listener whose close never returns, to prove stop() is bounded."""

    kind = "stuck"

    def __init__(self) -> None:
        super().__init__("stuck", stop_timeout_s=0.05)
        self.stopped = False

    async def _open(self) -> int:
        return 4242

    async def _close(self) -> None:
        await asyncio.Event().wait()

    def _stopped(self) -> None:
        self.stopped = True


async def test_stop_gives_up_at_its_deadline_and_still_releases_what_it_owns() -> None:
    stuck = _Stuck()
    await stuck.start()
    assert stuck.port == 4242
    await asyncio.wait_for(stuck.stop(), 10)
    assert stuck.stopped and not stuck.listening
