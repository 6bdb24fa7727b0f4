"""BACnet/IP requests to one controller over a shared bacpypes3 application.

**One application per local address.** Every BACnet device of a gateway that names the same
``local_address`` shares one bacpypes3 :class:`Application` (one UDP socket, one device object
of the gateway's own): :data:`APPLICATIONS` hands it out with reference counting, opens it
for the first device and closes it when the last one lets go. N controllers cost one socket.

**No lane.** BACnet/IP requests are independent datagrams matched to replies by invoke id, so
a door command never queues behind a poll on the wire: both go out at once, bounded only by
a per-device in-flight semaphore (invoke ids are 8 bits). The only shared state is the
application's request table, touched synchronously.

**Our socket, our errors.** bacpypes3 binds with ``SO_REUSEPORT``, so a second process can
bind the same port silently and steal replies; here the socket is bound without it, so a
clash fails at once with an error. Replies are checked (service, object, property,
datatype) before anything is believed; library exceptions never leave this module.
"""

from __future__ import annotations

import asyncio
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from bacpypes3.apdu import (
    APDU,
    AbortPDU,
    ConfirmedCOVNotificationRequest,
    ErrorPDU,
    ErrorRejectAbortNack,
    ReadPropertyACK,
    ReadPropertyMultipleACK,
    ReadPropertyMultipleRequest,
    ReadPropertyRequest,
    RejectPDU,
    SimpleAckPDU,
    SubscribeCOVRequest,
    UnconfirmedCOVNotificationRequest,
    WritePropertyRequest,
)
from bacpypes3.app import Application
from bacpypes3.basetypes import (
    BinaryPV,
    PropertyIdentifier,
    PropertyReference,
    ReadAccessSpecification,
)
from bacpypes3.constructeddata import Any as AnyValue
from bacpypes3.constructeddata import ArrayOf
from bacpypes3.errors import AbortException, RejectException, ServicesError
from bacpypes3.ipv4.link import NormalLinkLayer
from bacpypes3.local.device import DeviceObject
from bacpypes3.pdu import Address, IPv4Address
from bacpypes3.primitivedata import Null, ObjectIdentifier, Unsigned

from gatewayd.kernel.errors import (
    BadDeviceReply,
    DeviceError,
    DeviceOffline,
    DeviceTimeout,
    ErrorCode,
)

log = structlog.get_logger(__name__)

PRESENT_VALUE = PropertyIdentifier("present-value")
#: Errors bacpypes3 raises while casting a value out of an ``Any`` (a wrong tag is an
#: InvalidTag, a RejectException).
CAST_ERRORS = (
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    RejectException,
    AbortException,
)

#: Elements an array read by index may have (a controller of 10,000 doors has 30,001
#: objects); a larger count is a bad reply, not a million requests.
MAX_ARRAY_ELEMENTS = 65_535

#: An object and one of its properties.
Ref = tuple[ObjectIdentifier, PropertyIdentifier]
#: Called with each property value of a COV notification (object, property, value).
CovListener = Callable[[ObjectIdentifier, PropertyIdentifier, AnyValue], None]


T = TypeVar("T")


async def concurrently(requests: Iterable[Awaitable[T]]) -> list[T]:
    """Run requests at once (they are independent datagrams); raise the first failure."""
    results = await asyncio.gather(*requests, return_exceptions=True)
    out: list[T] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        out.append(result)
    return out


class DeviceRefused(DeviceError):
    """The controller answered with a BACnet Error, Reject or Abort."""

    code: str = ErrorCode.DEVICE_REFUSED

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        #: ``error-class:error-code``, ``reject:reason`` or ``abort:reason``.
        self.reason = reason


def too_long(exc: DeviceRefused) -> bool:
    """The reply did not fit what the device can send (no segmentation, or a small APDU)."""
    return "segmentation" in exc.reason or "buffer-overflow" in exc.reason


def refusal(what: str, nack: BaseException) -> DeviceRefused:
    """Our error for a bacpypes3 Error/Reject/Abort (a BaseException, not an Exception)."""
    if isinstance(nack, ErrorPDU):
        reason = f"{nack.errorClass}:{nack.errorCode}"
    elif isinstance(nack, RejectPDU):
        reason = f"reject:{nack.apduAbortRejectReason}"
    elif isinstance(nack, AbortPDU):
        reason = f"abort:{nack.apduAbortRejectReason}"
    else:
        reason = type(nack).__name__
    return DeviceRefused(f"{what}: device refused ({reason})", reason)


class GatewayApplication(Application):  # type: ignore[misc]
    """The gateway's BACnet device: routes COV notifications to the driver that subscribed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (device address, subscriber process id) -> listener.
        self.cov_listeners: dict[tuple[Address, int], CovListener] = {}
        self._next_process_id = 1

    def new_process_id(self) -> int:
        """A subscriber process identifier unique within this application."""
        process_id = self._next_process_id
        self._next_process_id = process_id % 0x3FFFFF + 1
        return process_id

    def _deliver(self, apdu: Any) -> bool:
        listener = self.cov_listeners.get((apdu.pduSource, apdu.subscriberProcessIdentifier))
        if listener is None:
            return False
        for element in apdu.listOfValues:
            listener(apdu.monitoredObjectIdentifier, element.propertyIdentifier, element.value)
        return True

    async def do_ConfirmedCOVNotificationRequest(
        self, apdu: ConfirmedCOVNotificationRequest
    ) -> None:
        if not self._deliver(apdu):
            # Tells the device to stop sending for a subscription we no longer hold.
            raise ServicesError(errorCode="unknownSubscription")
        await self.response(SimpleAckPDU(context=apdu))

    async def do_UnconfirmedCOVNotificationRequest(
        self, apdu: UnconfirmedCOVNotificationRequest
    ) -> None:
        self._deliver(apdu)


def bind_udp(address: str) -> socket.socket:
    """A UDP socket bound to ``ip:port`` *without* SO_REUSEPORT, so a clash is an error."""
    host, _, port = address.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, int(port)))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def open_application(
    app: Application, address: str, timeout_s: float = 5.0
) -> NormalLinkLayer:
    """Bind ``app`` to a UDP socket of our own and wait until the endpoint is live."""
    sock = bind_udp(address)
    host, port = sock.getsockname()
    link_address = IPv4Address(f"{host}:{port}")
    link = NormalLinkLayer(link_address, bind_socket=sock)
    app.link_layers[ObjectIdentifier("network-port,1")] = link
    app.nsap.bind(link, address=link_address)
    # bacpypes3 creates the endpoint in a task; closing before it is live would leak it.
    async with asyncio.timeout(timeout_s):
        await link.server._local_transport_ready.wait()
    return link


@dataclass
class _Shared:
    app: GatewayApplication
    device_instance: int
    users: int = 0


class ApplicationRegistry:
    """Shared gateway applications by local address, reference counted."""

    def __init__(self) -> None:
        self._apps: dict[str, _Shared] = {}
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def _lock(self) -> asyncio.Lock:
        # One lock per event loop: the registry lives at module level, and an asyncio.Lock
        # that ever made a task wait is bound to that loop for good (a second loop, as in
        # tests or an embedding program, would get "bound to a different event loop").
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    async def acquire(self, local_address: str, device_instance: int) -> GatewayApplication:
        """The application bound to ``local_address``, opened by the first caller."""
        async with self._lock():
            shared = self._apps.get(local_address)
            if shared is None:
                shared = _Shared(await self._open(local_address, device_instance), device_instance)
                self._apps[local_address] = shared
            elif shared.device_instance != device_instance:
                raise DeviceOffline(
                    f"local_address {local_address} is already open as device"
                    f" {shared.device_instance}, not {device_instance}"
                )
            shared.users += 1
            app: GatewayApplication = shared.app
            return app

    def release(self, local_address: str) -> None:
        """Let go of an application; the last user closes its socket."""
        shared = self._apps.get(local_address)
        if shared is None:
            return
        shared.users -= 1
        if shared.users <= 0:
            del self._apps[local_address]
            shared.app.close()
            log.info("bacnet.local_closed", local_address=local_address)

    def users(self, local_address: str) -> int:
        shared = self._apps.get(local_address)
        return shared.users if shared else 0

    @staticmethod
    async def _open(local_address: str, device_instance: int) -> GatewayApplication:
        device = DeviceObject(
            objectIdentifier=("device", device_instance),
            objectName=f"gatewayd-{device_instance}",
            vendorIdentifier=999,
            # Our own deadlines (asyncio.timeout) fire first; bacpypes3 never retries.
            apduTimeout=30_000,
            numberOfApduRetries=0,
        )
        app: GatewayApplication = GatewayApplication.from_object_list([device])
        try:
            await open_application(app, local_address)
        except (OSError, TimeoutError) as exc:
            app.close()
            raise DeviceOffline(f"cannot bind BACnet/IP {local_address}: {exc}") from exc
        log.info("bacnet.local_open", local_address=local_address, instance=device_instance)
        return app


#: The process-wide registry every BACnet driver uses.
APPLICATIONS = ApplicationRegistry()


class BacnetLink:
    """Requests to one controller; every method raises a DeviceError subclass on failure."""

    def __init__(
        self, address: str, timeout_ms: int, max_in_flight: int, write_retries: int = 0
    ) -> None:
        self.address = Address(address)
        self._text = address
        self._timeout_s = timeout_ms / 1000
        #: Times a write with no reply is sent again (BACnet's Number_Of_APDU_Retries).
        self._write_retries = write_retries
        self._slots = asyncio.Semaphore(max_in_flight)
        self._app: GatewayApplication | None = None
        #: Monotonic ns at which the last request was handed to the stack.
        self.sent_ns = 0
        self.requests = 0
        self.failures = 0
        #: Writes sent again because the first send had no reply in time.
        self.retries = 0
        self.last_rtt_ms = 0.0
        #: Whether a reply may come segmented (False once the device says it cannot segment).
        self.segmented_response_accepted = True

    def attach(self, app: GatewayApplication) -> None:
        self._app = app

    def detach(self) -> None:
        self._app = None

    @property
    def app(self) -> GatewayApplication:
        if self._app is None:
            raise DeviceOffline(f"{self._text}: no local BACnet application")
        return self._app

    async def request(self, what: str, apdu: APDU) -> APDU:
        """Send one confirmed request under the deadline; return the ack."""
        app = self.app
        apdu.pduDestination = self.address
        if not self.segmented_response_accepted:
            apdu.apduSA = False
        async with self._slots:
            self.requests += 1
            start_ns = self.sent_ns = time.monotonic_ns()
            try:
                async with asyncio.timeout(self._timeout_s):
                    reply: APDU = await app.request(apdu)
            except TimeoutError as exc:
                self.failures += 1
                raise DeviceTimeout(
                    f"{what}: no reply from {self._text} within {self._timeout_s * 1000:.0f} ms"
                ) from exc
            except ErrorRejectAbortNack as nack:
                self.failures += 1
                raise refusal(what, nack) from None
            except OSError as exc:
                self.failures += 1
                raise DeviceOffline(f"{what}: {exc}") from exc
        self.last_rtt_ms = (time.monotonic_ns() - start_ns) / 1e6
        return reply

    def _bad(self, message: str) -> BadDeviceReply:
        self.failures += 1
        return BadDeviceReply(message)

    async def read(
        self,
        objid: ObjectIdentifier,
        prop: PropertyIdentifier,
        datatype: type,
        index: int | None = None,
    ) -> Any:
        """ReadProperty, checked: the ack must name what was asked and cast to ``datatype``."""
        what = f"read {objid} {prop}" + ("" if index is None else f"[{index}]")
        return self.cast(what, await self.read_any(objid, prop, index), datatype)

    async def read_any(
        self, objid: ObjectIdentifier, prop: PropertyIdentifier, index: int | None = None
    ) -> AnyValue:
        """ReadProperty of one property, its value left uncast (checked it is about it)."""
        what = f"read {objid} {prop}" + ("" if index is None else f"[{index}]")
        request = ReadPropertyRequest(objectIdentifier=objid, propertyIdentifier=prop)
        if index is not None:
            request.propertyArrayIndex = index
        ack = await self.request(what, request)
        if not isinstance(ack, ReadPropertyACK):
            raise self._bad(f"{what}: reply is {type(ack).__name__}, not ReadPropertyACK")
        if (
            ack.objectIdentifier != objid
            or ack.propertyIdentifier != prop
            or ack.propertyArrayIndex != index
        ):
            about = f"{ack.objectIdentifier} {ack.propertyIdentifier}"
            if ack.propertyArrayIndex is not None:
                about += f"[{ack.propertyArrayIndex}]"
            raise self._bad(f"{what}: reply is about {about}")
        value: AnyValue = ack.propertyValue
        return value

    async def read_array(
        self, objid: ObjectIdentifier, prop: PropertyIdentifier, element: type
    ) -> list[Any]:
        """An array property whole, or, when its reply is too long for the device to send
        unsegmented, its length (index 0) and then each element by index: how a BACnet
        client reads the object-list of a device that cannot segment."""
        try:
            return list(await self.read(objid, prop, ArrayOf(element)))
        except DeviceRefused as exc:
            if not too_long(exc):
                raise
        count = int(await self.read(objid, prop, Unsigned, index=0))
        if count > MAX_ARRAY_ELEMENTS:
            raise self._bad(
                f"read {objid} {prop}: {count} elements, more than {MAX_ARRAY_ELEMENTS}"
            )
        reads = (self.read(objid, prop, element, index=i) for i in range(1, count + 1))
        return await concurrently(reads)

    async def read_each(self, refs: list[Ref]) -> dict[Ref, AnyValue | DeviceRefused]:
        """What :meth:`read_multiple` returns, with one ReadProperty per property (for devices
        without ReadPropertyMultiple). A BACnet Error about one property comes back as its
        value, as in an RPM reply; a reject, abort, timeout or bad reply fails the whole read."""

        async def one(ref: Ref) -> AnyValue | DeviceRefused:
            try:
                return await self.read_any(*ref)
            except DeviceRefused as exc:
                if exc.reason.startswith(("reject:", "abort:")):
                    raise
                return exc

        values = await concurrently(one(ref) for ref in refs)
        return dict(zip(refs, values, strict=True))

    def cast(self, what: str, value: AnyValue, datatype: type) -> Any:
        try:
            return value.cast_out(datatype)
        except CAST_ERRORS as exc:
            raise self._bad(f"{what}: value is not a {datatype.__name__} ({exc})") from exc

    async def read_multiple(self, refs: list[Ref]) -> dict[Ref, AnyValue | DeviceRefused]:
        """Properties with one ReadPropertyMultiple; per-property errors come back as values."""
        what = f"read {len(refs)} properties"
        specs = [
            ReadAccessSpecification(
                objectIdentifier=objid,
                listOfPropertyReferences=[PropertyReference(propertyIdentifier=prop)],
            )
            for objid, prop in refs
        ]
        ack = await self.request(what, ReadPropertyMultipleRequest(listOfReadAccessSpecs=specs))
        if not isinstance(ack, ReadPropertyMultipleACK):
            raise self._bad(f"{what}: reply is {type(ack).__name__}, not ReadPropertyMultipleACK")
        found: dict[Ref, AnyValue | DeviceRefused] = {}
        for result in ack.listOfReadAccessResults:
            for element in result.listOfResults:
                ref = (result.objectIdentifier, element.propertyIdentifier)
                error = element.readResult.propertyAccessError
                if error is None:
                    found[ref] = element.readResult.propertyValue
                    continue
                reason = f"{error.errorClass}:{error.errorCode}"
                found[ref] = DeviceRefused(f"read {ref[0]} {ref[1]}: {reason}", reason)
        if set(found) != set(refs):
            raise self._bad(f"{what}: reply covers other objects or properties than asked")
        return found

    def binary(self, what: str, value: AnyValue) -> bool:
        """A BinaryPV (active / inactive) as a bool; anything else is a bad reply."""
        pv = self.cast(what, value, BinaryPV)
        number = int(pv)
        if number not in (0, 1):
            raise self._bad(f"{what}: {number} is not a binary present value")
        return number == 1

    async def write_present_value(
        self, objid: ObjectIdentifier, value: bool | None, priority: int
    ) -> int:
        """Command (or with None relinquish) one priority slot; return the on-wire time."""
        what = f"write {objid} present-value @{priority}"
        pv: Any = Null(()) if value is None else BinaryPV(1 if value else 0)
        for attempt in range(self._write_retries + 1):
            # A new request each time: bacpypes3 gives it a fresh invoke id, so a late ack of
            # the lost one cannot be taken for this one's. Writing one priority slot is
            # idempotent, so sending it twice is harmless; a UDP datagram lost is not.
            request = WritePropertyRequest(
                objectIdentifier=objid,
                propertyIdentifier=PRESENT_VALUE,
                propertyValue=pv,
                priority=priority,
            )
            try:
                ack = await self.request(what, request)
                break
            except DeviceTimeout as exc:
                if attempt == self._write_retries:
                    if attempt:
                        raise DeviceTimeout(f"{exc} (sent {attempt + 1} times)") from exc
                    raise
                self.retries += 1
                log.warning("bacnet.write_retry", address=self._text, what=what,
                            attempt=attempt + 2)  # fmt: skip
        sent_ns = self.sent_ns
        if not isinstance(ack, SimpleAckPDU):
            raise self._bad(f"{what}: reply is {type(ack).__name__}, not SimpleAck")
        return sent_ns

    async def subscribe(
        self, objid: ObjectIdentifier, process_id: int, lifetime_s: int | None
    ) -> None:
        """SubscribeCOV with confirmed notifications; ``None`` lifetime cancels it."""
        what = f"subscribe-cov {objid}"
        request = SubscribeCOVRequest(
            subscriberProcessIdentifier=process_id,
            monitoredObjectIdentifier=objid,
        )
        if lifetime_s is not None:
            request.issueConfirmedNotifications = True
            request.lifetime = lifetime_s
        ack = await self.request(what, request)
        if not isinstance(ack, SimpleAckPDU):
            raise self._bad(f"{what}: reply is {type(ack).__name__}, not SimpleAck")
