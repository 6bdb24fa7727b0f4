"""The driver base's share of the kit: the execute template, the started handshake and the
reconnect settings mixin."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Literal

import pytest
from pydantic import ValidationError

from gatewayd.kernel.driver import (
    Driver,
    DriverConfig,
    ReconnectConfig,
    ReconnectMinMs,
    Startup,
)
from gatewayd.kernel.errors import DeviceOffline, ErrorCode, UnsupportedCommand
from gatewayd.kernel.events import (
    CommandResult,
    DeviceCommand,
    GotoPreset,
    PointValue,
    ReadPoints,
    SendAlert,
    TakeSnapshot,
    WritePoints,
)


class PanelConfig(ReconnectConfig, DriverConfig):
    driver: Literal["panel"]
    reconnect_min_ms: ReconnectMinMs = 100


class PanelDriver(Driver[PanelConfig]):
    """Reads points; declares nothing else."""

    config_model = PanelConfig
    commands = (ReadPoints,)

    def __init__(self) -> None:
        super().__init__(PanelConfig(id="panel-1", driver="panel"), frozenset(), lambda e: None)
        self.seen: list[DeviceCommand] = []

    @classmethod
    def parse_point(cls, raw: str) -> str:
        return raw

    async def run(self, started: Callable[[], None]) -> None:
        started()

    async def _execute(self, command: ReadPoints) -> CommandResult:
        self.seen.append(command)
        return CommandResult(tuple(PointValue(p, True) for p in command.points), 1, 2)

    def statistics(self) -> Mapping[str, int | float | str]:
        return {}


@pytest.mark.parametrize(
    "command",
    [WritePoints(()), SendAlert("LOCKDOWN", "test"), TakeSnapshot(), GotoPreset("home")],
)
async def test_a_command_the_driver_does_not_declare_is_not_supported(
    command: DeviceCommand,
) -> None:
    driver = PanelDriver()
    with pytest.raises(UnsupportedCommand, match=f"cannot {type(command).__name__}") as raised:
        await driver.execute(command)
    assert raised.value.code == ErrorCode.NOT_SUPPORTED
    assert "panel-1" in str(raised.value) and "ReadPoints" in str(raised.value)
    assert driver.seen == []


async def test_a_declared_command_reaches_the_drivers_execute() -> None:
    driver = PanelDriver()
    result = await driver.execute(ReadPoints(("a",)))
    assert result.values == (PointValue("a", True),)
    assert driver.seen == [ReadPoints(("a",))]


class SwallowingDriver(PanelDriver):
    """Its library drops a cancel that lands as the reply arrives (pymodbus on 3.11 does)."""

    def __init__(self) -> None:
        super().__init__()
        self.reply_waiting = asyncio.Event()

    async def _execute(self, command: ReadPoints) -> CommandResult:
        self.reply_waiting.set()
        # The reply "wins": the call returns as if nobody had asked the task to stop.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return await super()._execute(command)


async def test_a_cancel_a_drivers_library_swallowed_still_stops_the_callers_task() -> None:
    driver = SwallowingDriver()
    after: list[str] = []

    async def caller() -> None:
        # A relock in the expiry task, a door command in the command's: after the command
        # returns, the task would otherwise go on (and wait) as if never cancelled.
        await driver.execute(ReadPoints(("a",)))
        after.append("went on")
        await asyncio.Event().wait()

    task = asyncio.create_task(caller())
    await driver.reply_waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert driver.seen == [ReadPoints(("a",))] and after == []


async def test_started_is_signalled_once_after_the_first_attempt_whether_it_failed_or_not() -> None:
    calls: list[str] = []
    startup = Startup(lambda: calls.append("started"))

    async def refused() -> None:
        calls.append("attempt")
        raise DeviceOffline("refused")

    async def works() -> int:
        calls.append("attempt")
        return 7

    with pytest.raises(DeviceOffline):
        await startup.attempt(refused())
    assert await startup.attempt(works()) == 7
    startup.signal()
    assert calls == ["attempt", "started", "attempt"]
    assert startup.signalled


async def test_a_cancelled_first_attempt_still_signals_started() -> None:
    calls: list[str] = []
    startup = Startup(lambda: calls.append("started"))
    attempt = asyncio.create_task(startup.attempt(asyncio.Event().wait()))
    await asyncio.sleep(0)
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert calls == ["started"]


def test_reconnect_settings_are_milliseconds_with_a_drivers_own_default() -> None:
    config = PanelConfig(id="p", driver="panel")
    assert (config.reconnect_min_ms, config.reconnect_max_ms) == (100, 5_000)
    backoff = config.reconnect_backoff
    assert (backoff.min_s, backoff.max_s) == (0.1, 5.0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"reconnect_min_ms": 900, "reconnect_max_ms": 800}, "must be >= reconnect_min_ms"),
        ({"reconnect_min_ms": 5}, "greater than or equal to 10"),
        ({"reconnect_min_s": 0.5}, "Extra inputs are not permitted"),
    ],
)
def test_bad_reconnect_settings_fail_at_load(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PanelConfig(id="p", driver="panel", **settings)
