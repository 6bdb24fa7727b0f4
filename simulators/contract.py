"""Rigs: a driver paired with its simulator, as the driver contract suite drives them.

Every built-in driver registers a rig here; a third-party package registers one under the
entry-point group ``gatewayd.rigs`` (``name = "package.module:RigClass"``) and the contract
suite (``tests/test_driver_contract.py``) runs against it with no change to the core.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Protocol

from gatewayd.kernel.driver import DriverConfig
from gatewayd.kernel.events import DeviceCommand, PointWrite, WritePoints
from gatewayd.simulators.onvif_rig import OnvifCameraRig
from gatewayd.simulators.osdp_reader import OsdpReaderRig
from gatewayd.simulators.psap_radio import PsapRadioRig

RIG_GROUP = "gatewayd.rigs"


class Rig(Protocol):
    """One simulated device and the config that points a driver at it."""

    #: Registered driver name.
    driver: str

    async def start(self) -> tuple[DriverConfig, frozenset[str]]:
        """Start the simulator; return the device config and the points to watch."""

    async def stop(self) -> None: ...

    def wire_command(self) -> DeviceCommand:
        """A command whose effect the simulator can observe."""

    def saw_on_wire(self, command: DeviceCommand) -> bool:
        """True once the simulator has carried out ``command``."""

    async def vanish(self) -> None:
        """Stop answering and listening, as a device that lost power."""

    async def reappear(self) -> None: ...

    def garble(self, on: bool) -> None:
        """Answer every request with garbage (or stop doing so)."""


class ModbusRelayRig:
    """A 4-door relay board."""

    driver = "modbus_relay"

    def __init__(self) -> None:
        from gatewayd.simulators.relay_board import RelayBoardSim

        self.sim = RelayBoardSim(4, extra_inputs=2, actuation_ms=1, name="rig")

    async def start(self) -> tuple[DriverConfig, frozenset[str]]:
        from gatewayd.drivers.modbus_relay.config import ModbusRelayConfig

        await self.sim.start()
        config = ModbusRelayConfig(
            id="rig-relay",
            driver="modbus_relay",
            host="127.0.0.1",
            port=self.sim.port,
            coils=4,
            inputs=10,
            poll_interval_ms=50,
            timeout_ms=200,
            reconnect_min_ms=50,
            reconnect_max_ms=500,
        )
        points = frozenset({"coil:0", "coil:1", "input:0", "input:4", "input:8"})
        return config, points

    async def stop(self) -> None:
        await self.sim.stop()

    def wire_command(self) -> DeviceCommand:
        return WritePoints((PointWrite("coil:1", True), PointWrite("coil:0", True)))

    def saw_on_wire(self, command: DeviceCommand) -> bool:
        assert isinstance(command, WritePoints)
        return all(self.sim.coil(int(w.point.split(":")[1])) is w.value for w in command.writes)

    async def vanish(self) -> None:
        await self.sim.vanish()

    async def reappear(self) -> None:
        await self.sim.reappear()

    def garble(self, on: bool) -> None:
        self.sim.faults.corrupt = 1.0 if on else 0.0


class BacnetRig:
    """A 4-door BACnet/IP controller with COV on its inputs; ``personality`` takes services
    away as small controllers do (see :class:`BacnetDeviceSim`: ``rpm``, ``cov``,
    ``max_apdu``, ``segmentation``)."""

    driver = "bacnet"

    def __init__(self, **personality: Any) -> None:
        from gatewayd.simulators.bacnet_device import BacnetDeviceSim

        self.sim = BacnetDeviceSim(4, actuation_ms=1, name="rig", **personality)

    async def start(self) -> tuple[DriverConfig, frozenset[str]]:
        from gatewayd.drivers.bacnet.config import BacnetConfig

        await self.sim.start()
        config = BacnetConfig(
            id="rig-bacnet",
            driver="bacnet",
            address=self.sim.address,
            device_instance=self.sim.device_instance,
            local_address="127.0.0.1:0",
            poll_interval_ms=50,
            timeout_ms=200,
            reconnect_min_ms=50,
            reconnect_max_ms=500,
        )
        points = frozenset(
            {
                "binary-output:0",
                "binary-output:1",
                "binary-input:0",
                "binary-input:4",
                "binary-input:5",
            }
        )
        return config, points

    async def stop(self) -> None:
        await self.sim.stop()

    def wire_command(self) -> DeviceCommand:
        return WritePoints(
            (PointWrite("binary-output:1", True, 5), PointWrite("binary-output:0", True, 5))
        )

    def saw_on_wire(self, command: DeviceCommand) -> bool:
        assert isinstance(command, WritePoints)
        return all(self.sim.locked(int(w.point.split(":")[1])) is w.value for w in command.writes)

    async def vanish(self) -> None:
        await self.sim.vanish()

    async def reappear(self) -> None:
        await self.sim.reappear()

    def garble(self, on: bool) -> None:
        self.sim.faults.corrupt = 1.0 if on else 0.0


#: Built-in rigs by driver name.
RIGS: dict[str, Callable[[], Rig]] = {
    "bacnet": BacnetRig,
    # Small controllers: each personality is the whole contract again.
    "bacnet-no-rpm": partial(BacnetRig, rpm=False),
    "bacnet-no-cov": partial(BacnetRig, cov=False),
    "bacnet-small-apdu": partial(BacnetRig, max_apdu=128, segmentation=False),
    # Everything taken away: the object list (13 objects) no longer fits in one reply.
    "bacnet-bare": partial(BacnetRig, rpm=False, cov=False, max_apdu=50, segmentation=False),
    "modbus_relay": ModbusRelayRig,
    "onvif_camera": OnvifCameraRig,
    "osdp_reader": OsdpReaderRig,
    "psap_radio": PsapRadioRig,
}


def all_rigs() -> dict[str, Callable[[], Rig]]:
    """Built-in rigs plus those registered by installed packages."""
    found = dict(RIGS)
    for ep in entry_points(group=RIG_GROUP):
        module, _, attr = ep.value.partition(":")
        found[ep.name] = getattr(import_module(module), attr)
    return found
