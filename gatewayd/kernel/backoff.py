"""Capped exponential backoff with full jitter: how everything here waits before trying again."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter."""

    min_s: float = 0.2
    max_s: float = 10.0
    #: A driver that ran this long before failing starts again from ``min_s``.
    reset_after_s: float = 30.0

    def delay_s(self, attempt: int) -> float:
        # Clamp the exponent: 2.0**1024 overflows, and a board can stay unplugged for hours.
        cap = min(self.max_s, self.min_s * (2 ** min(attempt, 32)))
        return random.uniform(self.min_s, max(self.min_s, cap))
