"""Watches the wall clock against the monotonic one: a step larger than the command window is
an alarm (signed commands are judged by the wall clock; deadlines never are)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

#: How often the two clocks are compared.
CHECK_INTERVAL_S = 1.0

#: Told of a step: (seconds the wall clock moved beyond real time, + ahead / - back).
StepListener = Callable[[float], None]


class ClockWatch:
    """Compares wall-clock and monotonic progress once a second."""

    def __init__(self, threshold_s: float, on_step: StepListener) -> None:
        #: A step at least this large is reported (the signed-command timestamp window).
        self.threshold_s = threshold_s
        self._on_step = on_step
        self.steps = 0

    async def run(self) -> None:
        wall, mono = time.time(), time.monotonic()
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            wall_now, mono_now = time.time(), time.monotonic()
            step_s = (wall_now - wall) - (mono_now - mono)
            wall, mono = wall_now, mono_now
            if abs(step_s) >= self.threshold_s:
                self.steps += 1
                log.critical("clock.stepped", step_s=round(step_s, 3),
                             threshold_s=self.threshold_s)  # fmt: skip
                self._on_step(step_s)
