"""The simulators' control interface over a real TCP socket: every op, and garbage."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from gatewayd.kernel.site import Site, load_site
from gatewayd.simulators.bacnet_device import BacnetDeviceSim
from gatewayd.simulators.campus import CampusSim
from gatewayd.simulators.control import ControlServer
from gatewayd.simulators.onvif_camera import MOTION, OnvifCameraSim
from tests.support.waiting import eventually

CAMPUS = """
[site]
id = "control-school"
name = "Control School"

[[buildings]]
id = "A"
name = "Main"

[[devices]]
id = "relay-a1"
driver = "modbus_relay"
host = "127.0.0.1"
port = 1502
coils = 4
inputs = 10

[[devices]]
id = "relay-a2"
driver = "modbus_relay"
host = "127.0.0.1"
port = 1503
coils = 2
inputs = 6

[[devices]]
id = "bacnet-a"
driver = "bacnet"
address = "127.0.0.1:47900"
device_instance = 4001
local_address = "127.0.0.1:0"

[[devices]]
id = "cam-a"
driver = "onvif_camera"
host = "127.0.0.1"
port = 1504
username = "admin"
password = "secret"

[[devices]]
id = "radio"
driver = "psap_radio"
url = "socket://127.0.0.1:1505"
site_label = "Control School"

[[doors]]
id = "A-101"
room = "101"
building = "A"
kind = "classroom"
lock = { device = "relay-a1", point = "coil:1" }
position = { device = "relay-a1", point = "input:1" }
sense = { device = "relay-a1", point = "input:5" }

[[doors]]
id = "A-102"
room = "102"
building = "A"
kind = "classroom"
lock = { device = "bacnet-a", point = "binary-output:0" }
position = { device = "bacnet-a", point = "binary-input:0" }
sense = { device = "bacnet-a", point = "binary-input:1" }

[[inputs]]
id = "fire-A"
kind = "fire_alarm"
building = "A"
point = { device = "relay-a1", point = "input:8" }

[[inputs]]
id = "panic-A"
kind = "panic"
building = "A"
active_high = false
point = { device = "relay-a2", point = "input:4" }
"""


class Client:
    """One control connection: a request out, its answer line back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), 5)
        assert line.endswith(b"\n"), line
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def ask(self, request: dict[str, Any] | bytes) -> dict[str, Any]:
        data = request if isinstance(request, bytes) else json.dumps(request).encode()
        await self.send(data + b"\n")
        return await self.answer()

    async def out(self, request: dict[str, Any]) -> Any:
        answer = await self.ask(request)
        assert answer["ok"] is True, answer
        return answer["out"]

    async def error(self, request: dict[str, Any] | bytes) -> str:
        answer = await self.ask(request)
        assert answer["ok"] is False, answer
        assert set(answer) == {"ok", "error"}
        error: str = answer["error"]
        return error

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
def campus_file(tmp_path: Path) -> Path:
    path = tmp_path / "campus.toml"
    path.write_text(CAMPUS, encoding="utf-8")
    return path


@pytest.fixture
async def campus(campus_file: Path) -> AsyncIterator[CampusSim[Site]]:
    async with CampusSim(load_site(campus_file), free_ports=True, actuation_ms=1) as sim:
        yield sim


@pytest.fixture
async def control(campus: CampusSim[Site]) -> AsyncIterator[ControlServer]:
    async with ControlServer(campus, max_clients=8) as server:
        yield server


@pytest.fixture
async def client(control: ControlServer) -> AsyncIterator[Client]:
    conn = await Client.connect(control.port)
    yield conn
    await conn.close()


# --- each op --------------------------------------------------------------------------------


async def test_input_by_alarm_id_sets_the_wired_contact(
    campus: CampusSim[Site], client: Client
) -> None:
    out = await client.out({"op": "input", "device": "relay-a1", "input": "fire-A", "value": True})
    assert out == {
        "device": "relay-a1",
        "input": "input:8",
        "value": True,
        "alarm": "fire-A",
        "active": True,
    }
    assert campus.boards["relay-a1"].inputs()[8] is True


async def test_input_by_address_names_the_alarm_and_whether_it_is_active(
    campus: CampusSim[Site], client: Client
) -> None:
    # panic-A is active low: a contact that opens is the alarm.
    out = await client.out(
        {"op": "input", "device": "relay-a2", "input": " INPUT:04", "value": False}
    )
    assert out == {
        "device": "relay-a2",
        "input": "input:4",
        "value": False,
        "alarm": "panic-A",
        "active": True,
    }
    out = await client.out({"op": "input", "device": "relay-a1", "input": "input:9", "value": True})
    assert out == {"device": "relay-a1", "input": "input:9", "value": True}


async def test_a_position_input_opens_the_door_and_a_lock_sense_is_refused(
    campus: CampusSim[Site], client: Client
) -> None:
    board = campus.boards["relay-a1"]
    await client.out({"op": "input", "device": "relay-a1", "input": "input:1", "value": False})
    assert not board.closed(1)
    error = await client.error(
        {"op": "input", "device": "relay-a1", "input": "input:5", "value": True}
    )
    assert "lock sense" in error and "jam" in error
    controller = campus.devices["bacnet-a"]
    assert isinstance(controller, BacnetDeviceSim)
    await client.out(
        {"op": "input", "device": "bacnet-a", "input": "binary-input:0", "value": False}
    )
    assert not controller.closed(0)


async def test_jam_and_unjam_a_door_on_a_relay_board_and_on_bacnet(
    campus: CampusSim[Site], client: Client
) -> None:
    board = campus.boards["relay-a1"]
    out = await client.out({"op": "jam", "door": "A-101"})
    assert out == {"door": "A-101", "device": "relay-a1", "lock": "coil:1", "jammed": True}
    assert board.mechanics.jammed(1)
    await client.out({"op": "unjam", "door": "A-101"})
    assert not board.mechanics.jammed(1)
    out = await client.out({"op": "jam", "door": "A-102"})
    assert out["device"] == "bacnet-a"
    controller = campus.devices["bacnet-a"]
    assert isinstance(controller, BacnetDeviceSim)
    assert controller.mechanics.jammed(0)


async def test_coils_and_writes_report_what_a_client_wrote(
    campus: CampusSim[Site], client: Client
) -> None:
    board = campus.boards["relay-a1"]
    before_ns = time.monotonic_ns()
    modbus = AsyncModbusTcpClient("127.0.0.1", port=board.port, retries=0, timeout=2)
    assert await modbus.connect()
    try:
        assert not (await modbus.write_coils(1, [True, False], device_id=1)).isError()
    finally:
        modbus.close()
    assert await client.out({"op": "coils", "device": "relay-a1"}) == [False, True, False, False]
    writes = await client.out({"op": "writes", "device": "relay-a1"})
    assert [(w["address"], w["value"]) for w in writes] == [(1, True), (2, False)]
    # Monotonic nanoseconds: comparable with this process's clock.
    assert before_ns <= writes[0]["ns"] <= writes[1]["ns"] <= time.monotonic_ns()
    assert await client.out({"op": "coils", "device": "bacnet-a"}) == [False]
    assert await client.out({"op": "writes", "device": "radio"}) == []


async def test_vanish_and_reappear_power_a_device_down_and_up_on_its_port(
    campus: CampusSim[Site], client: Client
) -> None:
    board = campus.boards["relay-a2"]
    port = board.port
    out = await client.out({"op": "vanish", "device": "relay-a2"})
    assert out == {"device": "relay-a2", "listening": False, "port": port}
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    out = await client.out({"op": "reappear", "device": "relay-a2"})
    assert out == {"device": "relay-a2", "listening": True, "port": port}
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()


async def test_camera_event_reaches_the_cameras_subscriptions(
    campus: CampusSim[Site], client: Client
) -> None:
    camera = campus.devices["cam-a"]
    assert isinstance(camera, OnvifCameraSim)
    out = await client.out({"op": "camera_event", "device": "cam-a", "topic": "motion"})
    assert out == {"device": "cam-a", "topic": MOTION, "active": True, "subscriptions": 0}
    out = await client.out(
        {
            "op": "camera_event",
            "device": "cam-a",
            "topic": "tns1:RuleEngine/TamperDetector/Tamper",
            "active": False,
            "source": "<VideoSource_2>",
        }
    )
    assert out["active"] is False
    assert camera.counts["events_injected"] == 2
    error = await client.error({"op": "camera_event", "device": "cam-a", "topic": "smoke"})
    assert "motion, tamper, digital_input" in error
    error = await client.error({"op": "camera_event", "device": "relay-a1", "topic": "motion"})
    assert error == "relay-a1 (relay_board) is not a camera"


async def test_devices_and_statistics_describe_the_campus(
    campus: CampusSim[Site], client: Client
) -> None:
    devices = await client.out({"op": "devices"})
    assert devices["relay-a1"] == {
        "kind": "relay_board",
        "port": campus.boards["relay-a1"].port,
        "listening": True,
    }
    assert {d["kind"] for d in devices.values()} == {
        "relay_board",
        "bacnet_device",
        "onvif_camera",
        "psap_radio",
    }
    stats = await client.out({"op": "statistics", "device": "relay-a1"})
    assert stats["connections_open"] == 0


# --- garbage --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (b"{not json", "bad JSON: Expecting property name enclosed in double quotes at column 2"),
        (b"[1, 2]", "expected a JSON object, got an array"),
        (b'"op"', "expected a JSON object, got a string"),
        (b"\xff\xfe{}", "not UTF-8 text (byte 0)"),
        (b"[" * 5000 + b"]" * 5000, "line longer than 8192 bytes; skipped"),
        (b"[" * 4000 + b"]" * 4000, "bad JSON: nested too deeply"),
        ({}, "missing field 'op'; ops are input, jam, unjam, coils, writes, vanish, reappear,"),
        ({"op": 7}, "field 'op' must be a string, got a number"),
        ({"op": "explode"}, "unknown op 'explode'; ops are input, jam"),
        ({"op": "coils"}, "op 'coils' needs 'device'"),
        ({"op": "coils", "device": "nope"}, "unknown device 'nope'; devices are relay-a1,"),
        ({"op": "coils", "device": 5}, "field 'device' must be a non-empty string, got 5"),
        ({"op": "coils", "device": ""}, "field 'device' must be a non-empty string, got \"\""),
        ({"op": "coils", "device": "cam-a"}, "cam-a (onvif_camera) is not a door controller"),
        (
            {"op": "coils", "device": "relay-a1", "extra": 1},
            "op 'coils' takes 'device'; unknown: 'extra'",
        ),
        (
            {"op": "input", "device": "relay-a1", "input": "input:8", "value": 1},
            "field 'value' must be true or false, got 1",
        ),
        (
            {"op": "input", "device": "relay-a1", "input": "coil:0", "value": True},
            "input 'coil:0' on relay-a1: coil:0 is a lock output; only inputs can be set",
        ),
        (
            {"op": "input", "device": "relay-a1", "input": "input:99", "value": True},
            "input 'input:99' on relay-a1: input:99 is not on board 'relay-a1'",
        ),
        (
            {"op": "input", "device": "relay-a1", "input": "smoke", "value": True},
            "input 'smoke' on relay-a1: 'smoke': expected 'coil:N' or 'input:N'",
        ),
        (
            {"op": "input", "device": "relay-a2", "input": "fire-A", "value": True},
            "input 'fire-A' is wired to relay-a1 (input:8), not relay-a2",
        ),
        ({"op": "jam", "door": "Z-999"}, "unknown door 'Z-999'; doors are A-101, A-102"),
        ({"op": "vanish", "device": None}, "field 'device' must be a non-empty string, got null"),
    ],
)
async def test_garbage_is_answered_with_an_error_that_names_what_was_wrong(
    client: Client, request_: dict[str, Any] | bytes, error: str
) -> None:
    assert (await client.error(request_)).startswith(error)
    # The connection stays usable.
    assert await client.out({"op": "coils", "device": "relay-a2"}) == [False, False]


async def test_an_overlong_line_arriving_in_pieces_is_skipped_to_its_end(
    client: Client,
) -> None:
    await client.send(b'{"op": "coils", "device": "' + b"x" * 5000)
    await client.send(b"y" * 5000)
    assert (await client.answer())["error"].startswith("line longer than")
    await client.send(b"z" * 20_000 + b'"}\n{"op": "coils", "device": "relay-a2"}\n')
    assert await client.answer() == {"ok": True, "out": [False, False]}


async def test_blank_lines_are_ignored_and_a_last_line_needs_no_newline(
    control: ControlServer,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", control.port)
    writer.write(b'\n  \r\n{"op": "coils", "device": "relay-a2"}\r\n{"op": "devices"}')
    writer.write_eof()
    lines = (await asyncio.wait_for(reader.read(), 5)).splitlines()
    writer.close()
    await writer.wait_closed()
    assert [json.loads(line)["ok"] for line in lines] == [True, True]


async def test_random_bytes_never_take_the_interface_down(control: ControlServer) -> None:
    rng = random.Random(7)
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", control.port)
        writer.write(rng.randbytes(rng.randrange(1, 20_000)))
        writer.write_eof()
        for line in (await asyncio.wait_for(reader.read(), 5)).splitlines():
            assert json.loads(line)["ok"] is False
        writer.close()
        await writer.wait_closed()
    client = await Client.connect(control.port)
    assert await client.out({"op": "coils", "device": "relay-a2"}) == [False, False]
    await client.close()


# --- many clients -------------------------------------------------------------------------


async def test_many_clients_are_served_at_once_and_one_too_many_is_told(
    control: ControlServer,
) -> None:
    clients = [await Client.connect(control.port) for _ in range(control.max_clients)]
    try:
        await eventually(lambda: control.statistics()["clients_open"] == control.max_clients)
        extra = await Client.connect(control.port)
        assert (await extra.answer())["error"] == "too many clients (at most 8)"
        assert await extra.reader.read() == b""
        await extra.close()

        async def burst(client: Client, n: int) -> list[bool]:
            request = {"op": "input", "device": "relay-a1", "input": "input:9", "value": n % 2 == 0}
            return [(await client.ask(request))["ok"] for _ in range(10)]

        results = await asyncio.gather(*(burst(c, n) for n, c in enumerate(clients)))
        assert all(all(r) for r in results)
    finally:
        for client in clients:
            await client.close()
    await eventually(lambda: control.statistics()["clients_open"] == 0)
    assert control.statistics()["clients_refused"] == 1


async def test_stop_ends_connected_clients_and_is_idempotent(control: ControlServer) -> None:
    client = await Client.connect(control.port)
    await eventually(lambda: control.statistics()["clients_open"] == 1)
    await control.stop()
    assert await asyncio.wait_for(client.reader.read(), 5) == b""
    await control.stop()
    assert not control.listening
    await client.close()


# --- through the wire protocol ------------------------------------------------------------


async def test_an_input_set_through_the_control_socket_reads_back_over_modbus(
    campus: CampusSim[Site], client: Client
) -> None:
    board = campus.boards["relay-a1"]
    modbus = AsyncModbusTcpClient("127.0.0.1", port=board.port, retries=0, timeout=2)
    assert await modbus.connect()
    try:
        before = await modbus.read_discrete_inputs(0, count=10, device_id=1)
        assert before.bits[8] is False
        await client.out({"op": "input", "device": "relay-a1", "input": "fire-A", "value": True})
        after = await modbus.read_discrete_inputs(0, count=10, device_id=1)
        assert after.bits[8] is True
        assert list(after.bits[:8]) == list(before.bits[:8])
    finally:
        modbus.close()


async def test_campus_command_reports_the_control_port_in_its_ready_line(
    campus_file: Path,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gatewayd.simulators",
        "campus",
        "-c",
        str(campus_file),
        "--free-ports",
        "--control",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    try:
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert ready["ready"] is True
        assert set(ready["ports"]) == {"relay-a1", "relay-a2", "bacnet-a", "cam-a", "radio"} | {
            "control"
        }
        client = await Client.connect(ready["ports"]["control"])
        devices = await client.out({"op": "devices"})
        assert devices["relay-a1"]["port"] == ready["ports"]["relay-a1"]
        await client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, stderr.decode()


async def test_a_camera_run_alone_takes_events_through_its_control_interface() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gatewayd.simulators", "camera", "--control", "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        port = ready["ports"]["control"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def ask(request: dict[str, object]) -> dict[str, object]:
            writer.write(json.dumps(request).encode() + b"\n")
            answer: dict[str, object] = json.loads(await asyncio.wait_for(reader.readline(), 5))
            return answer

        event = await ask({"op": "camera_event", "device": "camera", "topic": "motion"})
        assert event["ok"] is True and event["out"] == {
            "device": "camera", "topic": "tns1:VideoSource/MotionAlarm", "active": True,
            "subscriptions": 0,
        }  # fmt: skip
        jam = await ask({"op": "jam", "door": "A-101"})
        assert jam["ok"] is False and "belong to a campus" in str(jam["error"])
        writer.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
