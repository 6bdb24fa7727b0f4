"""The driver contract: what every protocol package implements, and nothing more.

A driver owns one device connection. The supervisor calls :meth:`Driver.run` in its own task
and restarts it with backoff if it raises; the door service calls :meth:`Driver.execute`
concurrently. Drivers report through the ``emit`` callback, never by importing the core's
consumers, and never import each other.

What every driver needs besides the contract is the driver kit, here and next to it:
:class:`ReconnectConfig` and :class:`Startup` (below), ``backoff.BackoffTimer``,
``health.LinkHealth``, ``pointcache.PointCache`` and ``lane.PriorityLane``.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Annotated, Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gatewayd.kernel.backoff import Backoff
from gatewayd.kernel.cancel import raise_if_cancelling
from gatewayd.kernel.errors import UnsupportedCommand
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


#: Shortest wait before reconnecting, for drivers that declare their own default.
ReconnectMinMs = Annotated[int, Field(ge=10, le=60_000)]
#: Longest wait before reconnecting (the doubling stops here).
ReconnectMaxMs = Annotated[int, Field(ge=10, le=300_000)]
#: Share of each reconnect wait drawn at random: a wait is 80% to 100% of its step.
RECONNECT_JITTER = 0.2


class ReconnectConfig(BaseModel):
    """Reconnect backoff settings, a mixin: ``class X(ReconnectConfig, DriverConfig)``.

    Milliseconds, like every other driver timing. A driver with other defaults redeclares a
    field with the same type: ``reconnect_min_ms: ReconnectMinMs = 100``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: First wait after a failed connection; each failure in a row doubles it.
    reconnect_min_ms: ReconnectMinMs = 200
    reconnect_max_ms: ReconnectMaxMs = 5_000

    @model_validator(mode="after")
    def _reconnect_ordered(self) -> Self:
        if self.reconnect_max_ms < self.reconnect_min_ms:
            raise ValueError(
                f"reconnect_max_ms ({self.reconnect_max_ms}) must be >= reconnect_min_ms"
                f" ({self.reconnect_min_ms})"
            )
        return self

    @property
    def reconnect_backoff(self) -> Backoff:
        """The policy for a ``BackoffTimer``."""
        return Backoff(
            min_s=self.reconnect_min_ms / 1000,
            max_s=self.reconnect_max_ms / 1000,
            jitter=RECONNECT_JITTER,
        )


ConfigT = TypeVar("ConfigT", bound=DriverConfig)
T = TypeVar("T")

#: Where drivers send events. It never blocks; the bus applies its own overflow policy.
Emit = Callable[[DriverEvent], None]


class Startup:
    """The ``started`` handshake of :meth:`Driver.run`: signalled once, after the first attempt.

    Start-up waits for every door driver's handshake, so it must come whether the first
    connection attempt worked, failed or raised; never only once the device answers.
    """

    def __init__(self, started: Callable[[], None]) -> None:
        self._started = started
        #: True once ``started`` was called.
        self.signalled = False

    async def attempt(self, connect: Awaitable[T]) -> T:
        """Await a connection attempt; the first one, however it ends, signals started."""
        try:
            return await connect
        finally:
            self.signal()

    def signal(self) -> None:
        """Call ``started`` unless it was called already."""
        if not self.signalled:
            self.signalled = True
            self._started()


class Driver(abc.ABC, Generic[ConfigT]):
    """Base class of every device driver."""

    #: The pydantic model of this driver's device settings.
    config_model: ClassVar[type[DriverConfig]]
    #: Command types this driver carries out; the core routes radio alerts and snapshots by it.
    commands: ClassVar[tuple[type, ...]] = (WritePoints, ReadPoints)
    #: True when concurrent writes reach the device in the order :meth:`execute` was called
    #: (the driver may merge them); the door service then does not serialise them itself.
    ordered_writes: ClassVar[bool] = False
    #: True when the device keeps a priority array, so a write can be relinquished
    #: (``PointWrite.relinquish``) and the device falls back to its own lower priorities.
    #: Air handlers need it: the gateway must give the air back to the building's controls.
    priority_array: ClassVar[bool] = False

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
        """Record and report a change of health, or of the reason a device is not online.

        Drivers built on ``health.LinkHealth`` leave this to it.
        """
        # A new reason matters to the person fixing it (offline -> refused credentials).
        # An online device reports a changed note too ("polled: no COV" and its end).
        reason_changed = detail != self._detail and (health is Health.ONLINE or bool(detail))
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
        start-up never waits for a dead device (:class:`Startup` does it). Raise only for
        faults a restart may fix.
        """

    async def execute(self, command: DeviceCommand) -> CommandResult:
        """Carry out a command ahead of any polling; raise a DeviceError on failure.

        A command whose type is not in :attr:`commands` is refused with
        :class:`UnsupportedCommand` (``not_supported``) before the driver sees it.
        """
        if not isinstance(command, self.commands):
            raise UnsupportedCommand(
                f"{self.device_id}: {type(self).__name__} cannot {type(command).__name__}"
                f" (it carries out {', '.join(c.__name__ for c in self.commands)})"
            )
        result = await self._execute(command)
        raise_if_cancelling()
        return result

    @abc.abstractmethod
    async def _execute(self, command: Any) -> CommandResult:
        """Carry out a command of one of the types in :attr:`commands`.

        Declare the parameter as exactly that union (``command: WritePoints | ReadPoints``):
        :meth:`execute` lets nothing else through, and the contract suite checks that the
        annotation and :attr:`commands` agree.
        """

    @abc.abstractmethod
    def statistics(self) -> Mapping[str, int | float | str]:
        """Counters and latencies for health reporting."""


#: Any driver, whatever its config model (what the core holds).
AnyDriver = Driver[DriverConfig]
