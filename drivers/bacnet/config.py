"""Settings of one BACnet/IP door controller, validated when the campus file loads."""

from __future__ import annotations

import ipaddress
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from gatewayd.kernel.driver import DriverConfig, ReconnectConfig

#: Highest device instance a device may have (4194303 is the Who-Is wildcard).
MAX_INSTANCE = 4_194_302


def check_host_port(value: str, *, lowest_port: int = 1) -> str:
    """``a.b.c.d:port`` (an IPv4 address and a UDP port), as BACnet/IP addresses are written."""
    host, sep, port = value.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not lowest_port <= number <= 65535:
        raise ValueError(f"{value!r}: expected 'a.b.c.d:port' (IPv4 address and UDP port)")
    return value


class BacnetConfig(ReconnectConfig, DriverConfig):
    """A BACnet/IP controller: binary outputs drive locks, binary inputs report the doors."""

    driver: Literal["bacnet"]
    #: The controller's BACnet/IP address, ``ip:port``.
    address: str
    #: The controller's device object instance (checked against the device at start-up).
    device_instance: int = Field(ge=0, le=MAX_INSTANCE)
    #: The gateway's own BACnet/IP bind. Every device with the same ``local_address`` shares
    #: one bacpypes3 application (one socket); see ``drivers/bacnet/transport.py``.
    local_address: str = "0.0.0.0:47808"
    #: Device instance of the gateway's own BACnet device (the first device to open a
    #: ``local_address`` decides; the others must agree).
    local_device_instance: int = Field(default=4_194_301, ge=0, le=MAX_INSTANCE)
    #: Polling period while COV is not in force (no subscription, or the device refused).
    poll_interval_ms: int = Field(default=500, ge=10, le=60_000)
    #: Polling period of the safety-net poll while every watched point has a COV subscription.
    cov_poll_interval_ms: int = Field(default=5_000, ge=10, le=600_000)
    #: Deadline of one confirmed request, from send to decoded reply.
    timeout_ms: int = Field(default=1_000, ge=10, le=30_000)
    #: Times a write that got no reply within ``timeout_ms`` is sent again (BACnet's
    #: Number_Of_APDU_Retries). A priority-slot write is idempotent and a lost UDP datagram
    #: must not leave a door unlocked in a lockdown. Reads are not retried: the next poll is.
    write_retries: int = Field(default=1, ge=0, le=5)
    #: Subscribe to change-of-value on watched points where the device supports it.
    cov: bool = True
    #: Lifetime asked for each subscription; renewed at half of it.
    cov_lifetime_s: int = Field(default=300, ge=2, le=86_400)
    #: Consecutive failed transactions before the device is reported offline.
    offline_after_failures: int = Field(default=2, ge=1, le=10)
    #: Priorities this gateway owns on the controller. After a restart the driver adopts a
    #: slot it finds set only if it is listed here; reserve them for the gateway on site.
    gateway_priorities: frozenset[int] = frozenset({1, 5, 10, 12, 16})
    #: Requests one device may have in flight at once (BACnet invoke ids allow 256).
    max_in_flight: int = Field(default=32, ge=1, le=200)
    #: Objects per ReadPropertyMultiple request (keeps replies under one unsegmented APDU).
    objects_per_read: int = Field(default=40, ge=1, le=100)

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return check_host_port(value)

    @field_validator("local_address")
    @classmethod
    def _local_host_port(cls, value: str) -> str:
        # Port 0 binds a free port (tests, or a gateway that only ever initiates).
        return check_host_port(value, lowest_port=0)

    @field_validator("gateway_priorities")
    @classmethod
    def _priorities(cls, value: frozenset[int]) -> frozenset[int]:
        bad = sorted(p for p in value if not 1 <= p <= 16)
        if bad:
            raise ValueError(f"priorities must be 1..16, got {bad}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.address == self.local_address:
            raise ValueError("address and local_address must differ")
        return self
