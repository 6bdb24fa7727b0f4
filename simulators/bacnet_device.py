"""A BACnet/IP door controller on a loopback port of its own, built on bacpypes3.

Objects for ``n`` doors: ``binary-output,i`` is door ``i``'s lock (a real 16-slot priority
array, relinquish default *inactive* = unlocked); ``binary-input,i`` its position (active =
closed) and ``binary-input,n+i`` its lock sense (active = bolt thrown), which follows the
output after ``actuation_ms`` unless the bolt is jammed or the door held open. All objects
support SubscribeCOV (bacpypes3's own COV detection).

Faults (``self.faults``, shared :class:`Faults`): ``delay_ms`` delays every request,
``drop`` loses requests, ``hang`` ignores them all, ``corrupt`` garbles replies in the way
``garble_mode`` says. A BACnet stack drops undecodable datagrams (the client would see a
timeout, not garbage), so garbling is done where it is meaningful: decodable replies that
answer about the *wrong object*, carry a value of the *wrong type*, or a write acknowledged
with a reply of another service; COV notifications carry a wrong-typed value.

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
from collections import Counter, deque
from enum import StrEnum
from typing import Any, NamedTuple

import structlog
from bacpypes3.apdu import ReadPropertyACK, ReadPropertyMultipleACK, SimpleAckPDU
from bacpypes3.app import Application
from bacpypes3.basetypes import PriorityValue, TimeStamp
from bacpypes3.constructeddata import Any as AnyValue
from bacpypes3.ipv4.link import NormalLinkLayer
from bacpypes3.local.binary import BinaryInputObject, BinaryOutputObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.pdu import IPv4Address
from bacpypes3.primitivedata import CharacterString, Null, ObjectIdentifier, Real

from gatewayd.simulators.faults import Faults

log = structlog.get_logger("simulators.bacnet_device")

LOG_LIMIT = 100_000
#: Bind attempts 10 ms apart when reopening a port (see ``_bind``).
BIND_ATTEMPTS = 50
#: The priority a "local operator" at the controller's keypad writes at.
OPERATOR_PRIORITY = 8


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


class _Lock(BinaryOutputObject):  # type: ignore[misc]
    """A lock output that reports writes and present-value changes to its simulator."""

    async def write_property(
        self, attr: Any, value: Any, index: Any = None, priority: Any = None
    ) -> None:
        sim = self.__dict__.get("_sim")
        if sim is not None and str(attr) in ("presentValue", "present-value", "85"):
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

    async def indication(self, apdu: Any) -> None:
        sim = self.sim
        sim._counts["requests"] += 1
        if sim.faults.hang or sim.faults.roll(sim.faults.drop):
            sim._counts["dropped"] += 1
            return
        if sim.faults.delay_ms > 0:
            sim._counts["delayed"] += 1
            task = asyncio.current_task()
            if task is not None:
                sim._delayed.add(task)
            try:
                await asyncio.sleep(sim.faults.delay_ms / 1000)
            finally:
                if task is not None:
                    sim._delayed.discard(task)
        await super().indication(apdu)

    async def response(self, apdu: Any) -> None:
        await super().response(self.sim._garbled(apdu))

    def cov_notification(self, cov: Any, apdu: Any) -> None:
        self.sim._counts["cov_notifications"] += 1
        if self.sim.faults.roll(self.sim.faults.corrupt):
            for element in apdu.listOfValues:
                element.value = AnyValue(CharacterString("garbled"))
        super().cov_notification(cov, apdu)


class BacnetDeviceSim:
    """A BACnet/IP controller with ``doors`` locks, 2 inputs per door and faults."""

    def __init__(
        self,
        doors: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        device_instance: int = 1001,
        actuation_ms: float = 5.0,
        name: str = "bacnet",
    ) -> None:
        if not 1 <= doors <= 10_000:
            raise ValueError(f"doors must be 1..10000, got {doors}")
        self.name = name
        self.host = host
        self.device_instance = device_instance
        self.actuation_ms = actuation_ms
        #: Fault settings; change fields at run time.
        self.faults = Faults()
        self.garble_mode = Garble.WRONG_OBJECT
        #: Every present-value write to a lock, from the network or the local operator.
        self.write_log: deque[PriorityWrite] = deque(maxlen=LOG_LIMIT)
        self._n = doors
        self._port = port
        self._closed = [True] * doors
        self._sense = [False] * doors
        self._jammed: set[int] = set()
        self._held_open: set[int] = set()
        self._locks: list[_Lock] = []
        self._inputs: list[Any] = []
        self._app: _SimApplication | None = None
        self._restarts = 0
        self._settling: dict[int, asyncio.TimerHandle] = {}
        self._delayed: set[asyncio.Task[Any]] = set()
        self._counts: Counter[str] = Counter()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"{self.host}:{self._port}"

    @property
    def listening(self) -> bool:
        return self._app is not None

    async def start(self) -> None:
        if self._app is None:
            await self._open()
            log.info(
                "bacnet_listening",
                device=self.name,
                address=self.address,
                instance=self.device_instance,
                doors=self._n,
            )

    async def stop(self) -> None:
        """Close the socket, cancel timers and delayed requests; safe to call twice."""
        self._close()
        for handle in self._settling.values():
            handle.cancel()
        self._settling.clear()
        for task in list(self._delayed):
            task.cancel()
        self._delayed.clear()

    async def vanish(self) -> None:
        """Close the socket, as a controller losing power (subscriptions die with it)."""
        self._close()
        log.info("bacnet_vanished", device=self.name, port=self._port)

    async def reappear(self) -> None:
        """Power back: the same port, a fresh application, a new restart time."""
        if self._app is None:
            await self._open()
            log.info("bacnet_reappeared", device=self.name, port=self._port)

    async def restart(self) -> None:
        await self.vanish()
        await self.reappear()

    def _close(self) -> None:
        app, self._app = self._app, None
        if app is not None:
            app.close()

    async def _open(self) -> None:
        sock = await self._bind()
        self._port = sock.getsockname()[1]
        self._restarts += 1
        app = _SimApplication.from_object_list(self._objects())
        app.sim = self
        link_address = IPv4Address(self.address)
        link = NormalLinkLayer(link_address, bind_socket=sock)
        app.link_layers[ObjectIdentifier("network-port,1")] = link
        app.nsap.bind(link, address=link_address)
        self._app = app
        await link.server._local_transport_ready.wait()

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
                **({"presentValue": "inactive"} | kwargs),
            )
            lock.__dict__["_sim"] = self
            self._locks.append(lock)
        self._inputs = [
            BinaryInputObject(
                objectIdentifier=("binary-input", i),
                objectName=f"input-{i}",
                presentValue="active" if bit else "inactive",
            )
            for i, bit in enumerate([*self._closed, *self._sense])
        ]
        return [device, *self._locks, *self._inputs]

    # --- door physics and the operator ------------------------------------------------------

    @property
    def doors(self) -> int:
        return self._n

    def locked(self, door: int) -> bool:
        """The lock output's present value (what the priority array resolved to)."""
        return int(self._locks[door].presentValue) == 1

    def sense(self, door: int) -> bool:
        return self._sense[door]

    def closed(self, door: int) -> bool:
        return self._closed[door]

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

    def set_closed(self, door: int, closed: bool) -> None:
        """Open or close a door (position input); an energised lock throws when closed."""
        self._closed[door] = closed
        if closed:
            self._held_open.discard(door)
        else:
            self._held_open.add(door)
        self._set_input(door, closed)
        self._actuate(door)

    def jam(self, door: int) -> None:
        """The bolt sticks: lock sense keeps its value whatever the output does."""
        self._jammed.add(door)
        self._cancel_settle(door)

    def unjam(self, door: int) -> None:
        self._jammed.discard(door)
        self._actuate(door)

    def hold_open(self, door: int) -> None:
        self.set_closed(door, False)

    def release_door(self, door: int) -> None:
        self.set_closed(door, True)

    def _set_input(self, index: int, value: bool) -> None:
        if self._inputs:
            # Setting presentValue on a local object runs bacpypes3's COV detection.
            self._inputs[index].presentValue = "active" if value else "inactive"

    def _logged(self, lock: Any, value: Any, priority: int, source: str) -> None:
        door = int(lock.objectIdentifier[1])
        bit = None if isinstance(value, Null) else bool(int(value))
        self.write_log.append(PriorityWrite(time.monotonic_ns(), door, bit, int(priority), source))
        self._counts["writes"] += 1

    def _output_changed(self, lock: Any) -> None:
        self._actuate(int(lock.objectIdentifier[1]))

    def _actuate(self, door: int) -> None:
        self._cancel_settle(door)
        if self.actuation_ms <= 0:
            self._settle(door)
            return
        loop = asyncio.get_running_loop()
        self._settling[door] = loop.call_later(self.actuation_ms / 1000, self._settle, door)

    def _settle(self, door: int) -> None:
        self._settling.pop(door, None)
        if door in self._jammed or not self._locks:
            return
        sense = self.locked(door) and door not in self._held_open
        if sense != self._sense[door]:
            self._sense[door] = sense
            self._set_input(self._n + door, sense)

    def _cancel_settle(self, door: int) -> None:
        handle = self._settling.pop(door, None)
        if handle is not None:
            handle.cancel()

    # --- faults ---------------------------------------------------------------------------

    def _garbled(self, apdu: Any) -> Any:
        if not self.faults.roll(self.faults.corrupt):
            return apdu
        self._counts["corrupted"] += 1
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

    def statistics(self) -> dict[str, int]:
        return {
            "requests": self._counts["requests"],
            "writes": self._counts["writes"],
            "dropped": self._counts["dropped"],
            "delayed": self._counts["delayed"],
            "corrupted": self._counts["corrupted"],
            "cov_notifications": self._counts["cov_notifications"],
            "restarts": self._restarts,
            "subscriptions": self.subscriptions(),
        }

    def subscriptions(self) -> int:
        """Live COV subscriptions on this device (0 while vanished)."""
        app = self._app
        if app is None:
            return 0
        return sum(len(d.cov_subscriptions) for d in app._cov_detections.values())
