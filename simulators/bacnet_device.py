"""A BACnet/IP door controller on a loopback port of its own, built on bacpypes3.

Objects for ``n`` doors: ``binary-output,i`` is door ``i``'s lock (a real 16-slot priority
array, relinquish default *inactive* = unlocked); ``binary-input,i`` its position (active =
closed) and ``binary-input,n+i`` its lock sense (active = bolt thrown). How the doors answer
the outputs (actuation time, jam, a propped door) is :mod:`gatewayd.simulators.doors`, the
same model as the relay board's. All objects support SubscribeCOV (bacpypes3's own COV
detection).

Faults (``self.faults``, shared :class:`Faults`): ``delay_ms`` delays every request,
``drop`` (and ``drop_next``) lose requests, ``hang`` ignores them all, ``corrupt`` garbles
replies in the way ``garble_mode`` says. A BACnet stack drops undecodable datagrams (the
client would see a timeout, not garbage), so garbling is done where it is meaningful:
decodable replies that answer about the *wrong object*, carry a value of the *wrong type*, or
a write acknowledged with a reply of another service; COV notifications carry a wrong-typed
value.

Personalities (constructor options, and ``--no-rpm`` ``--no-cov`` ``--max-apdu N``
``--no-segmentation`` on the command line) make a small controller: ``rpm=False`` and
``cov=False`` take ReadPropertyMultiple / SubscribeCOV out of the application (requests are
rejected as ``unrecognized-service`` and ``protocol-services-supported`` does not list them);
``max_apdu`` is the device object's ``max-apdu-length-accepted``, and a reply longer than it
is not sent: with ``segmentation=False`` (``segmentation-supported`` = no-segmentation) the
request is aborted with ``segmentation-not-supported``, otherwise bacpypes3 segments it.

``vanish`` closes the socket as a power loss does; ``reappear`` (and ``restart``) reopen the
same port with a fresh application: subscriptions are gone, the priority arrays survive (as
in controllers that keep them in non-volatile memory) and ``time-of-device-restart`` moves.

The socket is bound without SO_REUSEPORT, so a leftover simulator on the port is an error
rather than a silent thief of datagrams.
"""

from __future__ import annotations

import asyncio
import socket
import time
from enum import StrEnum
from typing import Any, NamedTuple

from bacpypes3.apdu import (
    AbortPDU,
    APCISequence,
    ComplexAckPDU,
    ReadPropertyACK,
    ReadPropertyMultipleACK,
    SimpleAckPDU,
)
from bacpypes3.app import Application
from bacpypes3.basetypes import PriorityValue, Segmentation, TimeStamp
from bacpypes3.constructeddata import Any as AnyValue
from bacpypes3.errors import ExecutionError, SegmentationNotSupported
from bacpypes3.ipv4.link import NormalLinkLayer
from bacpypes3.local.binary import BinaryInputObject, BinaryOutputObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.pdu import IPv4Address
from bacpypes3.primitivedata import CharacterString, Null, ObjectIdentifier, Real

from gatewayd.drivers.bacnet.points import Point, parse_point
from gatewayd.kernel.errors import BadPoint
from gatewayd.simulators.bacnet_air import AirHandlers
from gatewayd.simulators.base import Simulator
from gatewayd.simulators.doors import DoorControls, DoorMechanics, Signal

#: Bind attempts 10 ms apart when reopening a port (see ``_bind``).
BIND_ATTEMPTS = 50
#: The priority a "local operator" at the controller's keypad writes at.
OPERATOR_PRIORITY = 8
#: The largest APDU BACnet/IP allows (and the smallest any device must accept).
MAX_APDU = 1476
MIN_APDU = 50
#: APCI header bytes of a complex ack ahead of the service data.
ACK_HEADER_BYTES = 3


class Garble(StrEnum):
    WRONG_OBJECT = "wrong_object"
    WRONG_TYPE = "wrong_type"


class PriorityWrite(NamedTuple):
    """One write to a lock's present-value (value None = relinquish)."""

    ns: int
    door: int
    value: bool | None
    priority: int
    #: ``network`` (a BACnet client) or ``local`` (the simulated operator).
    source: str


class ApduSeen(NamedTuple):
    """One request received, before any fault applied."""

    ns: int
    #: The bacpypes3 request class, e.g. ``ReadPropertyRequest``.
    service: str


#: What a controller says of itself on every object: in service, no alarm, normal polarity.
_HEALTHY = {"statusFlags": [0, 0, 0, 0], "eventState": "normal", "outOfService": False,
            "polarity": "normal"}  # fmt: skip
#: Priority 6 is reserved for minimum on/off time (ASHRAE 135, 19.2.3): no client writes it.
RESERVED_PRIORITY = 6


def _is_present_value(attr: Any) -> bool:
    return str(attr) in ("presentValue", "present-value", "85")


class _Lock(BinaryOutputObject):  # type: ignore[misc]
    """A lock output that reports writes and present-value changes to its simulator."""

    async def write_property(
        self, attr: Any, value: Any, index: Any = None, priority: Any = None
    ) -> None:
        if _is_present_value(attr) and priority == RESERVED_PRIORITY:
            raise ExecutionError("property", "writeAccessDenied")
        sim = self.__dict__.get("_sim")
        if sim is not None and _is_present_value(attr):
            sim._logged(self, value, priority or 16, "network")
        await super().write_property(attr, value, index, priority)

    def recalculating(self) -> None:
        super().recalculating()
        sim = self.__dict__.get("_sim")
        if sim is not None:
            sim._output_changed(self)


class _SimApplication(Application):  # type: ignore[misc]
    """bacpypes3's application with the simulator's faults in the request path."""

    sim: BacnetDeviceSim
    #: Service helpers (``do_...``) this device does not have: bacpypes3 then rejects the
    #: request as unrecognized-service and leaves it out of protocol-services-supported.
    hidden: frozenset[str] = frozenset()

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("do_") and name in object.__getattribute__(self, "hidden"):
            raise AttributeError(name)
        return super().__getattribute__(name)

    async def do_WritePropertyRequest(self, apdu: Any) -> None:
        """A door input's present value is the door's, not a client's (unless out of service)."""
        obj = self.get_object_id(apdu.objectIdentifier)
        if (
            obj is not None
            and isinstance(obj, BinaryInputObject)
            and _is_present_value(apdu.propertyIdentifier)
            and not obj.outOfService
        ):
            raise ExecutionError("property", "writeAccessDenied")
        await super().do_WritePropertyRequest(apdu)

    async def indication(self, apdu: Any) -> None:
        sim = self.sim
        sim.counts["requests"] += 1
        sim.request_log.append(ApduSeen(time.monotonic_ns(), type(apdu).__name__))
        if sim.faults.hang or sim.faults.lost():
            sim.counts["dropped"] += 1
            return
        async with sim._owned():
            await sim._delay()
        await super().indication(apdu)

    async def response(self, apdu: Any) -> None:
        apdu = self.sim._garbled(apdu)
        if isinstance(apdu, AbortPDU):
            # bacpypes3 leaves the "sent by server" bit unset; a client then ignores the abort.
            apdu.apduSrv = True
        await super().response(self.sim._fitted(apdu))

    def cov_notification(self, cov: Any, apdu: Any) -> None:
        self.sim.counts["cov_notifications"] += 1
        if self.sim.faults.roll(self.sim.faults.corrupt):
            for element in apdu.listOfValues:
                element.value = AnyValue(CharacterString("garbled"))
        super().cov_notification(cov, apdu)


class BacnetDeviceSim(Simulator[PriorityWrite, ApduSeen], DoorControls):
    """A BACnet/IP controller with ``doors`` locks, 2 inputs per door and faults."""

    kind = "bacnet_device"

    def __init__(
        self,
        doors: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        device_instance: int = 1001,
        actuation_ms: float = 5.0,
        name: str = "bacnet",
        rpm: bool = True,
        cov: bool = True,
        max_apdu: int = MAX_APDU,
        segmentation: bool = True,
        air_units: int = 0,
    ) -> None:
        if not 1 <= doors <= 10_000:
            raise ValueError(f"doors must be 1..10000, got {doors}")
        if not MIN_APDU <= max_apdu <= MAX_APDU:
            raise ValueError(f"max_apdu must be {MIN_APDU}..{MAX_APDU}, got {max_apdu}")
        super().__init__(name, host=host, port=port)
        self.device_instance = device_instance
        self.rpm = rpm
        self.cov = cov
        self.max_apdu = max_apdu
        self.segmentation = segmentation
        self.garble_mode = Garble.WRONG_OBJECT
        #: Output ``i`` drives door ``i``; its inputs follow (COV included).
        self.mechanics = DoorMechanics(
            doors, actuation_ms=actuation_ms, on_change=self._input_changed
        )
        self._n = doors
        self._locks: list[_Lock] = []
        self._inputs: list[Any] = []
        self._app: _SimApplication | None = None
        self._restarts = 0
        #: Air handlers on this controller (simulators/bacnet_air.py), from instance 1000.
        self.air = AirHandlers(air_units)

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self._port}"

    async def restart(self) -> None:
        await self.vanish()
        await self.reappear()

    def _about(self) -> dict[str, Any]:
        return {
            "instance": self.device_instance,
            "doors": self._n,
            "rpm": self.rpm,
            "cov": self.cov,
            "max_apdu": self.max_apdu,
            "segmentation": self.segmentation,
            "air_units": self.air.count,
        }

    async def _close(self) -> None:
        app, self._app = self._app, None
        if app is not None:
            app.close()

    def _stopped(self) -> None:
        self.mechanics.cancel()
        self.air.cancel()

    async def _open(self) -> int:
        sock = await self._bind()
        port: int = sock.getsockname()[1]
        self._restarts += 1
        app = _SimApplication.from_object_list(self._objects())
        app.sim = self
        hidden = set()
        if not self.rpm:
            hidden.add("do_ReadPropertyMultipleRequest")
        if not self.cov:
            hidden.add("do_SubscribeCOVRequest")
        app.hidden = frozenset(hidden)
        link_address = IPv4Address(f"{self.host}:{port}")
        link = NormalLinkLayer(link_address, bind_socket=sock)
        app.link_layers[ObjectIdentifier("network-port,1")] = link
        app.nsap.bind(link, address=link_address)
        self._app = app
        await link.server._local_transport_ready.wait()
        return port

    async def _bind(self) -> socket.socket:
        """Bind without SO_REUSEPORT; a transport closed a moment ago frees its port a tick
        later (asyncio closes sockets on the next loop iteration), so retry briefly."""
        for attempt in range(BIND_ATTEMPTS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((self.host, self._port))
            except OSError:
                sock.close()
                if attempt == BIND_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.01)
                continue
            sock.setblocking(False)
            return sock
        raise AssertionError("unreachable")

    def _objects(self) -> list[Any]:
        """Fresh bacpypes3 objects carrying the state of the previous ones (if any)."""
        device = DeviceObject(
            objectIdentifier=("device", self.device_instance),
            objectName=self.name,
            vendorIdentifier=999,
            timeOfDeviceRestart=TimeStamp(sequenceNumber=self._restarts),
            maxApduLengthAccepted=self.max_apdu,
            segmentationSupported=(
                Segmentation.segmentedBoth if self.segmentation else Segmentation.noSegmentation
            ),
        )
        old = self._locks
        self._locks = []
        for i in range(self._n):
            kwargs: dict[str, Any] = {}
            if old:
                kwargs["priorityArray"] = list(old[i].priorityArray)
                kwargs["presentValue"] = old[i].presentValue
            lock = _Lock(
                objectIdentifier=("binary-output", i),
                objectName=f"lock-{i}",
                relinquishDefault="inactive",
                **({"presentValue": "inactive"} | _HEALTHY | kwargs),
            )
            lock.__dict__["_sim"] = self
            self._locks.append(lock)
        bits = [*self.mechanics.positions(), *self.mechanics.senses()]
        self._inputs = [
            BinaryInputObject(
                objectIdentifier=("binary-input", i),
                objectName=f"input-{i}",
                presentValue="active" if bit else "inactive",
                **_HEALTHY,
            )
            for i, bit in enumerate(bits)
        ]
        return [device, *self._locks, *self._inputs, *self.air.objects()]

    # --- doors and the operator -------------------------------------------------------------

    @property
    def doors(self) -> int:
        return self._n

    def locked(self, door: int) -> bool:
        """The lock output's present value (what the priority array resolved to)."""
        return int(self._locks[door].presentValue) == 1

    def priority_array(self, door: int) -> dict[int, bool]:
        """Occupied slots of a lock's priority array: priority -> value."""
        out = {}
        for i, slot in enumerate(self._locks[door].priorityArray):
            if slot.null is None:
                out[i + 1] = int(getattr(slot, slot._choice)) == 1
        return out

    def operator_write(
        self, door: int, value: bool | None, priority: int = OPERATOR_PRIORITY
    ) -> None:
        """A write at the controller itself (keypad, local schedule): not from the gateway."""
        lock = self._locks[door]
        self._logged(lock, Null(()) if value is None else value, priority, "local")
        slot = (
            PriorityValue(null=()) if value is None else PriorityValue(enumerated=1 if value else 0)
        )
        lock.priorityArray[priority - 1] = slot

    def door_at(self, lock_point: str) -> int:
        point = _point(lock_point)
        if not point.is_output:
            raise ValueError(f"{point} is an input; a door's lock is a binary-output:N")
        return self.mechanics.check(point.instance)

    def set_point(self, point: str, value: bool) -> str:
        parsed = _point(point)
        index = parsed.instance
        if parsed.is_output:
            raise ValueError(f"{parsed} is a lock output; only inputs can be set")
        if index < self._n:
            self.mechanics.set_closed(index, value)
        elif index < 2 * self._n:
            raise ValueError(
                f"{parsed} is door {index - self._n}'s lock sense: it follows the bolt"
                " (jam the door instead)"
            )
        else:
            raise ValueError(
                f"{parsed} is not on controller {self.name!r}: it has binary-input:0.."
                f"{2 * self._n - 1}"
            )
        return str(parsed)

    def _set_input(self, index: int, value: bool) -> None:
        if self._inputs:
            # Setting presentValue on a local object runs bacpypes3's COV detection.
            self._inputs[index].presentValue = "active" if value else "inactive"

    def _logged(self, lock: Any, value: Any, priority: int, source: str) -> None:
        door = int(lock.objectIdentifier[1])
        bit = None if isinstance(value, Null) else bool(int(value))
        self.write_log.append(PriorityWrite(time.monotonic_ns(), door, bit, int(priority), source))
        self.counts["writes"] += 1

    def _output_changed(self, lock: Any) -> None:
        door = int(lock.objectIdentifier[1])
        self.mechanics.drive(door, self.locked(door))

    def _input_changed(self, signal: Signal, door: int, value: bool) -> None:
        self._set_input(door if signal is Signal.POSITION else self._n + door, value)

    # --- faults ---------------------------------------------------------------------------

    def _fitted(self, apdu: Any) -> Any:
        """A reply longer than ``max_apdu`` from a device that cannot segment: an abort
        (raised, so the stack answers the request with segmentation-not-supported)."""
        if self.segmentation or not isinstance(apdu, ComplexAckPDU):
            return apdu
        # A service ack (ReadPropertyACK...) is encoded later; its size is its encoding's.
        encoded = apdu.encode() if isinstance(apdu, APCISequence) else apdu
        size = ACK_HEADER_BYTES + len(encoded.pduData)
        if size <= self.max_apdu:
            return apdu
        self.counts["too_long"] += 1
        # Raised inside the service helper: bacpypes3 answers the request with an Abort.
        raise SegmentationNotSupported(f"reply of {size} bytes, max-apdu {self.max_apdu}")

    def _garbled(self, apdu: Any) -> Any:
        if not self.faults.roll(self.faults.corrupt):
            return apdu
        self.counts["corrupted"] += 1
        wrong_object = ObjectIdentifier("analog-value,9999")
        wrong_value = AnyValue(CharacterString("garbled"))
        if isinstance(apdu, ReadPropertyACK):
            if self.garble_mode is Garble.WRONG_OBJECT:
                apdu.objectIdentifier = wrong_object
            else:
                apdu.propertyValue = wrong_value
        elif isinstance(apdu, ReadPropertyMultipleACK) and apdu.listOfReadAccessResults:
            first = apdu.listOfReadAccessResults[0]
            if self.garble_mode is Garble.WRONG_OBJECT:
                first.objectIdentifier = wrong_object
            elif first.listOfResults and first.listOfResults[0].readResult.propertyValue:
                first.listOfResults[0].readResult.propertyValue = wrong_value
        elif isinstance(apdu, SimpleAckPDU):
            # A write "acknowledged" with a read reply: another service altogether.
            ack = ReadPropertyACK(
                objectIdentifier=wrong_object,
                propertyIdentifier="present-value",
                propertyValue=AnyValue(Real(0.0)),
                context=apdu,
            )
            ack.pduDestination = apdu.pduDestination
            return ack
        return apdu

    def statistics(self) -> dict[str, int | float]:
        return {
            **super().statistics(),
            "requests": self.counts["requests"],
            "writes": self.counts["writes"],
            "dropped": self.counts["dropped"],
            "delayed": self.counts["delayed"],
            "corrupted": self.counts["corrupted"],
            "cov_notifications": self.counts["cov_notifications"],
            "too_long": self.counts["too_long"],
            "restarts": self._restarts,
            "subscriptions": self.subscriptions(),
        }

    def subscriptions(self) -> int:
        """Live COV subscriptions on this device (0 while vanished)."""
        app = self._app
        if app is None:
            return 0
        return sum(len(d.cov_subscriptions) for d in app._cov_detections.values())


def _point(raw: str) -> Point:
    """A point in the BACnet driver's notation, or a ValueError saying what was expected."""
    try:
        return parse_point(raw)
    except BadPoint as exc:
        raise ValueError(str(exc)) from exc
