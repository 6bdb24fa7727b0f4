"""One Modbus TCP connection to a board: deadlines, reply checks and our own error types.

pymodbus is used with its own retries and reconnects turned off: the driver decides when to
retry, when a board is offline and when to reconnect, and every request runs under
``asyncio.timeout``. Library exceptions never leave this module.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from gatewayd.kernel.errors import (
    BadDeviceReply,
    DeviceError,
    DeviceOffline,
    DeviceTimeout,
    ErrorCode,
)

READ_COILS = 1
READ_INPUTS = 2
WRITE_COILS = 15

Request = Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]]

_UNIT = "check the board's `unit` (its Modbus device id, {unit} now)"
_ADDRESSES = "check the point addresses and the board's `coils` and `inputs` counts"
#: Modbus exception codes: name, and what to check.
EXCEPTIONS: dict[int, tuple[str, str]] = {
    1: ("illegal function", "the board does not support this request"),
    2: ("illegal data address", _ADDRESSES),
    3: ("illegal data value", _ADDRESSES),
    4: ("server device failure", _UNIT + ", then the board itself"),
    5: ("acknowledge", "the board accepted a long request; it should answer again later"),
    6: ("server device busy", "the board is busy; it should recover by itself"),
    8: ("memory parity error", "the board reports a fault in its memory"),
    10: ("gateway path unavailable", _UNIT + " and the gateway's routing"),
    11: ("gateway target device failed to respond", _UNIT + " and the serial line behind it"),
}


class ModbusRefused(DeviceError):
    """The board answered, with a Modbus exception: it is there, and refuses the request."""

    code: str = ErrorCode.DEVICE_REFUSED

    def __init__(self, what: str, exception_code: int, unit: int) -> None:
        name, hint = EXCEPTIONS.get(exception_code, ("unknown exception", _UNIT))
        super().__init__(
            f"{what}: board refused with Modbus exception {exception_code} ({name});"
            f" {hint.format(unit=unit)}"
        )
        #: The Modbus exception code the board sent.
        self.exception_code = exception_code


class ModbusLink:
    """A board's connection; every method raises a DeviceError subclass on failure."""

    def __init__(self, host: str, port: int, unit: int, timeout_ms: int) -> None:
        self.host = host
        self.port = port
        self.unit = unit
        self._timeout_s = timeout_ms / 1000
        self._client: AsyncModbusTcpClient | None = None
        #: Monotonic ns at which the last request's bytes were handed to the socket.
        self.sent_ns = 0
        self.requests = 0
        self.failures = 0
        self.connects = 0
        self.last_rtt_ms = 0.0

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def connect(self) -> None:
        """Open a fresh connection (a new client, so no state survives from the last one)."""
        self.close()
        client = AsyncModbusTcpClient(
            self.host,
            port=self.port,
            # pymodbus's own deadline is a backstop; ours (asyncio.timeout) fires first.
            timeout=self._timeout_s * 2,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._trace,
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                ok = await client.connect()
        except TimeoutError:
            ok = False
        if not ok:
            client.close()
            raise DeviceOffline(f"cannot connect to {self.host}:{self.port}")
        self._client = client
        self.connects += 1

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def read_coils(self, start: int, count: int) -> list[bool]:
        reply = await self._request(
            "read coils",
            READ_COILS,
            lambda c: c.read_coils(start, count=count, device_id=self.unit),
        )
        return self._bits(reply, "read coils", count)

    async def read_inputs(self, start: int, count: int) -> list[bool]:
        reply = await self._request(
            "read inputs",
            READ_INPUTS,
            lambda c: c.read_discrete_inputs(start, count=count, device_id=self.unit),
        )
        return self._bits(reply, "read inputs", count)

    async def write_coils(self, start: int, values: list[bool]) -> int:
        """Write coils with one FC15 request; return when the board acknowledged it (ns)."""
        reply = await self._request(
            "write coils", WRITE_COILS, lambda c: c.write_coils(start, values, device_id=self.unit)
        )
        if reply.address != start or reply.count != len(values):
            self.failures += 1
            raise BadDeviceReply(
                f"write coils: board acknowledged {reply.count} coils at {reply.address},"
                f" expected {len(values)} at {start}"
            )
        return time.monotonic_ns()

    def _trace(self, sending: bool, data: bytes) -> bytes:
        # Called by pymodbus right before the socket write: the true on-the-wire time.
        if sending:
            self.sent_ns = time.monotonic_ns()
        return data

    async def _request(self, what: str, function: int, request: Request) -> ModbusPDU:
        """Send one request under the deadline; translate every failure into our errors."""
        client = self._client
        if client is None or not client.connected:
            raise DeviceOffline(f"{what}: not connected to {self.host}:{self.port}")
        self.requests += 1
        start_ns = time.monotonic_ns()
        try:
            async with asyncio.timeout(self._timeout_s):
                reply = await request(client)
        except TimeoutError as exc:
            self.failures += 1
            raise DeviceTimeout(f"{what}: no reply within {self._timeout_s * 1000:.0f} ms") from exc
        except ConnectionException as exc:
            self.failures += 1
            raise DeviceOffline(f"{what}: connection lost ({exc})") from exc
        except ModbusException as exc:
            # Undecodable frames, wrong transaction or device id: nothing we can trust.
            self.failures += 1
            raise BadDeviceReply(f"{what}: {exc}") from exc
        except OSError as exc:
            self.failures += 1
            raise DeviceOffline(f"{what}: {exc}") from exc
        self.last_rtt_ms = (time.monotonic_ns() - start_ns) / 1e6
        return self._check(reply, what, function)

    def _check(self, reply: ModbusPDU, what: str, function: int) -> ModbusPDU:
        if reply.isError():
            self.failures += 1
            raise ModbusRefused(what, int(reply.exception_code), self.unit)
        if reply.function_code != function:
            self.failures += 1
            raise BadDeviceReply(
                f"{what}: reply has function code {reply.function_code}, expected {function}"
            )
        return reply

    def _bits(self, reply: ModbusPDU, what: str, count: int) -> list[bool]:
        bits = list(reply.bits)
        # Replies are padded to whole bytes, so more bits than asked is normal; fewer is not.
        if len(bits) < count or len(bits) > count + 7:
            self.failures += 1
            raise BadDeviceReply(f"{what}: {len(bits)} bits in reply, expected {count}")
        return bits[:count]
