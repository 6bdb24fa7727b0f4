"""Door mechanics, one model for every simulated door controller (relay board, BACnet).

Each door has three parts, and a controller's protocol only ever touches the first:

- the **lock output** (energised = locked), written by the gateway or a third party;
- the **bolt**, which follows the output ``actuation_ms`` after the output changes (0: at
  once; a second change inside that time restarts the wait). **Lock sense reports the bolt**,
  nothing else;
- the **door position** (closed or open), moved only by people: :meth:`DoorMechanics.set_closed`.

Faults:

- **Jam**: the bolt sticks where it is. A pending movement is cancelled and output changes
  do not move it; :meth:`DoorMechanics.unjam` lets it follow the output again (after the
  actuation time).
- **Propped (held) open**: the position reads open. The bolt still throws and retracts with
  the output, and lock sense reports it, but the door is **not secured**: :meth:`secured`
  is *closed and bolt thrown*. Closing the door does not move the bolt.

Why a propped door's bolt still throws: a bolt-monitor switch watches the bolt, not the door;
a deadbolt energised on an open door extends into the air and reads thrown. A simulator that
reported "not locked" instead would hide that the lock works and would let a gateway get away
with trusting lock sense alone; the gateway must combine position and sense to call a door
secured (``gatewayd.kernel.doorstate.DoorState.status`` does). The model does not simulate a
thrown bolt striking the frame as the door closes.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from enum import StrEnum


class Signal(StrEnum):
    """Which input of a door changed."""

    POSITION = "position"
    SENSE = "sense"


#: Told of every change of a door's position or lock sense: (which, door, new value).
OnChange = Callable[[Signal, int, bool], None]


class DoorMechanics:
    """``doors`` doors, all closed, unlocked and working at first."""

    def __init__(
        self, doors: int, *, actuation_ms: float = 5.0, on_change: OnChange | None = None
    ) -> None:
        if doors < 1:
            raise ValueError(f"doors must be >= 1, got {doors}")
        #: Delay between an output change and the bolt following it (0 = at once).
        self.actuation_ms = actuation_ms
        self._n = doors
        self._on_change = on_change
        self._output = [False] * doors
        self._bolt = [False] * doors
        self._closed = [True] * doors
        self._jammed: set[int] = set()
        self._moving: dict[int, asyncio.TimerHandle] = {}

    @property
    def doors(self) -> int:
        return self._n

    # --- what the protocol writes and reads ---------------------------------------------------

    def drive(self, door: int, energised: bool) -> None:
        """Set the lock output; the bolt follows after the actuation time unless jammed."""
        self.check(door)
        if self._output[door] != energised:
            self._output[door] = energised
            self._actuate(door)

    def output(self, door: int) -> bool:
        return self._output[self.check(door)]

    def sense(self, door: int) -> bool:
        """Lock sense: the bolt is thrown."""
        return self._bolt[self.check(door)]

    def closed(self, door: int) -> bool:
        return self._closed[self.check(door)]

    def secured(self, door: int) -> bool:
        """Closed with the bolt thrown: what a lockdown needs of this door."""
        return self.closed(door) and self.sense(door)

    def positions(self) -> list[bool]:
        return list(self._closed)

    def senses(self) -> list[bool]:
        return list(self._bolt)

    # --- people and faults ----------------------------------------------------------------------

    def set_closed(self, door: int, closed: bool) -> None:
        """Open (prop) or close a door; the bolt is not moved by it."""
        self.check(door)
        if self._closed[door] != closed:
            self._closed[door] = closed
            self._notify(Signal.POSITION, door, closed)

    def hold_open(self, door: int) -> None:
        """Prop the door open: position reads open; the bolt still follows the output."""
        self.set_closed(door, False)

    def release_door(self, door: int) -> None:
        """Let a propped door close."""
        self.set_closed(door, True)

    def jam(self, door: int) -> None:
        """The bolt sticks where it is, whatever the output does."""
        self.check(door)
        self._jammed.add(door)
        self._cancel(door)

    def unjam(self, door: int) -> None:
        """The bolt works again and follows the output after the actuation time."""
        self.check(door)
        self._jammed.discard(door)
        self._actuate(door)

    def jammed(self, door: int) -> bool:
        return self.check(door) in self._jammed

    def check(self, door: int) -> int:
        """``door`` if it exists, else a ValueError naming the range."""
        if not 0 <= door < self._n:
            raise ValueError(f"door {door} out of range 0..{self._n - 1}")
        return door

    def cancel(self) -> None:
        """Cancel every movement under way (the controller is stopping)."""
        for handle in self._moving.values():
            handle.cancel()
        self._moving.clear()

    # --- internals --------------------------------------------------------------------------

    def _actuate(self, door: int) -> None:
        self._cancel(door)
        if self.actuation_ms <= 0:
            self._settle(door)
            return
        loop = asyncio.get_running_loop()
        self._moving[door] = loop.call_later(self.actuation_ms / 1000, self._settle, door)

    def _settle(self, door: int) -> None:
        self._moving.pop(door, None)
        if door in self._jammed:
            return
        thrown = self._output[door]
        if self._bolt[door] != thrown:
            self._bolt[door] = thrown
            self._notify(Signal.SENSE, door, thrown)

    def _cancel(self, door: int) -> None:
        handle = self._moving.pop(door, None)
        if handle is not None:
            handle.cancel()

    def _notify(self, signal: Signal, door: int, value: bool) -> None:
        if self._on_change is not None:
            self._on_change(signal, door, value)


class DoorControls(abc.ABC):
    """The door methods of every controller simulator, over its :attr:`mechanics`."""

    #: The doors behind the controller's outputs and inputs.
    mechanics: DoorMechanics

    @property
    def actuation_ms(self) -> float:
        """Output change -> lock sense delay; changeable at run time."""
        return self.mechanics.actuation_ms

    @actuation_ms.setter
    def actuation_ms(self, value: float) -> None:
        self.mechanics.actuation_ms = value

    def closed(self, door: int) -> bool:
        return self.mechanics.closed(door)

    def sense(self, door: int) -> bool:
        return self.mechanics.sense(door)

    def secured(self, door: int) -> bool:
        return self.mechanics.secured(door)

    def set_closed(self, door: int, closed: bool) -> None:
        self.mechanics.set_closed(door, closed)

    def hold_open(self, door: int) -> None:
        self.mechanics.hold_open(door)

    def release_door(self, door: int) -> None:
        self.mechanics.release_door(door)

    def jam(self, door: int) -> None:
        self.mechanics.jam(door)

    def unjam(self, door: int) -> None:
        self.mechanics.unjam(door)

    def outputs(self) -> list[bool]:
        """Every lock output as the device holds it (True = locked)."""
        return [self.mechanics.output(door) for door in range(self.mechanics.doors)]

    @abc.abstractmethod
    def door_at(self, lock_point: str) -> int:
        """The door driven by a lock output, from a point in the driver's notation."""

    @abc.abstractmethod
    def set_point(self, point: str, value: bool) -> str:
        """Drive an input named in the driver's notation; return the point, normalised.

        A door's position input opens or closes the door; a spare contact is set; lock sense
        follows the bolt and cannot be set (jam the door instead).
        """
