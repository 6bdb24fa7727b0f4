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
Coil ``i`` drives door ``i``; how the doors answer (actuation, jam, a propped door) is
:mod:`gatewayd.simulators.doors`.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any, NamedTuple

from gatewayd.drivers.modbus_relay.mapping import Point, parse_point
from gatewayd.kernel.errors import BadPoint
from gatewayd.simulators.base import Simulator, close_tcp_server, tcp_server
from gatewayd.simulators.doors import DoorControls, DoorMechanics

ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03
#: What a Modbus TCP gateway to RS-485 answers for a unit id nobody on its line has.
GATEWAY_TARGET_NO_RESPONSE = 0x0B
MAX_READ_BITS = 2000
MAX_WRITE_COILS = 1968


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
        self._board.counts["connections"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._board._connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 7:
            tid, protocol, length = struct.unpack(">HHH", self._buffer[:6])
            if protocol != 0 or not 2 <= length <= 254:
                # Not Modbus TCP; a real device would drop the connection too.
                self._board.counts["framing_errors"] += 1
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


class RelayBoardSim(Simulator[CoilWrite, RequestSeen], DoorControls):
    """A relay board with ``doors`` lock coils, 2 inputs per door and spare alarm inputs."""

    kind = "relay_board"

    def __init__(
        self,
        doors: int,
        *,
        extra_inputs: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        actuation_ms: float = 5.0,
        name: str = "board",
        unit: int | None = None,
    ) -> None:
        if not 1 <= doors <= MAX_WRITE_COILS:
            raise ValueError(f"doors must be 1..{MAX_WRITE_COILS}, got {doors}")
        if extra_inputs < 0 or 2 * doors + extra_inputs > 65536:
            raise ValueError(f"extra_inputs must be >= 0 and fit 65536 inputs, got {extra_inputs}")
        super().__init__(name, host=host, port=port)
        #: Coil ``i`` drives door ``i``'s lock; positions and lock senses come from here.
        self.mechanics = DoorMechanics(doors, actuation_ms=actuation_ms)
        self._n = doors
        #: The one unit id answered, as a TCP-to-RS-485 gateway would (None: any, like most
        #: TCP boards); another gets exception 11, gateway target device failed to respond.
        self.unit = unit
        self._extra = [False] * extra_inputs
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def _open(self) -> int:
        self._server, port = await tcp_server(self.host, self._port, lambda: _Connection(self))
        return port

    async def _close(self) -> None:
        server, self._server = self._server, None
        transports = [c.transport for c in self._connections if c.transport is not None]
        self.counts["disconnects"] += len(transports)
        await close_tcp_server(server, transports)

    def _stopped(self) -> None:
        self.mechanics.cancel()

    def _about(self) -> dict[str, Any]:
        return {"doors": self._n, "inputs": self.input_count}

    def disconnect(self, *, abort: bool = False) -> None:
        """Close every client connection (RST with ``abort``); keep listening."""
        for conn in list(self._connections):
            conn.abort() if abort else conn.close()
            self.counts["disconnects"] += 1

    # --- doors and inputs -------------------------------------------------------------------

    @property
    def doors(self) -> int:
        return self._n

    @property
    def input_count(self) -> int:
        return 2 * self._n + len(self._extra)

    def coil(self, door: int) -> bool:
        return self.mechanics.output(door)

    def coils(self) -> list[bool]:
        return self.outputs()

    def inputs(self) -> list[bool]:
        return [*self.mechanics.positions(), *self.mechanics.senses(), *self._extra]

    def set_input(self, address: int, value: bool) -> None:
        """Drive a spare input (alarm contact); door inputs follow the doors instead."""
        spare = address - 2 * self._n
        if not 0 <= spare < len(self._extra):
            raise ValueError(
                f"input {address} is not a spare input (spares are {2 * self._n}"
                f"..{self.input_count - 1})"
            )
        self._extra[spare] = value

    def door_at(self, lock_point: str) -> int:
        point = _point(lock_point)
        if point.kind != "coil":
            raise ValueError(f"{point} is an input; a door's lock is a coil:N")
        return self.mechanics.check(point.address)

    def set_point(self, point: str, value: bool) -> str:
        parsed = _point(point)
        address = parsed.address
        if parsed.kind == "coil":
            raise ValueError(f"{parsed} is a lock output; only inputs can be set")
        if address >= self.input_count:
            raise ValueError(
                f"{parsed} is not on board {self.name!r}: it has inputs 0..{self.input_count - 1}"
            )
        if address < self._n:
            self.mechanics.set_closed(address, value)
        elif address < 2 * self._n:
            raise ValueError(
                f"{parsed} is door {address - self._n}'s lock sense: it follows the bolt"
                " (jam the door instead)"
            )
        else:
            self.set_input(address, value)
        return str(parsed)

    # --- requests -------------------------------------------------------------------------

    def statistics(self) -> dict[str, int | float]:
        """Request, write and fault counters."""
        return {
            **super().statistics(),
            "requests": self.counts["requests"],
            "read_coils": self.counts["fc1"],
            "read_inputs": self.counts["fc2"],
            "write_coil": self.counts["fc5"],
            "write_coils": self.counts["fc15"],
            "coils_written": self.counts["coils_written"],
            "exceptions": self.counts["exceptions"],
            "dropped": self.counts["dropped"],
            "hung": self.counts["hung"],
            "delayed": self.counts["delayed"],
            "corrupted": self.counts["corrupted"],
            "framing_errors": self.counts["framing_errors"],
            "connections": self.counts["connections"],
            "connections_open": len(self._connections),
            "disconnects": self.counts["disconnects"],
            "in_flight": self.in_flight,
        }

    def _set_coil(self, address: int, value: bool) -> None:
        self.write_log.append(CoilWrite(time.monotonic_ns(), address, value))
        self.counts["coils_written"] += 1
        self.mechanics.drive(address, value)

    def _on_request(self, conn: _Connection, tid: int, unit: int, pdu: bytes) -> None:
        self.counts["requests"] += 1
        self.request_log.append(RequestSeen(time.monotonic_ns(), pdu[0], unit))
        faults = self.faults
        if faults.hang:
            self.counts["hung"] += 1
            return
        if faults.lost():
            self.counts["dropped"] += 1
            return
        if faults.delay_ms <= 0:
            self._answer(conn, tid, unit, pdu)
            return
        self.counts["delayed"] += 1
        self._later(faults.delay_ms / 1000, lambda: self._answer(conn, tid, unit, pdu))

    def _answer(self, conn: _Connection, tid: int, unit: int, pdu: bytes) -> None:
        if conn.transport is None:
            # The client went away while the reply was delayed; a device would not act.
            return
        reply = self._process(pdu, unit)
        if self.faults.roll(self.faults.corrupt):
            self.counts["corrupted"] += 1
            reply = self.faults.garble(reply)
        conn.send(tid, unit, reply)

    def _process(self, pdu: bytes, unit: int) -> bytes:
        """Carry out one request PDU and return the reply PDU (or an exception reply)."""
        self.counts[f"fc{pdu[0]}"] += 1
        try:
            if self.unit is not None and unit != self.unit:
                raise _Refused(GATEWAY_TARGET_NO_RESPONSE)
            return self._dispatch(pdu)
        except _Refused as exc:
            self.counts["exceptions"] += 1
            return bytes([pdu[0] | 0x80, exc.code])

    def _dispatch(self, pdu: bytes) -> bytes:
        function, body = pdu[0], pdu[1:]
        match function:
            case 1:
                return self._read_bits(function, body, self.coils())
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


def _point(raw: str) -> Point:
    """A point in the Modbus driver's notation, or a ValueError saying what was expected."""
    try:
        return parse_point(raw)
    except BadPoint as exc:
        raise ValueError(str(exc)) from exc


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
