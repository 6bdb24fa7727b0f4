"""BACnet simulators made per test with a personality, every one stopped at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gatewayd.simulators.bacnet_device import BacnetDeviceSim


@pytest.fixture
async def bacnet_sims() -> AsyncIterator[Callable[..., Any]]:
    """``await bacnet_sims(doors=2, device_instance=1301, rpm=False, ...)``: a started simulator."""
    sims: list[BacnetDeviceSim] = []

    async def make(
        doors: int = 2, *, device_instance: int = 1301, **personality: Any
    ) -> BacnetDeviceSim:
        sim = BacnetDeviceSim(doors, actuation_ms=1, device_instance=device_instance, **personality)
        await sim.start()
        sims.append(sim)
        return sim

    try:
        yield make
    finally:
        for sim in sims:
            await sim.stop()
