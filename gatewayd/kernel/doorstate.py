"""What the gateway knows of one door, as the door topic, the console and the CLI show it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class DoorState:
    """What the gateway knows of one door; published retained on ``door/<id>``."""

    id: str
    #: What the gateway last commanded (None until the first command).
    commanded: bool | None = None
    #: Which source holds it, e.g. ``lockdown (building/A)``.
    reason: str = "normal"
    #: Priority of the holding source, as written to priority-array devices.
    priority: int = 16
    #: Lock state read back from the device (None: unknown).
    locked: bool | None = None
    #: Door position (None: no sensor or unknown).
    closed: bool | None = None
    #: Read-back agrees with the command.
    confirmed: bool = False
    #: Why the door is not as commanded, if known.
    fault: str | None = None
    #: Device health of the board the door is wired to.
    device_online: bool = False
    updated_at: float = field(default_factory=time.time)
    #: Extra details from the deciding source (override holder, expiry).
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        """The lock reads back otherwise than it was commanded."""
        return (self.commanded is not None and self.locked is not None
                and self.locked != self.commanded)  # fmt: skip

    @property
    def status(self) -> str:
        """``secured``, ``unsecured``, ``faulted`` or ``unknown``, as counted per scope.

        Judged against the command: a door told to unlock (a fire release) that reads locked
        is ``faulted``, never ``secured``.
        """
        if not self.device_online or self.locked is None:
            return "unknown"
        if self.diverged and self.fault:
            return "faulted"
        if self.locked and self.closed is not False:
            return "secured"
        return "unsecured"

    def payload(self) -> dict[str, Any]:
        return {
            "door": self.id,
            "commanded": _lock_word(self.commanded),
            "locked": self.locked,
            "position": {True: "closed", False: "open", None: "unknown"}[self.closed],
            "reason": self.reason,
            "confirmed": self.confirmed,
            "status": self.status,
            "fault": self.fault,
            "updated_at": round(self.updated_at, 3),
            **self.detail,
        }


def _lock_word(value: bool | None) -> str | None:
    return None if value is None else ("locked" if value else "unlocked")
