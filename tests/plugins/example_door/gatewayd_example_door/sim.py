"""A strike controller on a loopback port, over TCP or UDP, with faults: vanish and garble.

Run alone: ``python -m gatewayd_example_door.sim --transport udp --port 4700``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Literal, cast

Transport = Literal["tcp", "udp"]


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


class DoorStrikeSim:
    """``strikes`` strikes, all released at start; records every request it carried out."""

    def __init__(self, strikes: int = 4, transport: Transport = "tcp", port: int = 0) -> None:
        self.transport: Transport = transport
        self.port = port
        #: Lock state per strike (True = locked).
        self.locked = [False] * strikes
        #: Request bodies received, in order (``GET``, ``SET 1-0-``).
        self.received: list[str] = []
        #: Fault: answer every request with random bytes.
        self.garble = False
        self._server: asyncio.Server | None = None
        self._datagrams: asyncio.DatagramTransport | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"{self.transport}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen (again, on the same port after :meth:`vanish`)."""
        if self.transport == "tcp":
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]
        else:
            self._datagrams, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Datagrams(self), local_addr=("127.0.0.1", self.port)
            )
            self.port = self._datagrams.get_extra_info("sockname")[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection; idempotent."""
        if self._datagrams is not None:
            self._datagrams.close()
            self._datagrams = None
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.close()
            await self._server.wait_closed()
            self._server = None

    vanish = stop
    reappear = start

    def answer(self, line: bytes) -> bytes:
        """The reply to one request line."""
        seq, _, body = line.decode("ascii", "replace").strip().partition(" ")
        if self.garble:
            return os.urandom(12).replace(b"\n", b"?") + b"\n"
        word, _, mask = body.partition(" ")
        if word == "SET" and len(mask) == len(self.locked) and not set(mask) - set("01-"):
            pairs = zip(self.locked, mask, strict=True)
            self.locked = [old if m == "-" else m == "1" for old, m in pairs]
        elif body != "GET":
            return f"{seq} ERR {body[:20]}\n".encode()
        self.received.append(body)
        return f"{seq} STATE {''.join('1' if s else '0' for s in self.locked)}\n".encode()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while line := await reader.readline():
                writer.write(self.answer(line))
                await writer.drain()
        except ConnectionError:
            # A client that resets its connection is a client that went away.
            return
        finally:
            self._writers.discard(writer)
            writer.close()


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["tcp", "udp"], default="tcp")
    parser.add_argument("--port", type=int, default=4700)
    parser.add_argument("--strikes", type=int, default=4)
    args = parser.parse_args()
    sim = DoorStrikeSim(args.strikes, args.transport, args.port)
    await sim.start()
    print(f"strike controller on {sim.url}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main())
