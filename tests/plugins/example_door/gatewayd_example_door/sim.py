"""A strike controller on a loopback port, over TCP or UDP, with faults: vanish and garble.

Built on gatewayd's simulator base, as a third-party simulator would be: the base gives the
lifecycle (port 0 read back, idempotent and bounded start and stop, ``async with``), vanish
and reappear on the same port, ``faults`` and the request and write logs; this module only
binds its transport and answers lines.

Run alone: ``python -m gatewayd_example_door.sim --transport udp --port 4700``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from typing import Literal, NamedTuple, cast

from gatewayd.simulators.base import Simulator

Transport = Literal["tcp", "udp"]


class Request(NamedTuple):
    """One request line received (before any fault)."""

    ns: int
    line: str


class StrikeWrite(NamedTuple):
    """One SET carried out: the strikes' lock states after it."""

    ns: int
    locked: tuple[bool, ...]


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, sim: DoorStrikeSim) -> None:
        self._sim = sim
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport (not a DatagramTransport subclass on Python 3.11).
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self._sim.answer(data), addr)


class DoorStrikeSim(Simulator[StrikeWrite, Request]):
    """``strikes`` strikes, all released at start; records every request it carried out."""

    kind = "example_door"

    def __init__(self, strikes: int = 4, transport: Transport = "tcp", port: int = 0) -> None:
        super().__init__("strikes", port=port)
        self.transport: Transport = transport
        #: Lock state per strike (True = locked).
        self.locked = [False] * strikes
        #: Request bodies carried out, in order (``GET``, ``SET 1-0-``).
        self.received: list[str] = []
        self._server: asyncio.Server | None = None
        self._datagrams: asyncio.DatagramTransport | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"{self.transport}://{self.host}:{self.port}"

    async def _open(self) -> int:
        if self.transport == "tcp":
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
            port: int = self._server.sockets[0].getsockname()[1]
            return port
        self._datagrams, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=(self.host, self.port)
        )
        udp_port: int = self._datagrams.get_extra_info("sockname")[1]
        return udp_port

    async def _close(self) -> None:
        if self._datagrams is not None:
            self._datagrams.close()
            self._datagrams = None
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for writer in self._writers:
                writer.transport.abort()
            await server.wait_closed()

    def answer(self, line: bytes) -> bytes:
        """The reply to one request line."""
        text = line.decode("ascii", "replace").strip()
        self.request_log.append(Request(time.monotonic_ns(), text))
        seq, _, body = text.partition(" ")
        if self.faults.roll(self.faults.corrupt):
            return os.urandom(12).replace(b"\n", b"?") + b"\n"
        word, _, mask = body.partition(" ")
        if word == "SET" and len(mask) == len(self.locked) and not set(mask) - set("01-"):
            pairs = zip(self.locked, mask, strict=True)
            self.locked = [old if m == "-" else m == "1" for old, m in pairs]
            self.write_log.append(StrikeWrite(time.monotonic_ns(), tuple(self.locked)))
        elif body != "GET":
            return f"{seq} ERR {body[:20]}\n".encode()
        self.received.append(body)
        return f"{seq} STATE {''.join('1' if s else '0' for s in self.locked)}\n".encode()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            # A client that resets its connection is a client that went away.
            with contextlib.suppress(ConnectionError):
                async with self._owned():
                    while line := await reader.readline():
                        writer.write(self.answer(line))
                        await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.close()


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["tcp", "udp"], default="tcp")
    parser.add_argument("--port", type=int, default=4700)
    parser.add_argument("--strikes", type=int, default=4)
    args = parser.parse_args()
    async with DoorStrikeSim(args.strikes, args.transport, args.port) as sim:
        print(f"strike controller on {sim.url}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main())
