"""The relay board simulator speaks real Modbus TCP (checked with pymodbus's client)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from gatewayd.simulators.base import RecordLog
from gatewayd.simulators.faults import Corruption
from gatewayd.simulators.relay_board import CoilWrite, RelayBoardSim, RequestSeen
from tests.support.waiting import eventually


@pytest.fixture
async def client(relay_board: RelayBoardSim) -> AsyncIterator[AsyncModbusTcpClient]:
    """A pymodbus client with no retries and a short deadline."""
    modbus = AsyncModbusTcpClient(
        "127.0.0.1", port=relay_board.port, timeout=0.3, retries=0, reconnect_delay=0
    )
    assert await modbus.connect()
    yield modbus
    modbus.close()


async def test_written_coils_read_back(client: AsyncModbusTcpClient) -> None:
    reply = await client.write_coils(0, [True, False, True], device_id=1)
    assert not reply.isError()
    assert (reply.address, reply.count) == (0, 3)
    assert not (await client.write_coil(7, True, device_id=1)).isError()
    coils = await client.read_coils(0, count=8, device_id=1)
    assert list(coils.bits) == [True, False, True, False, False, False, False, True]


async def test_inputs_are_positions_then_lock_senses_then_spares(
    relay_board: RelayBoardSim, client: AsyncModbusTcpClient
) -> None:
    await client.write_coils(0, [True, True], device_id=1)
    await eventually(lambda: relay_board.sense(1))
    relay_board.set_input(17, True)
    inputs = await client.read_discrete_inputs(0, count=20, device_id=1)
    bits = list(inputs.bits)[:20]
    assert bits[0:8] == [True] * 8  # every door closed
    assert bits[8:16] == [True, True] + [False] * 6  # doors 0 and 1 locked
    assert bits[16:20] == [False, True, False, False]  # spare contact 17 made


async def test_lock_sense_follows_coil_only_after_actuation(
    relay_board: RelayBoardSim, client: AsyncModbusTcpClient
) -> None:
    relay_board.actuation_ms = 300
    await client.write_coil(2, True, device_id=1)
    assert relay_board.coil(2)
    assert not relay_board.sense(2)
    await eventually(lambda: relay_board.sense(2))
    relay_board.actuation_ms = 0
    await client.write_coil(2, False, device_id=1)
    assert not relay_board.sense(2)


async def test_jammed_lock_keeps_its_sense(
    relay_board: RelayBoardSim, client: AsyncModbusTcpClient
) -> None:
    relay_board.actuation_ms = 0
    relay_board.jam(3)
    await client.write_coil(3, True, device_id=1)
    assert relay_board.coil(3)
    assert not relay_board.sense(3)
    relay_board.unjam(3)
    assert relay_board.sense(3)


async def test_propped_door_reads_open_its_bolt_throws_and_it_is_not_secured(
    relay_board: RelayBoardSim, client: AsyncModbusTcpClient
) -> None:
    relay_board.hold_open(4)
    await client.write_coil(4, True, device_id=1)
    await eventually(lambda: relay_board.sense(4))
    inputs = await client.read_discrete_inputs(0, count=16, device_id=1)
    assert inputs.bits[4] is False  # position: open
    assert inputs.bits[12] is True  # lock sense reports the bolt, thrown
    assert not relay_board.secured(4)
    relay_board.release_door(4)
    inputs = await client.read_discrete_inputs(0, count=16, device_id=1)
    assert (inputs.bits[4], inputs.bits[12]) == (True, True)
    assert relay_board.secured(4)


async def test_only_spare_inputs_can_be_set_directly(relay_board: RelayBoardSim) -> None:
    relay_board.set_input(16, True)
    with pytest.raises(ValueError, match="not a spare input"):
        relay_board.set_input(3, True)
    with pytest.raises(ValueError, match="not a spare input"):
        relay_board.set_input(20, True)


async def test_out_of_range_read_gets_illegal_address_exception(
    client: AsyncModbusTcpClient,
) -> None:
    reply = await client.read_coils(4, count=8, device_id=1)
    assert reply.isError()
    assert reply.exception_code == 2


async def test_write_log_records_every_coil_written(
    relay_board: RelayBoardSim, client: AsyncModbusTcpClient
) -> None:
    await client.write_coils(2, [True, True, False], device_id=1)
    await client.write_coil(2, True, device_id=1)
    logged = [(w.address, w.value) for w in relay_board.write_log]
    assert logged == [(2, True), (3, True), (4, False), (2, True)]
    times = [w.ns for w in relay_board.write_log]
    assert times == sorted(times)
    stats = relay_board.statistics()
    assert (stats["write_coils"], stats["write_coil"], stats["coils_written"]) == (1, 1, 4)


async def test_the_logs_read_back_as_records_but_the_collector_leaves_them_alone(
    relay_board: RelayBoardSim, client: AsyncModbusTcpClient
) -> None:
    # Every request is logged: kept as NamedTuples, a long run's logs were scanned by every
    # full collection and paused the whole simulators' process for tens of ms.
    await client.write_coils(0, [True, False], device_id=1)
    await client.read_coils(0, count=2, device_id=1)
    gc.collect()
    assert not any(gc.is_tracked(row) for row in relay_board.write_log._rows)
    assert not any(gc.is_tracked(row) for row in relay_board.request_log._rows)
    assert relay_board.write_log[-1] == CoilWrite(relay_board.write_log[-1].ns, 1, False)
    assert [r.function for r in relay_board.request_log] == [15, 1]
    with pytest.raises(TypeError, match="a log of CoilWrite cannot take RequestSeen"):
        relay_board.write_log.append(RequestSeen(0, 1, 1))  # type: ignore[arg-type]


def test_a_record_log_is_bounded_and_keeps_the_newest() -> None:
    log: RecordLog[CoilWrite] = RecordLog(3)
    assert list(log) == [] and not log
    for n in range(5):
        log.append(CoilWrite(n, n, n % 2 == 0))
    assert [w.ns for w in log] == [2, 3, 4] and len(log) == 3
    log.clear()
    assert not log


async def test_dropped_request_gets_no_reply_and_is_not_carried_out(
    relay_board: RelayBoardSim, client: AsyncModbusTcpClient
) -> None:
    relay_board.faults.drop = 1.0
    with pytest.raises((ModbusIOException, TimeoutError)):
        await asyncio.wait_for(client.write_coil(0, True, device_id=1), 1.0)
    assert not relay_board.coil(0)
    assert relay_board.statistics()["dropped"] == 1
    assert not relay_board.write_log


async def test_delayed_reply_is_held_then_sent(
    relay_board: RelayBoardSim, client: AsyncModbusTcpClient
) -> None:
    relay_board.faults.delay_ms = 100
    pending = asyncio.ensure_future(client.read_coils(0, count=8, device_id=1))
    await eventually(lambda: relay_board.in_flight == 1)
    assert not pending.done()
    reply = await pending
    assert not reply.isError()
    assert relay_board.statistics()["delayed"] == 1


async def test_hung_board_reads_requests_but_never_answers(
    relay_board: RelayBoardSim, client: AsyncModbusTcpClient
) -> None:
    relay_board.faults.hang = True
    with pytest.raises((ModbusIOException, TimeoutError)):
        await asyncio.wait_for(client.read_coils(0, count=8, device_id=1), 1.0)
    assert relay_board.statistics()["hung"] == 1
    assert client.connected


@pytest.mark.parametrize(
    ("mode", "check"),
    [
        (Corruption.FUNCTION, lambda r: r.function_code == 2),
        (Corruption.COUNT, lambda r: r.function_code == 1 and len(r.bits) < 8),
    ],
)
async def test_corrupted_read_reply_is_not_what_was_asked(
    relay_board: RelayBoardSim,
    client: AsyncModbusTcpClient,
    mode: Corruption,
    check: Callable[[object], bool],
) -> None:
    relay_board.faults.corrupt = 1.0
    relay_board.faults.corrupt_mode = mode
    reply = await client.read_coils(0, count=8, device_id=1)
    assert check(reply)
    assert relay_board.statistics()["corrupted"] == 1


async def test_corrupted_write_reply_echoes_the_wrong_count(
    relay_board: RelayBoardSim, client: AsyncModbusTcpClient
) -> None:
    relay_board.faults.corrupt = 1.0
    relay_board.faults.corrupt_mode = Corruption.COUNT
    reply = await client.write_coils(0, [True] * 8, device_id=1)
    assert reply.count == 9


async def test_disconnect_drops_clients_but_keeps_listening(
    relay_board: RelayBoardSim, client: AsyncModbusTcpClient
) -> None:
    relay_board.disconnect()
    await eventually(lambda: not client.connected)
    assert await client.connect()
    assert not (await client.read_coils(0, count=1, device_id=1)).isError()


async def test_vanished_board_refuses_connections_until_it_reappears(
    relay_board: RelayBoardSim, client: AsyncModbusTcpClient
) -> None:
    port = relay_board.port
    await relay_board.vanish()
    await eventually(lambda: not client.connected)
    assert not await client.connect()
    await relay_board.reappear()
    assert relay_board.port == port
    assert await client.connect()
    assert not (await client.read_coils(0, count=1, device_id=1)).isError()


async def test_stop_twice_is_harmless(relay_board: RelayBoardSim) -> None:
    await relay_board.stop()
    await relay_board.stop()
    assert not relay_board.listening


async def test_board_command_prints_ready_line_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gatewayd.simulators",
        "board",
        "--port",
        "0",
        "--doors",
        "4",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        ready = json.loads(line)
        assert ready["ready"] is True
        client = AsyncModbusTcpClient("127.0.0.1", port=ready["ports"]["board"], retries=0)
        assert await client.connect()
        assert len((await client.read_discrete_inputs(0, count=12, device_id=1)).bits) >= 12
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, stderr.decode()
    assert b"stopping" in stderr
