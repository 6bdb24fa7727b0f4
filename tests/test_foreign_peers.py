"""Against software the project did not write: the Modbus driver on a pymodbus server.

Our simulators could share a misreading of the protocol with our drivers; a server from the
pymodbus project cannot. The BACnet peers (a plain bacpypes3 controller without RPM, and
bacpypes3 client calls to our simulator) are in tests/test_foreign_bacnet.py; the ONVIF peer
(the sync onvif-zeep client) in tests/test_foreign_onvif.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import ModbusTcpServer

from gatewayd.drivers.modbus_relay import ModbusRelayConfig, ModbusRelayDriver
from gatewayd.kernel.events import Health, PointWrite, WritePoints
from gatewayd.simulators.broker import free_port
from gatewayd.simulators.relay_board import RelayBoardSim
from tests.support.harness import Harnesses, changed
from tests.support.waiting import eventually

COILS, INPUTS = 8, 8


@pytest.fixture
async def pymodbus_board() -> AsyncIterator[tuple[ModbusDeviceContext, int]]:
    """A pymodbus TCP server holding 8 coils and 8 discrete inputs, unit 1."""
    device = ModbusDeviceContext(
        co=ModbusSequentialDataBlock(1, [False] * COILS),  # type: ignore[no-untyped-call]
        di=ModbusSequentialDataBlock(1, [True] * INPUTS),  # type: ignore[no-untyped-call]
    )
    port = free_port()
    server = ModbusTcpServer(ModbusServerContext(devices={1: device}, single=False),
                             address=("127.0.0.1", port))  # fmt: skip
    task = asyncio.create_task(server.serve_forever())
    try:
        async with asyncio.timeout(5):
            while server.transport is None:  # noqa: ASYNC110 (pymodbus offers no ready event)
                await asyncio.sleep(0.01)
        yield device, port
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_modbus_driver_locks_and_reads_back_on_a_pymodbus_server(
    pymodbus_board: tuple[ModbusDeviceContext, int], harnesses: Harnesses
) -> None:
    device, port = pymodbus_board
    config = ModbusRelayConfig(id="foreign", driver="modbus_relay", host="127.0.0.1", port=port,
                               coils=COILS, inputs=INPUTS, poll_interval_ms=50,
                               timeout_ms=500)  # fmt: skip
    points = frozenset({*(f"coil:{i}" for i in range(COILS)), "input:3"})
    run = await harnesses.start(lambda emit: ModbusRelayDriver(config, points, emit), device)
    await eventually(lambda: run.driver.health is Health.ONLINE)
    await run.driver.execute(WritePoints((PointWrite("coil:2", True),
                                          PointWrite("coil:5", True))))  # fmt: skip
    # Read back by another client of the same server, not by the driver.
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2)
    try:
        assert await client.connect()
        read = await client.read_coils(0, count=COILS, device_id=1)
        assert read.bits[:COILS] == [i in (2, 5) for i in range(COILS)], read.bits
    finally:
        client.close()
    # The server's inputs (all on) reach the driver through its poll.
    await run.wait_for(changed("input:3", True), 3)


async def test_our_relay_board_simulator_answers_pymodbus_as_a_board_would() -> None:
    sim = RelayBoardSim(8, extra_inputs=2)
    await sim.start()
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=2)
    try:
        assert await client.connect()
        written = await client.write_coils(0, [True, False, True], device_id=1)
        assert not written.isError(), written
        read = await client.read_coils(0, count=3, device_id=1)
        assert read.bits[:3] == [True, False, True]
        assert sim.coil(0) and sim.coil(2) and not sim.coil(1)
        await eventually(lambda: sim.sense(0))
        inputs = await client.read_discrete_inputs(0, count=sim.input_count, device_id=1)
        assert not inputs.isError()
        assert inputs.bits[8 + 0] is True  # lock sense of door 0 follows its bolt
    finally:
        client.close()
        await sim.stop()
