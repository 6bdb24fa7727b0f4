"""The PSAP-linked radio driver: alerts to the 911 centre, acknowledged, and link supervision.

Layers: :mod:`frames` (the line protocol) -> :mod:`transport` (the port, by URL) ->
:mod:`session` (sequence numbers, ACK matching, retries) -> this module (the driver
contract, heartbeats, health, the drill policy).

Drill policy: a drill never reaches the PSAP as a real alert. Unless the site sets
``allow_test_traffic``, a drill transmits nothing towards the PSAP: the driver only proves the
link with a heartbeat. With it set, the EMG status reads ``DRILL <STATUS>`` and the text
starts with ``DRILL:``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import structlog

from gatewayd.drivers.psap_radio import frames
from gatewayd.drivers.psap_radio.config import PsapRadioConfig
from gatewayd.drivers.psap_radio.session import Delivery, RadioRefused, Session
from gatewayd.drivers.psap_radio.transport import RadioLink
from gatewayd.kernel.backoff import BackoffTimer
from gatewayd.kernel.driver import Driver, Emit, Startup
from gatewayd.kernel.errors import BadPoint, DeviceError, DeviceOffline
from gatewayd.kernel.events import CommandResult, DeviceFault, SendAlert
from gatewayd.kernel.health import LinkHealth

log = structlog.get_logger(__name__)

#: Alerts that may wait behind the one being sent; more are refused, not queued.
MAX_QUEUED_ALERTS = 8
#: Shortest deadline for opening the port.
OPEN_TIMEOUT_S = 1.0
#: A radio that babbles gets one DeviceFault per this interval; the rest are counted.
FAULT_INTERVAL_S = 1.0


class PsapRadioDriver(Driver[PsapRadioConfig]):
    """Sends emergency status and text to the PSAP radio and supervises the link."""

    config_model = PsapRadioConfig
    commands = (SendAlert,)

    def __init__(self, config: PsapRadioConfig, points: frozenset[str], emit: Emit) -> None:
        super().__init__(config, points, emit)
        self._session = Session(self._garbage, self._answered)
        self._link = RadioLink(
            config.url, config.baudrate, self._session.on_line, self._session.link_lost
        )
        self._ack_timeout_s = config.ack_timeout_ms / 1000
        self._log = log.bind(device=config.id)
        # Failures are missed heartbeats: one degrades the link (unless one is already
        # offline); offline_after_misses in a row are taken offline by _supervise.
        self._link_health = LinkHealth(
            self._set_health,
            self._log,
            "radio",
            degraded_after=1 if config.offline_after_misses > 1 else None,
        )
        self._reconnect = BackoffTimer(config.reconnect_backoff)
        self._alert_lock = asyncio.Lock()
        self._alerts_waiting = 0
        self._last_fault_s = float("-inf")
        self._counts = {
            "alerts": 0,
            "alerts_failed": 0,
            "drills_suppressed": 0,
            "heartbeats": 0,
            "heartbeat_misses": 0,
            "faults_emitted": 0,
        }

    @classmethod
    def parse_point(cls, raw: str) -> str:
        raise BadPoint(f"the radio has no points (got {raw!r}); it only takes SendAlert")

    # --- run loop -------------------------------------------------------------------------

    async def run(self, started: Callable[[], None]) -> None:
        """Open the port, supervise it with heartbeats, reopen with backoff until cancelled."""
        try:
            opened = await Startup(started).attempt(self._open())
            while True:
                if opened:
                    await self._supervise()
                await asyncio.sleep(self._reconnect.next_s())
                opened = await self._open()
        finally:
            await self._link.close()
            self._session.link_lost()
            self._link_health.stopped()

    async def _open(self) -> bool:
        try:
            # A TCP connect on a busy box may take longer than one ACK; a device opens at once.
            await self._link.open(max(OPEN_TIMEOUT_S, self._ack_timeout_s * 2))
        except DeviceOffline as exc:
            self._link_health.offline(str(exc))
            return False
        self._log.info("radio.port_open", url=self.config.url, opens=self._link.opens)
        return True

    async def _supervise(self) -> None:
        """Heartbeat an open port until it closes or the radio misses too many heartbeats."""
        while True:
            await self._heartbeat()
            misses = self._link_health.failures
            if misses >= self.config.offline_after_misses:
                self._link_health.offline(f"{misses} heartbeats missed")
                # A fresh open resynchronises a line that went quiet or carried garbage.
                await self._link.close()
                break
            if await self._link.wait_closed(self.config.heartbeat_s):
                self._link_health.offline(f"{self.config.url} closed")
                break

    async def _heartbeat(self) -> None:
        """One HBT exchange; a miss degrades the link (an answer of any kind restores it)."""
        self._counts["heartbeats"] += 1
        frame = frames.hbt(self._session.next_seq(), round(self.config.heartbeat_s * 1000))
        try:
            await self._session.deliver(
                self._link,
                frame,
                attempts=1,
                ack_timeout_s=self._ack_timeout_s,
                nak_backoff_s=0,
            )
        except RadioRefused:
            # A NAK is still an answer: _answered already counted the radio as alive.
            return
        except DeviceError as exc:
            self._counts["heartbeat_misses"] += 1
            self._link_health.failed(f"heartbeat missed: {exc}")

    # --- health ---------------------------------------------------------------------------

    def _answered(self) -> None:
        """The radio sent a valid frame: the link works."""
        self._reconnect.reset()
        self._link_health.succeeded()

    def _garbage(self, why: str, line: bytes) -> None:
        """Report a line we could not trust; rate-limited so a babbling radio cannot flood."""
        now_s = time.monotonic()
        if now_s - self._last_fault_s < FAULT_INTERVAL_S:
            return
        self._last_fault_s = now_s
        self._counts["faults_emitted"] += 1
        shown = line[:40].decode("ascii", "backslashreplace")
        self._emit(DeviceFault(self.device_id, "bad_device_reply", f"{why}: {shown!r}"))
        self._log.warning("radio.garbage", error=why, line=shown)

    # --- commands -------------------------------------------------------------------------

    async def _execute(self, command: SendAlert) -> CommandResult:
        """Send an alert: EMG then TXT, each acknowledged."""
        if self._alerts_waiting >= MAX_QUEUED_ALERTS:
            raise DeviceError(f"{self.device_id}: {self._alerts_waiting} alerts already queued")
        self._alerts_waiting += 1
        try:
            await self._alert_lock.acquire()
        finally:
            self._alerts_waiting -= 1
        # One alert at a time, so the PSAP never sees one alert's text after another's status.
        try:
            return await self._send_alert(command)
        finally:
            self._alert_lock.release()

    async def _send_alert(self, alert: SendAlert) -> CommandResult:
        self._counts["alerts"] += 1
        try:
            if alert.drill and not self.config.allow_test_traffic:
                return await self._check_link_for_drill(alert)
            return await self._transmit(alert)
        except DeviceError as exc:
            self._counts["alerts_failed"] += 1
            # Not a link failure (heartbeats decide health), but the reason an operator asks.
            self._link_health.last_error = str(exc)
            self._log.error(
                "radio.alert_failed",
                status=alert.status,
                drill=alert.drill,
                error=str(exc),
            )
            raise

    async def _transmit(self, alert: SendAlert) -> CommandResult:
        status, text = self.wire_content(alert)
        emg = await self._deliver(
            frames.emg(self._session.next_seq(), status, self.config.site_label)
        )
        try:
            txt = await self._deliver(frames.txt(self._session.next_seq(), text))
        except DeviceError as exc:
            raise type(exc)(
                f"EMG {emg.frame.seq:03d} acknowledged but the text failed: {exc}"
            ) from exc
        self._log.info(
            "radio.alert",
            status=status,
            text=text,
            drill=alert.drill,
            site=self.config.site_label,
            emg_seq=emg.frame.seq,
            txt_seq=txt.frame.seq,
            attempts=emg.attempts + txt.attempts,
            wire_to_acked_ms=round((txt.acked_ns - emg.first_sent_ns) / 1e6, 3),
        )
        detail = {
            "seq": f"{emg.frame.seq:03d}",
            "attempts": str(emg.attempts),
            "txt_seq": f"{txt.frame.seq:03d}",
            "txt_attempts": str(txt.attempts),
            "drill": "marked" if alert.drill else "no",
            "rtt_ms": f"{txt.rtt_ms:.3f}",
        }
        return CommandResult((), emg.first_sent_ns, txt.acked_ns, detail)

    async def _check_link_for_drill(self, alert: SendAlert) -> CommandResult:
        """A drill without test traffic: prove the radio answers, put nothing on the air."""
        self._counts["drills_suppressed"] += 1
        hbt = await self._deliver(
            frames.hbt(self._session.next_seq(), round(self.config.heartbeat_s * 1000))
        )
        self._log.info(
            "radio.drill_suppressed",
            status=alert.status,
            text=alert.text,
            hbt_seq=hbt.frame.seq,
            attempts=hbt.attempts,
        )
        detail = {
            "seq": f"{hbt.frame.seq:03d}",
            "attempts": str(hbt.attempts),
            "drill": "suppressed",
            "rtt_ms": f"{hbt.rtt_ms:.3f}",
        }
        return CommandResult((), hbt.first_sent_ns, hbt.acked_ns, detail)

    async def _deliver(self, frame: frames.Frame) -> Delivery:
        return await self._session.deliver(
            self._link,
            frame,
            attempts=self.config.max_attempts,
            ack_timeout_s=self._ack_timeout_s,
            nak_backoff_s=self.config.nak_backoff_ms / 1000,
        )

    def wire_content(self, alert: SendAlert) -> tuple[str, str]:
        """The EMG status and the TXT text for an alert, made wire-safe and marked if a drill."""
        status = "".join(c if c.isalnum() else " " for c in frames.to_wire_text(alert.status))
        status = " ".join(status.upper().split()) or "ALERT"
        if not status[0].isalpha():
            status = "ALERT " + status
        text = frames.to_wire_text(alert.text) or status
        # Only the drill flag decides the marking: a real alert never looks like a drill.
        status = status.removeprefix(frames.DRILL_STATUS_PREFIX)
        text = text.removeprefix(frames.DRILL_TEXT_PREFIX)
        if alert.drill:
            status = frames.DRILL_STATUS_PREFIX + status
            text = frames.DRILL_TEXT_PREFIX + text
        # Cut to the field sizes: the status word and the text's start carry the meaning.
        return status[: frames.MAX_STATUS].rstrip(), text[: frames.MAX_PAYLOAD].rstrip()

    # --- statistics -----------------------------------------------------------------------

    def statistics(self) -> Mapping[str, int | float | str]:
        """Frames sent and acknowledged, retries, NAKs, garbage, heartbeats and the last RTT."""
        s = self._session
        return {
            **self._counts,
            "sent": s.sent,
            "acked": s.acked,
            "retries": s.retries,
            "naks": s.naks,
            "timeouts": s.timeouts,
            "garbage": s.garbage,
            "stray": s.stray,
            "last_rtt_ms": round(s.last_rtt_ms, 3),
            "consecutive_misses": self._link_health.failures,
            "opens": self._link.opens,
            "health": str(self.health),
            "last_error": self._link_health.last_error,
        }
