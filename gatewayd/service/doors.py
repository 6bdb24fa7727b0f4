"""Door table and actuation: group writes per device, devices in parallel, then verify.

The door service turns decisions (door -> locked?) into one multi-point write per device,
runs all devices at once, and confirms every door by read-back (lock sense if fitted, else
the output itself). A door that does not confirm in time is written once more, then reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import structlog

from gatewayd.kernel.campus import Campus
from gatewayd.kernel.doorstate import DoorState
from gatewayd.kernel.driver import AnyDriver
from gatewayd.kernel.errors import DeviceError
from gatewayd.kernel.events import (
    CommandResult,
    DeviceHealth,
    Health,
    PointChanged,
    PointWrite,
    ReadPoints,
    WritePoints,
    now_ns,
)

log = structlog.get_logger(__name__)

#: Pause between read-backs while a lock is still moving (after its actuation time).
CONFIRM_POLL_S = 0.003


@dataclass(slots=True)
class ActuationReport:
    """Outcome of one actuation, with monotonic timestamps for the latency budget."""

    trigger_ns: int
    decided_ns: int
    commanded: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: When the last device's write went on the wire (all commands on the wire).
    on_wire_ns: int | None = None
    #: When the last door confirmed.
    confirmed_ns: int | None = None
    #: When each confirmed door confirmed (the after-action report's time to secure).
    confirmed_at_ns: dict[str, int] = field(default_factory=dict)

    def latencies_ms(self) -> dict[str, float | None]:
        def ms(t: int | None) -> float | None:
            return None if t is None else round((t - self.trigger_ns) / 1e6, 3)

        return {
            "decided": ms(self.decided_ns),
            "on_wire": ms(self.on_wire_ns),
            "confirmed": ms(self.confirmed_ns) if not self.failed else None,
        }


class Target(NamedTuple):
    """What one door should be, and on whose authority."""

    locked: bool
    reason: str
    #: Arbitration priority (BACnet sense: 1 highest); a priority-array device writes at it.
    priority: int = 16


class Reading(Protocol):
    """A point's value as a device reported it: a command's read-back or a change event."""

    @property
    def point(self) -> str: ...

    @property
    def value(self) -> bool: ...


DoorListener = Callable[[DoorState], None]
#: A door that read back otherwise than commanded, outside any actuation.
DriftListener = Callable[[str], None]
#: (input id, active, first reading since start)
InputListener = Callable[[str, bool, bool], None]


class DoorService:
    """The door table, kept current from device events and actuation read-backs."""

    def __init__(
        self,
        campus: Campus,
        drivers: Mapping[str, AnyDriver],
    ) -> None:
        self.campus = campus
        self._drivers = drivers
        self._door_listeners: list[DoorListener] = []
        self._input_listeners: list[InputListener] = []
        self._drift_listeners: list[DriftListener] = []
        #: Doors being written now: a read-back that differs is the bolt moving, not drift.
        self._moving: Counter[str] = Counter()
        self.doors = {d: DoorState(d) for d in campus.doors}
        #: Alarm input values (input id -> active).
        self.inputs: dict[str, bool] = {}
        # Serialises writes per device so that the last decision is the last write.
        self._write_locks = {dev: asyncio.Lock() for dev in drivers}
        self._doors_by_device: dict[str, list[str]] = defaultdict(list)
        for door_id, binding in campus.bindings.items():
            self._doors_by_device[binding.device].append(door_id)
        #: The device that drives each door's lock.
        self._device_of = {d: b.device for d, b in campus.bindings.items()}
        #: The point that confirms each door (its lock sense, else the lock itself).
        self._back_of = {d: b.sense or b.lock for d, b in campus.bindings.items()}
        #: Per device, point -> (door, is it the position): the points a door's table takes
        #: values from (a lock output with a sense beside it says nothing of the bolt).
        self._folds: dict[str, dict[str, tuple[str, bool]]] = defaultdict(dict)
        for door_id, b in campus.bindings.items():
            fold = self._folds[b.device]
            if b.position is not None:
                fold[b.position] = (door_id, True)
            fold[b.sense or b.lock] = (door_id, False)
        #: The few distinct writes a door can get (lock point, value, priority), shared, and
        #: the one each door got last (a lockdown's doors mostly get it again).
        self._point_writes: dict[tuple[str, bool, int], PointWrite] = {}
        self._last_write: dict[str, PointWrite] = {}
        #: Per door, how long it may take to confirm and how long its bolt travels (ms).
        self._confirm_ms = {d.id: d.confirm_timeout_ms for d in campus.doors.values()}
        self._travel_ms = {d.id: d.actuation_ms for d in campus.doors.values()}
        self.actuations = 0
        #: Devices that went offline after having been seen (start-up is not a return).
        self._offline: set[str] = set()

    def listen(
        self, *, doors: DoorListener, inputs: InputListener, drift: DriftListener | None = None
    ) -> None:
        """Be told of every door change, alarm input change, and door that drifted."""
        self._door_listeners.append(doors)
        self._input_listeners.append(inputs)
        if drift is not None:
            self._drift_listeners.append(drift)

    def listen_doors(self, doors: DoorListener) -> None:
        """Be told of every door change (and nothing else)."""
        self._door_listeners.append(doors)

    # --- events from drivers -----------------------------------------------------------------

    def on_points(self, events: Sequence[PointChanged]) -> None:
        """Many point events in arrival order: door values folded in once per device.

        A lockdown's read-backs come back as two thousand events that mostly say what the
        door table knows already; one pass per device costs a fraction of one per event.
        Alarm inputs are passed on in place, after the door values that came before them.
        """
        values: dict[str, list[Reading]] = defaultdict(list)
        roles = self.campus.point_roles
        for event in events:
            route = roles.get((event.device, event.point))
            if route is None:
                continue
            if route[1] == "input":
                self._apply_all(values)
                self.on_point(event)
            else:
                values[event.device].append(event)
        self._apply_all(values)

    def _apply_all(self, values: dict[str, list[Reading]]) -> None:
        for device, found in values.items():
            self._apply(device, found)
        values.clear()

    def on_point(self, event: PointChanged) -> None:
        route = self.campus.point_roles.get((event.device, event.point))
        if route is None:
            return
        ident, role = route
        if role == "input":
            alarm = self.campus.inputs[ident]
            active = event.value == alarm.active_high
            before = self.inputs.get(ident)
            self.inputs[ident] = active
            # Every change is passed on, the first reading too (flagged): it is not news when
            # quiet, but it clears a fire release persisted before a restart.
            if before != active:
                for on_input in self._input_listeners:
                    on_input(ident, active, before is None)
            return
        self._apply(event.device, (event,))

    @property
    def actuating(self) -> bool:
        """True while an actuation is writing or confirming doors."""
        return bool(self._moving)

    @property
    def devices(self) -> list[str]:
        """Devices that drive at least one door."""
        return list(self._doors_by_device)

    def doors_on(self, device: str) -> list[str]:
        return list(self._doors_by_device.get(device, ()))

    def on_health(self, event: DeviceHealth) -> bool:
        """Track device health; True when a device came back after being offline."""
        online = event.health is not Health.OFFLINE
        was_offline = event.device in self._offline
        if online:
            self._offline.discard(event.device)
        else:
            self._offline.add(event.device)
        for door_id in self._doors_by_device.get(event.device, ()):
            state = self.doors[door_id]
            if state.device_online != online:
                state.device_online = online
                if not online:
                    state.confirmed = False
                    state.fault = f"device {event.device} offline"
                elif state.fault and state.fault.startswith("device "):
                    state.fault = None
                self._changed(state)
        # A device that drives no door (a card reader) has nothing to re-assert.
        return online and was_offline and event.device in self._doors_by_device

    # --- actuation -----------------------------------------------------------------------------

    async def actuate(
        self,
        targets: Mapping[str, Target],
        *,
        trigger_ns: int,
        detail: Mapping[str, dict[str, Any]] | None = None,
    ) -> ActuationReport:
        """Command doors and wait until each confirms or fails."""
        report = ActuationReport(trigger_ns=trigger_ns, decided_ns=now_ns())
        by_device: dict[str, list[str]] = defaultdict(list)
        doors, device_of = self.doors, self._device_of
        for door_id, target in targets.items():
            state = doors[door_id]
            state.commanded, state.reason, state.confirmed = target.locked, target.reason, False
            state.priority = target.priority
            state.detail = dict(detail.get(door_id, {})) if detail else {}
            by_device[device_of[door_id]].append(door_id)
        report.commanded = list(targets)
        self.actuations += 1
        self._moving.update(report.commanded)
        try:
            if len(by_device) == 1:
                # One board (a door command): carried out in this task, not a loop turn later.
                [(device, door_ids)] = by_device.items()
                await self._actuate_device(device, door_ids, report)
            else:
                async with asyncio.TaskGroup() as group:
                    for device, door_ids in by_device.items():
                        group.create_task(self._actuate_device(device, door_ids, report))
        finally:
            self._moving.subtract(report.commanded)
            self._moving += Counter()  # drop the doors no actuation holds any more
        if report.confirmed:
            report.confirmed.sort(key=self.campus.door_index.__getitem__)
        return report

    async def _actuate_device(
        self, device: str, door_ids: list[str], report: ActuationReport
    ) -> None:
        pending = door_ids
        for attempt in (1, 2):
            try:
                result = await self._write(device, pending)
                report.on_wire_ns = max(report.on_wire_ns or 0, result.on_wire_ns)
                pending = await self._confirm(device, pending, result, report)
            except DeviceError as exc:
                for door_id in pending:
                    self._fail(door_id, f"{exc.code}: {exc}", report)
                log.warning(
                    "door.actuation_failed", device=device, error=str(exc), doors=len(pending)
                )
                return
            if not pending:
                return
            if attempt == 1:
                log.warning("door.retry", device=device, doors=pending)
        for door_id in pending:
            state = self.doors[door_id]
            why = "door is open" if state.closed is False else "lock did not confirm"
            self._fail(door_id, f"unconfirmed: {why}", report)

    async def _write(self, device: str, door_ids: Sequence[str]) -> CommandResult:
        driver = self._drivers[device]
        # A driver that keeps call order (and merges what queues) needs no lock here.
        lock = contextlib.nullcontext() if driver.ordered_writes else self._write_locks[device]
        async with lock:
            # Write what is decided *now*: a later decision may have overtaken this one.
            writes = tuple(map(self._point_write, door_ids))
            back = frozenset(map(self._back_of.__getitem__, door_ids))
            result = await driver.execute(WritePoints(writes, back))
        # The result reads every watched input of the board, but it speaks only for these
        # doors: a merged batch may be answered after later batches confirmed other doors,
        # whose newer values reach the table through the driver's events, in read order.
        self._apply(device, result.values, only=set(door_ids))
        return result

    async def _confirm(
        self, device: str, door_ids: list[str], result: CommandResult, report: ActuationReport
    ) -> list[str]:
        """Read back until every door agrees with its command or the timeout passes.

        The write's own read-back comes first: a board that confirms there is done at once.
        Otherwise the next read is due ``actuation_ms`` after the device acknowledged the
        write, then every :data:`CONFIRM_POLL_S`, never a fixed wait from now.
        """
        timeout_s = max(map(self._confirm_ms.__getitem__, door_ids)) / 1000
        deadline = time.monotonic() + timeout_s
        pending = self._settle(door_ids, result.done_ns, report)
        due_ns = result.on_wire_ns + max(map(self._travel_ms.__getitem__, door_ids)) * 1_000_000
        while pending and time.monotonic() < deadline:
            wait_s = max(0.0, (due_ns - time.monotonic_ns()) / 1e9)
            await asyncio.sleep(wait_s or CONFIRM_POLL_S)
            due_ns = 0
            points = tuple(map(self._back_of.__getitem__, pending))
            points += tuple(
                p for d in pending if (p := self.campus.bindings[d].position) is not None
            )
            read = await self._drivers[device].execute(ReadPoints(points))
            self._apply(device, read.values)
            pending = self._settle(pending, read.done_ns, report)
        return pending

    def _settle(self, door_ids: list[str], at_ns: int, report: ActuationReport) -> list[str]:
        pending = []
        doors, failed, confirmed_at = self.doors, report.failed, report.confirmed_at_ns
        for door_id in door_ids:
            state = doors[door_id]
            if state.locked is not None and state.locked == state.commanded:
                state.confirmed, state.fault = True, None
                report.confirmed.append(door_id)
                failed.pop(door_id, None)
                confirmed_at[door_id] = at_ns
                self._changed(state)
            else:
                pending.append(door_id)
        if len(pending) < len(door_ids):
            report.confirmed_ns = max(report.confirmed_ns or 0, at_ns)
        return pending

    def _fail(self, door_id: str, why: str, report: ActuationReport) -> None:
        state = self.doors[door_id]
        state.confirmed, state.fault = False, why
        report.failed[door_id] = why
        self._changed(state)

    def _point_write(self, door_id: str) -> PointWrite:
        """The write of a door's lock as decided now (one shared object per point and value)."""
        state = self.doors[door_id]
        write = self._last_write.get(door_id)
        if (
            write is None
            or write.value is not bool(state.commanded)
            or (write.priority != state.priority)
        ):
            key = (self.campus.bindings[door_id].lock, bool(state.commanded), state.priority)
            write = self._point_writes.get(key)
            if write is None:
                write = self._point_writes[key] = PointWrite(*key)
            self._last_write[door_id] = write
        return write

    def _apply(
        self, device: str, values: Iterable[Reading], *, only: Collection[str] | None = None
    ) -> None:
        """Fold point values into the door table (of ``only`` these doors); publish changes.

        A lockdown folds 32 boards' read-backs of 128 values each between the acknowledgements
        of the last writes: one dictionary lookup per value, and nothing built, for the many
        that change nothing.
        """
        fold = self._folds.get(device)
        if not fold:
            return
        doors = self.doors
        for value in values:
            route = fold.get(value.point)
            if route is None:
                continue
            door_id, is_position = route
            if only is not None and door_id not in only:
                continue
            state = doors[door_id]
            if is_position:
                if state.closed == value.value:
                    continue
                state.closed = value.value
            else:
                if state.locked == value.value:
                    continue
                state.locked = value.value
            if state.diverged:
                self._diverged(state)
            self._changed(state)

    def _diverged(self, state: DoorState) -> None:
        """A door that reads otherwise than commanded: moving, or drifted (someone else)."""
        was_confirmed, state.confirmed = state.confirmed, False
        if self._moving[state.id] or not was_confirmed:
            return
        word = "locked" if state.locked else "unlocked"
        state.fault = f"drifted: reads {word} against the command"
        log.warning("door.drifted", door=state.id, commanded=state.commanded, locked=state.locked)
        for on_drift in self._drift_listeners:
            on_drift(state.id)

    def _changed(self, state: DoorState) -> None:
        state.updated_at = time.time()
        for on_door in self._door_listeners:
            on_door(state)

    def summary(
        self, door_ids: Sequence[str], statuses: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Counts and lists of secured, unsecured, faulted and unknown doors.

        ``statuses`` is each door's status taken just before (one pass for many scopes).
        """
        groups: dict[str, list[str]] = {"secured": [], "unsecured": [], "faulted": [],
                                        "unknown": []}  # fmt: skip
        if statuses is None:
            statuses = {d: self.doors[d].status for d in door_ids}
        for door_id in door_ids:
            groups[statuses[door_id]].append(door_id)
        return {
            "doors": {k: len(v) for k, v in groups.items()},
            "unsecured": groups["unsecured"],
            "faulted": groups["faulted"],
            "unknown": groups["unknown"],
        }
