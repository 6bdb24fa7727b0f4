"""Every relay board of a campus config, each listening where the config says (or anywhere)."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Self

import structlog

from drivers.modbus_relay.config import ModbusRelayConfig
from gatewayd.config import Config
from simulators.relay_board import RelayBoardSim

log = structlog.get_logger("simulators.campus")


def relay_devices(config: Config) -> list[ModbusRelayConfig]:
    """The campus's Modbus relay boards, in config order."""
    return [dev for dev in config.devices if isinstance(dev, ModbusRelayConfig)]


def with_ports(config: Config, ports: Mapping[str, int], host: str | None = None) -> Config:
    """A copy of ``config`` whose listed devices point at ``ports`` (and ``host``, if given)."""
    unknown = set(ports) - {dev.id for dev in relay_devices(config)}
    if unknown:
        raise KeyError(f"not relay boards of this campus: {', '.join(sorted(unknown))}")
    devices = []
    for dev in config.devices:
        if dev.id in ports:
            update: dict[str, object] = {"port": ports[dev.id]}
            if host is not None:
                update["host"] = host
            devices.append(dev.model_copy(update=update))
        else:
            devices.append(dev)
    return config.model_copy(update={"devices": tuple(devices)})


class CampusSim:
    """One :class:`RelayBoardSim` per ``modbus_relay`` device, sized from its config."""

    def __init__(
        self,
        config: Config,
        *,
        free_ports: bool = False,
        host: str | None = None,
        actuation_ms: float = 5.0,
    ) -> None:
        self._config = config
        self._host = host
        #: Simulated boards by device id.
        self.boards: dict[str, RelayBoardSim] = {}
        for dev in relay_devices(config):
            if dev.inputs < 2 * dev.coils:
                # The simulated board always has position + sense inputs for every door.
                log.warning("board_has_fewer_inputs_than_doors", device=dev.id,
                            coils=dev.coils, inputs=dev.inputs)
            self.boards[dev.id] = RelayBoardSim(
                dev.coils,
                extra_inputs=max(0, dev.inputs - 2 * dev.coils),
                host=host or dev.host,
                port=0 if free_ports else dev.port,
                actuation_ms=actuation_ms,
                name=dev.id,
            )

    @property
    def ports(self) -> dict[str, int]:
        """Device id -> bound port."""
        return {dev_id: board.port for dev_id, board in self.boards.items()}

    def config(self) -> Config:
        """The campus config pointed at the running boards (their actual ports)."""
        return with_ports(self._config, self.ports, self._host)

    async def start(self) -> dict[str, int]:
        """Start every board; if one cannot bind, stop the others and raise."""
        try:
            # One at a time: binding is quick, and a bind error stays a plain OSError.
            for board in self.boards.values():
                await board.start()
        except BaseException:
            await self.stop()
            raise
        log.info("campus_listening", boards=len(self.boards))
        return self.ports

    async def stop(self) -> None:
        """Stop every board; safe to call twice."""
        for board in self.boards.values():
            await board.stop()

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
