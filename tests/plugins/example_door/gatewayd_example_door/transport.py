"""The link to a controller, by URL: ``tcp://`` (a stream) or ``udp://`` (one datagram each).

Library and OS errors never leave this module: they become the core's DeviceError tree.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from gatewayd.kernel.errors import BadDeviceReply, DeviceOffline, DeviceTimeout

#: Replies kept for the request in flight; later ones are dropped (a UDP device that echoes).
REPLY_QUEUE = 4


class _Replies(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[bytes]) -> None:
        self._queue = queue

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        if not self._queue.full():
            self._queue.put_nowait(data)


class StrikeLink:
    """One request at a time, each with a sequence number its reply must carry."""

    def __init__(self, url: str, timeout_ms: int) -> None:
        parts = urlsplit(url)
        self._udp = parts.scheme == "udp"
        self._address = (parts.hostname or "", parts.port or 0)
        self._timeout_s = timeout_ms / 1000
        # A command and a poll share the link; the lock keeps their lines from interleaving.
        self._lock = asyncio.Lock()
        self._seq = 0
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._datagrams: asyncio.DatagramTransport | None = None
        self._replies: asyncio.Queue[bytes] = asyncio.Queue(REPLY_QUEUE)
        #: Requests sent.
        self.requests = 0

    async def request(self, body: str) -> tuple[str, int]:
        """Send ``body``; return the reply's body and when the request went on the wire."""
        async with self._lock:
            self._seq = self._seq % 9999 + 1
            try:
                async with asyncio.timeout(self._timeout_s):
                    raw, on_wire_ns = await self._exchange(f"{self._seq} {body}\n".encode())
            except TimeoutError as exc:
                self.close()
                raise DeviceTimeout(f"no reply within {self._timeout_s * 1000:.0f} ms") from exc
            except OSError as exc:
                self.close()
                raise DeviceOffline(f"{self._address[0]}:{self._address[1]}: {exc}") from exc
            seq, _, reply = raw.decode("ascii", "replace").strip().partition(" ")
            if seq != str(self._seq):
                # A stream that carried garbage cannot be trusted to be in step any more.
                self.close()
                raise BadDeviceReply(f"reply to request {self._seq} was {raw[:40]!r}")
            return reply, on_wire_ns

    async def _exchange(self, line: bytes) -> tuple[bytes, int]:
        self.requests += 1
        if self._udp:
            if self._datagrams is None:
                self._datagrams, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                    lambda: _Replies(self._replies), remote_addr=self._address
                )
            # Replies to requests that timed out are stale.
            while not self._replies.empty():
                self._replies.get_nowait()
            self._datagrams.sendto(line)
            on_wire_ns = time.monotonic_ns()
            return await self._replies.get(), on_wire_ns
        if self._stream is None:
            self._stream = await asyncio.open_connection(*self._address)
        reader, writer = self._stream
        writer.write(line)
        on_wire_ns = time.monotonic_ns()
        reply = await reader.readline()
        if not reply:
            raise ConnectionResetError("connection closed by the controller")
        return reply, on_wire_ns

    def close(self) -> None:
        """Drop the connection (or socket); the next request opens a new one."""
        if self._stream is not None:
            self._stream[1].close()
            self._stream = None
        if self._datagrams is not None:
            self._datagrams.close()
            self._datagrams = None
