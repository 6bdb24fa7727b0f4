"""Settings of the PSAP-linked radio interface, validated when the campus file loads."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from gatewayd.drivers.psap_radio.frames import MAX_SITE, check_text
from gatewayd.kernel.driver import DriverConfig, ReconnectConfig
from gatewayd.kernel.serialurl import check_serial_url

#: pyserial URL handlers that make sense for a radio line (``serial_for_url``).
URL_SCHEMES = frozenset({"socket", "rfc2217", "loop", "spy", "alt", "hwgrep"})


class PsapRadioConfig(ReconnectConfig, DriverConfig):
    """The serial line to the radio interface that links the school to its 911 centre."""

    driver: Literal["psap_radio"]
    #: A device path (``/dev/ttyUSB0``), a pty path, or a pyserial URL (``socket://h:p``).
    url: str = Field(min_length=1, max_length=255)
    #: Line speed; a pty or a socket ignores it.
    baudrate: int = Field(default=9600, ge=300, le=921_600)
    #: Deadline for the radio's ACK or NAK of one frame.
    ack_timeout_ms: int = Field(default=1000, ge=10, le=30_000)
    #: Transmissions of one frame, same sequence number, before giving up.
    max_attempts: int = Field(default=5, ge=1, le=20)
    #: Pause before sending again after a NAK (the radio said busy or refused).
    nak_backoff_ms: int = Field(default=100, ge=0, le=10_000)
    #: Heartbeat period; each heartbeat expects an ACK within ``ack_timeout_ms``.
    heartbeat_s: float = Field(default=10.0, ge=0.05, le=3600)
    #: Consecutive missed heartbeats before the radio is offline (one miss: degraded).
    offline_after_misses: int = Field(default=3, ge=1, le=10)
    #: If false, a drill puts nothing on the air: the link is checked with a heartbeat only.
    allow_test_traffic: bool = False
    #: Who is calling, as the dispatcher should read it (the school's name).
    site_label: str = Field(min_length=1, max_length=MAX_SITE)

    @field_validator("url")
    @classmethod
    def _known_url(cls, url: str) -> str:
        return check_serial_url(url, URL_SCHEMES)

    @field_validator("site_label")
    @classmethod
    def _wire_safe_site(cls, site: str) -> str:
        problem = check_text(site, MAX_SITE, what="site_label", empty_ok=False, commas=False)
        if problem:
            raise ValueError(problem)
        return site

    @model_validator(mode="after")
    def _timings_consistent(self) -> Self:
        if self.ack_timeout_ms >= self.heartbeat_s * 1000:
            raise ValueError(
                f"ack_timeout_ms ({self.ack_timeout_ms}) must be shorter than heartbeat_s"
                f" ({self.heartbeat_s}) so heartbeats do not overlap"
            )
        return self
