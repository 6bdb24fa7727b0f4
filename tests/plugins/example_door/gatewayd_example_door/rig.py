"""Rigs for gatewayd's driver contract suite, registered under the ``gatewayd.rigs`` group."""

from __future__ import annotations

from gatewayd.kernel.driver import DriverConfig
from gatewayd.kernel.events import DeviceCommand, PointWrite, WritePoints
from gatewayd_example_door.config import DoorStrikeConfig
from gatewayd_example_door.protocol import strike
from gatewayd_example_door.sim import DoorStrikeSim, Transport


class DoorStrikeTcpRig:
    """A 4-strike controller over TCP, polled fast so faults show within the suite's limits."""

    driver = "example_door"
    transport: Transport = "tcp"

    def __init__(self) -> None:
        self.sim = DoorStrikeSim(4, self.transport)

    async def start(self) -> tuple[DriverConfig, frozenset[str]]:
        await self.sim.start()
        config = DoorStrikeConfig(
            id=f"rig-strikes-{self.transport}",
            driver="example_door",
            url=self.sim.url,
            strikes=4,
            poll_interval_ms=50,
            timeout_ms=200,
        )
        return config, frozenset({"strike:0", "strike:1", "strike:3"})

    async def stop(self) -> None:
        await self.sim.stop()

    def wire_command(self) -> DeviceCommand:
        return WritePoints((PointWrite("strike:1", True), PointWrite("strike:3", True)))

    def saw_on_wire(self, command: DeviceCommand) -> bool:
        assert isinstance(command, WritePoints)
        return all(self.sim.locked[strike(w.point)] is w.value for w in command.writes)

    async def vanish(self) -> None:
        await self.sim.vanish()

    async def reappear(self) -> None:
        await self.sim.reappear()

    def garble(self, on: bool) -> None:
        self.sim.faults.corrupt = 1.0 if on else 0.0


class DoorStrikeUdpRig(DoorStrikeTcpRig):
    """The same controller over UDP: no connection, so offline means unanswered requests."""

    transport: Transport = "udp"
