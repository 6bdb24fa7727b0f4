"""An OSDP card reader: libosdp in peripheral-device mode, an implementation we did not write.

The reader listens on a pty (``os.openpty()``; the driver opens :attr:`OsdpReaderSim.url`,
the slave's path) or on TCP (``socket://127.0.0.1:PORT``). libosdp runs on a thread of its
own, refreshed every few milliseconds, which also carries the line (the pty's master end, or
the TCP socket): like hardware, the reader never waits for the event loop. Every command the
reader obeys is handed to the loop with ``call_soon_threadsafe``, so the simulator's state is
only ever changed on the loop.

A test presents a card (:meth:`present_card`), keys a PIN (:meth:`key_pin`), opens the cover
(:meth:`set_tamper`) or fails the power (:meth:`set_power`), and reads what the gateway showed:
:attr:`led` (the permanent colour last commanded), :attr:`write_log` (every LED and buzzer
command). Faults: ``faults.corrupt`` garbles the reader's packets, ``faults.drop`` loses
them, ``faults.hang`` silences the reader; :meth:`vanish` / :meth:`reappear` (TCP only).
In install mode the reader accepts the default key and keeps the key the panel gives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import socket
import struct
import threading
import time
import tty
from typing import Any, Literal, NamedTuple

import osdp
import osdp_sys

from gatewayd.drivers.osdp_reader.config import OsdpReaderConfig
from gatewayd.drivers.osdp_reader.mapping import COLOR_NAMES
from gatewayd.kernel.driver import DriverConfig
from gatewayd.kernel.events import DeviceCommand, Indication, ReaderSignal
from gatewayd.simulators.base import Simulator

Mode = Literal["pty", "tcp"]
#: How often the reader's libosdp thread runs.
REFRESH_S = 0.005
#: What the reader says it can do (function code, compliance level, items).
CAPABILITIES = [
    (osdp.Capability.CardDataFormat, 1, 1),
    (osdp.Capability.LEDControl, 1, 1),
    (osdp.Capability.AudibleControl, 1, 1),
    (osdp.Capability.ContactStatusMonitoring, 1, 1),
    (osdp.Capability.CommunicationSecurity, 1, 1),
]
#: The longest card number accepted from a test (decimal digits), and the shortest bit count.
MAX_CARD_DIGITS = 19
MIN_CARD_BITS = 26


class Signal(NamedTuple):
    """An LED or buzzer command the reader carried out."""

    ns: int
    #: ``led`` or ``buzzer``.
    kind: str
    #: LED: the on colour (``red``, ``green``, ``amber``, ``off``); buzzer: ``tone``/``off``.
    color: str
    #: LED: a temporary setting (it reverts by itself); buzzer: False.
    temporary: bool
    #: LED: on time (100 ms units); buzzer: repetitions.
    times: int


class Presented(NamedTuple):
    """A card or PIN presented at the reader (the request log)."""

    ns: int
    kind: str
    value: str


class _PtyLine:
    """The reader's end (master) of a pty pair, read and written by the reader's thread."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        # Raw: no echo, no CR/LF translation, whoever opens the slave and whenever.
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        #: The path the driver opens.
        self.path = os.ttyname(self._slave)
        self.port = 0

    def read(self, max_bytes: int) -> bytes:
        try:
            return os.read(self.master, max_bytes)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            # EIO: nobody has the slave open; our own slave fd normally prevents it.
            return b""

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self.master, data)

    def close(self) -> None:
        os.close(self.master)
        os.close(self._slave)


class _TcpLine:
    """A TCP port the panel connects to (one client at a time; a new one replaces the old)."""

    def __init__(self, host: str, port: int) -> None:
        self._listener = socket.create_server((host, port), reuse_port=False)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._client: socket.socket | None = None

    def read(self, max_bytes: int) -> bytes:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            client, _ = self._listener.accept()
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._drop()
            self._client = client
        if self._client is None:
            return b""
        try:
            data = self._client.recv(max_bytes)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            data = b""
        if not data:
            self._drop()
        return data

    def write(self, data: bytes) -> None:
        if self._client is not None:
            try:
                self._client.sendall(data)
            except OSError:
                self._drop()

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # RST, as a reader losing power.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()

    def close(self) -> None:
        self._drop()
        self._listener.close()


_Line = _PtyLine | _TcpLine


class _PdChannel(osdp.Channel):  # type: ignore[misc]  # osdp is untyped
    """libosdp's side of the line, on the reader's thread; the faults apply to what it sends."""

    def __init__(self, sim: OsdpReaderSim, line: _Line) -> None:
        super().__init__()
        self._sim = sim
        self._line = line

    def read(self, max_bytes: int) -> bytes:
        return self._line.read(max_bytes)

    def write(self, buf: bytes) -> int:
        data = bytes(buf)
        faults = self._sim.faults
        if faults.hang or faults.lost():
            self._sim._from_thread(self._sim._count, "dropped")
            return len(buf)
        if faults.roll(faults.corrupt) and len(data) > 6:
            self._sim._from_thread(self._sim._count, "garbled")
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0x5A]) + data[middle + 1 :]
        if faults.delay_ms > 0:
            # A slow reader: its one thread answers late.
            time.sleep(faults.delay_ms / 1000)
        self._line.write(data)
        return len(buf)

    def flush(self) -> None:
        while self._line.read(1024):
            pass


class _Peripheral:
    """libosdp's peripheral device and the thread that refreshes it and carries its line.

    The whole reader runs on this thread, as hardware runs apart from the gateway: a busy
    event loop never makes it late. The loop only hands it events and hears its commands.
    """

    def __init__(self, sim: OsdpReaderSim, line: _Line) -> None:
        flags = [osdp.LibFlag.InstallMode] if sim.install_mode else [osdp.LibFlag.EnforceSecure]
        self._channel = _PdChannel(sim, line)
        info = osdp.PDInfo(sim.address, self._channel, scbk=sim.scbk, name=sim.name[:16],
                           flags=flags)  # fmt: skip
        osdp_sys.set_loglevel(osdp.LogLevel.Emergency)
        self._ctx = osdp_sys.PeripheralDevice(
            info.get(), capabilities=osdp.PDCapabilities(CAPABILITIES).get()
        )
        self._ctx.set_command_callback(self._on_command)
        self._sim = sim
        self.line = line
        self._events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ended = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"osdp-pd:{sim.name}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def submit(self, event: dict[str, Any]) -> None:
        self._events.put(event)

    def online(self) -> tuple[bool, bool]:
        # Two flags the C side keeps; no call into the state machine.
        return bool(self._ctx.is_online()), bool(self._ctx.is_sc_active())

    async def stop(self) -> None:
        self._stop.set()
        try:
            async with asyncio.timeout(2.0):
                await self._ended.wait()
                # The thread has told us from its last lines; it is gone only once they ran
                # (a caller that checks for leftover threads must not find it still alive).
                await asyncio.to_thread(self._thread.join)
        except TimeoutError:
            self._sim.log.error("osdp_reader.thread_stuck")

    def _run(self) -> None:
        try:
            self._refresh_until_stopped()
        finally:
            self.line.close()
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._ended.set)

    def _refresh_until_stopped(self) -> None:
        while not self._stop.is_set():
            while True:
                try:
                    event = self._events.get_nowait()
                except queue.Empty:
                    break
                self._ctx.submit_event(event)
            self._ctx.refresh()
            time.sleep(REFRESH_S)

    def _on_command(self, command: dict[str, Any]) -> tuple[int, None]:
        self._sim._from_thread(self._sim._obeyed, dict(command), time.monotonic_ns())
        return 0, None


class OsdpReaderSim(Simulator[Signal, Presented]):
    """A card reader with keypad, LED and buzzer, speaking OSDP through libosdp."""

    kind = "osdp_reader"

    def __init__(
        self,
        mode: Mode = "pty",
        *,
        scbk: bytes | None,
        address: int = 0,
        install_mode: bool = False,
        door: str = "",
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "reader",
    ) -> None:
        super().__init__(name, host=host, port=port)
        if scbk is None and not install_mode:
            raise ValueError("a reader without its own scbk must be in install mode")
        self.mode = mode
        #: The reader's secure channel key (None: only the default key, install mode).
        self.scbk = scbk
        self.address = address
        self.install_mode = install_mode
        #: The campus door this reader is mounted at (for the control interface).
        self.door = door
        #: The permanent LED colour last commanded (``off`` until told otherwise).
        self.led = "off"
        #: The colour of the last LED command, temporary or not.
        self.last_led = "off"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pd: _Peripheral | None = None
        self._pty_path: str | None = None
        self._tamper = False
        self._power_fault = False

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """What the driver's ``url`` should be: the pty slave path or ``socket://``."""
        if self.mode == "pty":
            if self._pty_path is None:
                raise RuntimeError("start the reader before asking for its pty path")
            return self._pty_path
        return f"socket://{self.host}:{self._port}"

    def _about(self) -> dict[str, Any]:
        return {"url": self.url, "address": self.address, "door": self.door}

    async def _open(self) -> int:
        self._loop = asyncio.get_running_loop()
        line: _Line
        if self.mode == "pty":
            line = _PtyLine()
            self._pty_path = line.path
        else:
            line = _TcpLine(self.host, self._port)
        self._pd = _Peripheral(self, line)
        return line.port

    async def _close(self) -> None:
        pd, self._pd = self._pd, None
        if pd is not None:
            # The thread closes the line (the pty, the socket) on its way out.
            await pd.stop()

    async def vanish(self) -> None:
        """Lose power: stop answering and listening (TCP only; a pty uses ``faults.hang``)."""
        if self.mode != "tcp":
            raise RuntimeError("a pty reader cannot vanish; set faults.hang to silence it")
        await super().vanish()

    # --- what a person does at the reader --------------------------------------------------

    def present_card(self, number: str) -> None:
        """Hold a card with this (decimal) number to the reader; sent as raw Wiegand bits."""
        if not number.isdigit() or not 0 < len(number) <= MAX_CARD_DIGITS:
            raise ValueError(f"card number must be 1 to {MAX_CARD_DIGITS} digits, got {number!r}")
        value = int(number)
        bits = max(MIN_CARD_BITS, value.bit_length())
        size = (bits + 7) // 8
        data = (value << (8 * size - bits)).to_bytes(size, "big")
        event = {"event": osdp.Event.CardRead, "reader_no": 0, "direction": 0, "length": bits,
                 "format": osdp.CardFormat.Unspecified, "data": data}  # fmt: skip
        self._submit("card", number, event)

    def key_pin(self, pin: str) -> None:
        """Type a PIN on the keypad and press ``#``."""
        if not pin.isdigit() or not 0 < len(pin) <= 16:
            raise ValueError(f"PIN must be 1 to 16 digits, got {pin!r}")
        data = pin.encode("ascii") + b"\r"
        self._submit("pin", "*" * len(pin),
                     {"event": osdp.Event.KeyPress, "reader_no": 0, "data": data})  # fmt: skip

    def set_tamper(self, open_: bool) -> None:
        """Open (True) or close the reader's cover."""
        self._tamper = open_
        self._local_status()

    def set_power(self, failing: bool) -> None:
        """The reader's supply fails (True) or recovers."""
        self._power_fault = failing
        self._local_status()

    def _local_status(self) -> None:
        report = bytes([int(self._tamper), int(self._power_fault)])
        self._submit("status", report.hex(), {"event": osdp.Event.Status,
                                              "type": osdp.StatusReportType.Local,
                                              "report": report})  # fmt: skip

    def _submit(self, kind: str, shown: str, event: dict[str, Any]) -> None:
        if self._pd is None:
            raise RuntimeError(f"reader {self.name} is not running")
        self.request_log.append(Presented(time.monotonic_ns(), kind, shown))
        self.counts[kind] += 1
        self._pd.submit(event)

    def describe(self) -> dict[str, Any]:
        """What the control interface's ``readers`` op says of this reader."""
        online, secure = self._pd.online() if self._pd is not None else (False, False)
        return {"id": self.name, "door": self.door, "led": self.led, "last_led": self.last_led,
                "buzzes": self.counts["buzzer"], "online": online, "secure": secure,
                "listening": self.listening}  # fmt: skip

    # --- the line -------------------------------------------------------------------------

    def _from_thread(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        # The loop may be closing while the thread finishes its last refresh.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, *args)

    def _count(self, name: str) -> None:
        self.counts[name] += 1

    def _obeyed(self, command: dict[str, Any], ns: int) -> None:
        code = command.get("command")
        if code == osdp.Command.LED:
            color = COLOR_NAMES.get(int(command.get("on_color", 0)), "other")
            temporary = bool(command.get("temporary"))
            if not temporary:
                self.led = color
            self.last_led = color
            self.counts["led"] += 1
            self.write_log.append(Signal(ns, "led", color, temporary,
                                         int(command.get("on_count", 0))))  # fmt: skip
        elif code == osdp.Command.Buzzer:
            self.counts["buzzer"] += 1
            self.write_log.append(Signal(ns, "buzzer", "tone", False,
                                         int(command.get("rep_count", 0))))  # fmt: skip
        elif code == osdp.Command.Keyset:
            key = command.get("data")
            if isinstance(key, bytes) and len(key) == 16:
                # Paired: the reader keeps the panel's key, as one would in its flash.
                self.scbk = key
                self.install_mode = False
                self.counts["keyset"] += 1
                self.log.info("osdp_reader.paired")


class OsdpReaderRig:
    """The contract suite's reader: TCP mode (it can vanish), secure channel, quick retries."""

    driver = "osdp_reader"
    KEY = bytes.fromhex("8f2a6c1e9b3d4a5f7e0c2b4d6a8e1f3c")

    def __init__(self) -> None:
        self.sim = OsdpReaderSim("tcp", scbk=self.KEY, name="rig-reader")

    async def start(self) -> tuple[DriverConfig, frozenset[str]]:
        await self.sim.start()
        config = OsdpReaderConfig(
            id="rig-reader",
            driver="osdp_reader",
            url=self.sim.url,
            scbk=self.KEY.hex(),
            command_timeout_ms=1000,
            reconnect_min_ms=50,
            reconnect_max_ms=500,
        )
        return config, frozenset()

    async def stop(self) -> None:
        await self.sim.stop()

    def wire_command(self) -> DeviceCommand:
        return ReaderSignal(Indication.LOCKDOWN)

    def saw_on_wire(self, command: DeviceCommand) -> bool:
        assert isinstance(command, ReaderSignal)
        return self.sim.led == "red"

    async def vanish(self) -> None:
        await self.sim.vanish()

    async def reappear(self) -> None:
        await self.sim.reappear()

    def garble(self, on: bool) -> None:
        self.sim.faults.corrupt = 1.0 if on else 0.0
