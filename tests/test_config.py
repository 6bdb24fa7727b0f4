"""Config errors name the file, the path to the field and what was expected."""

# ruff: noqa: E501

from __future__ import annotations

from pathlib import Path

import pytest

from gatewayd.app.cli import main
from gatewayd.kernel.errors import ConfigError
from gatewayd.service.config import load_config

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo-campus.toml"

GOOD = """
doors = [
  { id = "A-101", room = "A101", building = "A", zone = "A1", kind = "classroom", lock = { device = "relay-a1", point = "coil:0" }, sense = { device = "relay-a1", point = "input:32" } },
]
inputs = [
  { id = "fire-A", kind = "fire_alarm", building = "A", point = { device = "relay-a1", point = "input:64" } },
]

[site]
id = "test-school"
name = "Test School"

[[buildings]]
id = "A"
name = "Main"

[[zones]]
id = "A1"
building = "A"

[[devices]]
id = "relay-a1"
driver = "modbus_relay"
host = "127.0.0.1"
port = 15020
coils = 32
inputs = 68
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "campus.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert str(tmp_path / "campus.toml") in str(info.value)
    return info.value.problems


def test_demo_campus_is_valid() -> None:
    config = load_config(DEMO)
    assert config.site.demo is True
    assert len(config.doors) >= 100
    assert {str(d.kind) for d in config.doors} == {"classroom", "interior", "exterior", "egress"}


def test_good_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.device("relay-a1").driver == "modbus_relay"
    assert config.doors[0].lock.point == "coil:0"


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, GOOD + "\n[site\n")
    assert "TOML syntax error" in problem
    assert "line" in problem


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "nope.toml")


def test_unknown_field_is_named_with_its_path(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, GOOD.replace('name = "Main"', 'name = "Main"\ncolour = 3'))
    assert problem.startswith("buildings[0](A).colour: unknown field")


def test_wrong_door_kind_names_the_door_and_the_choices(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, GOOD.replace('kind = "classroom"', 'kind = "closet"'))
    assert problem.startswith("doors[0](A-101).kind:")
    assert "'classroom'" in problem and "'egress'" in problem


def test_unknown_driver_is_one_error(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, GOOD.replace('driver = "modbus_relay"', 'driver = "x10"'))
    assert "devices[0](relay-a1).driver: unknown driver 'x10'" in problem
    assert "modbus_relay" in problem


def test_driver_settings_are_validated_by_the_driver_model(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, GOOD.replace("port = 15020", 'port = "modbus"'))
    assert problem.startswith("devices[0](relay-a1).port:")


def test_reference_to_unknown_device_lists_the_known_ones(tmp_path: Path) -> None:
    text = GOOD.replace('lock = { device = "relay-a1"', 'lock = { device = "relay-z9"')
    [problem] = problems(tmp_path, text)
    assert problem == (
        "doors[0](A-101).lock.device: unknown device 'relay-z9' (expected one of: relay-a1)"
    )


def test_bad_point_address_says_what_is_expected(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, GOOD.replace('point = "coil:0"', 'point = "relay 0"'))
    assert problem.startswith("doors[0](A-101).lock.point:")
    assert "coil:N" in problem


def test_lock_on_an_input_is_refused(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, GOOD.replace('point = "coil:0"', 'point = "input:0"'))
    assert "is an input, not an output" in problem


def test_zone_in_another_building_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace(
        '[[zones]]\nid = "A1"\nbuilding = "A"',
        '[[buildings]]\nid = "B"\nname = "Annex"\n\n[[zones]]\nid = "A1"\nbuilding = "B"',
    )
    [problem] = problems(tmp_path, text)
    assert problem == "doors[0](A-101).zone: zone 'A1' is in building 'B', not 'A'"


def test_duplicate_door_ids_are_refused(tmp_path: Path) -> None:
    door = GOOD.split("doors = [\n", 1)[1].split("]\ninputs", 1)[0]
    text = GOOD.replace(door, door + door.replace("coil:0", "coil:1"))
    assert "doors[1].id: duplicate id 'A-101'" in problems(tmp_path, text)


def test_two_doors_on_one_lock_output_are_refused(tmp_path: Path) -> None:
    door = GOOD.split("doors = [\n", 1)[1].split("]\ninputs", 1)[0]
    text = GOOD.replace(door, door + door.replace("A-101", "A-102"))
    assert any("already drives door 'A-101'" in p for p in problems(tmp_path, text))


def test_check_command_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "demo-school" in out and "modbus_relay" in out


def test_check_command_exits_2_and_prints_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD.replace('kind = "classroom"', 'kind = "closet"'))
    assert main(["check", "-c", str(path)]) == 2
    assert "doors[0](A-101).kind" in capsys.readouterr().err


def test_point_beyond_the_end_of_the_board_is_refused(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, GOOD.replace('point = "coil:0"', 'point = "coil:40"'))
    assert problem.startswith("doors[0](A-101).lock.point: coil:40 is not on board 'relay-a1'")
    assert "32 coils" in problem
