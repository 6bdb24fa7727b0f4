"""The point cache reports a point when it is first read and when it changes, never twice."""

from __future__ import annotations

from dataclasses import dataclass

from gatewayd.kernel.events import PointChanged
from gatewayd.kernel.pointcache import PointCache


@dataclass(frozen=True)
class Coil:
    address: int

    def __str__(self) -> str:
        return f"coil:{self.address}"


def test_first_read_and_each_change_emit_one_event_and_repeats_emit_none() -> None:
    events: list[PointChanged] = []
    cache: PointCache[str] = PointCache("board-1", events.append)
    assert cache.update("input:0", True)
    assert not cache.update("input:0", True)
    assert cache.update("input:0", False)
    assert cache.update("input:1", False)
    assert [(e.device, e.point, e.value) for e in events] == [
        ("board-1", "input:0", True),
        ("board-1", "input:0", False),
        ("board-1", "input:1", False),
    ]


def test_a_driver_point_type_is_reported_by_its_normalised_name() -> None:
    events: list[PointChanged] = []
    cache: PointCache[Coil] = PointCache("board-1", events.append)
    cache.update(Coil(3), True)
    assert events[0].point == "coil:3"
    assert cache.get(Coil(3)) is True
    assert cache.get(Coil(4)) is None
