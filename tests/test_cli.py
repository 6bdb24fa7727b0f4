"""The operator CLI, run as a person would: a separate process talking to the broker."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from gatewayd.simulators.broker import Mosquitto, free_port
from tests.support.gateway import DEMO, Site, run_cli
from tests.support.waiting import eventually


def opts(site: Site) -> list[str]:
    return ["-c", str(DEMO), "--mqtt", site.config.mqtt.url]


async def test_lockdown_prints_how_many_doors_confirmed(site: Site) -> None:
    code, out, _ = await run_cli("lockdown", *opts(site), "--scope", "building/A")
    doors = sum(d.building == "A" for d in site.config.doors)
    assert code == 0
    assert out.startswith(f"OK       lockdown building/A: {doors}/{doors} doors confirmed")
    assert re.search(r"on the wire [\d.]+ ms, confirmed [\d.]+ ms", out)


async def test_refused_command_exits_1_with_the_reason(site: Site) -> None:
    await site.command("lockdown", scope="campus")
    code, out, _ = await run_cli("unlock", *opts(site), "--door", "A-101")
    assert code == 1
    assert out.startswith("REFUSED  held: door A-101 is held locked by lockdown (campus)")


async def test_json_reply_is_machine_readable(site: Site) -> None:
    code, out, _ = await run_cli("lock", *opts(site), "--door", "B-101", "--json")
    reply = json.loads(out)
    assert code == 0
    assert reply["doors"]["confirmed"] == ["B-101"]


async def test_status_shows_scope_states_and_unsecured_doors(site: Site) -> None:
    await site.command("lockdown", scope="building/D")
    site.sim.boards["relay-d1"].hold_open(3)
    assert site.gateway is not None
    doors = site.gateway.doors.doors
    await eventually(lambda: doors["D-104"].closed is False)
    code, out, _ = await run_cli("status", *opts(site))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "gateway   online"
    row = next(line for line in lines if line.startswith("building/D"))
    assert row.split()[1:3] == ["lockdown", "building/D"]
    d104 = next(line for line in lines if line.startswith("D-104"))
    assert "open" in d104 and " yes " in d104, d104  # words for people, not Python's True
    assert not any(word in out for word in ("True", "False", "None"))
    code, out, _ = await run_cli("status", *opts(site), "--json")
    assert json.loads(out)["state/building/D"]["state"] == "lockdown"


async def test_status_of_a_gateway_the_broker_does_not_know_names_the_broker_and_fails(
    mosquitto: Mosquitto,
) -> None:
    # A broker with nothing retained for the demo site: no gateway has ever been there.
    code, out, err = await run_cli("status", "-c", str(DEMO), "--mqtt", mosquitto.url)
    assert code == 1, (out, err)
    assert out.startswith("gateway   unknown")
    assert mosquitto.url in err and "is this its broker?" in err


async def test_a_closed_pipe_is_not_a_traceback(site: Site) -> None:
    # `true` reads nothing and exits: every write the CLI makes meets a closed pipe, as when
    # `head` has read its lines.
    proc = await asyncio.create_subprocess_shell(
        f"{sys.executable} -m gatewayd status {' '.join(opts(site))} --all | true",
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()


async def test_unreachable_broker_is_a_clear_error_not_a_traceback() -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    code, _, err = await run_cli(
        "lockdown", "-c", str(DEMO), "--mqtt", url, "--scope", "campus", "--timeout", "2"
    )
    assert code == 1
    assert "Traceback" not in err
    assert url.split("//")[1] in err


async def test_demo_runs_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gatewayd",
        "demo",
        "--log-level",
        "warning",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    try:
        text = ""
        async with asyncio.timeout(30):
            while "Ctrl-C" not in text:
                line = await proc.stdout.readline()
                assert line, "demo exited before it was ready"
                text += line.decode()
        command = next(
            line.split(None, 1)[1]
            for line in text.splitlines()
            if line.strip().startswith("lockdown")
        )
        words = command.split()
        # The printed command starts with "gatewayd" or "<python> -m gatewayd".
        code, out, _ = await run_cli(*words[words.index("lockdown") :])
        assert code == 0, out
        assert "lockdown building/A" in out
        # The banner's one export line lets status, lockdown and audit verify run bare.
        export = next(line for line in text.splitlines() if "export GATEWAYD_CONFIG=" in line)
        assignments = export.split("export ", 1)[1].split()
        env = {**os.environ, **dict(a.split("=", 1) for a in assignments)}
        for bare in (["status"], ["lockdown", "--scope", "building/B"], ["audit", "verify"]):
            done = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gatewayd", *bare, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            bare_out, bare_err = await asyncio.wait_for(done.communicate(), 30)
            assert done.returncode == 0, (bare, bare_out.decode(), bare_err.decode())
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            await proc.wait()
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_demo_serves_the_control_interface_and_keeps_the_given_state_dir(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gatewayd",
        "demo",
        "--log-level",
        "warning",
        "--control",
        "127.0.0.1:0",
        "--state-dir",
        str(state),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    try:
        text = ""
        async with asyncio.timeout(30):
            while "Ctrl-C" not in text:
                line = await proc.stdout.readline()
                assert line, "demo exited before it was ready"
                text += line.decode()
        where = next(line for line in text.splitlines() if line.strip().startswith("control"))
        host, _, port = where.split(" on ")[1].split()[0].rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        request = {"op": "input", "device": "relay-a1", "input": "fire-A", "value": True}
        writer.write(json.dumps(request).encode() + b"\n")
        answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
        writer.close()
        await writer.wait_closed()
        assert answer["ok"] is True, answer
        assert answer["out"]["alarm"] == "fire-A"
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            await proc.wait()
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # The gateway kept its state where it was told, and it outlives the demo.
    assert (state / "outbox.sqlite").exists()


@pytest.mark.parametrize(
    ("argv", "json_logs"),
    [
        (["demo", "--log-format", "console"], False),
        (["demo", "--log-format", "json"], True),
        (["demo"], None),  # auto: console on a terminal, JSON when piped
        (["run", "-c", "x.toml", "--log-json"], True),  # what older unit files say
    ],
)
def test_log_format_is_chosen_on_the_command_line(argv: list[str], json_logs: bool | None) -> None:
    from gatewayd.app.cli import _json_logs, _parser

    assert _json_logs(_parser().parse_args(argv)) is json_logs


async def test_print_gives_a_signed_body_any_mqtt_client_can_send(site: Site) -> None:
    code, out, err = await run_cli("lockdown", *opts(site), "--scope", "building/B", "--print")
    assert code == 0, err
    body = json.loads(out)
    assert body["sig"] and body["actor"] == "demo-operator"
    # Sent as is, as mosquitto_pub -m would: the gateway carries it out.
    reply = await site.send_raw(out.strip().encode())
    assert reply["ok"] is True, reply
    assert all(site.coil(d.id) for d in site.config.doors
               if d.building == "B" and d.kind == "classroom")  # fmt: skip
