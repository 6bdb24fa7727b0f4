"""Operator commands load the site and the broker only: no driver is ever imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.simulators.broker import free_port

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "demo-campus.toml"
#: Vendor libraries (and our driver packages) an operator command must not pay for.
DRIVER_MODULES = ("pymodbus", "bacpypes3", "zeep", "onvif", "cv2", "serial", "gatewayd.drivers")


def imported_modules(*args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "gatewayd", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in run.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return modules, run


@pytest.mark.parametrize(
    "command",
    [
        ["lockdown", "--scope", "campus"],
        ["release", "--scope", "campus"],
        ["status"],
    ],
)
def test_operator_commands_never_import_a_driver(command: list[str]) -> None:
    # A port nobody listens on: the command fails fast at the broker, after its imports.
    closed = f"mqtt://127.0.0.1:{free_port()}"
    modules, run = imported_modules(
        *command,
        "-c",
        str(DEMO),
        "--mqtt",
        closed,
        *(["--timeout", "2"] if command[0] != "status" else []),
    )
    assert "gatewayd.app.cli" in modules, run.stderr[-2000:]
    assert "cannot reach" in run.stderr or "no connection" in run.stderr, run.stderr[-2000:]
    loaded = sorted(
        m for m in modules if m.split(".")[0] in DRIVER_MODULES or m.startswith(DRIVER_MODULES)
    )
    assert loaded == [], loaded
    # Nor the campus model (every driver's config), nor structlog and what it drags in, nor
    # the district's file and client (its subcommands are registered by district_cli alone).
    heavy = sorted(
        m
        for m in modules
        if m.startswith(("gatewayd.service", "structlog", "rich"))
        or m in ("gatewayd.app.district", "gatewayd.app.district_view")
    )
    assert heavy == [], heavy


def test_check_still_validates_every_device_with_its_driver() -> None:
    modules, run = imported_modules("check", "-c", str(DEMO))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "gatewayd.drivers.modbus_relay.config" in modules


#: Runs an operator command in-process with ``importlib.metadata.entry_points`` counted.
COUNT_ENTRY_POINTS = """
import importlib.metadata as metadata, sys
groups = []
real = metadata.entry_points
def counted(**params):
    groups.append(params.get("group"))
    return real(**params)
metadata.entry_points = counted
from gatewayd.app.cli import main
code = main(sys.argv[1:])
print("groups", sorted(set(map(str, groups))), "code", code)
"""


def test_operator_commands_never_scan_the_installed_distributions() -> None:
    # pydantic would read every distribution's entry points for plugins of its own at its
    # first model: the CLI turns that off (PYDANTIC_DISABLE_PLUGINS) unless the caller set it.
    closed = f"mqtt://127.0.0.1:{free_port()}"
    args = ["lockdown", "--scope", "campus", "-c", str(DEMO), "--mqtt", closed, "--timeout", "2"]
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    run = subprocess.run(
        [sys.executable, "-c", COUNT_ENTRY_POINTS, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "groups [] code 1" in run.stdout, (run.stdout, run.stderr[-2000:])
    # Set by whoever runs the command (empty: every plugin), the variable is left alone.
    run = subprocess.run(
        [sys.executable, "-c", COUNT_ENTRY_POINTS, *args],
        cwd=ROOT, env={**env, "PYDANTIC_DISABLE_PLUGINS": ""}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert "groups ['pydantic'] code 1" in run.stdout, (run.stdout, run.stderr[-2000:])
