"""The libosdp control panel on its own thread, over a serial line opened by URL.

libosdp is a C state machine that must be refreshed every few milliseconds and calls back
from inside ``refresh()``. One thread per reader owns the library context and the serial
port: it alone calls into libosdp, so nothing needs a lock. The event loop talks to it
through a queue (commands in) and ``loop.call_soon_threadsafe`` (events out); no call on the
loop ever waits for the thread, except a stop, which polls it with ``asyncio.sleep``.

pyserial's ``serial_for_url`` opens a device path, a pty or ``socket://host:port`` alike.
Library and OS errors stop here: they become :class:`DeviceOffline` or a ``lost`` reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import osdp
import osdp_sys
import serial
import structlog

from gatewayd.drivers.osdp_reader.config import OsdpReaderConfig
from gatewayd.drivers.osdp_reader.frames import FrameScanner
from gatewayd.kernel.errors import DeviceOffline

log = structlog.get_logger(__name__)

#: How long a stop waits for the thread to leave ``refresh()``.
STOP_TIMEOUT_S = 2.0
#: libosdp's completion status for a command the reader acknowledged.
COMPLETION_OK = osdp.CompletionStatus.Ok


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """What the thread tells the loop: a reader event, a status change, a fault or a loss."""

    #: ``event`` (libosdp event dict in ``data``), ``status`` (``online``, ``secure``),
    #: ``garbage`` (``problem``), ``lost`` (``problem``) or ``done`` (a command completed).
    kind: str
    data: dict[str, Any]
    ns: int


Sink = Callable[[LinkEvent], None]


class SerialChannel(osdp.Channel):  # type: ignore[misc]  # osdp is untyped
    """libosdp's byte stream over a pyserial port, read without blocking."""

    def __init__(self, url: str, baudrate: int, scanner: FrameScanner) -> None:
        super().__init__()
        try:
            self._port = serial.serial_for_url(url, baudrate=baudrate, timeout=0,
                                               write_timeout=1.0)  # fmt: skip
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceOffline(f"cannot open {url}: {exc}") from exc
        self._scanner = scanner
        #: Why the port stopped working (None while it works).
        self.lost: str | None = None
        #: Problems the scanner found, for the thread to report.
        self.problems: deque[str] = deque(maxlen=64)

    def read(self, max_bytes: int) -> bytes:
        if self.lost is not None:
            return b""
        try:
            data: bytes = self._port.read(max_bytes)
        except (serial.SerialException, OSError) as exc:
            self.lost = f"line lost: {exc}"
            return b""
        if data:
            self.problems.extend(self._scanner.feed(data))
        return data

    def write(self, buf: bytes) -> int:
        if self.lost is not None:
            return 0
        try:
            written: int | None = self._port.write(buf)
        except (serial.SerialException, OSError) as exc:
            self.lost = f"line lost: {exc}"
            return 0
        return len(buf) if written is None else written

    def flush(self) -> None:
        if self.lost is None:
            with contextlib.suppress(serial.SerialException, OSError):
                self._port.reset_input_buffer()
        self._scanner.reset()

    def close(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):
            self._port.close()


class PanelLink:
    """One reader's control panel: started once, stopped once; a new link to reconnect."""

    def __init__(self, config: OsdpReaderConfig, sink: Sink) -> None:
        self._config = config
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        self._commands: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ended = asyncio.Event()
        self._thread: threading.Thread | None = None
        self._channel: SerialChannel | None = None
        self._ctx: Any = None
        #: Packets from the reader that were sound OSDP, and bad ones.
        self.scanner = FrameScanner()

    def start(self) -> None:
        """Open the line and start the thread; DeviceOffline if the line does not open."""
        config = self._config
        channel = SerialChannel(config.url, config.baudrate, self.scanner)
        flags = [osdp.LibFlag.EnableNotification]
        if not config.install_mode:
            # Never fall back to the default key or to the clear: a reader that will not
            # talk securely stays offline, with the reason said.
            flags.append(osdp.LibFlag.EnforceSecure)
        info = osdp.PDInfo(config.address, channel, scbk=config.key, name=config.id[:16],
                           flags=flags)  # fmt: skip
        # libosdp logs to stderr from C; the gateway reports what matters itself.
        osdp_sys.set_loglevel(osdp.LogLevel.Emergency)
        ctx = osdp_sys.ControlPanel([info.get()])
        ctx.set_event_callback(self._on_event)
        ctx.set_command_completion_callback(self._on_completion)
        self._channel, self._ctx = channel, ctx
        self._thread = threading.Thread(target=self._run, name=f"osdp-cp:{config.id}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def submit(self, command: dict[str, Any]) -> None:
        """Queue a libosdp command dict; its completion comes back as a ``done`` event."""
        self._commands.put(command)

    async def stop(self) -> None:
        """End the thread (bounded, without blocking the loop) and close the line.

        Idempotent: a stop cancelled while it waits leaves the thread known, so the next stop
        (the driver's ``finally``) waits for it again and nothing outlives the driver.
        """
        self._stop.set()
        if self._thread is not None:
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self._ended.wait()
            except TimeoutError:
                # A daemon thread stuck in the library; the line is closed under it anyway.
                log.error("osdp.thread_stuck", device=self._config.id, timeout_s=STOP_TIMEOUT_S)
            self._thread = None
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()
        self._ctx = None

    # --- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._refresh_until_stopped()
        finally:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._ended.set)

    def _refresh_until_stopped(self) -> None:
        tick_s = self._config.refresh_ms / 1000
        ctx, channel = self._ctx, self._channel
        assert channel is not None
        online = secure = False
        while not self._stop.is_set():
            while True:
                try:
                    command = self._commands.get_nowait()
                except queue.Empty:
                    break
                if not ctx.submit_command(0, command):
                    self._post("done", {"command": command.get("command"), "ok": False,
                                        "why": "libosdp refused the command"})  # fmt: skip
            ctx.refresh()
            while channel.problems:
                self._post("garbage", {"problem": channel.problems.popleft()})
            now_online = bool(ctx.status() & 1)
            now_secure = bool(ctx.sc_status() & 1)
            if (now_online, now_secure) != (online, secure):
                online, secure = now_online, now_secure
                self._post("status", {"online": online, "secure": secure})
            if channel.lost is not None:
                self._post("lost", {"problem": channel.lost})
                return
            time.sleep(tick_s)

    def _on_event(self, pd: int, event: dict[str, Any]) -> int:
        self._post("event", dict(event))
        return 0

    def _on_completion(self, pd: int, command: dict[str, Any], status: int) -> None:
        self._post("done", {"command": command.get("command"), "ok": status == COMPLETION_OK,
                            "why": f"completion status {status}"})  # fmt: skip

    def _post(self, kind: str, data: dict[str, Any]) -> None:
        event = LinkEvent(kind, data, time.monotonic_ns())
        try:
            self._loop.call_soon_threadsafe(self._sink, event)
        except RuntimeError:
            # The loop closed under us: nobody is left to tell, so the thread ends.
            self._stop.set()
