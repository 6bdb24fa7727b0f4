"""The one door model every simulated controller uses (simulators/doors.py).

Each controller checks it again over its own protocol: the relay board in
test_relay_board_sim.py (pymodbus), the BACnet controller in test_bacnet.py (the driver).
"""

from __future__ import annotations

import pytest

from gatewayd.simulators.doors import DoorMechanics, Signal
from tests.support.waiting import eventually

Change = tuple[Signal, int, bool]


def doors(actuation_ms: float = 0.0) -> tuple[DoorMechanics, list[Change]]:
    changes: list[Change] = []
    model = DoorMechanics(3, actuation_ms=actuation_ms, on_change=lambda *c: changes.append(c))
    return model, changes


async def test_doors_start_closed_unlocked_and_working() -> None:
    model, changes = doors()
    assert model.positions() == [True, True, True]
    assert model.senses() == [False, False, False]
    assert not any(model.secured(d) or model.jammed(d) for d in range(3))
    assert changes == []


async def test_the_bolt_follows_the_output_after_the_actuation_time() -> None:
    model, changes = doors(actuation_ms=50)
    model.drive(1, True)
    assert model.output(1) and not model.sense(1)
    await eventually(lambda: model.sense(1))
    assert model.secured(1)
    assert changes == [(Signal.SENSE, 1, True)]


async def test_driving_the_output_it_already_has_does_not_restart_the_bolt() -> None:
    model, changes = doors()
    model.drive(0, True)
    model.drive(0, True)
    assert changes == [(Signal.SENSE, 0, True)]


async def test_a_jammed_bolt_stays_put_until_unjammed() -> None:
    model, changes = doors()
    model.jam(2)
    model.drive(2, True)
    assert model.output(2) and not model.sense(2) and model.jammed(2)
    model.unjam(2)
    assert model.sense(2)
    model.drive(2, False)
    model.jam(2)
    model.drive(2, True)
    assert not model.sense(2)
    assert changes == [(Signal.SENSE, 2, True), (Signal.SENSE, 2, False)]


async def test_jamming_cancels_a_movement_under_way() -> None:
    model, changes = doors(actuation_ms=20)
    model.drive(0, True)
    model.jam(0)
    # Door 1 moves later than door 0 would have: once it has, door 0 had its chance.
    model.actuation_ms = 60
    model.drive(1, True)
    await eventually(lambda: model.sense(1))
    assert not model.sense(0)
    assert changes == [(Signal.SENSE, 1, True)]


async def test_a_propped_door_reads_open_its_bolt_throws_and_it_is_not_secured() -> None:
    model, changes = doors()
    model.hold_open(1)
    model.drive(1, True)
    assert not model.closed(1)
    # Lock sense reports the bolt, which threw; the door is still not secured.
    assert model.sense(1)
    assert not model.secured(1)
    model.release_door(1)
    assert model.closed(1) and model.sense(1) and model.secured(1)
    assert changes == [
        (Signal.POSITION, 1, False),
        (Signal.SENSE, 1, True),
        (Signal.POSITION, 1, True),
    ]


async def test_closing_or_opening_a_door_never_moves_its_bolt() -> None:
    model, _ = doors()
    model.drive(0, True)
    model.set_closed(0, False)
    model.drive(0, False)
    assert not model.sense(0)
    model.set_closed(0, True)
    assert not model.sense(0) and not model.secured(0)


async def test_cancel_stops_every_movement_under_way() -> None:
    model, changes = doors(actuation_ms=20)
    model.drive(0, True)
    model.drive(1, True)
    model.cancel()
    model.actuation_ms = 60
    model.drive(2, True)
    await eventually(lambda: model.sense(2))
    assert model.senses() == [False, False, True]
    assert changes == [(Signal.SENSE, 2, True)]


@pytest.mark.parametrize("door", [-1, 3])
def test_a_door_out_of_range_is_a_value_error_naming_the_range(door: int) -> None:
    model, _ = doors()
    with pytest.raises(ValueError, match=r"door -?\d out of range 0\.\.2"):
        model.jam(door)
