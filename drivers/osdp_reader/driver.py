"""The OSDP reader driver: card and PIN reads in, LED and buzzer out, over a secure channel.

Layers: :mod:`frames` (packet check) -> :mod:`link` (libosdp's control panel on its own
thread, the serial line by URL) -> :mod:`mapping` (indications and events) -> this module
(the driver contract, health, the keypad buffer).

A reader is online once libosdp has it online with the secure channel up (in install mode,
a reader without it is degraded). libosdp, once a reader went offline, waits minutes before
trying again; the driver instead ends that link and starts a new one after its own backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import osdp
import structlog

from gatewayd.drivers.osdp_reader import mapping
from gatewayd.drivers.osdp_reader.config import OsdpReaderConfig
from gatewayd.drivers.osdp_reader.link import LinkEvent, PanelLink
from gatewayd.kernel.backoff import BackoffTimer
from gatewayd.kernel.driver import Driver, Emit, Startup
from gatewayd.kernel.errors import BadPoint, DeviceError, DeviceOffline, DeviceTimeout
from gatewayd.kernel.events import (
    CommandResult,
    CredentialRead,
    DeviceFault,
    Health,
    ReaderReport,
    ReaderSignal,
)

log = structlog.get_logger(__name__)

#: A reader that babbles gets one DeviceFault per this interval; the rest are counted.
FAULT_INTERVAL_S = 1.0
#: LED and buzzer commands that may wait for the reader; more are refused.
MAX_PENDING = 16


class OsdpReaderDriver(Driver[OsdpReaderConfig]):
    """One OSDP reader: what it reads becomes events, what the door does shows on it."""

    config_model = OsdpReaderConfig
    commands = (ReaderSignal,)

    def __init__(self, config: OsdpReaderConfig, points: frozenset[str], emit: Emit) -> None:
        super().__init__(config, points, emit)
        self._log = log.bind(device=config.id)
        self._reconnect = BackoffTimer(config.reconnect_backoff)
        self._link: PanelLink | None = None
        self._status = asyncio.Event()
        self._lost: str | None = None
        self._online = False
        self._secure = False
        #: Commands waiting for the reader's completion, per libosdp command code, in order.
        self._pending: dict[int, list[asyncio.Future[int]]] = {}
        self._keys = ""
        self._keys_at = 0.0
        self._last_fault_s = float("-inf")
        self._reported: dict[str, bool] = {}
        self._counts = {"cards": 0, "pins": 0, "signals": 0, "signals_failed": 0, "faults": 0,
                        "garbage": 0, "links": 0}  # fmt: skip

    @classmethod
    def parse_point(cls, raw: str) -> str:
        raise BadPoint(
            f"an OSDP reader has no door points (got {raw!r}); name it in a door's readers"
        )

    # --- run loop -------------------------------------------------------------------------

    async def run(self, started: Callable[[], None]) -> None:
        """Bring the reader online, watch it, start over with backoff when it drops."""
        startup = Startup(started)
        try:
            while True:
                reason = await startup.attempt(self._connect())
                if reason is None:
                    self._reconnect.reset()
                    reason = await self._watch()
                self._set_offline(reason)
                await self._close()
                await asyncio.sleep(self._reconnect.next_s())
        finally:
            await self._close()
            self._set_health(Health.OFFLINE, "driver stopped")

    async def _connect(self) -> str | None:
        """Start a link; None once the reader is online, else why it is not."""
        self._lost, self._online, self._secure = None, False, False
        link = PanelLink(self.config, self._on_link)
        try:
            link.start()
        except DeviceOffline as exc:
            return str(exc)
        self._link = link
        self._counts["links"] += 1
        try:
            async with asyncio.timeout(self.config.online_timeout_ms / 1000):
                while not self._online and self._lost is None:
                    self._status.clear()
                    await self._status.wait()
        except TimeoutError:
            return self._why_not_online(link)
        if self._lost is not None:
            return self._lost
        self._log.info("osdp.online", url=self.config.url, secure=self._secure)
        self._report_online()
        return None

    async def _watch(self) -> str:
        """Wait until the reader drops or the line is lost; say why."""
        while self._online and self._lost is None:
            self._status.clear()
            await self._status.wait()
        if self._lost is not None:
            return self._lost
        assert self._link is not None
        return "reader stopped answering (offline)"

    def _why_not_online(self, link: PanelLink) -> str:
        if link.scanner.good == 0 and link.scanner.bad == 0:
            return f"no answer from address {self.config.address} on {self.config.url}"
        if link.scanner.good == 0:
            return "the reader answers with garbage (wrong speed, or a noisy line)"
        return ("secure channel refused: the reader does not have this scbk (pair it with"
                " install_mode, or check the key)")  # fmt: skip

    def _report_online(self) -> None:
        if self._secure:
            note = "install mode is on: turn it off now that the reader is paired"
            if self.config.install_mode:
                self._set_health(Health.DEGRADED, note)
            else:
                self._set_health(Health.ONLINE, "secure channel")
        else:
            self._set_health(Health.DEGRADED, "install mode: no secure channel, polled in clear")

    def _set_offline(self, reason: str) -> None:
        if self.health is not Health.OFFLINE or reason != self._detail:
            self._log.warning("osdp.offline", reason=reason)
        self._set_health(Health.OFFLINE, reason)

    async def _close(self) -> None:
        link = self._link
        self._online = False
        for waiting in self._pending.values():
            for future in waiting:
                if not future.done():
                    future.set_exception(DeviceOffline(f"{self.device_id}: link closed"))
        self._pending.clear()
        if link is not None:
            # Forgotten only once stopped: a cancelled stop is finished by the next _close.
            await link.stop()
            if self._link is link:
                self._link = None

    # --- what the thread reports ----------------------------------------------------------

    def _on_link(self, event: LinkEvent) -> None:
        match event.kind:
            case "status":
                was = self._online
                self._online = bool(event.data["online"])
                self._secure = bool(event.data["secure"])
                if was and self._online:
                    self._report_online()
                self._status.set()
            case "lost":
                self._lost = str(event.data["problem"])
                self._status.set()
            case "garbage":
                self._garbage(str(event.data["problem"]))
            case "done":
                self._completed(event)
            case "event":
                self._reader_event(event)

    def _reader_event(self, event: LinkEvent) -> None:
        data = event.data
        match data.get("event"):
            case osdp.Event.CardRead:
                card = mapping.card_number(data)
                if card is None:
                    self._garbage(f"unreadable card data (format {data.get('format')})")
                    return
                self._counts["cards"] += 1
                self._emit(CredentialRead(self.device_id, "card", card[0], card[1], event.ns))
            case osdp.Event.KeyPress:
                raw = data.get("data")
                if isinstance(raw, bytes):
                    self._keypad(raw, event.ns)
            case osdp.Event.Status:
                report = data.get("report")
                if data.get("type") == osdp.StatusReportType.Local and isinstance(report, bytes):
                    for name, active in mapping.local_status(report).items():
                        if self._reported.get(name) != active:
                            self._reported[name] = active
                            self._emit(ReaderReport(self.device_id, name, active, event.ns))

    def _keypad(self, raw: bytes, ns: int) -> None:
        now = time.monotonic()
        if self._keys and now - self._keys_at > self.config.keypad_timeout_ms / 1000:
            self._keys = ""
        self._keys_at = now
        for key in mapping.key_digits(raw):
            if key is None:
                self._garbage("keypad sent a code that is no key")
                self._keys = ""
            elif key == "*":
                self._keys = ""
            elif key == "#":
                if self._keys:
                    self._counts["pins"] += 1
                    self._emit(CredentialRead(self.device_id, "pin", self._keys, 0, ns))
                self._keys = ""
            elif len(self._keys) >= self.config.pin_max_digits:
                self._keys = ""
            else:
                self._keys += key

    def _garbage(self, problem: str) -> None:
        self._counts["garbage"] += 1
        now = time.monotonic()
        if now - self._last_fault_s >= FAULT_INTERVAL_S:
            self._last_fault_s = now
            self._counts["faults"] += 1
            self._emit(DeviceFault(self.device_id, "bad_device_reply", problem))

    def _completed(self, event: LinkEvent) -> None:
        code = event.data.get("command")
        waiting = self._pending.get(code) if isinstance(code, int) else None
        if not waiting:
            return
        future = waiting.pop(0)
        if future.done():
            return
        if event.data["ok"]:
            future.set_result(event.ns)
        else:
            future.set_exception(DeviceError(f"{self.device_id}: {event.data['why']}"))

    # --- commands -------------------------------------------------------------------------

    async def _execute(self, command: ReaderSignal) -> CommandResult:
        link = self._link
        if link is None or not self._online:
            why = self._detail or "not connected yet"
            raise DeviceOffline(f"{self.device_id}: reader is offline ({why})")
        if sum(len(w) for w in self._pending.values()) >= MAX_PENDING:
            raise DeviceError(f"{self.device_id}: {MAX_PENDING} reader commands already wait")
        loop = asyncio.get_running_loop()
        futures = []
        for item in mapping.signal_commands(command.indication):
            future: asyncio.Future[int] = loop.create_future()
            self._pending.setdefault(int(item["command"]), []).append(future)
            futures.append(future)
            link.submit(item)
        self._counts["signals"] += 1
        try:
            async with asyncio.timeout(self.config.command_timeout_ms / 1000):
                acked = await asyncio.gather(*futures)
        except TimeoutError as exc:
            self._counts["signals_failed"] += 1
            raise DeviceTimeout(f"{self.device_id}: no acknowledgement of"
                                f" {command.indication} within"
                                f" {self.config.command_timeout_ms} ms") from exc  # fmt: skip
        except DeviceError:
            self._counts["signals_failed"] += 1
            raise
        return CommandResult((), min(acked), time.monotonic_ns(),
                             {"indication": str(command.indication)})  # fmt: skip

    def statistics(self) -> Mapping[str, int | float | str]:
        link = self._link
        return {
            **self._counts,
            "packets_good": link.scanner.good if link else 0,
            "packets_bad": link.scanner.bad if link else 0,
            "secure": str(self._secure),
            "health": str(self.health),
        }
