"""Request and acknowledgement over the radio link: sequence numbers, retries, matching.

Every frame the gateway sends waits for the radio's ACK or NAK of its sequence number. A
frame that is not acknowledged is sent again unchanged (same SEQ), so a radio that did get
it but whose ACK was lost recognises the repeat and does not act twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from gatewayd.drivers.psap_radio.frames import SEQ_MODULO, Frame, FrameError, FrameType, parse
from gatewayd.drivers.psap_radio.transport import RadioLink
from gatewayd.kernel.errors import DeviceError, DeviceOffline, DeviceTimeout, ErrorCode

#: Called with a short reason and the offending line when the radio sends garbage.
OnGarbage = Callable[[str, bytes], None]


class RadioRefused(DeviceError):
    """The radio answered NAK to every attempt."""

    code: str = ErrorCode.RADIO_REFUSED


@dataclass(frozen=True, slots=True)
class Delivery:
    """A frame the radio acknowledged."""

    frame: Frame
    attempts: int
    #: When the first attempt's bytes were handed to the port (monotonic ns).
    first_sent_ns: int
    #: When the ACK was decoded.
    acked_ns: int
    #: From the acknowledged attempt's send to its ACK.
    rtt_ms: float


class Session:
    """Sends frames and matches the radio's answers to them by sequence number."""

    def __init__(self, on_garbage: OnGarbage, on_answer: Callable[[], None]) -> None:
        self._on_garbage = on_garbage
        self._on_answer = on_answer
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._seq = 0
        self.sent = 0
        self.acked = 0
        self.retries = 0
        self.naks = 0
        self.timeouts = 0
        self.garbage = 0
        #: Well-formed answers to no outstanding frame (a late ACK after a retry).
        self.stray = 0
        self.last_rtt_ms = 0.0

    def next_seq(self) -> int:
        seq, self._seq = self._seq, (self._seq + 1) % SEQ_MODULO
        return seq

    # --- receiving ------------------------------------------------------------------------

    def on_line(self, line: bytes) -> None:
        """Handle one line from the radio: resolve the frame it answers, or report garbage."""
        try:
            frame = _parse_answer(line)
        except FrameError as exc:
            self.garbage += 1
            self._on_garbage(str(exc), line)
            return
        self._on_answer()
        waiter = self._pending.get(frame.refers_to)
        if waiter is None or waiter.done():
            self.stray += 1
            return
        waiter.set_result(frame)

    def link_lost(self) -> None:
        """Fail every frame waiting for an answer: it will be sent again on the next link."""
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(DeviceOffline("link to the radio lost"))

    # --- sending --------------------------------------------------------------------------

    async def deliver(
        self,
        link: RadioLink,
        frame: Frame,
        *,
        attempts: int,
        ack_timeout_s: float,
        nak_backoff_s: float,
    ) -> Delivery:
        """Send ``frame`` until acknowledged; raise the last attempt's error after ``attempts``."""
        data = frame.encode()
        # Send times of every attempt that reached the port.
        sends: list[int] = []
        error: DeviceError = DeviceTimeout("not sent")
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                self.retries += 1
            try:
                reply = await self._attempt(link, frame, data, ack_timeout_s, sends)
            except DeviceError as exc:
                error = exc
                continue
            if reply.type is FrameType.ACK:
                return self._delivered(frame, attempt, sends[0], sends[-1])
            self.naks += 1
            error = RadioRefused(f"NAK {reply.fields[1]}")
            if attempt < attempts:
                await asyncio.sleep(nak_backoff_s)
        raise type(error)(
            f"{frame.type} {frame.seq:03d} not acknowledged after {attempts} attempts: {error}"
        ) from error

    async def _attempt(
        self, link: RadioLink, frame: Frame, data: bytes, ack_timeout_s: float, sends: list[int]
    ) -> Frame:
        """One transmission and its answer; DeviceOffline or DeviceTimeout if none came."""
        if not link.is_open and not await link.wait_open(ack_timeout_s):
            raise DeviceOffline(f"{link.url} not open")
        waiter = asyncio.get_running_loop().create_future()
        self._pending[frame.seq] = waiter
        try:
            sends.append(link.send(data))
            self.sent += 1
            async with asyncio.timeout(ack_timeout_s):
                reply: Frame = await waiter
        except TimeoutError as exc:
            self.timeouts += 1
            raise DeviceTimeout(f"no answer within {ack_timeout_s * 1000:.0f} ms") from exc
        finally:
            if self._pending.get(frame.seq) is waiter:
                del self._pending[frame.seq]
        return reply

    def _delivered(self, frame: Frame, attempts: int, first_ns: int, sent_ns: int) -> Delivery:
        acked_ns = time.monotonic_ns()
        self.acked += 1
        self.last_rtt_ms = (acked_ns - sent_ns) / 1e6
        return Delivery(frame, attempts, first_ns, acked_ns, self.last_rtt_ms)


def _parse_answer(line: bytes) -> Frame:
    """A frame the radio may send (ACK or NAK); anything else is a FrameError."""
    frame = parse(line)
    if frame.type not in (FrameType.ACK, FrameType.NAK):
        raise FrameError(f"the radio sent a {frame.type} frame; it may only send ACK or NAK")
    return frame
