"""Settings of one strike controller, validated when the campus file loads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gatewayd.kernel.driver import DriverConfig


class DoorStrikeConfig(DriverConfig):
    """A controller with ``strikes`` electric strikes (``strike:0`` .. ``strike:N-1``)."""

    driver: Literal["example_door"]
    #: ``tcp://host:port`` or ``udp://host:port`` of the controller (or of its simulator).
    url: str = Field(pattern=r"^(tcp|udp)://[^/:\s]+:\d{1,5}$")
    strikes: int = Field(default=4, ge=1, le=64)
    poll_interval_ms: int = Field(default=250, ge=10, le=60_000)
    #: Deadline of one request, from send to decoded reply; also bounds a TCP connect.
    timeout_ms: int = Field(default=500, ge=10, le=10_000)
    #: Consecutive failed requests before the controller is reported offline.
    offline_after_failures: int = Field(default=2, ge=1, le=10)
