"""`gatewayd check` tells every mistake in one run, and warns about what is valid but wrong."""

from __future__ import annotations

from pathlib import Path

from tests.support.gateway import run_cli

FIVE_MISTAKES = """
[site]
id = "x"
[mqtt]
url = "http://nope"
[[device]]
id = "d"
[[devices]]
id = "relay-1"
driver = "modbus_relay"
host = "127.0.0.1"
port = "eighty"
coils = 8
[[buildings]]
id = "A"
name = "A"
[[doors]]
id = "A-1"
room = "1"
building = "Q"
kind = "classroom"
lock = { device = "relay-1", point = "coil:0" }
"""


async def test_five_mistakes_are_reported_in_one_run_with_how_to_fix(tmp_path: Path) -> None:
    campus = tmp_path / "campus.toml"
    campus.write_text(FIVE_MISTAKES)
    code, out, err = await run_cli("check", "-c", str(campus))
    assert code != 0
    text = out + err
    for expected in (
        "site.name: required field is missing",
        "mqtt.url:",
        "device: unknown field",
        "did you mean `devices`?",
        "devices[0](relay-1).port:",
        "doors[0](A-1).building: unknown building 'Q'",
    ):
        assert expected in text, (expected, text)


async def test_a_campus_nobody_can_command_is_warned_about(tmp_path: Path) -> None:
    campus = tmp_path / "campus.toml"
    campus.write_text(
        FIVE_MISTAKES.replace('id = "x"', 'id = "x"\nname = "X"')
        .replace('url = "http://nope"', 'url = "mqtt://127.0.0.1:1"')
        .replace('[[device]]\nid = "d"\n', "")
        .replace('port = "eighty"', "port = 502")
        .replace('building = "Q"', 'building = "A"')
    )
    _, out, err = await run_cli("check", "-c", str(campus))
    assert "no [[security.actors]]: nobody can send this gateway a command" in out, out + err
    assert "1 door has no lock sense (A-1)" in out
    assert "1 door has no position switch (A-1)" in out
