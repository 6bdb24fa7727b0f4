"""The campus simulator runs one relay board per Modbus device of a campus config."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from gatewayd.drivers.modbus_relay import ModbusRelayConfig
from gatewayd.service.config import load_config
from gatewayd.simulators.campus import CampusSim, relay_devices, with_ports

CAMPUS = """
[site]
id = "test-school"
name = "Test School"

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
inputs = 4

[[doors]]
id = "A-101"
room = "101"
building = "A"
kind = "classroom"
lock = { device = "relay-a1", point = "coil:0" }
position = { device = "relay-a1", point = "input:0" }
sense = { device = "relay-a1", point = "input:4" }
"""


@pytest.fixture
def campus_file(tmp_path: Path) -> Path:
    path = tmp_path / "campus.toml"
    path.write_text(CAMPUS, encoding="utf-8")
    return path


async def test_campus_runs_a_board_per_relay_device_sized_from_config(campus_file: Path) -> None:
    config = load_config(campus_file)
    async with CampusSim(config, free_ports=True) as campus:
        assert set(campus.boards) == {"relay-a1", "relay-a2"}
        a1 = campus.boards["relay-a1"]
        assert (a1.doors, a1.input_count) == (4, 10)
        assert campus.boards["relay-a2"].input_count == 4
        moved = campus.config()
        for dev in relay_devices(moved):
            assert dev.port == campus.ports[dev.id]
            client = AsyncModbusTcpClient(dev.host, port=dev.port, retries=0, timeout=1)
            assert await client.connect()
            assert len((await client.read_coils(0, count=dev.coils, device_id=1)).bits) >= 2
            client.close()


def test_with_ports_rewrites_only_the_named_devices(campus_file: Path) -> None:
    config = load_config(campus_file)
    moved = with_ports(config, {"relay-a2": 40000}, host="127.0.0.2")
    a1, a2 = (moved.device("relay-a1"), moved.device("relay-a2"))
    assert isinstance(a1, ModbusRelayConfig)
    assert isinstance(a2, ModbusRelayConfig)
    assert (a1.host, a1.port) == ("127.0.0.1", 1502)
    assert (a2.host, a2.port) == ("127.0.0.2", 40000)
    assert config.device("relay-a2") != a2  # the original is untouched
    with pytest.raises(KeyError, match="relay-zz"):
        with_ports(config, {"relay-zz": 1})
