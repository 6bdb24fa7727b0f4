"""A PSAP-linked radio interface: parses the gateway's frames, acknowledges, records them.

It listens on a pty pair (``os.openpty()``; the driver opens :attr:`PsapRadioSim.url`, the
slave's path) or on TCP (``socket://127.0.0.1:PORT``), with the same frame rules as the
driver (:mod:`drivers.psap_radio.frames`). Every line received is kept in :attr:`heard` (the
request log) and every emergency or text put on the air in :attr:`write_log`, so a test can
prove what was (never) transmitted. Faults change at run time:
``faults.delay_ms``, ``faults.drop`` (probability, no answer), ``faults.corrupt`` (the answer
is garbage), ``faults.hang`` (silent, heartbeats included), plus the radio's own ``nak``,
``drop_next``, ``nak_next`` and :meth:`vanish` / :meth:`reappear` (TCP only).
A frame repeated with the same SEQ, type and payload is re-acknowledged, not acted on twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import tty
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from gatewayd.drivers.psap_radio import frames
from gatewayd.drivers.psap_radio.config import PsapRadioConfig
from gatewayd.drivers.psap_radio.frames import Frame, FrameError, FrameType, Reason
from gatewayd.kernel.driver import DriverConfig
from gatewayd.kernel.events import DeviceCommand, SendAlert
from gatewayd.simulators.base import RecordLog, Simulator, close_tcp_server, tcp_server
from gatewayd.simulators.faults import Faults

Mode = Literal["pty", "tcp"]
Outcome = Literal["ack", "repeat", "nak", "dropped", "silent", "garbled", "rejected"]
#: Frames remembered to recognise a repeat (a retry after a lost ACK).
REPEAT_WINDOW = 16
#: The SEQ of a line that ran over the limit, if its start is readable.
_SEQ_AT_START = re.compile(rb"^\$(\d{3}),")
#: Frame types that put something on the air: the radio's writes.
ON_AIR = (FrameType.EMG, FrameType.TXT)


class Heard(NamedTuple):
    """One line received from the gateway and what the radio did with it."""

    ns: int
    raw: bytes
    #: The parsed frame, or None if the line was not a valid frame.
    frame: Frame | None
    outcome: Outcome
    error: str = ""


class Transmission(NamedTuple):
    """An emergency or a text the radio acknowledged and put on the air."""

    ns: int
    type: str
    seq: int
    payload: str
    drill: bool


@dataclass
class RadioFaults(Faults):
    """The shared faults plus the radio's own."""

    #: Probability (0..1) that a valid frame is answered NAK with ``nak_reason``.
    nak: float = 0.0
    nak_reason: str = Reason.BSY
    #: The next N frames are answered NAK.
    nak_next: int = 0


class _TcpClient(asyncio.Protocol):
    """One TCP connection to the radio."""

    def __init__(self, radio: PsapRadioSim) -> None:
        self._radio = radio
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._radio._clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._radio._clients.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._radio._received(self, data)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class _PtyEnd:
    """The radio's end (master) of the pty pair."""

    def __init__(self, radio: PsapRadioSim) -> None:
        self._radio = radio
        self.master, self._slave = os.openpty()
        # Raw: no echo, no CR/LF translation, whoever opens the slave and whenever.
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        #: The path the driver opens.
        self.path = os.ttyname(self._slave)
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # EIO: nobody has the slave open; our own slave fd normally prevents it.
            return
        self._radio._received(self, data)

    def write(self, data: bytes) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.write(self.master, data)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        os.close(self._slave)


Peer = _TcpClient | _PtyEnd


class PsapRadioSim(Simulator[Transmission, Heard]):
    """A radio interface that acknowledges the gateway's frames, with fault injection."""

    kind = "psap_radio"
    #: The shared faults plus the radio's own.
    faults: RadioFaults

    def __init__(
        self, mode: Mode = "tcp", *, host: str = "127.0.0.1", port: int = 0, name: str = "radio"
    ) -> None:
        super().__init__(name, host=host, port=port, faults=RadioFaults())
        self.mode = mode
        self._seq = 0
        self._recent: deque[tuple[int, FrameType, str]] = deque(maxlen=REPEAT_WINDOW)
        self._buffers: dict[Peer, bytearray] = {}
        #: Peers whose current line ran over the limit: dropped up to their next LF.
        self._discarding: set[Peer] = set()
        self._clients: set[_TcpClient] = set()
        self._server: asyncio.Server | None = None
        self._pty: _PtyEnd | None = None

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def heard(self) -> RecordLog[Heard]:
        """Every line received, in order, with what the radio did (the request log)."""
        return self.request_log

    @property
    def url(self) -> str:
        """What the driver's ``url`` should be: the pty slave path or ``socket://``."""
        if self.mode == "pty":
            if self._pty is None:
                raise RuntimeError("start the radio before asking for its pty path")
            return self._pty.path
        return f"socket://{self.host}:{self._port}"

    def _about(self) -> dict[str, Any]:
        return {"url": self.url}

    async def _open(self) -> int:
        """Open the pty (port 0) or listen on TCP."""
        if self.mode == "pty":
            self._pty = _PtyEnd(self)
            return 0
        self._server, port = await tcp_server(self.host, self._port, lambda: _TcpClient(self))
        return port

    async def _close(self) -> None:
        pty, self._pty = self._pty, None
        if pty is not None:
            pty.close()
        server, self._server = self._server, None
        transports = [c.transport for c in self._clients if c.transport is not None]
        await close_tcp_server(server, transports)
        self._buffers.clear()

    async def vanish(self) -> None:
        """Stop listening and reset every connection, as a radio losing power (TCP only)."""
        if self.mode != "tcp":
            raise RuntimeError("a pty radio cannot vanish; set faults.hang to make it silent")
        await super().vanish()

    # --- what was heard -------------------------------------------------------------------

    def frames(self, frame_type: FrameType | None = None) -> list[Frame]:
        """Valid frames received (whatever the radio answered), optionally of one type."""
        return [
            h.frame
            for h in self.heard
            if h.frame is not None and frame_type in (None, h.frame.type)
        ]

    def real_emergencies(self) -> list[Frame]:
        """EMG frames that were not marked DRILL: what a drill must never produce."""
        return [f for f in self.frames(FrameType.EMG) if not f.is_drill]

    def acted_on(self, frame_type: FrameType) -> list[Frame]:
        """Frames of a type the radio acknowledged and acted on (repeats excluded)."""
        return [
            h.frame
            for h in self.heard
            if h.frame is not None and h.frame.type is frame_type and h.outcome == "ack"
        ]

    def statistics(self) -> dict[str, int | float]:
        """Lines heard and what was done with them."""
        return {**super().statistics(), "lines": len(self.heard), "clients": len(self._clients)}

    def inject(self, data: bytes) -> None:
        """Write raw bytes to every connected gateway (unsolicited garbage, stray frames)."""
        for peer in self._peers():
            peer.write(data)

    def _peers(self) -> list[Peer]:
        return [*self._clients, *([self._pty] if self._pty is not None else [])]

    # --- receiving ------------------------------------------------------------------------

    def _received(self, peer: Peer, data: bytes) -> None:
        buffer = self._buffers.setdefault(peer, bytearray())
        buffer += data
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if peer in self._discarding:
                # The rest of an over-long line, NAKed already: resynchronise here.
                self._discarding.discard(peer)
                continue
            self._on_line(peer, line)
        if len(buffer) > frames.MAX_LINE and peer not in self._discarding:
            # More than a line's worth and no LF: one bad line (docs: reason LEN), and what
            # follows up to the next LF is discarded with it.
            self._too_long(peer, bytes(buffer))
            self._discarding.add(peer)
            buffer.clear()
        elif peer in self._discarding:
            buffer.clear()

    def _too_long(self, peer: Peer, line: bytes) -> None:
        ns = time.monotonic_ns()
        self._record(Heard(ns, line[: frames.MAX_LINE], None, "rejected", "line too long"))
        start = _SEQ_AT_START.match(line)
        if start is not None:
            self._answer(peer, frames.nak(self._next_seq(), int(start[1]), Reason.LEN))

    def _on_line(self, peer: Peer, line: bytes) -> None:
        ns = time.monotonic_ns()
        try:
            frame = frames.parse(line)
        except FrameError as exc:
            self._record(Heard(ns, line, None, "rejected", str(exc)))
            # A frame whose SEQ is readable is refused; anything else is line noise.
            if exc.seq is not None:
                self._answer(peer, frames.nak(self._next_seq(), exc.seq, exc.reason))
            return
        self._record(Heard(ns, line, frame, self._decide(frame)))
        outcome = self.heard[-1].outcome
        if outcome in ("dropped", "silent"):
            return
        if outcome == "garbled":
            self._answer(peer, None)
        elif outcome == "nak":
            self._answer(peer, frames.nak(self._next_seq(), frame.seq, self.faults.nak_reason))
        else:
            self._answer(peer, frames.ack(self._next_seq(), frame.seq))

    def _decide(self, frame: Frame) -> Outcome:
        """What the radio does with a valid frame, faults first."""
        faults = self.faults
        if faults.hang:
            return "silent"
        if faults.lost():
            return "dropped"
        if faults.nak_next > 0:
            faults.nak_next -= 1
            return "nak"
        if faults.roll(faults.nak):
            return "nak"
        if faults.roll(faults.corrupt):
            return "garbled"
        key = (frame.seq, frame.type, frame.payload)
        if key in self._recent:
            return "repeat"
        self._recent.append(key)
        return "ack"

    def _record(self, heard: Heard) -> None:
        self.heard.append(heard)
        self.counts[heard.outcome] += 1
        frame = heard.frame
        if frame is not None and heard.outcome == "ack" and frame.type in ON_AIR:
            sent = Transmission(heard.ns, str(frame.type), frame.seq, frame.payload, frame.is_drill)
            self.write_log.append(sent)
            self.log.info(
                "psap_radio.transmitted", type=sent.type, payload=sent.payload, drill=sent.drill
            )

    def _next_seq(self) -> int:
        seq, self._seq = self._seq, (self._seq + 1) % frames.SEQ_MODULO
        return seq

    def _answer(self, peer: Peer, frame: Frame | None) -> None:
        """Send an answer (None: a garbage line), after the configured delay."""
        data = frame.encode() if frame is not None else self._garbage()
        if self.faults.delay_ms <= 0:
            peer.write(data)
            return

        def fire() -> None:
            # The peer may have gone while the answer was delayed.
            if peer in self._peers():
                peer.write(data)

        self._later(self.faults.delay_ms / 1000, fire)

    def _garbage(self) -> bytes:
        """A line that is not a valid frame: noise, or an ACK with a wrong checksum."""
        rng = self.faults.rng
        if rng.random() < 0.5:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) + b"\r\n"
        line = frames.ack(self._next_seq(), rng.randrange(1000)).encode()
        return line[:-4] + b"00\r\n" if not line.endswith(b"00\r\n") else line[:-4] + b"FF\r\n"


class PsapRadioRig:
    """The contract suite's radio: TCP mode, short heartbeats so faults show within 5 s."""

    driver = "psap_radio"

    def __init__(self) -> None:
        self.sim = PsapRadioSim("tcp", name="rig")

    async def start(self) -> tuple[DriverConfig, frozenset[str]]:
        await self.sim.start()
        config = PsapRadioConfig(
            id="rig-radio",
            driver="psap_radio",
            url=self.sim.url,
            site_label="Rig High School",
            ack_timeout_ms=100,
            max_attempts=3,
            heartbeat_s=0.2,
            offline_after_misses=2,
            reconnect_min_ms=50,
            reconnect_max_ms=500,
        )
        return config, frozenset()

    async def stop(self) -> None:
        await self.sim.stop()

    def wire_command(self) -> DeviceCommand:
        return SendAlert("LOCKDOWN", "LOCKDOWN, Building A, Room 114, 09:42")

    def saw_on_wire(self, command: DeviceCommand) -> bool:
        assert isinstance(command, SendAlert)
        emg = [f for f in self.sim.acted_on(FrameType.EMG) if f.fields[0] == command.status]
        txt = [f for f in self.sim.acted_on(FrameType.TXT) if f.payload == command.text]
        return bool(emg and txt)

    async def vanish(self) -> None:
        await self.sim.vanish()

    async def reappear(self) -> None:
        await self.sim.reappear()

    def garble(self, on: bool) -> None:
        self.sim.faults.corrupt = 1.0 if on else 0.0
