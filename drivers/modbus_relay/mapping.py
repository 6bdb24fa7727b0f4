"""Point tables: what ``coil:N`` / ``input:N`` mean on a board and which spans cover them."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from gatewayd.drivers.modbus_relay.config import ModbusRelayConfig
from gatewayd.kernel.errors import BadPoint
from gatewayd.kernel.events import PointValue, PointWrite

Kind = Literal["coil", "input"]

EXPECTED = "expected 'coil:N' or 'input:N' with N >= 0"
_POINT = re.compile(r"(coil|input):([0-9]{1,5})")
MAX_ADDRESS = 0xFFFF


@dataclass(frozen=True, slots=True, order=True)
class Point:
    """One coil or discrete input, by its zero-based Modbus address."""

    kind: Kind
    address: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.address}"


@functools.lru_cache(maxsize=8192)
def parse_point(raw: str) -> Point:
    """Parse ``coil:N`` or ``input:N`` (case and leading zeros are normalised away).

    Cached: a lockdown parses every door's coil again, the same few thousand strings.
    """
    match = _POINT.fullmatch(raw.strip().lower())
    if match is None:
        raise BadPoint(f"{raw!r}: {EXPECTED}")
    address = int(match.group(2))
    if address > MAX_ADDRESS:
        raise BadPoint(f"{raw!r}: address {address} is beyond {MAX_ADDRESS} ({EXPECTED})")
    kind: Kind = "coil" if match.group(1) == "coil" else "input"
    return Point(kind, address)


@functools.lru_cache(maxsize=MAX_ADDRESS + 1)
def coil_name(address: int) -> str:
    """``coil:N``, the name the core knows a coil by (one string per coil, made once)."""
    return f"coil:{address}"


@functools.lru_cache(maxsize=2 * (MAX_ADDRESS + 1))
def coil_value(address: int, value: bool) -> PointValue:
    """A coil's value as the core is told it (one object per coil and value, made once)."""
    return PointValue(coil_name(address), value)


@functools.lru_cache(maxsize=2 * (MAX_ADDRESS + 1))
def input_value(address: int, value: bool) -> PointValue:
    """An input's value as the core is told it: one object per address and value, for every
    board alike (the names are the board's own addresses)."""
    return PointValue(str(Point("input", address)), value)


def range_problems(config: ModbusRelayConfig, points: Iterable[str]) -> list[str]:
    """Points that do not exist on a board of the configured size, one message each."""
    problems = []
    for raw in sorted(points):
        point = parse_point(raw)
        size = config.coils if point.kind == "coil" else config.inputs
        if point.address >= size:
            last = f"{point.kind}:{size - 1}" if size else "none"
            problems.append(
                f"{point} is not on board {config.id!r}: it has {size} {point.kind}s"
                f" ({point.kind}:0..{last})"
            )
    return problems


#: Spans whose watched names are kept (polls and read-backs use a handful per board).
MAX_NAMED_SPANS = 256


@dataclass(frozen=True, slots=True)
class Span:
    """A contiguous address range, as one Modbus request reads or writes it."""

    start: int
    count: int

    @property
    def stop(self) -> int:
        return self.start + self.count

    def __contains__(self, address: object) -> bool:
        return isinstance(address, int) and self.start <= address < self.stop

    @classmethod
    def covering(cls, addresses: Iterable[int]) -> Span | None:
        """The smallest span holding every address, or None for no addresses."""
        found = list(addresses)
        if not found:
            return None
        return cls(min(found), max(found) - min(found) + 1)


class PointTable:
    """The points the campus watches on one board, and the reads that cover them."""

    def __init__(self, config: ModbusRelayConfig, points: Iterable[str]) -> None:
        problems = range_problems(config, points)
        if problems:
            raise BadPoint("; ".join(problems))
        parsed = sorted(parse_point(p) for p in points)
        #: Watched coils and inputs, in address order.
        self.coils = tuple(p for p in parsed if p.kind == "coil")
        self.inputs = tuple(p for p in parsed if p.kind == "input")
        self.coil_span = Span.covering(p.address for p in self.coils)
        self.input_span = Span.covering(p.address for p in self.inputs)
        #: Per watched input (what a write's read-back reports), its address and its two values
        #: (off, on), made once: a lockdown reports every board's inputs after its write,
        #: 3,000 values that are all alike.
        self.input_values = tuple(
            (p.address, (input_value(p.address, False), input_value(p.address, True)))
            for p in self.inputs
        )
        self._config = config
        self._named: dict[tuple[Kind, Span], tuple[tuple[int, str], ...]] = {}

    def poll_reads(self) -> list[tuple[Kind, Span]]:
        """The requests of one poll cycle (coil 0 alone if nothing is watched: a liveness probe)."""
        reads: list[tuple[Kind, Span]] = []
        if self.coil_span is not None:
            reads.append(("coil", self.coil_span))
        if self.input_span is not None:
            reads.append(("input", self.input_span))
        return reads or [("coil", Span(0, 1))]

    def watched(self, kind: Kind, span: Span) -> Iterator[Point]:
        """Watched points of one kind inside a span."""
        start, stop = span.start, span.stop
        for point in self.coils if kind == "coil" else self.inputs:
            if start <= point.address < stop:
                yield point

    def watched_named(self, kind: Kind, span: Span) -> tuple[tuple[int, str], ...]:
        """(address, point name) of the watched points in a span; worked out once per span.

        A lockdown reads every board's spans back at once: names built per read and point
        would cost more than the Modbus requests themselves.
        """
        named = self._named.get((kind, span))
        if named is None:
            named = tuple((p.address, str(p)) for p in self.watched(kind, span))
            if len(self._named) < MAX_NAMED_SPANS:
                self._named[(kind, span)] = named
        return named

    def coil_writes(self, writes: Iterable[PointWrite]) -> dict[int, bool]:
        """Coil address -> value for a group write; refuse inputs, unknown and conflicting coils."""
        out: dict[int, bool] = {}
        for write in writes:
            point = parse_point(write.point)
            if write.relinquish:
                # A coil has no priority array: "give it back" has no safe meaning here.
                raise BadPoint(f"{write.point!r}: a relay coil cannot be relinquished")
            if point.kind != "coil":
                raise BadPoint(f"{write.point!r} is an input and cannot be written")
            if point.address >= self._config.coils:
                raise BadPoint(range_problems(self._config, [str(point)])[0])
            if out.get(point.address, write.value) != write.value:
                raise BadPoint(f"{point} is written both on and off in one command")
            out[point.address] = write.value
        if not out:
            raise BadPoint("a write command needs at least one coil")
        return out

    def spans_of(self, points: Iterable[str]) -> tuple[list[Point], Span | None, Span | None]:
        """Parse points to read now and the coil and input spans covering them."""
        parsed = sorted({parse_point(p) for p in points})
        problems = range_problems(self._config, [str(p) for p in parsed])
        if problems:
            raise BadPoint("; ".join(problems))
        coils = Span.covering(p.address for p in parsed if p.kind == "coil")
        inputs = Span.covering(p.address for p in parsed if p.kind == "input")
        return parsed, coils, inputs


class BitImage:
    """Last known value of each coil, from reads and acknowledged writes (None = unknown)."""

    def __init__(self, size: int) -> None:
        self._bits: list[bool | None] = [None] * size

    def known(self, span: Span) -> bool:
        return all(bit is not None for bit in self._bits[span.start : span.stop])

    def update(self, start: int, bits: Sequence[bool]) -> None:
        self._bits[start : start + len(bits)] = bits

    def forget(self) -> None:
        """Drop everything, e.g. after a reconnect: the board may have rebooted meanwhile."""
        self._bits = [None] * len(self._bits)

    def merged(self, span: Span, writes: Mapping[int, bool]) -> list[bool]:
        """The span's current image with ``writes`` applied; every bit must be known."""
        out = []
        for address in range(span.start, span.stop):
            bit = writes.get(address, self._bits[address])
            if bit is None:
                raise ValueError(f"coil {address} is unknown")
            out.append(bit)
        return out
