"""The strike controller driver: poll every strike, group writes answered with the new state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping

import structlog

from gatewayd.kernel.driver import Driver, Emit, Startup
from gatewayd.kernel.errors import BadDeviceReply, BadPoint, DeviceError
from gatewayd.kernel.events import CommandResult, DeviceFault, PointValue, ReadPoints, WritePoints
from gatewayd.kernel.health import LinkHealth
from gatewayd.kernel.pointcache import PointCache
from gatewayd_example_door import protocol
from gatewayd_example_door.config import DoorStrikeConfig
from gatewayd_example_door.transport import StrikeLink

log = structlog.get_logger(__name__)


class DoorStrikeDriver(Driver[DoorStrikeConfig]):
    """Locks and releases a controller's strikes; reports each strike's state as a point."""

    config_model = DoorStrikeConfig
    commands = (WritePoints, ReadPoints)

    def __init__(self, config: DoorStrikeConfig, points: frozenset[str], emit: Emit) -> None:
        super().__init__(config, points, emit)
        self._link = StrikeLink(config.url, config.timeout_ms)
        self._log = log.bind(device=config.id)
        self._values: PointCache[str] = PointCache(config.id, emit)
        self._link_health = LinkHealth(
            self._set_health, self._log, "strike", offline_after=config.offline_after_failures
        )
        self._counts = {"polls": 0, "commands": 0, "failures": 0, "faults": 0}

    @classmethod
    def parse_point(cls, raw: str) -> str:
        return protocol.parse_point(raw)

    @classmethod
    def is_output(cls, point: str) -> bool:
        # Every point is a strike, and the state read back is the strike's own.
        return True

    @classmethod
    def check_points(cls, config: DoorStrikeConfig, points: Iterable[str]) -> list[str]:
        return [
            f"{p} is beyond the controller's {config.strikes} strikes (strike:0 .. "
            f"strike:{config.strikes - 1})"
            for p in points
            if protocol.strike(p) >= config.strikes
        ]

    async def run(self, started: Callable[[], None]) -> None:
        """Poll every ``poll_interval_ms`` until cancelled; a dead link is retried by polling."""
        try:
            await Startup(started).attempt(self._poll())
            while True:
                await asyncio.sleep(self.config.poll_interval_ms / 1000)
                await self._poll()
        finally:
            self._link.close()
            self._link_health.stopped()

    async def _poll(self) -> None:
        # A failed poll is counted and reported by _transact; the next poll is the retry.
        try:
            await self._transact(protocol.GET)
        except DeviceError:
            return
        self._counts["polls"] += 1

    async def _execute(self, command: WritePoints | ReadPoints) -> CommandResult:
        """Set a group of strikes with one request (its reply is the read-back), or read them."""
        match command:
            case WritePoints():
                points = [w.point for w in command.writes]
                writes = {protocol.strike(w.point): w.value for w in command.writes}
                request = protocol.set_request(self.config.strikes, writes)
            case ReadPoints():
                points, request = list(command.points), protocol.GET
        if problems := self.check_points(self.config, points):
            raise BadPoint("; ".join(problems))
        self._counts["commands"] += 1
        state, on_wire_ns = await self._transact(request)
        values = tuple(PointValue(p, state[protocol.strike(p)]) for p in points)
        return CommandResult(values, on_wire_ns, time.monotonic_ns())

    async def _transact(self, request: str) -> tuple[list[bool], int]:
        """One request; its reply updates health and watched points, or counts a failure."""
        try:
            reply, on_wire_ns = await self._link.request(request)
            state = protocol.parse_state(reply, self.config.strikes)
        except DeviceError as exc:
            self._failed(exc)
            raise
        self._link_health.succeeded()
        for point in self.points:
            self._values.update(point, state[protocol.strike(point)])
        return state, on_wire_ns

    def _failed(self, exc: DeviceError) -> None:
        self._counts["failures"] += 1
        if isinstance(exc, BadDeviceReply):
            self._counts["faults"] += 1
            self._emit(DeviceFault(self.device_id, exc.code, str(exc)))
        # Offline after offline_after_failures in a row; logged as strike.offline.
        self._link_health.failed(str(exc))

    def statistics(self) -> Mapping[str, int | float | str]:
        return {**self._counts, "requests": self._link.requests, "health": str(self.health)}
