"""The BACnet/IP door controller driver: priority-array writes, COV, polling, health.

Writes go to ``present-value`` at the priority the core arbitrated (``PointWrite.priority``).
The gateway holds one slot per output, the winning one: a write at a new priority is made
first and the slot it held before is relinquished (Null) after, so the lock never passes
through the relinquish default on the way. Slots the gateway never wrote are never touched.

Commands and polls run concurrently: BACnet requests are independent datagrams matched by
invoke id, so a command never waits for a poll (see ``transport.py``).

**Small controllers.** The device object says what the controller can do, and it is read at
each connect: without ReadPropertyMultiple in ``protocol-services-supported`` (or once an
RPM is rejected as an unrecognized service) every read is one ReadProperty per property,
remembered for the device and logged once; ``max-apdu-length-accepted`` sizes each RPM so
its reply fits in one APDU, and a reply that still needs segmenting the device cannot do is
read in halves; an array (``object-list``, a ``priority-array``) too long for one
unsegmented reply is read as its length and then element by element;
``segmentation-supported`` decides whether requests accept a segmented reply. Points whose
COV subscription is refused are polled at ``poll_interval_ms``; the device stays online and
its health says how it is read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog
from bacpypes3.basetypes import (
    PriorityValue,
    PropertyIdentifier,
    Segmentation,
    ServicesSupported,
    TimeStamp,
)
from bacpypes3.constructeddata import Any as AnyValue
from bacpypes3.primitivedata import ObjectIdentifier, Unsigned

from gatewayd.drivers.bacnet.config import BacnetConfig
from gatewayd.drivers.bacnet.cov import CovBook, object_id
from gatewayd.drivers.bacnet.points import Point, Write, parse_point, plan_writes
from gatewayd.drivers.bacnet.transport import (
    APPLICATIONS,
    PRESENT_VALUE,
    BacnetLink,
    DeviceRefused,
    Ref,
    concurrently,
    too_long,
)
from gatewayd.kernel.backoff import BackoffTimer
from gatewayd.kernel.driver import Driver, Emit, Startup
from gatewayd.kernel.errors import BadDeviceReply, BadPoint, DeviceError
from gatewayd.kernel.events import CommandResult, DeviceFault, PointValue, ReadPoints, WritePoints
from gatewayd.kernel.health import LinkHealth
from gatewayd.kernel.pointcache import PointCache

log = structlog.get_logger(__name__)

OBJECT_LIST = PropertyIdentifier("object-list")
PRIORITY_ARRAY = PropertyIdentifier("priority-array")
RESTART_TIME = PropertyIdentifier("time-of-device-restart")
SYSTEM_STATUS = PropertyIdentifier("system-status")
SERVICES = PropertyIdentifier("protocol-services-supported")
SEGMENTATION = PropertyIdentifier("segmentation-supported")
MAX_APDU = PropertyIdentifier("max-apdu-length-accepted")
#: Reasons meaning "this device has no ReadPropertyMultiple".
NO_RPM = ("reject:unrecognized-service", "reject:unrecognizedService")
#: Bytes one property reference may take in an RPM reply (object id, tags, a timestamp-sized
#: value), and what the APDU header and service choice take: sizes RPMs to the device.
RPM_BYTES_PER_REF = 24
RPM_OVERHEAD_BYTES = 8
#: Deadline of the best-effort COV cancellation when the driver stops.
CANCEL_TIMEOUT_S = 0.3


class BacnetDriver(Driver[BacnetConfig]):
    """Locks on binary outputs (through the priority array), doors on binary inputs."""

    config_model = BacnetConfig
    priority_array = True

    def __init__(self, config: BacnetConfig, points: frozenset[str], emit: Emit) -> None:
        super().__init__(config, points, emit)
        parsed = sorted({parse_point(p) for p in points})
        self._known = frozenset(parsed)
        self._outputs = [p for p in parsed if p.is_output]
        self._inputs = [p for p in parsed if not p.is_output]
        self._log = log.bind(device=config.id)
        self._link = BacnetLink(
            config.address, config.timeout_ms, config.max_in_flight, config.write_retries
        )
        self._cov = CovBook(self._link, config.cov_lifetime_s, self._on_cov, self._log)
        self._device = ObjectIdentifier(f"device,{config.device_instance}")
        self._values: PointCache[Point] = PointCache(config.id, emit)
        self._link_health = LinkHealth(
            self._set_health, self._log, "bacnet", offline_after=config.offline_after_failures
        )
        self._reconnect = BackoffTimer(config.reconnect_backoff)
        #: Priority slots the gateway holds on each output (normally one: the winning one).
        self._held: dict[Point, set[int]] = {}
        self._adopted = False
        self._missing: frozenset[Point] = frozenset()
        self._connected = False
        self._restart_stamp: TimeStamp | None = None
        self._stamp_supported = True
        self._next_full_poll = 0.0
        self._connects = 0
        #: False once the device is known to lack ReadPropertyMultiple (kept across reconnects).
        self._rpm = True
        #: Property references per RPM: the config's, made smaller by the device's max APDU.
        self._per_read = config.objects_per_read
        self._counts = {
            "polls": 0,
            "probes": 0,
            "poll_failures": 0,
            "commands": 0,
            "command_failures": 0,
            "faults": 0,
            "reconnects": 0,
            "restarts_seen": 0,
            "relinquished": 0,
            "rpm_split": 0,
        }

    @classmethod
    def parse_point(cls, raw: str) -> str:
        return str(parse_point(raw))

    @classmethod
    def is_output(cls, point: str) -> bool:
        return parse_point(point).is_output

    @classmethod
    def check_points(cls, config: BacnetConfig, points: Iterable[str]) -> list[str]:
        """Nothing to check offline: the object list is read from the device at start-up."""
        return []

    # --- run loop -------------------------------------------------------------------------

    async def run(self, started: Callable[[], None]) -> None:
        """Open the shared application, verify the device, poll and renew until cancelled."""
        cfg = self.config
        app = await APPLICATIONS.acquire(cfg.local_address, cfg.local_device_instance)
        self._link.attach(app)
        self._cov.attach(app)
        try:
            await Startup(started).attempt(self._connect())
            while True:
                if self._connected:
                    await self._cycle()
                    await asyncio.sleep(cfg.poll_interval_ms / 1000)
                else:
                    await asyncio.sleep(self._reconnect.next_s())
                    await self._connect()
        finally:
            try:
                if self._connected:
                    await self._cov.cancel_all(CANCEL_TIMEOUT_S)
            finally:
                self._cov.detach()
                self._link.detach()
                APPLICATIONS.release(cfg.local_address)
                self._link_health.stopped()

    async def _connect(self) -> None:
        """Find the device and its objects, recover our priority slots, subscribe."""
        try:
            await self._read_capabilities()
            await self._check_objects()
            await self._recover_priorities()
            self._restart_stamp = await self._read_restart_stamp()
            self._cov.forget()
            await self._tick(full=True)
        except DeviceError as exc:
            self._failed(exc)
            return
        self._connects += 1
        if self._connects > 1:
            self._counts["reconnects"] += 1
        self._connected = True
        self._succeeded()
        self._log.info(
            "bacnet.connected",
            address=self.config.address,
            instance=self.config.device_instance,
            cov=sorted(map(str, self._cov.active)),
            missing=sorted(map(str, self._missing)),
            rpm=self._rpm,
            per_read=self._per_read,
        )

    async def _read_capabilities(self) -> None:
        """What the device object says it can do: RPM, reply size, segmentation."""
        services = await self._optional(SERVICES, ServicesSupported)
        if services is not None and not services[ServicesSupported.readPropertyMultiple]:
            self._no_rpm("protocol-services-supported lacks readPropertyMultiple")
        max_apdu = await self._optional(MAX_APDU, Unsigned)
        per_read = self.config.objects_per_read
        if max_apdu is not None:
            fits = (int(max_apdu) - RPM_OVERHEAD_BYTES) // RPM_BYTES_PER_REF
            per_read = max(1, min(per_read, fits))
        self._per_read = per_read
        segmentation = await self._optional(SEGMENTATION, Segmentation)
        self._link.segmented_response_accepted = segmentation is None or int(segmentation) in (
            Segmentation.segmentedBoth,
            Segmentation.segmentedTransmit,
        )

    async def _optional(self, prop: PropertyIdentifier, datatype: type) -> Any:
        """A device property the driver can do without (None when the device refuses it)."""
        try:
            return await self._link.read(self._device, prop, datatype)
        except DeviceRefused as exc:
            self._log.info("bacnet.property_refused", property=str(prop), reason=exc.reason)
            return None

    def _no_rpm(self, why: str) -> None:
        """Read per property from now on (said once per device)."""
        if self._rpm:
            self._rpm = False
            self._log.warning("bacnet.no_rpm", reason=why, fallback="ReadProperty per property")

    async def _check_objects(self) -> None:
        """Read the object list; a watched point the device lacks is a fault, not a crash."""
        objects = set(await self._read_object_list())
        missing = frozenset(p for p in self._known if object_id(p) not in objects)
        if missing and missing != self._missing:
            names = ", ".join(map(str, sorted(missing)))
            detail = f"device {self.config.device_instance} has no {names}"
            self._counts["faults"] += 1
            self._emit(DeviceFault(self.device_id, "bad_point", detail))
            self._log.error("bacnet.missing_objects", missing=names)
        self._missing = missing

    async def _read_object_list(self) -> list[ObjectIdentifier]:
        return await self._link.read_array(self._device, OBJECT_LIST, ObjectIdentifier)

    async def _recover_priorities(self) -> None:
        """Learn which slots we hold from the priority arrays (ours = listed in config)."""
        outputs = [p for p in self._outputs if p not in self._missing]
        arrays = await concurrently(
            self._link.read_array(object_id(p), PRIORITY_ARRAY, PriorityValue) for p in outputs
        )
        for point, array in zip(outputs, arrays, strict=True):
            in_use = {i + 1 for i, slot in enumerate(array) if slot.null is None}
            if self._adopted:
                # Reconnect: keep what we wrote and the device still has (it may have restarted).
                self._held[point] = self._held.get(point, set()) & in_use
            else:
                self._held[point] = in_use & self.config.gateway_priorities
        self._adopted = True

    async def _read_restart_stamp(self) -> TimeStamp | None:
        if not self._stamp_supported:
            return None
        try:
            stamp: TimeStamp = await self._link.read(self._device, RESTART_TIME, TimeStamp)
        except DeviceRefused:
            # Optional property: restarts are then noticed by reconnects and missed changes.
            self._stamp_supported = False
            return None
        return stamp

    # --- polling and COV ------------------------------------------------------------------

    def _watched(self) -> list[Point]:
        return [p for p in (*self._outputs, *self._inputs) if p not in self._missing]

    async def _cycle(self) -> None:
        try:
            await self._tick()
        except DeviceError as exc:
            self._counts["poll_failures"] += 1
            self._failed(exc)
            return
        self._succeeded()

    async def _tick(self, *, full: bool = False) -> None:
        """One poll tick: a full read when due, else a liveness probe; then COV upkeep."""
        cfg = self.config
        covered = cfg.cov and self._cov.covers(self._inputs_watched())
        now = time.monotonic()
        if full or not covered or now >= self._next_full_poll:
            await self._poll(self._watched())
            period_ms = cfg.cov_poll_interval_ms if covered else cfg.poll_interval_ms
            self._next_full_poll = now + period_ms / 1000
        else:
            await self._probe()
        if cfg.cov:
            await self._cov.renew_due()
            await self._cov.subscribe(self._inputs_watched())

    def _inputs_watched(self) -> list[Point]:
        return [p for p in self._inputs if p not in self._missing]

    async def _poll(self, points: list[Point]) -> None:
        refs: list[Ref] = [(object_id(p), PRESENT_VALUE) for p in points]
        if self._stamp_supported:
            refs.append((self._device, RESTART_TIME))
        values = await self._read_many(refs)
        self._check_restart(values.get((self._device, RESTART_TIME)))
        for point in points:
            value = self._binary(f"poll {point}", values[(object_id(point), PRESENT_VALUE)])
            known = self._values.get(point)
            if self._cov.covers([point]) and known is not None and known is not value:
                # A change COV should have reported: the subscription is gone; make it again.
                self._cov.resubscribe(point)
            self._absorb(point, value)
        self._counts["polls"] += 1

    async def _probe(self) -> None:
        """Is the device there, and has it restarted since we subscribed?"""
        prop = RESTART_TIME if self._stamp_supported else SYSTEM_STATUS
        values = await self._read_many([(self._device, prop)])
        self._check_restart(values.get((self._device, RESTART_TIME)))
        self._counts["probes"] += 1

    async def _read_many(self, refs: list[Ref]) -> dict[Ref, AnyValue | DeviceRefused]:
        if not self._rpm:
            return await self._link.read_each(refs)
        size = self._per_read
        chunks = [refs[i : i + size] for i in range(0, len(refs), size)]
        found: dict[Ref, AnyValue | DeviceRefused] = {}
        for part in await concurrently(self._read_chunk(c) for c in chunks):
            found.update(part)
        return found

    async def _read_chunk(self, refs: list[Ref]) -> dict[Ref, AnyValue | DeviceRefused]:
        """One RPM; rejected as unknown: per property from now on; too big: in halves."""
        if not self._rpm:
            return await self._link.read_each(refs)
        try:
            return await self._link.read_multiple(refs)
        except DeviceRefused as exc:
            if exc.reason in NO_RPM:
                self._no_rpm(exc.reason)
                return await self._link.read_each(refs)
            if not too_long(exc):
                raise
            if len(refs) == 1:
                return await self._link.read_each(refs)
        self._counts["rpm_split"] += 1
        half = len(refs) // 2
        self._per_read = max(1, min(self._per_read, half))
        first, second = await concurrently(
            (self._read_chunk(refs[:half]), self._read_chunk(refs[half:]))
        )
        return first | second

    def _binary(self, what: str, value: AnyValue | DeviceRefused) -> bool:
        if isinstance(value, DeviceRefused):
            raise value
        return self._link.binary(what, value)

    def _check_restart(self, raw: AnyValue | DeviceRefused | None) -> None:
        if raw is None:
            return
        if isinstance(raw, DeviceRefused):
            self._stamp_supported = False
            return
        stamp = self._link.cast("time-of-device-restart", raw, TimeStamp)
        if self._restart_stamp is not None and stamp != self._restart_stamp:
            self._counts["restarts_seen"] += 1
            self._log.warning("bacnet.device_restarted")
            # Its subscriptions are gone; the next cycle recreates them.
            self._cov.forget()
        self._restart_stamp = stamp

    def _on_cov(self, point: Point, raw: AnyValue) -> None:
        try:
            value = self._link.binary(f"cov {point}", raw)
        except BadDeviceReply as exc:
            self._report_fault(exc)
            return
        self._absorb(point, value)

    def _absorb(self, point: Point, value: bool) -> None:
        self._values.update(point, value)

    # --- health ---------------------------------------------------------------------------

    def _succeeded(self) -> None:
        self._reconnect.reset()
        missing = ", ".join(map(str, sorted(self._missing)))
        self._link_health.succeeded(
            degraded=f"missing {missing}" if missing else "", note=self._how_read()
        )

    def _how_read(self) -> str:
        """How the device is read when it is less than BACnet allows (for health)."""
        notes = []
        if not self._rpm:
            notes.append("no ReadPropertyMultiple: ReadProperty per property")
        refused = sorted(self._cov.refused)
        if self.config.cov and refused:
            names = ", ".join(map(str, refused))
            notes.append(f"COV refused for {names}: polled every {self.config.poll_interval_ms} ms")
        return "; ".join(notes)

    def _report_fault(self, exc: BadDeviceReply) -> None:
        self._counts["faults"] += 1
        self._emit(DeviceFault(self.device_id, exc.code, str(exc)))
        self._log.warning("bacnet.bad_reply", error=str(exc))

    def _failed(self, exc: DeviceError) -> None:
        """Count a failed transaction; report untrusted replies; go offline at the threshold."""
        if isinstance(exc, BadDeviceReply):
            self._report_fault(exc)
        if self._link_health.failed(str(exc)):
            # Rediscover on the way back: objects, priority slots, subscriptions.
            self._connected = False

    # --- commands -------------------------------------------------------------------------

    async def _execute(self, command: WritePoints | ReadPoints) -> CommandResult:
        """Write outputs at their priorities and read back, or read points now."""
        match command:
            case WritePoints():
                writes = plan_writes(command.writes, self._known)
                self._refuse_missing(w.point for w in writes)
            case ReadPoints():
                wanted = sorted({parse_point(p) for p in command.points})
                self._refuse_missing(wanted)
        self._counts["commands"] += 1
        try:
            if isinstance(command, WritePoints):
                return await self._write(writes)
            return await self._read_now(wanted)
        except DeviceError as exc:
            self._counts["command_failures"] += 1
            if isinstance(exc, BadDeviceReply):
                self._report_fault(exc)
            raise

    def _refuse_missing(self, points: Iterable[Point]) -> None:
        missing = sorted(p for p in points if p in self._missing)
        if missing:
            raise BadPoint(
                f"{self.device_id}: device {self.config.device_instance} has no"
                f" {', '.join(map(str, missing))}"
            )

    async def _write(self, writes: list[Write]) -> CommandResult:
        on_wire = await concurrently(self._write_one(w) for w in writes)
        # Read back what was written and every watched input (position, lock sense).
        points = sorted({*(w.point for w in writes), *self._inputs_watched()})
        result = await self._read_now(points)
        # Per controller at debug, like the relay boards' (`command.done` is the info line).
        self._log.debug(
            "bacnet.group_write",
            outputs=len(writes),
            on=sum(w.value for w in writes),
            priorities=sorted({w.priority for w in writes}),
            wire_to_done_ms=round((result.done_ns - min(on_wire)) / 1e6, 3),
        )
        return CommandResult(result.values, min(on_wire), result.done_ns)

    async def _write_one(self, write: Write) -> int:
        """Command our new slot first, then relinquish the slots we held before."""
        objid = object_id(write.point)
        if write.relinquish:
            return await self._relinquish(objid, write)
        on_wire_ns = await self._link.write_present_value(objid, write.value, write.priority)
        held = self._held.setdefault(write.point, set())
        held.add(write.priority)
        for stale in sorted(held - {write.priority}):
            await self._link.write_present_value(objid, None, stale)
            held.discard(stale)
            self._counts["relinquished"] += 1
        return on_wire_ns

    async def _relinquish(self, objid: ObjectIdentifier, write: Write) -> int:
        """Null every slot we hold (and the asked one, held or not: a restart may hide it)."""
        held = self._held.pop(write.point, set())
        on_wire_ns: int | None = None
        for slot in sorted(held | {write.priority}):
            sent = await self._link.write_present_value(objid, None, slot)
            on_wire_ns = sent if on_wire_ns is None else on_wire_ns
            self._counts["relinquished"] += 1
        assert on_wire_ns is not None
        return on_wire_ns

    async def _read_now(self, points: list[Point]) -> CommandResult:
        on_wire_ns = time.monotonic_ns()
        values = await self._read_many([(object_id(p), PRESENT_VALUE) for p in points])
        out = []
        for point in points:
            value = self._binary(f"read {point}", values[(object_id(point), PRESENT_VALUE)])
            self._absorb(point, value)
            out.append(PointValue(str(point), value))
        return CommandResult(tuple(out), on_wire_ns, time.monotonic_ns())

    def held_priorities(self) -> Mapping[str, tuple[int, ...]]:
        """Priority slots the gateway holds per output (for status and tests)."""
        return {str(p): tuple(sorted(s)) for p, s in self._held.items() if s}

    # --- statistics -----------------------------------------------------------------------

    def statistics(self) -> Mapping[str, int | float | str]:
        stats: dict[str, Any] = {
            **self._counts,
            "requests": self._link.requests,
            "failures": self._link.failures,
            "write_retries": self._link.retries,
            "consecutive_failures": self._link_health.failures,
            "last_rtt_ms": round(self._link.last_rtt_ms, 3),
            "cov_active": len(self._cov.active),
            "cov_refused": len(self._cov.refused),
            "cov_subscribes": self._cov.subscribes,
            "cov_renewals": self._cov.renewals,
            "cov_notifications": self._cov.notifications,
            "missing_points": len(self._missing),
            "rpm": int(self._rpm),
            "per_read": self._per_read,
            "last_error": self._link_health.last_error,
        }
        return stats
