"""The plugin path: a driver package outside the repo, installed by pip, found by entry points.

``tests/plugins/example_door`` is built and installed for real into a temporary folder that is
on ``sys.path`` only while a test asks for the ``plugin`` fixture; the core never names it.
Other test modules never see it: the contract suite's rigs are collected before any test runs,
and the fixture puts ``sys.path``, ``sys.modules`` and the registry's caches back as they were.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.kernel import registry
from gatewayd.kernel.campus import Campus
from gatewayd.kernel.errors import ConfigError, DriverNotFound
from gatewayd.kernel.events import (
    DeviceHealth,
    DriverEvent,
    Health,
    PointChanged,
    PointWrite,
    WritePoints,
    now_ns,
)
from gatewayd.kernel.registry import available, load_driver
from gatewayd.service.config import parse_config
from gatewayd.service.doors import DoorService, Target
from gatewayd.service.supervisor import Supervisor
from gatewayd.simulators.contract import all_rigs
from tests import test_driver_contract as contract
from tests.support.waiting import eventually

PLUGIN_SOURCE = Path(__file__).parent / "plugins" / "example_door"
PACKAGE = "gatewayd_example_door"
DRIVER = "example_door"
#: The rigs the plugin registers: one per transport.
RIG_NAMES = ("example_door", "example_door_udp")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package, pip-installed (offline, no build isolation) into a folder."""
    work = tmp_path_factory.mktemp("plugin")
    # pip builds in the source folder (build/, *.egg-info): build a copy, keep tests/ clean.
    source = shutil.copytree(
        PLUGIN_SOURCE,
        work / "source",
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    target = work / "site-packages"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout}\n{proc.stderr}"
    return target


@pytest.fixture
def plugin(installed: Path) -> Iterator[Path]:
    """The installed plugin on ``sys.path`` for one test, gone again afterwards."""
    sys.path.insert(0, str(installed))
    registry.refresh()
    try:
        yield installed
    finally:
        sys.path.remove(str(installed))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]
        registry.refresh()


def campus(url: str, *, strikes: Any = 4, lock: str = "strike:2") -> dict[str, Any]:
    """A campus file (parsed TOML) with a relay board and a strike controller from the plugin."""
    return {
        "site": {"id": "plugin-high", "name": "Plugin High"},
        "buildings": [{"id": "A", "name": "Main"}],
        "devices": [
            {"id": "relay-a", "driver": "modbus_relay", "host": "127.0.0.1", "coils": 4},
            {
                "id": "front-strikes",
                "driver": DRIVER,
                "url": url,
                "strikes": strikes,
                "poll_interval_ms": 50,
                "timeout_ms": 200,
            },
        ],
        "doors": [
            {
                "id": "A-101",
                "room": "101",
                "building": "A",
                "kind": "classroom",
                "lock": {"device": "relay-a", "point": "coil:0"},
            },
            {
                "id": "front",
                "room": "Front entrance",
                "building": "A",
                "kind": "exterior",
                "lock": {"device": "front-strikes", "point": lock},
            },
        ],
    }


def test_pip_installed_plugin_is_a_registered_driver(plugin: Path) -> None:
    assert available()[DRIVER] == f"{PACKAGE}:DoorStrikeDriver"
    cls = load_driver(DRIVER)
    assert cls.__module__ == f"{PACKAGE}.driver"
    assert Path(sys.modules[cls.__module__].__file__ or "").is_relative_to(plugin)


def test_plugin_execute_takes_exactly_the_commands_it_declares(plugin: Path) -> None:
    contract.test_execute_takes_exactly_the_commands_the_driver_declares(DRIVER)


def test_campus_naming_the_plugin_driver_is_validated_by_its_model(plugin: Path) -> None:
    config = parse_config(campus("udp://127.0.0.1:4700"))
    device = config.device("front-strikes")
    assert type(device) is load_driver(DRIVER).config_model
    assert device.model_dump()["url"] == "udp://127.0.0.1:4700"


def test_bad_plugin_settings_are_reported_by_path_from_the_plugin_model(plugin: Path) -> None:
    raw = campus("http://127.0.0.1:4700", strikes=0)
    raw["devices"][1]["strikez"] = 8
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, source="campus.toml")
    problems = "\n".join(caught.value.problems)
    assert "devices[1](front-strikes).url: String should match pattern" in problems
    assert (
        "devices[1](front-strikes).strikes: Input should be greater than or equal to 1" in problems
    )
    assert "devices[1](front-strikes).strikez: unknown field" in problems
    assert str(caught.value).startswith("campus.toml: invalid configuration")


def test_a_point_beyond_the_plugin_device_is_reported_by_its_check_points(plugin: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(campus("tcp://127.0.0.1:4700", lock="strike:7"))
    assert caught.value.problems == [
        "doors[1](front).lock.point: strike:7 is beyond the controller's 4 strikes"
        " (strike:0 .. strike:3)"
    ]


def test_plugin_rigs_join_the_contract_suite(plugin: Path) -> None:
    rigs = all_rigs()
    assert set(RIG_NAMES) <= set(rigs)
    assert {rigs[name]().driver for name in RIG_NAMES} == {DRIVER}
    # The suite's own rule still holds with the plugin installed: every driver has a rig.
    assert set(available()) <= set(rigs)


@pytest.mark.parametrize("rig_name", RIG_NAMES)
async def test_a_door_on_the_plugin_device_locks_and_releases_with_confirmation(
    plugin: Path, rig_name: str
) -> None:
    rig = all_rigs()[rig_name]()
    sim_config, _ = await rig.start()
    try:
        config = parse_config(campus(sim_config.model_dump()["url"]))
        site = Campus(config)
        plugin_devices = [d for d in config.devices if d.driver == DRIVER]
        doors: DoorService | None = None

        def emit(event: DriverEvent) -> None:
            assert doors is not None
            if isinstance(event, PointChanged):
                doors.on_point(event)
            elif isinstance(event, DeviceHealth):
                doors.on_health(event)

        drivers = {
            d.id: load_driver(d.driver)(d, frozenset(site.points[d.id]), emit)
            for d in plugin_devices
        }
        doors = DoorService(site, drivers)
        front = doors.doors["front"]
        async with Supervisor(drivers, emit):
            await eventually(lambda: front.device_online and front.locked is False)
            report = await doors.actuate(
                {"front": Target(True, "lockdown (building/A)", 5)}, trigger_ns=now_ns()
            )
            assert report.confirmed == ["front"] and not report.failed
            assert front.locked is True and front.confirmed
            assert rig.saw_on_wire(WritePoints((PointWrite("strike:2", True),)))

            report = await doors.actuate({"front": Target(False, "normal")}, trigger_ns=now_ns())
            assert report.confirmed == ["front"]
            assert rig.saw_on_wire(WritePoints((PointWrite("strike:2", False),)))
            assert drivers["front-strikes"].statistics()["commands"] == 2
        assert drivers["front-strikes"].health is Health.OFFLINE
    finally:
        await rig.stop()


CONTRACT_STEPS: list[Callable[[contract.Harness], Awaitable[None]]] = [
    contract.test_start_signals_started_and_goes_online,
    contract.test_stop_twice_is_harmless_and_leaves_no_task,
    contract.test_command_is_carried_out_on_the_wire,
    contract.test_vanished_device_is_offline_within_5_s_and_back_when_it_returns,
    contract.test_garbage_from_the_device_is_a_fault_and_changes_no_state,
]


@pytest.mark.parametrize("step", CONTRACT_STEPS, ids=lambda f: f.__name__.removeprefix("test_"))
@pytest.mark.parametrize("rig_name", RIG_NAMES)
async def test_plugin_driver_passes_the_contract_suite(
    plugin: Path, rig_name: str, step: Callable[[contract.Harness], Awaitable[None]]
) -> None:
    """The suite's own steps, on a rig that only the installed package knows."""
    rig = all_rigs()[rig_name]()
    config, points = await rig.start()
    harness = contract.Harness(lambda emit: load_driver(rig.driver)(config, points, emit), rig)
    try:
        await step(harness)
    finally:
        await harness.stop()
        await rig.stop()


def test_the_plugin_is_invisible_outside_the_tests_that_install_it() -> None:
    assert DRIVER not in available()
    assert not set(RIG_NAMES) & set(all_rigs())
    assert importlib.util.find_spec(PACKAGE) is None
    with pytest.raises(DriverNotFound):
        load_driver(DRIVER)
