"""The serial line to the radio: opened by URL, split into lines, closed without leftovers.

pyserial's ``serial_for_url`` (through pyserial-asyncio-fast) opens a device path, a pty or a
``socket://host:port`` URL alike, so the driver runs against hardware or a simulator with no
code change. Library and OS errors never leave this module: they become DeviceOffline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import serial_asyncio_fast

from gatewayd.drivers.psap_radio.frames import MAX_LINE
from gatewayd.kernel.errors import DeviceOffline

#: How long closing may wait for the transport to let go of the port.
CLOSE_TIMEOUT_S = 1.0

OnLine = Callable[[bytes], None]


class _LineSplitter(asyncio.Protocol):
    """Splits the byte stream at LF; an over-long run without LF is delivered once, cut."""

    def __init__(self, on_line: OnLine, on_lost: Callable[[], None]) -> None:
        self._on_line = on_line
        self._on_lost = on_lost
        self._buffer = bytearray()
        # After an over-long line, bytes up to the next LF belong to it and are dropped.
        self._skipping = False

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._skipping:
                self._skipping = False
                continue
            self._on_line(line)
        if len(self._buffer) > MAX_LINE and not self._skipping:
            # Hand it on so it is reported as garbage (too long), then resynchronise at LF.
            self._on_line(bytes(self._buffer))
            self._skipping = True
        if self._skipping:
            self._buffer.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()


class RadioLink:
    """One radio port, opened and closed again as often as the driver likes."""

    def __init__(
        self, url: str, baudrate: int, on_line: OnLine, on_lost: Callable[[], None]
    ) -> None:
        self.url = url
        self.baudrate = baudrate
        self._on_line = on_line
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._lost = asyncio.Event()
        self._lost.set()
        self._opened = asyncio.Event()
        #: Successful opens so far.
        self.opens = 0

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._lost.is_set()

    async def open(self, timeout_s: float) -> None:
        """Open the port; raise DeviceOffline if it cannot be opened within the deadline."""
        await self.close()
        loop = asyncio.get_running_loop()
        lost = asyncio.Event()

        def factory() -> _LineSplitter:
            return _LineSplitter(self._on_line, lambda: self._closed(lost))

        try:
            async with asyncio.timeout(timeout_s):
                transport, _ = await serial_asyncio_fast.create_serial_connection(
                    loop, factory, self.url, baudrate=self.baudrate
                )
        except TimeoutError as exc:
            raise DeviceOffline(f"cannot open {self.url}: no answer in {timeout_s} s") from exc
        # SerialException is an OSError; so are refused and unreachable sockets.
        except (OSError, ValueError) as exc:
            raise DeviceOffline(f"cannot open {self.url}: {exc}") from exc
        self._transport = transport
        self._lost = lost
        self._opened.set()
        self.opens += 1

    def _closed(self, lost: asyncio.Event) -> None:
        lost.set()
        if lost is self._lost:
            self._opened.clear()
            self._on_lost()

    def send(self, data: bytes) -> int:
        """Hand ``data`` to the port; return when (monotonic ns). DeviceOffline if closed."""
        transport = self._transport
        if transport is None or self._lost.is_set():
            raise DeviceOffline(f"{self.url} is not open")
        sent_ns = time.monotonic_ns()
        transport.write(data)
        return sent_ns

    async def wait_open(self, timeout_s: float) -> bool:
        """True once the port is open, False if it was not within the deadline."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._opened.wait()
        except TimeoutError:
            return False
        return True

    async def wait_closed(self, timeout_s: float) -> bool:
        """True if the port closed (or was closed) within the deadline."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._lost.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Drop the port at once (unsent bytes are discarded); wait until it is released."""
        transport, self._transport = self._transport, None
        self._opened.clear()
        if transport is None:
            return
        lost = self._lost
        # abort, not close: a graceful close drains (tcdrain) and can hang on a dead line.
        transport.abort()
        # The serial transport releases the port in a background task; wait for it so
        # nothing outlives the driver.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await lost.wait()
