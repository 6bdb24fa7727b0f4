"""The last value of each watched point, and a ``PointChanged`` for each new one.

Polls read the same values again and again; the core wants to hear about a point only when it
was read for the first time or changed. Every value a driver trusts goes through
:meth:`PointCache.update`, from polls, change notifications and command read-backs alike, so
an event is never emitted twice for one change, whichever path saw it first.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from gatewayd.kernel.events import PointChanged

#: A driver's own point type (``str()`` of it is the normalised address the core uses).
P = TypeVar("P", bound=Hashable)


class PointCache(Generic[P]):
    """Last trusted value per point; emits ``PointChanged(device, str(point), value)``."""

    def __init__(self, device: str, emit: Callable[[PointChanged], None]) -> None:
        #: Device id the events carry.
        self.device = device
        self._emit = emit
        self._values: dict[P, bool] = {}

    def update(self, point: P, value: bool) -> bool:
        """Record a value read from the device; True (and an event) if it is new."""
        if self._values.get(point) is value:
            return False
        self._values[point] = value
        self._emit(PointChanged(self.device, str(point), value))
        return True

    def get(self, point: P) -> bool | None:
        """The last value, or None if the point was never read."""
        return self._values.get(point)
