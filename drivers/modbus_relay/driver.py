"""The Modbus TCP lock relay board driver: polling, group writes with read-back, health.

One connection per board. Every transaction holds the board's :class:`PriorityLane` on its
own; commands ask at priority 0 and polls at 1, so a door command waits for at most the one
poll transaction already on the wire. Commands that queue meanwhile are merged into one
batch (``coalesce.py``): one FC15 for all their coils, one read-back, a result for each.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from gatewayd.drivers.modbus_relay.coalesce import Coalescer, Queued, QueueFull
from gatewayd.drivers.modbus_relay.config import ModbusRelayConfig
from gatewayd.drivers.modbus_relay.mapping import (
    BitImage,
    Kind,
    Point,
    PointTable,
    Span,
    coil_name,
    coil_value,
    parse_point,
    range_problems,
)
from gatewayd.drivers.modbus_relay.transport import ModbusLink, ModbusRefused
from gatewayd.kernel.backoff import BackoffTimer
from gatewayd.kernel.cancel import raise_if_cancelling
from gatewayd.kernel.driver import Driver, Emit, Startup
from gatewayd.kernel.errors import BadDeviceReply, DeviceError, DeviceOffline
from gatewayd.kernel.events import CommandResult, DeviceFault, PointValue, ReadPoints, WritePoints
from gatewayd.kernel.health import LinkHealth
from gatewayd.kernel.lane import COMMAND, POLL, LaneFull, PriorityLane
from gatewayd.kernel.pointcache import PointCache

log = structlog.get_logger(__name__)

#: Lane waits kept for the median (a bounded window, not the whole history).
WAIT_WINDOW = 1024
#: Commands queued for one board before new ones are refused (a stuck board, not a burst).
MAX_QUEUED = 4096


@dataclass(frozen=True, slots=True)
class _Job:
    """One validated command: coils to write (address -> on), or points to read now."""

    writes: Mapping[int, bool] = field(default_factory=dict)
    points: Sequence[Point] = ()
    #: Read the written coils back (False: the FC15 acknowledgement stands for them).
    coils_back: bool = True


class ModbusRelayDriver(Driver[ModbusRelayConfig]):
    """Drives a relay board's lock coils and reads its door and alarm inputs."""

    config_model = ModbusRelayConfig
    # The coalescer runs writes in call order, so the core need not serialise them.
    ordered_writes = True

    def __init__(self, config: ModbusRelayConfig, points: frozenset[str], emit: Emit) -> None:
        super().__init__(config, points, emit)
        # Raises BadPoint at start-up for points beyond the board's configured size.
        self._table = PointTable(config, points)
        self._link = ModbusLink(config.host, config.port, config.unit, config.timeout_ms)
        self._lane = PriorityLane()
        #: Every coil's point name: a read-back that names one asks for the coils again.
        self._coil_names = frozenset(coil_name(a) for a in range(config.coils))
        self._coils = BitImage(config.coils)
        self._log = log.bind(device=config.id)
        #: Keyed by point name ("input:7"), which the core's events carry anyway.
        self._values: PointCache[str] = PointCache(config.id, emit)
        self._link_health = LinkHealth(
            self._set_health, self._log, "modbus", offline_after=config.offline_after_failures
        )
        self._reconnect = BackoffTimer(config.reconnect_backoff)
        self._waits_ms: deque[float] = deque(maxlen=WAIT_WINDOW)
        self._counts = {
            "polls": 0,
            "poll_failures": 0,
            "commands": 0,
            "command_failures": 0,
            "faults": 0,
            "reconnects": 0,
            "writes": 0,
            "refusals": 0,
        }
        self._batches: Coalescer[_Job, CommandResult] = Coalescer(
            self._run_batch, lambda: self._lane.hold(COMMAND), MAX_QUEUED
        )
        self._max_wait_ms = 0.0
        #: The last bits read per (kind, span): a poll that reads the same is skipped at once.
        self._last_bits: dict[tuple[Kind, Span], list[bool]] = {}
        #: When the coils are read next in a poll (None: the next poll).
        self._coils_due_ns: int | None = None
        self._coil_interval_ns = config.coil_poll_interval_ms * 1_000_000
        self._poll_ns = config.poll_interval_ms * 1_000_000
        #: When coils were last read from the board (any span).
        self._coils_read_ns = 0
        #: When every watched input was last read, by a poll or a command's read-back.
        self._inputs_read_ns = 0

    @classmethod
    def parse_point(cls, raw: str) -> str:
        return str(parse_point(raw))

    @classmethod
    def is_output(cls, point: str) -> bool:
        return point.startswith("coil:")

    @classmethod
    def check_points(cls, config: ModbusRelayConfig, points: Iterable[str]) -> list[str]:
        """Points that do not exist on this board (for a config-time check by the core)."""
        return range_problems(config, points)

    # --- run loop -------------------------------------------------------------------------

    async def run(self, started: Callable[[], None]) -> None:
        """Connect, poll every ``poll_interval_ms``, reconnect with backoff until cancelled."""
        poll_s = self.config.poll_interval_ms / 1000
        # Boards started together would poll in step, and a command arriving then would wait
        # behind all of them: each board's first wait adds a phase of its own (from its id).
        phase_s = poll_s * (zlib.crc32(self.device_id.encode()) % 1000) / 1000
        try:
            await Startup(started).attempt(self._connect())
            wait_s = poll_s + phase_s
            while True:
                if self._link.connected:
                    await self._poll_once()
                    raise_if_cancelling()
                    await asyncio.sleep(wait_s)
                    # A command's read-back read every input meanwhile: the next poll is due
                    # an interval after it (no value older than that), not again at once.
                    while (ahead_ns := self._poll_deferred_ns()) > 0:  # noqa: ASYNC110
                        await asyncio.sleep(ahead_ns / 1e9)
                    wait_s = poll_s
                else:
                    await asyncio.sleep(self._reconnect.next_s())
                    await self._connect()
        finally:
            self._link.close()
            self._link_health.stopped()

    async def _connect(self) -> None:
        try:
            await self._link.connect()
        except DeviceOffline as exc:
            self._failed(exc)
            return
        # The board may have rebooted or been written by someone else while we were away.
        self._coils.forget()
        self._coils_due_ns = None
        self._last_bits.clear()
        if self._link.connects > 1:
            self._counts["reconnects"] += 1
        self._log.info("modbus.connected", host=self.config.host, port=self.config.port)

    def _poll_deferred_ns(self) -> int:
        """How long the next poll can wait: the inputs are fresh and the coils not due."""
        now_ns = time.monotonic_ns()
        if self._coils_due_ns is not None and now_ns >= self._coils_due_ns:
            return 0
        ahead_ns = self._inputs_read_ns + self._poll_ns - now_ns
        # Less than a tenth of an interval early: poll now rather than sleep a sliver.
        return ahead_ns if ahead_ns > self._poll_ns // 10 else 0

    def _poll_plan(self, now_ns: int) -> list[tuple[Kind, Span]]:
        """This poll's reads: the inputs, and the coils when they are due (or all there is)."""
        reads = self._table.poll_reads()
        if len(reads) < 2 or self._coils_due_ns is None or now_ns >= self._coils_due_ns:
            return reads
        return [(kind, span) for kind, span in reads if kind != "coil"]

    async def _poll_once(self) -> None:
        """Read what is due this poll, one lane hold per transaction."""
        try:
            for kind, span in self._poll_plan(time.monotonic_ns()):
                async with self._lane.hold(POLL):
                    bits = await self._read(kind, span)
                    if kind == "coil" and span == self._table.coil_span:
                        self._coils_due_ns = time.monotonic_ns() + self._coil_interval_ns
                self._absorb(kind, span, bits)
        except DeviceError as exc:
            self._counts["poll_failures"] += 1
            self._failed(exc)
            return
        self._counts["polls"] += 1
        self._reconnect.reset()
        self._link_health.succeeded()

    async def _read(self, kind: Kind, span: Span) -> list[bool]:
        if kind == "coil":
            bits = await self._link.read_coils(span.start, span.count)
            self._coils.update(span.start, bits)
            self._coils_read_ns = time.monotonic_ns()
            return bits
        bits = await self._link.read_inputs(span.start, span.count)
        whole = self._table.input_span
        if whole is not None and span.start <= whole.start and whole.stop <= span.stop:
            self._inputs_read_ns = time.monotonic_ns()
        return bits

    def _absorb(self, kind: Kind, span: Span, bits: list[bool]) -> None:
        """Emit PointChanged for watched points in a validated reply that changed."""
        # Most polls read what the last one read: one list comparison, not one per point.
        key = (kind, span)
        if self._last_bits.get(key) == bits:
            return
        # Another span of this kind may overlap this one: only this read stands for its bits.
        for other in [k for k in self._last_bits if k[0] == kind]:
            del self._last_bits[other]
        self._last_bits[key] = bits
        start = span.start
        for address, name in self._table.watched_named(kind, span):
            self._values.update(name, bits[address - start])

    def _failed(self, exc: DeviceError) -> None:
        """Count a failed transaction; report untrusted replies; go offline at the threshold.

        A board that answers with Modbus exceptions is there: degraded, with the named
        exception and what to check, never offline (and the link is kept).
        """
        if isinstance(exc, ModbusRefused):
            self._counts["refusals"] += 1
            self._link_health.succeeded(degraded=str(exc))
            return
        if isinstance(exc, BadDeviceReply):
            self._counts["faults"] += 1
            self._emit(DeviceFault(self.device_id, exc.code, str(exc)))
            self._log.warning("modbus.bad_reply", error=str(exc))
        if self._link_health.failed(str(exc)):
            # A fresh connection also resynchronises a stream that carried garbage or went quiet.
            self._link.close()

    # --- commands -------------------------------------------------------------------------

    async def _execute(self, command: WritePoints | ReadPoints) -> CommandResult:
        """Queue a write (one FC15 with read-back) or a read; merged with what queues beside it."""
        # Validate before queueing: a bad command must not hold up a good one.
        match command:
            case WritePoints():
                back = command.read_back
                job = _Job(
                    writes=self._table.coil_writes(command.writes),
                    coils_back=back is None or not back.isdisjoint(self._coil_names),
                )
            case ReadPoints():
                job = _Job(points=self._table.spans_of(command.points)[0])
        self._counts["commands"] += 1
        try:
            return await self._batches.submit(job, time.monotonic_ns())
        except (LaneFull, QueueFull) as exc:
            self._counts["command_failures"] += 1
            raise DeviceError(f"{self.device_id}: too many commands queued ({exc})") from exc
        except DeviceError:
            self._counts["command_failures"] += 1
            raise

    async def _run_batch(self, batch: Sequence[Queued[_Job, CommandResult]]) -> None:
        """At most one FC15, one coil read and one input read for the whole batch."""
        now_ns = time.monotonic_ns()
        for entry in batch:
            self._note_wait(entry.queued_ns, now_ns)
        try:
            results = await self._carry_out([entry.item for entry in batch])
        except DeviceError as exc:
            # Offline is already being handled by the run loop; anything else is evidence.
            if not isinstance(exc, DeviceOffline):
                self._failed(exc)
            raise
        for entry, result in zip(batch, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(result)

    async def _carry_out(self, jobs: Sequence[_Job]) -> list[CommandResult]:
        """Write every job's coils (later jobs win), read back what any job needs."""
        writes: dict[int, bool] = {}
        for job in jobs:
            writes.update(job.writes)
        wanted = [p for job in jobs for p in job.points]
        on_wire_ns = 0
        # What the board acknowledged or replied, by kind and address.
        found: dict[Kind, dict[int, bool]] = {"coil": {}, "input": {}}
        if writes:
            on_wire_ns = await self._write(writes)
            # The board acknowledged these values; a read confirms them only where asked.
            found["coil"].update(writes)
        back = [a for job in jobs if job.coils_back for a in job.writes]
        coil_span = Span.covering([*back, *(p.address for p in wanted if p.kind == "coil")])
        inputs = [p.address for p in wanted if p.kind == "input"]
        if writes and self._table.input_span is not None:
            # Confirmation needs every watched input (position, lock sense, alarms).
            inputs += [self._table.input_span.start, self._table.input_span.stop - 1]
        input_span = Span.covering(inputs)
        reads: tuple[tuple[Kind, Span | None], ...] = (("coil", coil_span), ("input", input_span))
        for kind, span in reads:
            if span is None:
                continue
            bits = await self._read(kind, span)
            on_wire_ns = on_wire_ns or self._link.sent_ns
            self._absorb(kind, span, bits)
            found[kind].update(zip(range(span.start, span.stop), bits, strict=True))
        done_ns = time.monotonic_ns()
        coils, bits_in = found["coil"], found["input"]
        watched = [pair[bits_in[a]] for a, pair in self._table.input_values] if writes else []
        results = []
        for job in jobs:
            if job.writes:
                out = [coil_value(a, coils[a]) for a in sorted(job.writes)]
                values = (*out, *watched)
            else:
                values = tuple(PointValue(str(p), found[p.kind][p.address]) for p in job.points)
            results.append(CommandResult(values, on_wire_ns, done_ns))
        if len(jobs) > 1:
            self._log.debug("modbus.batch", commands=len(jobs), coils=len(writes))
        return results

    def _note_wait(self, queued_ns: int, now_ns: int) -> None:
        wait_ms = (now_ns - queued_ns) / 1e6
        self._waits_ms.append(wait_ms)
        self._max_wait_ms = max(self._max_wait_ms, wait_ms)

    async def _write(self, writes: Mapping[int, bool]) -> int:
        """Read-modify-write the span of touched coils with one FC15; return the ack's time."""
        span = Span.covering(writes)
        assert span is not None
        # Coils in the span that no command names are written back as the board holds them:
        # read them first unless this poll cycle has (coils are read less often than inputs).
        stale = time.monotonic_ns() - self._coils_read_ns > self._poll_ns
        if not self._coils.known(span) or (span.count > len(writes) and stale):
            await self._read("coil", span)
        values = self._coils.merged(span, writes)
        acked_ns = await self._link.write_coils(span.start, values)
        self._coils.update(span.start, values)
        # What the board acknowledged is read back for real by a poll, one interval on: not
        # in the middle of the confirmation reads that the commands are waiting for.
        self._coils_due_ns = time.monotonic_ns() + self._poll_ns
        self._counts["writes"] += 1
        # Per board at debug: a lockdown's 32 lines at info held the read-backs up by 1-2 ms
        # (formatting on the loop between the ack and the next request); `command.done` is
        # the command's one line at info, with its counts and latencies.
        self._log.debug(
            "modbus.group_write",
            coils=len(writes),
            on=sum(writes.values()),
            span=f"{span.start}+{span.count}",
        )
        return acked_ns

    # --- statistics -----------------------------------------------------------------------

    def statistics(self) -> Mapping[str, int | float | str]:
        """Link, poll and command counters, and how long commands waited for the lane."""
        waits = list(self._waits_ms)
        return {
            **self._counts,
            "requests": self._link.requests,
            "failures": self._link.failures,
            "consecutive_failures": self._link_health.failures,
            "last_rtt_ms": round(self._link.last_rtt_ms, 3),
            "lane_wait_median_ms": round(statistics.median(waits), 3) if waits else 0.0,
            "lane_wait_max_ms": round(self._max_wait_ms, 3),
            "lane_waiting": self._lane.waiting,
            "batches": self._batches.batches,
            "commands_merged": self._batches.merged,
            "largest_batch": self._batches.largest,
            "health": str(self.health),
            "last_error": self._link_health.last_error,
        }
