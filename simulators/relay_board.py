"""A Modbus TCP lock relay board: coils drive locks, discrete inputs report the doors.

Server choice: a small asyncio ``Protocol`` speaking MBAP framing and function codes 1, 2, 5
and 15, not pymodbus's server. Door physics and faults need per-request control that
pymodbus's server does not give: its ``trace_packet`` hook is synchronous, so a per-reply
delay or a half-open "hang" would block the loop, and its datastore knows nothing of time
(lock sense following a coil after the actuation delay). Our own framing also keeps the
simulator independent of the client library it tests; the tests check it against pymodbus's
client. Delays and actuation use ``loop.call_later`` handles, so the simulator owns no tasks.

Discrete input layout for a board of ``n`` doors: input ``i`` is door ``i``'s position
(True = closed), input ``n + i`` its lock sense (True = bolt thrown), inputs from ``2n`` on
are spare contacts (fire alarm, panic button) that tests drive with :meth:`set_input`.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import Counter, deque
from types import TracebackType
from typing import NamedTuple, Self

import structlog

from gatewayd.simulators.faults import Faults

log = structlog.get_logger("simulators.relay_board")

ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03
MAX_READ_BITS = 2000
MAX_WRITE_COILS = 1968
#: Bounded so a simulator left running for days does not grow without limit.
LOG_LIMIT = 100_000


class CoilWrite(NamedTuple):
    """One coil written by a client (whether or not its value changed)."""

    ns: int
    address: int
    value: bool


class RequestSeen(NamedTuple):
    """One request frame received, before any fault applied."""

    ns: int
    function: int
    unit: int


class _Refused(Exception):
    """A request the board answers with a Modbus exception code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Connection(asyncio.Protocol):
    """One client connection: splits the byte stream into MBAP frames."""

    def __init__(self, board: RelayBoardSim) -> None:
        self._board = board
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._board._connections.add(self)
        self._board._counts["connections"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._board._connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 7:
            tid, protocol, length = struct.unpack(">HHH", self._buffer[:6])
            if protocol != 0 or not 2 <= length <= 254:
                # Not Modbus TCP; a real device would drop the connection too.
                self._board._counts["framing_errors"] += 1
                self.abort()
                return
            if len(self._buffer) < 6 + length:
                return
            frame = bytes(self._buffer[: 6 + length])
            del self._buffer[: 6 + length]
            self._board._on_request(self, tid, frame[6], frame[7:])

    def send(self, tid: int, unit: int, pdu: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class RelayBoardSim:
    """A relay board with ``doors`` lock coils, 2 inputs per door and spare alarm inputs."""

    def __init__(
        self,
        doors: int,
        *,
        extra_inputs: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        actuation_ms: float = 5.0,
        name: str = "board",
    ) -> None:
        if not 1 <= doors <= MAX_WRITE_COILS:
            raise ValueError(f"doors must be 1..{MAX_WRITE_COILS}, got {doors}")
        if extra_inputs < 0 or 2 * doors + extra_inputs > 65536:
            raise ValueError(f"extra_inputs must be >= 0 and fit 65536 inputs, got {extra_inputs}")
        self.name = name
        self.host = host
        #: Delay between a coil change and the lock sense following it (0 = at once).
        self.actuation_ms = actuation_ms
        #: Fault settings; change fields at run time.
        self.faults = Faults()
        #: Every coil written, in order: tests prove what was (never) written.
        self.write_log: deque[CoilWrite] = deque(maxlen=LOG_LIMIT)
        #: Every request received, in order (function code and unit id).
        self.request_log: deque[RequestSeen] = deque(maxlen=LOG_LIMIT)
        self._n = doors
        self._port = port
        self._coils = [False] * doors
        self._closed = [True] * doors
        self._sense = [False] * doors
        self._extra = [False] * extra_inputs
        self._jammed: set[int] = set()
        self._held_open: set[int] = set()
        self._settling: dict[int, asyncio.TimerHandle] = {}
        self._pending: set[asyncio.TimerHandle] = set()
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._counts: Counter[str] = Counter()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port (the free port chosen when created with port 0)."""
        return self._port

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Bind and listen; a no-op if already listening."""
        if self._server is None:
            await self._listen()
            log.info(
                "board_listening",
                board=self.name,
                host=self.host,
                port=self._port,
                doors=self._n,
                inputs=self.input_count,
            )

    async def stop(self) -> None:
        """Stop listening, drop clients and cancel timers; safe to call twice."""
        await self._unlisten(abort=True)
        for handle in (*self._settling.values(), *self._pending):
            handle.cancel()
        self._settling.clear()
        self._pending.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self._port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _unlisten(self, *, abort: bool) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.disconnect(abort=abort)
        if server is not None:
            await server.wait_closed()

    # --- faults ---------------------------------------------------------------------------

    def disconnect(self, *, abort: bool = False) -> None:
        """Close every client connection (RST with ``abort``); keep listening."""
        for conn in list(self._connections):
            conn.abort() if abort else conn.close()
            self._counts["disconnects"] += 1

    async def vanish(self) -> None:
        """Stop listening and reset every connection, as a board losing power."""
        await self._unlisten(abort=True)
        log.info("board_vanished", board=self.name, port=self._port)

    async def reappear(self) -> None:
        """Listen again on the same port after :meth:`vanish`."""
        if self._server is None:
            await self._listen()
            log.info("board_reappeared", board=self.name, port=self._port)

    # --- door physics -----------------------------------------------------------------------

    @property
    def doors(self) -> int:
        return self._n

    @property
    def input_count(self) -> int:
        return 2 * self._n + len(self._extra)

    def coil(self, door: int) -> bool:
        return self._coils[door]

    def closed(self, door: int) -> bool:
        return self._closed[door]

    def sense(self, door: int) -> bool:
        return self._sense[door]

    def coils(self) -> list[bool]:
        return list(self._coils)

    def inputs(self) -> list[bool]:
        return [*self._closed, *self._sense, *self._extra]

    def set_input(self, address: int, value: bool) -> None:
        """Drive a spare input (alarm contact); door inputs follow physics instead."""
        spare = address - 2 * self._n
        if not 0 <= spare < len(self._extra):
            raise ValueError(
                f"input {address} is not a spare input (spares are {2 * self._n}"
                f"..{self.input_count - 1})"
            )
        self._extra[spare] = value

    def jam(self, door: int) -> None:
        """The bolt sticks: lock sense keeps its current value whatever the coil does."""
        self._check_door(door)
        self._jammed.add(door)
        self._cancel_settle(door)

    def unjam(self, door: int) -> None:
        self._jammed.discard(door)
        self._actuate(door)

    def hold_open(self, door: int) -> None:
        """Prop the door open: position reads open and the bolt cannot throw."""
        self._check_door(door)
        self._held_open.add(door)
        self._closed[door] = False
        if door not in self._jammed:
            self._cancel_settle(door)
            self._sense[door] = False

    def release_door(self, door: int) -> None:
        """Let a held-open door close; an energised lock then throws its bolt."""
        self._held_open.discard(door)
        self._closed[door] = True
        self._actuate(door)

    def _check_door(self, door: int) -> None:
        if not 0 <= door < self._n:
            raise ValueError(f"door {door} out of range 0..{self._n - 1}")

    def _set_coil(self, address: int, value: bool) -> None:
        self.write_log.append(CoilWrite(time.monotonic_ns(), address, value))
        self._counts["coils_written"] += 1
        if self._coils[address] != value:
            self._coils[address] = value
            self._actuate(address)

    def _actuate(self, door: int) -> None:
        """Let the lock sense follow the coil after the actuation delay."""
        self._cancel_settle(door)
        if self.actuation_ms <= 0:
            self._settle(door)
            return
        loop = asyncio.get_running_loop()
        self._settling[door] = loop.call_later(self.actuation_ms / 1000, self._settle, door)

    def _settle(self, door: int) -> None:
        self._settling.pop(door, None)
        if door not in self._jammed:
            self._sense[door] = self._coils[door] and door not in self._held_open

    def _cancel_settle(self, door: int) -> None:
        handle = self._settling.pop(door, None)
        if handle is not None:
            handle.cancel()

    # --- requests -------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests accepted whose (delayed) reply has not been sent yet."""
        return len(self._pending)

    def statistics(self) -> dict[str, int | float]:
        """Request, write and fault counters."""
        return {
            "requests": self._counts["requests"],
            "read_coils": self._counts["fc1"],
            "read_inputs": self._counts["fc2"],
            "write_coil": self._counts["fc5"],
            "write_coils": self._counts["fc15"],
            "coils_written": self._counts["coils_written"],
            "exceptions": self._counts["exceptions"],
            "dropped": self._counts["dropped"],
            "hung": self._counts["hung"],
            "delayed": self._counts["delayed"],
            "corrupted": self._counts["corrupted"],
            "framing_errors": self._counts["framing_errors"],
            "connections": self._counts["connections"],
            "connections_open": len(self._connections),
            "disconnects": self._counts["disconnects"],
            "in_flight": len(self._pending),
        }

    def _on_request(self, conn: _Connection, tid: int, unit: int, pdu: bytes) -> None:
        self._counts["requests"] += 1
        self.request_log.append(RequestSeen(time.monotonic_ns(), pdu[0], unit))
        faults = self.faults
        if faults.hang:
            self._counts["hung"] += 1
            return
        if faults.roll(faults.drop):
            self._counts["dropped"] += 1
            return
        if faults.delay_ms <= 0:
            self._answer(conn, tid, unit, pdu)
            return
        self._counts["delayed"] += 1
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._pending.discard(handle)
            self._answer(conn, tid, unit, pdu)

        handle = loop.call_later(faults.delay_ms / 1000, fire)
        self._pending.add(handle)

    def _answer(self, conn: _Connection, tid: int, unit: int, pdu: bytes) -> None:
        if conn.transport is None:
            # The client went away while the reply was delayed; a device would not act.
            return
        reply = self._process(pdu)
        if self.faults.roll(self.faults.corrupt):
            self._counts["corrupted"] += 1
            reply = self.faults.garble(reply)
        conn.send(tid, unit, reply)

    def _process(self, pdu: bytes) -> bytes:
        """Carry out one request PDU and return the reply PDU (or an exception reply)."""
        self._counts[f"fc{pdu[0]}"] += 1
        try:
            return self._dispatch(pdu)
        except _Refused as exc:
            self._counts["exceptions"] += 1
            return bytes([pdu[0] | 0x80, exc.code])

    def _dispatch(self, pdu: bytes) -> bytes:
        function, body = pdu[0], pdu[1:]
        match function:
            case 1:
                return self._read_bits(function, body, self._coils)
            case 2:
                return self._read_bits(function, body, self.inputs())
            case 5:
                return self._write_single(pdu)
            case 15:
                return self._write_multiple(function, body)
        raise _Refused(ILLEGAL_FUNCTION)

    @staticmethod
    def _read_bits(function: int, body: bytes, bits: list[bool]) -> bytes:
        if len(body) != 4:
            raise _Refused(ILLEGAL_DATA_VALUE)
        address, count = struct.unpack(">HH", body)
        if not 1 <= count <= MAX_READ_BITS:
            raise _Refused(ILLEGAL_DATA_VALUE)
        if address + count > len(bits):
            raise _Refused(ILLEGAL_DATA_ADDRESS)
        packed = pack_bits(bits[address : address + count])
        return bytes([function, len(packed)]) + packed

    def _write_single(self, pdu: bytes) -> bytes:
        if len(pdu) != 5:
            raise _Refused(ILLEGAL_DATA_VALUE)
        address, raw = struct.unpack(">HH", pdu[1:])
        if raw not in (0xFF00, 0x0000):
            raise _Refused(ILLEGAL_DATA_VALUE)
        if address >= self._n:
            raise _Refused(ILLEGAL_DATA_ADDRESS)
        self._set_coil(address, raw == 0xFF00)
        return pdu

    def _write_multiple(self, function: int, body: bytes) -> bytes:
        if len(body) < 6:
            raise _Refused(ILLEGAL_DATA_VALUE)
        address, count, byte_count = struct.unpack(">HHB", body[:5])
        data = body[5:]
        if not 1 <= count <= MAX_WRITE_COILS or byte_count != (count + 7) // 8:
            raise _Refused(ILLEGAL_DATA_VALUE)
        if len(data) != byte_count:
            raise _Refused(ILLEGAL_DATA_VALUE)
        if address + count > self._n:
            raise _Refused(ILLEGAL_DATA_ADDRESS)
        for offset, value in enumerate(unpack_bits(data, count)):
            self._set_coil(address + offset, value)
        return bytes([function]) + struct.pack(">HH", address, count)


def pack_bits(bits: list[bool]) -> bytes:
    """Pack bits the Modbus way: first bit in the least significant bit of the first byte."""
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def unpack_bits(data: bytes, count: int) -> list[bool]:
    """Inverse of :func:`pack_bits`, for ``count`` bits."""
    return [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]
