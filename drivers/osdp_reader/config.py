"""Settings of one OSDP reader on its own serial line, validated when the campus file loads."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from gatewayd.kernel.driver import DriverConfig, ReconnectConfig, ReconnectMinMs
from gatewayd.kernel.serialurl import check_serial_url

#: pyserial URL handlers that make sense for an RS-485 line (``serial_for_url``).
URL_SCHEMES = frozenset({"socket", "rfc2217", "loop"})
#: The secure channel base key is 16 bytes, written as 32 hex digits.
SCBK_HEX_DIGITS = 32


class OsdpReaderConfig(ReconnectConfig, DriverConfig):
    """One OSDP reader (a peripheral device) polled by the gateway (the control panel)."""

    driver: Literal["osdp_reader"]
    #: A device path (``/dev/ttyUSB0``), a pty path, or a pyserial URL (``socket://h:p``).
    url: str = Field(min_length=1, max_length=255)
    #: Line speed; a pty or a socket ignores it.
    baudrate: Literal[9600, 19200, 38400, 57600, 115200, 230400] = 9600
    #: The reader's OSDP address on the line (0..126; 127 is the broadcast address).
    address: int = Field(default=0, ge=0, le=126)
    #: Secure channel base key of this reader, 32 hex digits; unique per reader.
    scbk: SecretStr
    #: Pairing a new reader that still has the default key (SCBK-D): the gateway hands it
    #: ``scbk`` over the default-key channel. Turn it off once paired: while it is on, a reader
    #: that refuses the secure channel is polled in the clear.
    install_mode: bool = False
    #: How often the libosdp thread runs the protocol; the reader is polled every 50 ms.
    refresh_ms: int = Field(default=5, ge=1, le=50)
    #: How long the first connection may take (capabilities, secure channel handshake).
    online_timeout_ms: int = Field(default=3000, ge=200, le=30_000)
    #: Deadline for the reader to acknowledge an LED or buzzer command.
    command_timeout_ms: int = Field(default=1000, ge=50, le=10_000)
    #: Keys typed without the terminating ``#`` are forgotten after this long.
    keypad_timeout_ms: int = Field(default=5000, ge=500, le=60_000)
    #: Most digits a PIN may have; more is a typing error, dropped.
    pin_max_digits: int = Field(default=8, ge=4, le=16)
    reconnect_min_ms: ReconnectMinMs = 250

    @field_validator("url")
    @classmethod
    def _known_url(cls, url: str) -> str:
        return check_serial_url(url, URL_SCHEMES)

    @field_validator("scbk")
    @classmethod
    def _scbk_hex(cls, scbk: SecretStr) -> SecretStr:
        text = scbk.get_secret_value()
        if len(text) != SCBK_HEX_DIGITS:
            raise ValueError(f"scbk must be {SCBK_HEX_DIGITS} hex digits (16 bytes), got"
                             f" {len(text)} characters")  # fmt: skip
        try:
            key = bytes.fromhex(text)
        except ValueError as exc:
            raise ValueError("scbk must be hex digits 0-9, a-f") from exc
        if key == DEFAULT_SCBK:
            raise ValueError("scbk is the OSDP default key SCBK-D (30 31 .. 3F): give the"
                             " reader its own key (install_mode pairs it)")  # fmt: skip
        return scbk

    @model_validator(mode="after")
    def _timings(self) -> Self:
        if self.keypad_timeout_ms <= self.refresh_ms:
            raise ValueError("keypad_timeout_ms must be longer than refresh_ms")
        return self

    @property
    def key(self) -> bytes:
        """The secure channel base key as bytes."""
        return bytes.fromhex(self.scbk.get_secret_value())


#: SCBK-D, the default key the OSDP standard gives every reader for pairing (install mode).
DEFAULT_SCBK = bytes(range(0x30, 0x40))
