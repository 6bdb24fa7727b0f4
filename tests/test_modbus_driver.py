"""The Modbus relay driver against the simulated board, over real sockets."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from gatewayd.drivers.modbus_relay import ModbusRelayConfig, ModbusRelayDriver
from gatewayd.drivers.modbus_relay.transport import ModbusRefused
from gatewayd.kernel.errors import BadDeviceReply, BadPoint, DeviceOffline
from gatewayd.kernel.events import (
    DeviceFault,
    DeviceHealth,
    Health,
    PointChanged,
    PointValue,
    PointWrite,
    ReadPoints,
    WritePoints,
)
from gatewayd.simulators.faults import Corruption
from tests.support.harness import changed
from tests.support.harness import health as health_is
from tests.support.modbus import StartDriver, board_points
from tests.support.waiting import eventually


def lock(*doors: int, value: bool = True) -> WritePoints:
    return WritePoints(tuple(PointWrite(f"coil:{d}", value) for d in doors))


def config(**overrides: object) -> ModbusRelayConfig:
    values: dict[str, object] = {
        "id": "relay-x",
        "driver": "modbus_relay",
        "host": "127.0.0.1",
        "coils": 8,
        "inputs": 20,
    }
    return ModbusRelayConfig.model_validate({**values, **overrides})


# --- points and config ------------------------------------------------------------------------


def test_points_are_normalised_and_bad_ones_say_what_was_expected() -> None:
    assert ModbusRelayDriver.parse_point("coil:03") == "coil:3"
    assert ModbusRelayDriver.parse_point("Input:12") == "input:12"
    assert ModbusRelayDriver.is_output("coil:3")
    assert not ModbusRelayDriver.is_output("input:3")
    for bad in ("relay:1", "coil:", "coil:-1", "coil:1.5", "coil:99999"):
        with pytest.raises(BadPoint, match="expected 'coil:N' or 'input:N' with N >= 0"):
            ModbusRelayDriver.parse_point(bad)


def test_points_beyond_the_board_fail_at_driver_start() -> None:
    with pytest.raises(BadPoint, match=r"coil:8 is not on board 'relay-x': it has 8 coils"):
        ModbusRelayDriver(config(), frozenset({"coil:8", "input:3"}), lambda e: None)
    assert ModbusRelayDriver.check_points(config(), ["input:20"]) == [
        "input:20 is not on board 'relay-x': it has 20 inputs (input:0..input:19)"
    ]


def test_config_rejects_unknown_fields_and_values_out_of_bounds() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        config(colis=8)
    with pytest.raises(ValidationError, match="less than or equal to 1968"):
        config(coils=5000)
    with pytest.raises(ValidationError, match="reconnect_max_ms"):
        config(reconnect_min_ms=500, reconnect_max_ms=100)


# --- polling and health -----------------------------------------------------------------------


async def test_first_poll_reports_every_watched_point_and_online(
    start_driver: StartDriver,
) -> None:
    run = await start_driver()
    await run.wait_for(health_is(Health.ONLINE))
    first = {e.point: e.value for e in run.events if isinstance(e, PointChanged)}
    assert len(first) == 8 + 20
    assert first["input:0"] is True  # door 0 closed
    assert first["input:8"] is False  # door 0 not locked
    assert first["coil:0"] is False


async def test_alarm_contact_change_emits_point_changed(start_driver: StartDriver) -> None:
    run = await start_driver()
    await run.wait_for(health_is(Health.ONLINE))
    seen = len(run.events)
    run.sim.set_input(17, True)
    await run.wait_for(changed("input:17", True), since=seen)
    run.sim.hold_open(2)
    await run.wait_for(changed("input:2", False), since=seen)


async def test_vanished_board_goes_offline_then_online_when_it_reappears(
    start_driver: StartDriver,
) -> None:
    run = await start_driver()
    await run.wait_for(health_is(Health.ONLINE))
    seen = len(run.events)
    await run.sim.vanish()
    offline = await run.wait_for(health_is(Health.OFFLINE), timeout_s=5, since=seen)
    assert isinstance(offline, DeviceHealth)
    assert offline.detail
    with pytest.raises(DeviceOffline):
        await run.driver.execute(lock(0))
    await run.sim.reappear()
    await run.wait_for(health_is(Health.ONLINE), timeout_s=5, since=seen)
    assert int(run.driver.statistics()["reconnects"]) >= 1


async def test_hung_board_goes_offline_within_bounded_time(start_driver: StartDriver) -> None:
    run = await start_driver()
    await run.wait_for(health_is(Health.ONLINE))
    seen = len(run.events)
    run.sim.faults.hang = True
    await run.wait_for(health_is(Health.OFFLINE), timeout_s=5, since=seen)
    run.sim.faults.hang = False
    await run.wait_for(health_is(Health.ONLINE), timeout_s=5, since=seen)


async def test_garbage_reply_raises_a_fault_and_changes_nothing(
    start_driver: StartDriver,
) -> None:
    run = await start_driver(offline_after_failures=10)
    await run.wait_for(health_is(Health.ONLINE))
    seen = len(run.events)
    run.sim.faults.corrupt_mode = Corruption.COUNT
    run.sim.faults.corrupt = 1.0
    run.sim.set_input(16, True)
    fault = await run.wait_for(lambda e: isinstance(e, DeviceFault), since=seen)
    assert isinstance(fault, DeviceFault)
    assert fault.error == "bad_device_reply"
    with pytest.raises(BadDeviceReply):
        await run.driver.execute(ReadPoints(("input:16",)))
    assert not [e for e in run.events[seen:] if isinstance(e, PointChanged)]
    run.sim.faults.corrupt = 0.0
    await run.wait_for(changed("input:16", True), since=seen)


async def test_wrong_function_code_in_reply_is_refused(start_driver: StartDriver) -> None:
    run = await start_driver(offline_after_failures=10)
    await run.wait_for(health_is(Health.ONLINE))
    run.sim.faults.corrupt_mode = Corruption.FUNCTION
    run.sim.faults.corrupt = 1.0
    with pytest.raises(BadDeviceReply, match="function code"):
        await run.driver.execute(lock(1))


async def test_a_poll_is_one_read_of_the_inputs_and_coils_come_at_the_safety_interval(
    start_driver: StartDriver,
) -> None:
    run = await start_driver(poll_interval_ms=20, coil_poll_interval_ms=400)
    await run.wait_for(health_is(Health.ONLINE))
    polls = int(run.driver.statistics()["polls"])
    before = run.sim.statistics()
    await eventually(lambda: int(run.driver.statistics()["polls"]) >= polls + 20, timeout_s=30)
    after = run.sim.statistics()
    inputs = after["read_inputs"] - before["read_inputs"]
    coils = after["read_coils"] - before["read_coils"]
    assert inputs >= 20
    # One coil read per 400 ms against one input read per 20 ms (and a poll no slower).
    assert coils * 5 <= inputs, (coils, inputs)


async def test_a_coil_changed_behind_the_gateways_back_is_seen_within_the_safety_interval(
    start_driver: StartDriver,
) -> None:
    # No lock sense watched for door 3: only its coil can tell.
    points = board_points() - {"input:11"}
    run = await start_driver(points, poll_interval_ms=20, coil_poll_interval_ms=300)
    await run.wait_for(health_is(Health.ONLINE))
    seen = len(run.events)
    # What another master on the network does to the lock output.
    run.sim.mechanics.drive(3, True)
    await run.wait_for(changed("coil:3", True), since=seen, timeout_s=10)


async def test_coils_are_read_every_poll_when_the_board_has_no_inputs_to_watch(
    start_driver: StartDriver,
) -> None:
    run = await start_driver({f"coil:{i}" for i in range(8)}, coil_poll_interval_ms=5000)
    await run.wait_for(health_is(Health.ONLINE))
    before = run.sim.statistics()
    polls = int(run.driver.statistics()["polls"])
    await eventually(lambda: int(run.driver.statistics()["polls"]) >= polls + 5, timeout_s=30)
    after = run.sim.statistics()
    assert after["read_coils"] - before["read_coils"] >= 5
    assert after["read_inputs"] == before["read_inputs"]


async def test_the_poll_after_a_write_reads_the_coils_back(start_driver: StartDriver) -> None:
    run = await start_driver(poll_interval_ms=20, coil_poll_interval_ms=60_000)
    await run.wait_for(health_is(Health.ONLINE))
    await eventually(lambda: int(run.driver.statistics()["polls"]) >= 3, timeout_s=30)
    before = run.sim.statistics()
    await run.driver.execute(WritePoints((PointWrite("coil:2", True),), frozenset({"input:10"})))
    polls = int(run.driver.statistics()["polls"])
    await eventually(lambda: int(run.driver.statistics()["polls"]) >= polls + 2, timeout_s=30)
    after = run.sim.statistics()
    # The write confirmed from its lock sense (no coil read of its own), then a poll read them.
    assert after["read_coils"] - before["read_coils"] >= 1
    assert run.sim.coils()[2] is True


async def test_polls_wait_while_commands_read_every_input_and_resume_after(
    start_driver: StartDriver,
) -> None:
    run = await start_driver(poll_interval_ms=200, coil_poll_interval_ms=60_000)
    await run.wait_for(health_is(Health.ONLINE))
    await eventually(lambda: int(run.driver.statistics()["polls"]) >= 2, timeout_s=30)
    polls = int(run.driver.statistics()["polls"])
    # Each write reads every watched input back: a poll meanwhile would read them again.
    for i in range(100):
        await run.driver.execute(lock(i % 8, value=i % 2 == 0))
        await asyncio.sleep(0.01)
    assert int(run.driver.statistics()["polls"]) - polls <= 1
    # Once the commands stop, polling goes on, an interval after their last read.
    polls = int(run.driver.statistics()["polls"])
    await eventually(lambda: int(run.driver.statistics()["polls"]) >= polls + 2, timeout_s=30)


# --- commands ---------------------------------------------------------------------------------


async def test_group_write_locks_every_door_with_one_fc15_and_reads_back(
    start_driver: StartDriver,
) -> None:
    run = await start_driver()
    await run.wait_for(health_is(Health.ONLINE))
    before = run.sim.statistics()
    result = await run.driver.execute(lock(*range(8)))
    after = run.sim.statistics()
    assert after["write_coils"] - before["write_coils"] == 1
    assert after["write_coil"] == 0
    assert run.sim.coils() == [True] * 8
    values = {v.point: v.value for v in result.values}
    assert all(values[f"coil:{d}"] for d in range(8))
    assert {f"input:{i}" for i in range(20)} <= set(values)  # position and sense for confirming
    assert 0 < result.on_wire_ns <= result.done_ns


async def test_group_write_keeps_untouched_coils_of_the_span(start_driver: StartDriver) -> None:
    run = await start_driver()
    await run.wait_for(health_is(Health.ONLINE))
    await run.driver.execute(lock(3))
    run.sim.write_log.clear()
    result = await run.driver.execute(lock(1, 5))
    assert run.sim.coils() == [False, True, False, True, False, True, False, False]
    # Coils 2..4 were rewritten with their current value: no unlock of door 3 on the wire.
    assert (3, False) not in [(w.address, w.value) for w in run.sim.write_log]
    assert [v.point for v in result.values if v.point.startswith("coil:")] == ["coil:1", "coil:5"]


async def test_lock_sense_confirms_after_actuation(start_driver: StartDriver) -> None:
    run = await start_driver()
    await run.wait_for(health_is(Health.ONLINE))
    seen = len(run.events)
    await run.driver.execute(lock(6))
    await run.wait_for(changed("input:14", True), since=seen)


async def test_read_points_reads_now(start_driver: StartDriver) -> None:
    run = await start_driver()
    await run.wait_for(health_is(Health.ONLINE))
    run.sim.set_input(19, True)
    result = await run.driver.execute(ReadPoints(("input:19", "coil:0")))
    assert result.values == (PointValue("coil:0", False), PointValue("input:19", True))


async def test_bad_command_is_refused_before_the_wire(start_driver: StartDriver) -> None:
    run = await start_driver()
    await run.wait_for(health_is(Health.ONLINE))
    requests = run.sim.statistics()["write_coils"]
    with pytest.raises(BadPoint, match="is an input"):
        await run.driver.execute(WritePoints((PointWrite("input:1", True),)))
    with pytest.raises(BadPoint, match="both on and off"):
        await run.driver.execute(
            WritePoints((PointWrite("coil:1", True), PointWrite("coil:1", False)))
        )
    with pytest.raises(BadPoint, match="not on board"):
        await run.driver.execute(lock(9))
    assert run.sim.statistics()["write_coils"] == requests


async def test_command_overtakes_a_poll_that_was_waiting_longer(
    start_driver: StartDriver,
) -> None:
    run = await start_driver(timeout_ms=2000)
    await run.wait_for(health_is(Health.ONLINE))
    # Each reply now takes 100 ms: command A holds the lane for its write and read-backs,
    # the poller queues behind it, then command B arrives.
    run.sim.faults.delay_ms = 100
    mark = len(run.sim.request_log)
    first = asyncio.create_task(run.driver.execute(lock(0)))

    def poller_queued_behind_first() -> bool:
        sent = [r.function for r in list(run.sim.request_log)[mark:]]
        return 15 in sent and int(run.driver.statistics()["lane_waiting"]) >= 1

    await eventually(poller_queued_behind_first)
    second = asyncio.create_task(run.driver.execute(lock(1)))
    await asyncio.gather(first, second)
    functions = [r.function for r in list(run.sim.request_log)[mark:]]
    a_write = functions.index(15)
    b_write = functions.index(15, a_write + 1)
    # Between the two writes only A's own read-backs: the waiting poll did not go first.
    assert functions[a_write + 1 : b_write] == [1, 2]
    assert run.sim.coils()[:2] == [True, True]


async def test_stopped_driver_leaves_no_tasks_and_can_run_again(
    start_driver: StartDriver,
) -> None:
    run = await start_driver()
    await run.wait_for(health_is(Health.ONLINE))
    await run.stop()
    await run.stop()
    assert run.driver.health is Health.OFFLINE
    await eventually(lambda: run.sim.statistics()["connections_open"] == 0)
    mark = run.mark()
    await run.start()
    await run.wait_for(health_is(Health.ONLINE), since=mark)


async def test_statistics_count_requests_commands_and_lane_waits(
    start_driver: StartDriver,
) -> None:
    run = await start_driver()
    await run.wait_for(health_is(Health.ONLINE))
    await run.driver.execute(lock(2))
    stats = run.driver.statistics()
    assert stats["commands"] == 1
    assert int(stats["polls"]) >= 1
    assert int(stats["requests"]) >= 5
    assert stats["health"] == "online"
    assert float(stats["lane_wait_max_ms"]) >= float(stats["lane_wait_median_ms"]) >= 0


async def test_a_board_answering_for_another_unit_is_degraded_with_the_named_exception(
    start_driver: StartDriver,
) -> None:
    # A TCP-to-RS-485 gateway whose board is unit 7; the campus file says unit 1.
    run = await start_driver()
    await run.wait_for(health_is(Health.ONLINE))
    start = len(run.events)
    run.sim.unit = 7
    event = await run.wait_for(health_is(Health.DEGRADED), since=start)
    assert isinstance(event, DeviceHealth)
    assert "Modbus exception 11 (gateway target device failed to respond)" in event.detail
    assert "check the board's `unit` (its Modbus device id, 1 now)" in event.detail
    with pytest.raises(ModbusRefused) as refused:
        await run.driver.execute(lock(0))
    assert refused.value.code == "device_refused"
    assert refused.value.exception_code == 11
    # The board answers: it was never reported offline, and the link stayed up.
    assert not any(
        isinstance(e, DeviceHealth) and e.health is Health.OFFLINE for e in run.events[start:]
    )
    run.sim.unit = None
    await run.wait_for(health_is(Health.ONLINE), since=start)


async def test_an_address_the_board_lacks_is_named_with_a_hint_about_addresses(
    start_driver: StartDriver,
) -> None:
    # The campus file claims 16 coils; the board has 8.
    run = await start_driver(points={"coil:12"}, coils=16)
    event = await run.wait_for(health_is(Health.DEGRADED))
    assert isinstance(event, DeviceHealth)
    assert "Modbus exception 2 (illegal data address)" in event.detail
    assert "check the point addresses" in event.detail
