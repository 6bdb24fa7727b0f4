"""Every simulated device of a campus config, each listening where the config says (or anywhere).

Relay boards (Modbus TCP), BACnet controllers, ONVIF cameras, the PSAP radio and OSDP card
readers are started
from the devices a campus file declares, sized from it; :meth:`CampusSim.config` returns the
campus pointed at where they actually listen.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import structlog

from gatewayd.drivers.modbus_relay.config import ModbusRelayConfig
from gatewayd.kernel.driver import DriverConfig
from gatewayd.kernel.site import Site
from gatewayd.simulators.base import Simulator
from gatewayd.simulators.doors import DoorControls
from gatewayd.simulators.relay_board import RelayBoardSim

log = structlog.get_logger("simulators.campus")

#: Any simulated device, whatever its log records.
Simulated = Simulator[Any, Any]


def relay_devices(config: Site) -> list[ModbusRelayConfig]:
    """The campus's Modbus relay boards, in config order."""
    return [dev for dev in config.devices if isinstance(dev, ModbusRelayConfig)]


def _endpoint(dev: DriverConfig, port: int, host: str | None) -> dict[str, Any]:
    """The config fields that say where a device listens, pointed at ``host:port``."""
    # A device's config module is loaded already (the registry validated it): cheap imports.
    from gatewayd.drivers.bacnet.config import BacnetConfig
    from gatewayd.drivers.osdp_reader.config import OsdpReaderConfig
    from gatewayd.drivers.psap_radio.config import PsapRadioConfig

    if isinstance(dev, BacnetConfig):
        return {"address": f"{host or dev.address.rsplit(':', 1)[0]}:{port}"}
    if isinstance(dev, PsapRadioConfig | OsdpReaderConfig):
        return {"url": f"socket://{host or '127.0.0.1'}:{port}"}
    return {"port": port, **({"host": host} if host else {})}


S = TypeVar("S", bound=Site)


def with_ports(config: S, ports: Mapping[str, int], host: str | None = None) -> S:
    """A copy of ``config`` whose listed devices point at ``ports`` (and ``host``, if given)."""
    devices = {dev.id: dev for dev in config.devices}
    unknown = set(ports) - set(devices)
    if unknown:
        raise KeyError(f"not devices of this campus: {', '.join(sorted(unknown))}")
    moved = tuple(
        dev.model_copy(update=_endpoint(dev, ports[dev.id], host)) if dev.id in ports else dev
        for dev in config.devices
    )
    return config.model_copy(update={"devices": moved})


def _doors_on(config: Site, device: str) -> int:
    return sum(1 for door in config.doors if door.lock.device == device)


def _air_units_on(config: Site, device: str) -> int:
    """Air handlers the controller must model: enough for the highest instance used."""
    from gatewayd.simulators.bacnet_air import AIR_BASE

    instances = [
        int(ref.point.rsplit(":", 1)[-1].rsplit(",", 1)[-1])
        for unit in config.air_handlers
        for ref in (unit.fan, unit.fan_status, unit.damper, unit.damper_status)
        if ref is not None and ref.device == device
    ]
    return max(((i - AIR_BASE) // 2 + 1 for i in instances if i >= AIR_BASE), default=0)


class CampusSim(Generic[S]):
    """One simulator per device of a campus config, sized from it."""

    def __init__(
        self,
        config: S,
        *,
        free_ports: bool = False,
        host: str | None = None,
        actuation_ms: float = 5.0,
    ) -> None:
        self._config = config
        self._host = host
        self._actuation_ms = actuation_ms
        self._free = free_ports
        #: Simulated relay boards by device id.
        self.boards: dict[str, RelayBoardSim] = {}
        #: Every simulator by device id (boards included).
        self.devices: dict[str, Simulated] = {}
        #: Every door controller (relay boards and BACnet controllers) by device id.
        self.controllers: dict[str, DoorControls] = {}
        for dev in config.devices:
            sim = self._make(dev)
            if sim is not None:
                self.devices[dev.id] = sim
                if isinstance(sim, DoorControls):
                    self.controllers[dev.id] = sim

    @property
    def site(self) -> S:
        """The campus config as given (ports as configured)."""
        return self._config

    def _port(self, configured: int) -> int:
        return 0 if self._free else configured

    def _make(self, dev: DriverConfig) -> Simulated | None:
        host = self._host or str(getattr(dev, "host", "127.0.0.1"))
        if isinstance(dev, ModbusRelayConfig):
            if dev.inputs < 2 * dev.coils:
                log.warning(
                    "board_has_fewer_inputs_than_doors",
                    device=dev.id,
                    coils=dev.coils,
                    inputs=dev.inputs,
                )
            board = RelayBoardSim(
                dev.coils,
                extra_inputs=max(0, dev.inputs - 2 * dev.coils),
                host=host,
                port=self._port(dev.port),
                actuation_ms=self._actuation_ms,
                name=dev.id,
            )
            self.boards[dev.id] = board
            return board
        # Imported only when a campus has such devices: each pulls in its protocol library.
        match dev.driver:
            case "bacnet":
                return self._bacnet(dev)
            case "onvif_camera":
                return self._camera(dev, host)
            case "psap_radio":
                return self._radio(dev)
            case "osdp_reader":
                return self._reader(dev)
            case _:
                log.warning("no_simulator", device=dev.id, driver=dev.driver)
                return None

    def _bacnet(self, dev: DriverConfig) -> Simulated:
        from gatewayd.drivers.bacnet.config import BacnetConfig
        from gatewayd.simulators.bacnet_device import BacnetDeviceSim

        assert isinstance(dev, BacnetConfig)
        host, _, port = dev.address.rpartition(":")
        return BacnetDeviceSim(
            max(1, _doors_on(self._config, dev.id)),
            air_units=_air_units_on(self._config, dev.id),
            host=self._host or host,
            port=self._port(int(port)),
            device_instance=dev.device_instance,
            actuation_ms=self._actuation_ms,
            name=dev.id,
        )

    def _camera(self, dev: DriverConfig, host: str) -> Simulated:
        from gatewayd.drivers.onvif_camera.config import OnvifCameraConfig
        from gatewayd.simulators.onvif_camera import OnvifCameraSim

        assert isinstance(dev, OnvifCameraConfig)
        return OnvifCameraSim(
            dev.id,
            username=dev.username,
            password=dev.password.get_secret_value(),
            host=host,
            port=self._port(dev.port),
        )

    def _radio(self, dev: DriverConfig) -> Simulated:
        from gatewayd.drivers.psap_radio.config import PsapRadioConfig
        from gatewayd.simulators.psap_radio import PsapRadioSim

        assert isinstance(dev, PsapRadioConfig)
        port = int(dev.url.rsplit(":", 1)[1]) if dev.url.startswith("socket://") else 0
        return PsapRadioSim("tcp", port=self._port(port), name=dev.id)

    def _reader(self, dev: DriverConfig) -> Simulated:
        from gatewayd.drivers.osdp_reader.config import OsdpReaderConfig
        from gatewayd.simulators.osdp_reader import OsdpReaderSim

        assert isinstance(dev, OsdpReaderConfig)
        port = int(dev.url.rsplit(":", 1)[1]) if dev.url.startswith("socket://") else 0
        door = next((d.id for d in self._config.doors if dev.id in d.readers), "")
        # Paired already: the simulated reader holds the key the campus gives it.
        return OsdpReaderSim("tcp", scbk=dev.key, address=dev.address, door=door,
                             port=self._port(port), name=dev.id)  # fmt: skip

    @property
    def ports(self) -> dict[str, int]:
        """Device id -> bound port."""
        return {dev_id: sim.port for dev_id, sim in self.devices.items()}

    def config(self) -> S:
        """The campus config pointed at the running simulators (their actual ports)."""
        return with_ports(self._config, self.ports, self._host)

    async def start(self) -> dict[str, int]:
        """Start every simulator; if one cannot bind, stop the others and raise."""
        try:
            # One at a time: binding is quick, and a bind error stays a plain OSError.
            for sim in self.devices.values():
                await sim.start()
        except BaseException:
            await self.stop()
            raise
        log.info("campus_listening", devices=len(self.devices), boards=len(self.boards))
        return self.ports

    async def stop(self) -> None:
        """Stop every simulator; safe to call twice."""
        for sim in self.devices.values():
            await sim.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
