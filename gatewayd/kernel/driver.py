"""The driver contract: what every protocol package implements, and nothing more.

A driver owns one device connection. The supervisor calls :meth:`Driver.run` in its own task
and restarts it with backoff if it raises; the door service calls :meth:`Driver.execute`
concurrently. Drivers report through the ``emit`` callback, never by importing the core's
consumers, and never import each other.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from gatewayd.kernel.events import (
    CommandResult,
    DeviceCommand,
    DeviceHealth,
    DriverEvent,
    Health,
    ReadPoints,
    WritePoints,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class DriverConfig(BaseModel):
    """Settings every device has; a driver subclasses it with ``driver: Literal["name"]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Device id, unique in the campus; doors refer to it.
    id: str = Field(pattern=ID_PATTERN)
    #: Registered driver name (the discriminator).
    driver: str
    #: Human description, e.g. where the board is mounted.
    description: str = ""
    #: Where the device is, for the location of the events it causes.
    building: str | None = None
    room: str = ""


ConfigT = TypeVar("ConfigT", bound=DriverConfig)

#: Where drivers send events. It never blocks; the bus applies its own overflow policy.
Emit = Callable[[DriverEvent], None]


class Driver(abc.ABC, Generic[ConfigT]):
    """Base class of every device driver."""

    #: The pydantic model of this driver's device settings.
    config_model: ClassVar[type[DriverConfig]]
    #: Command types this driver carries out; the core routes radio alerts and snapshots by it.
    commands: ClassVar[tuple[type, ...]] = (WritePoints, ReadPoints)

    def __init__(self, config: ConfigT, points: frozenset[str], emit: Emit) -> None:
        #: This device's validated settings.
        self.config = config
        #: Normalised point addresses the campus uses on this device (polled by the driver).
        self.points = points
        self._emit = emit
        self._health = Health.OFFLINE
        self._detail = ""

    @property
    def device_id(self) -> str:
        return self.config.id

    @property
    def health(self) -> Health:
        return self._health

    def _set_health(self, health: Health, detail: str = "") -> None:
        """Record and report a change of health, or of the reason a device is not online."""
        # A new reason matters to the person fixing it (offline -> refused credentials).
        reason_changed = health is not Health.ONLINE and bool(detail) and detail != self._detail
        if health is not self._health or reason_changed:
            self._health, self._detail = health, detail
            self._emit(DeviceHealth(self.device_id, health, detail))

    @classmethod
    @abc.abstractmethod
    def parse_point(cls, raw: str) -> str:
        """Validate a point address from the config and return its normal form.

        Raise :class:`gatewayd.errors.BadPoint` with a message saying what was expected.
        """

    @classmethod
    def check_points(cls, config: ConfigT, points: Iterable[str]) -> list[str]:
        """Problems with normalised points that this device, as configured, does not have.

        Called when a config loads, so ``gatewayd check`` finds an address beyond the end
        of a board; one message per bad point.
        """
        return []

    @classmethod
    def is_output(cls, point: str) -> bool:
        """True if the (normalised) point can be written."""
        return False

    @abc.abstractmethod
    async def run(self, started: Callable[[], None]) -> None:
        """Connect, poll and reconnect until cancelled.

        Call ``started()`` once, after the first connection attempt (success or not), so that
        start-up never waits for a dead device. Raise only for faults a restart may fix.
        """

    @abc.abstractmethod
    async def execute(self, command: DeviceCommand) -> CommandResult:
        """Carry out a command ahead of any polling; raise a DeviceError on failure."""

    @abc.abstractmethod
    def statistics(self) -> Mapping[str, int | float | str]:
        """Counters and latencies for health reporting."""


#: Any driver, whatever its config model (what the core holds).
AnyDriver = Driver[DriverConfig]
