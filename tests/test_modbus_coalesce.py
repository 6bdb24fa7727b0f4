"""Commands that queue for one board are merged into one FC15, each answered on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gatewayd.drivers.modbus_relay import ModbusRelayConfig, ModbusRelayDriver
from gatewayd.kernel.errors import DeviceTimeout
from gatewayd.kernel.events import CommandResult, Health, PointWrite, ReadPoints, WritePoints
from gatewayd.simulators.relay_board import RelayBoardSim
from tests.support.harness import DriverHarness, Harnesses
from tests.support.modbus import board_points
from tests.support.waiting import eventually

DOORS = 32


Board = DriverHarness[ModbusRelayDriver, RelayBoardSim]


@pytest.fixture
async def board32(harnesses: Harnesses) -> AsyncIterator[Board]:
    sim = RelayBoardSim(DOORS, actuation_ms=0.0)
    await sim.start()
    config = ModbusRelayConfig(
        id="relay-32",
        driver="modbus_relay",
        host="127.0.0.1",
        port=sim.port,
        coils=DOORS,
        inputs=sim.input_count,
        poll_interval_ms=1000,
        timeout_ms=300,
    )
    try:
        harness = await harnesses.start(
            lambda emit: ModbusRelayDriver(config, board_points(DOORS, 0), emit), sim
        )
        await eventually(lambda: harness.driver.health is Health.ONLINE)
        yield harness
        await harnesses.stop_all()
    finally:
        await sim.stop()


def write(coil: int, value: bool = True) -> WritePoints:
    return WritePoints((PointWrite(f"coil:{coil}", value),))


def own_coil(result: CommandResult) -> tuple[str, bool]:
    return result.values[0].point, result.values[0].value


async def test_32_separate_commands_to_one_board_take_far_fewer_writes_each_answered(
    board32: Board,
) -> None:
    before = board32.sim.statistics()["write_coils"]
    results = await asyncio.gather(*(board32.driver.execute(write(c)) for c in range(DOORS)))
    writes = board32.sim.statistics()["write_coils"] - before
    # The first goes alone (the board was idle); the 31 queued behind it share one FC15.
    assert writes <= 2, writes
    assert [own_coil(r) for r in results] == [(f"coil:{c}", True) for c in range(DOORS)]
    # Each write's reply carries the lock senses for confirmation.
    senses = {v.point for v in results[-1].values[1:]}
    assert f"input:{DOORS + 31}" in senses
    assert board32.sim.coils() == [True] * DOORS
    stats = board32.driver.statistics()
    assert int(stats["commands_merged"]) >= DOORS - 2
    assert int(stats["writes"]) == writes


async def test_a_later_command_for_the_same_coil_wins_and_both_are_answered(
    board32: Board,
) -> None:
    first, second, read = await asyncio.gather(
        board32.driver.execute(write(5, True)),
        board32.driver.execute(write(5, False)),
        board32.driver.execute(ReadPoints(("coil:5", f"input:{DOORS + 5}"))),
    )
    # Arrival order: the last decision is the last write, and every reply says what is.
    assert board32.sim.coil(5) is False
    assert own_coil(second) == ("coil:5", False)
    assert own_coil(first) == ("coil:5", False)
    assert [v.point for v in read.values] == ["coil:5", f"input:{DOORS + 5}"]


async def test_a_failed_batch_answers_each_of_its_commands_with_the_error(
    board32: Board,
) -> None:
    board32.sim.faults.hang = True
    outcomes = await asyncio.gather(
        *(board32.driver.execute(write(c)) for c in range(4)), return_exceptions=True
    )
    assert all(isinstance(o, DeviceTimeout) for o in outcomes), outcomes
    board32.sim.faults.hang = False
