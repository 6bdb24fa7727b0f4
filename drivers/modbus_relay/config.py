"""Settings of one Modbus TCP lock relay board, validated when the campus file loads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gatewayd.kernel.driver import DriverConfig, ReconnectConfig, ReconnectMinMs

#: Protocol limits: FC15 writes at most 1968 coils, FC1/FC2 read at most 2000 bits.
MAX_COILS = 1968
MAX_INPUTS = 2000


class ModbusRelayConfig(ReconnectConfig, DriverConfig):
    """A relay board: ``coils`` lock outputs and ``inputs`` discrete inputs."""

    driver: Literal["modbus_relay"]
    #: Host name or IP address of the board (or of its simulator).
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=502, ge=1, le=65535)
    #: Modbus device id (unit id); most TCP boards ignore it, gateways to RS-485 do not.
    unit: int = Field(default=1, ge=0, le=255)
    #: Number of coils on the board (coil:0 .. coil:coils-1).
    coils: int = Field(ge=1, le=MAX_COILS)
    #: Number of discrete inputs on the board (input:0 .. input:inputs-1).
    inputs: int = Field(default=0, ge=0, le=MAX_INPUTS)
    poll_interval_ms: int = Field(default=250, ge=10, le=60_000)
    #: On a board whose inputs are watched, each poll is one read of the inputs; the coils
    #: are read at this slower safety interval, and in the first poll after a write: a coil
    #: changed behind the gateway's back shows within it. Equal to ``poll_interval_ms`` (or
    #: lower): coils every poll, two requests each. A board with no watched inputs reads its
    #: coils every poll whatever this says (docs/drivers/modbus-relay.md).
    coil_poll_interval_ms: int = Field(default=1000, ge=10, le=600_000)
    #: Deadline of one request, from send to decoded reply; also bounds a connect attempt.
    timeout_ms: int = Field(default=500, ge=10, le=10_000)
    #: Consecutive failed transactions before the board is reported offline.
    offline_after_failures: int = Field(default=2, ge=1, le=10)
    #: A board on the local network answers at once: try again sooner than the default.
    reconnect_min_ms: ReconnectMinMs = 100
