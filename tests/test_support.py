"""The suite's own waiting tools say what they waited for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from gatewayd.kernel.driver import Driver, DriverConfig
from gatewayd.kernel.events import CommandResult, DeviceHealth, Health, PointChanged
from tests.support.harness import DriverHarness, health
from tests.support.recorder import Recorder
from tests.support.waiting import eventually


async def test_eventually_names_the_condition_and_its_last_value_when_it_never_holds() -> None:
    state = {"doors": 3}
    with pytest.raises(AssertionError, match=r'lambda: state\["doors"\] == 4 \(last gave False\)'):
        await eventually(lambda: state["doors"] == 4, timeout_s=0.05)


async def test_eventually_returns_the_first_truthy_value_of_an_async_condition() -> None:
    calls: list[int] = []

    async def third_call() -> str | None:
        calls.append(1)
        return "ready" if len(calls) == 3 else None

    assert await eventually(third_call, interval_s=0) == "ready"


async def test_next_steps_through_items_of_a_kind_from_its_cursor() -> None:
    recorder: Recorder[object] = Recorder("events")
    for event in (
        DeviceHealth("d", Health.ONLINE),
        PointChanged("d", "coil:1", True),
        PointChanged("d", "coil:2", True),
    ):
        recorder(event)
    first = await recorder.next(PointChanged)
    assert first.point == "coil:1"
    assert (await recorder.next(PointChanged, lambda e: e.value is True)).point == "coil:2"
    later = asyncio.get_running_loop().call_later(
        0.01, recorder, PointChanged("d", "coil:3", False)
    )
    try:
        assert (await recorder.next(PointChanged, timeout_s=1)).point == "coil:3"
    finally:
        later.cancel()


async def test_a_wait_that_times_out_shows_what_it_wanted_and_what_came() -> None:
    recorder: Recorder[object] = Recorder("driver events")
    recorder(DeviceHealth("d", Health.OFFLINE))
    with pytest.raises(AssertionError, match=r"no health ONLINE .* among 1 driver events"):
        await recorder.wait_for(health(Health.ONLINE), 0.05)  # type: ignore[arg-type]


class _Broken(Driver[DriverConfig]):
    config_model = DriverConfig

    @classmethod
    def parse_point(cls, raw: str) -> str:
        return raw

    async def run(self, started: Callable[[], None]) -> None:
        raise RuntimeError("no such port")

    async def _execute(self, command: Any) -> CommandResult:
        raise AssertionError("never called")

    def statistics(self) -> dict[str, int]:
        return {}


async def test_harness_start_raises_the_error_of_a_run_that_ends_before_started() -> None:
    config = DriverConfig(id="broken", driver="broken")
    harness = DriverHarness(lambda emit: _Broken(config, frozenset(), emit), None)
    with pytest.raises(RuntimeError, match="no such port"):
        await harness.start()
    await harness.stop()
