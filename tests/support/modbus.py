"""Fixtures for the Modbus relay board simulator and driver tests (real sockets, no mocks)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import pytest

from gatewayd.drivers.modbus_relay import ModbusRelayConfig, ModbusRelayDriver
from gatewayd.simulators.relay_board import RelayBoardSim
from tests.support.harness import DriverHarness, Harnesses

__all__ = ["ModbusHarness", "StartDriver", "board_points", "relay_board", "start_driver"]

DOORS = 8
SPARE_INPUTS = 4

ModbusHarness = DriverHarness[ModbusRelayDriver, RelayBoardSim]
StartDriver = Callable[..., Awaitable[ModbusHarness]]


@pytest.fixture
async def relay_board() -> AsyncIterator[RelayBoardSim]:
    """A started 8-door board with 4 spare inputs on a free port; 1 ms lock actuation."""
    sim = RelayBoardSim(DOORS, extra_inputs=SPARE_INPUTS, actuation_ms=1.0)
    await sim.start()
    yield sim
    await sim.stop()


def board_points(doors: int = DOORS, spares: int = SPARE_INPUTS) -> frozenset[str]:
    """Every coil, position, lock sense and spare input of a board."""
    coils = {f"coil:{i}" for i in range(doors)}
    inputs = {f"input:{i}" for i in range(2 * doors + spares)}
    return frozenset(coils | inputs)


@pytest.fixture
def start_driver(relay_board: RelayBoardSim, harnesses: Harnesses) -> StartDriver:
    """Factory: start a driver (fast intervals) against ``relay_board``; stopped afterwards."""

    async def start(points: Iterable[str] | None = None, **settings: Any) -> ModbusHarness:
        values: dict[str, Any] = {
            "id": "relay-t",
            "driver": "modbus_relay",
            "host": "127.0.0.1",
            "port": relay_board.port,
            "coils": relay_board.doors,
            "inputs": relay_board.input_count,
            "poll_interval_ms": 20,
            "timeout_ms": 200,
            "reconnect_min_ms": 20,
            "reconnect_max_ms": 200,
        }
        config = ModbusRelayConfig.model_validate({**values, **settings})
        watched = frozenset(points) if points is not None else board_points()
        return await harnesses.start(
            lambda emit: ModbusRelayDriver(config, watched, emit), relay_board
        )

    return start
