"""Point notation: ``binary-output:N`` (a lock) and ``binary-input:N`` (position, lock sense)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from gatewayd.kernel.errors import BadPoint
from gatewayd.kernel.events import PointWrite

Kind = Literal["binary-output", "binary-input"]

EXPECTED = "expected 'binary-output:N' or 'binary-input:N' (also 'bo:N' / 'bi:N'), N >= 0"
_POINT = re.compile(r"(binary-output|binary-input|binaryoutput|binaryinput|bo|bi)[:,]([0-9]{1,7})")
_KINDS: dict[str, Kind] = {
    "binary-output": "binary-output",
    "binaryoutput": "binary-output",
    "bo": "binary-output",
    "binary-input": "binary-input",
    "binaryinput": "binary-input",
    "bi": "binary-input",
}
#: Object instances are 22 bits; 4194303 is reserved.
MAX_INSTANCE = 4_194_302


@dataclass(frozen=True, slots=True, order=True)
class Point:
    """One binary object of a controller, by type and instance."""

    kind: Kind
    instance: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.instance}"

    @property
    def is_output(self) -> bool:
        return self.kind == "binary-output"


def parse_point(raw: str) -> Point:
    """Parse a point; case, spaces, ``,`` for ``:`` and the short forms are normalised."""
    match = _POINT.fullmatch(raw.strip().lower().replace(" ", ""))
    if match is None:
        raise BadPoint(f"{raw!r}: {EXPECTED}")
    instance = int(match.group(2))
    if instance > MAX_INSTANCE:
        raise BadPoint(f"{raw!r}: instance {instance} is beyond {MAX_INSTANCE} ({EXPECTED})")
    return Point(_KINDS[match.group(1)], instance)


@dataclass(frozen=True, slots=True)
class Write:
    """One validated output write: the value at the gateway's priority."""

    point: Point
    value: bool
    priority: int
    #: Relinquish every slot the gateway holds on this output (value unused).
    relinquish: bool = False


def plan_writes(writes: Iterable[PointWrite], known: frozenset[Point]) -> list[Write]:
    """Validate a group write: outputs only, known points, priorities 1..16, no conflicts."""
    out: dict[Point, Write] = {}
    for write in writes:
        point = parse_point(write.point)
        if not point.is_output:
            raise BadPoint(f"{write.point!r} is an input and cannot be written")
        if point not in known:
            raise BadPoint(f"{point} is not a point of this device's campus bindings")
        if not 1 <= write.priority <= 16:
            raise BadPoint(f"{point}: priority {write.priority} is outside 1..16")
        planned = Write(point, write.value, write.priority, write.relinquish)
        earlier = out.get(point)
        if earlier is not None and earlier != planned:
            raise BadPoint(f"{point} is written twice with different values in one command")
        out[point] = planned
    if not out:
        raise BadPoint("a write command needs at least one binary-output")
    return sorted(out.values(), key=lambda w: w.point)
