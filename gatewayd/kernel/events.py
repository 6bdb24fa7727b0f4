"""Neutral, frozen types that cross the driver boundary and travel on the bus.

Drivers turn vendor frames into these; rules, MQTT and the CLI never see a vendor type.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


def now_ns() -> int:
    """Monotonic clock in nanoseconds, for latencies."""
    return time.monotonic_ns()


def new_id() -> str:
    """A fresh, globally unique event id."""
    return uuid.uuid4().hex


class Health(StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


# --- commands accepted by drivers -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PointWrite:
    """Drive one binary output (a relay coil, a BACnet binary-output)."""

    point: str
    value: bool
    #: Priority in the BACnet sense (1 highest, 16 lowest); drivers without a priority
    #: array ignore it because the core already arbitrated.
    priority: int = 16
    #: Give the output back: relinquish every slot the gateway holds (``value`` is unused).
    #: Only a driver with ``priority_array`` accepts it; any other refuses the command.
    relinquish: bool = False


@dataclass(frozen=True, slots=True)
class WritePoints:
    """Write many outputs of one device as one group action, then read them back."""

    writes: tuple[PointWrite, ...]
    #: The points that confirm the writes (a lock sense, else the output itself); None: every
    #: written output. A driver may leave out reading back an output nobody asked for: the
    #: device's acknowledgement of the write stands for it.
    read_back: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class ReadPoints:
    """Read binary points now, bypassing the poll cycle."""

    points: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SendAlert:
    """Send an emergency status and a short text to the PSAP-linked radio; wait for its ack."""

    #: SRP state or alarm word, e.g. ``LOCKDOWN``.
    status: str
    #: What, where and when, e.g. ``LOCKDOWN, Building A, Room 114, 09:42``.
    text: str
    #: A drill: the message says DRILL and is never sent as a real alert.
    drill: bool = False


@dataclass(frozen=True, slots=True)
class TakeSnapshot:
    """Grab a still image from a camera, store it and report where."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class GotoPreset:
    """Move a PTZ camera to a named preset."""

    preset: str


class Indication(StrEnum):
    """What a card reader shows: the door's state (steady) or the answer to a card (brief)."""

    #: No active safety state: the reader is dark, waiting for a card.
    IDLE = "idle"
    #: The door is held by a lockdown-family state: red, steady.
    LOCKDOWN = "lockdown"
    #: A responder override holds the door unlocked: green, steady.
    RESPONDER = "responder"
    #: The door is not confirmed (or its controller is faulted): amber, steady.
    FAULT = "fault"
    #: A credential was accepted: a brief green flash and one beep.
    GRANTED = "granted"
    #: A credential was refused: a brief red flash and three buzzes.
    REFUSED = "refused"
    #: The card needs its PIN: a brief amber flash.
    PIN_WANTED = "pin_wanted"


#: Indications shown briefly on top of the steady one, which the reader returns to.
BRIEF_INDICATIONS = frozenset({Indication.GRANTED, Indication.REFUSED, Indication.PIN_WANTED})


@dataclass(frozen=True, slots=True)
class ReaderSignal:
    """Show an indication on a card reader's LED and buzzer; acknowledged by the reader."""

    indication: Indication


DeviceCommand = WritePoints | ReadPoints | SendAlert | TakeSnapshot | GotoPreset | ReaderSignal


@dataclass(frozen=True, slots=True)
class PointValue:
    point: str
    value: bool


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a device reported after a command, with wire timestamps (monotonic ns)."""

    values: tuple[PointValue, ...]
    #: When the device acknowledged the request (a protocol without acknowledgements: when
    #: its bytes were handed to the transport).
    on_wire_ns: int
    #: When the (last) reply was decoded.
    done_ns: int
    #: Non-point outcomes: a snapshot's path, a radio acknowledgement's sequence number.
    detail: Mapping[str, str] = field(default_factory=dict)


# --- events emitted by drivers ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PointChanged:
    """A binary point changed value (or was read for the first time)."""

    device: str
    point: str
    value: bool
    ts_ns: int = field(default_factory=now_ns)


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    device: str
    health: Health
    detail: str = ""
    ts_ns: int = field(default_factory=now_ns)


@dataclass(frozen=True, slots=True)
class DeviceFault:
    """The device sent something we could not trust; nothing was changed because of it."""

    device: str
    error: str
    detail: str
    ts_ns: int = field(default_factory=now_ns)


@dataclass(frozen=True, slots=True)
class CameraEvent:
    """Something a camera reported (ONVIF topic mapped to a neutral name)."""

    device: str
    #: ``motion``, ``tamper`` or ``digital_input``.
    topic: str
    active: bool
    data: Mapping[str, str] = field(default_factory=dict)
    ts_ns: int = field(default_factory=now_ns)


@dataclass(frozen=True, slots=True)
class CredentialRead:
    """A card or a PIN presented at a reader. ``value`` is secret: hash it, never publish it."""

    device: str
    #: ``card`` (a card number, decimal) or ``pin`` (the digits keyed, without terminator).
    kind: str
    value: str = field(repr=False)
    #: Bits the card carried (0 for a PIN or a card read as text).
    bits: int = 0
    ts_ns: int = field(default_factory=now_ns)


@dataclass(frozen=True, slots=True)
class ReaderReport:
    """A reader's own condition: its tamper switch, or its power supply."""

    device: str
    #: ``tamper`` or ``power`` (``active``: the cover is open, the power is failing).
    report: str
    active: bool
    ts_ns: int = field(default_factory=now_ns)


DriverEvent = (
    PointChanged | DeviceHealth | DeviceFault | CameraEvent | CredentialRead | ReaderReport
)
