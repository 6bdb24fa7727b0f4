"""Capped exponential backoff with jitter: how everything here waits before trying again.

:class:`Backoff` is the policy (frozen, shared by any number of loops); :class:`BackoffTimer`
is one retry loop's place in it: each :meth:`~BackoffTimer.next_s` is longer than the last,
and :meth:`~BackoffTimer.reset` starts again after a success.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

#: Exponents beyond this are clamped: 2.0**1024 overflows, and a board can stay unplugged for
#: hours. Any policy reaches ``max_s`` long before (min_s * 2**32 is over a century).
MAX_EXPONENT = 32


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays that double from ``min_s`` up to ``max_s``, each shortened at random."""

    min_s: float = 0.2
    max_s: float = 10.0
    #: A driver that ran this long before failing starts again from ``min_s``.
    reset_after_s: float = 30.0
    #: Share of each step drawn at random: 1.0 is full jitter (anywhere from ``min_s`` up to
    #: the step), 0.2 waits at least 80% of it. Jitter keeps many devices that failed
    #: together (a switch rebooted) from all retrying in the same instant.
    jitter: float = 1.0

    def step_s(self, attempt: int) -> float:
        """The longest delay of retry ``attempt`` (0 for the first): doubled, capped."""
        return min(self.max_s, self.min_s * 2.0 ** min(attempt, MAX_EXPONENT))

    def delay_s(self, attempt: int) -> float:
        """A delay for retry ``attempt``, at random between its shortest and its step."""
        step = max(self.min_s, self.step_s(attempt))
        return random.uniform(max(self.min_s, step * (1 - self.jitter)), step)

    @property
    def attempts_to_max(self) -> int:
        """The first attempt whose step is ``max_s``."""
        if self.max_s <= self.min_s:
            return 0
        return min(MAX_EXPONENT, math.ceil(math.log2(self.max_s / self.min_s)))


class BackoffTimer:
    """One retry loop's position in a :class:`Backoff`: longer after each failure."""

    def __init__(self, policy: Backoff) -> None:
        #: The policy the delays are drawn from.
        self.policy = policy
        #: Delays handed out since the last :meth:`reset` (the next one's ``attempt``).
        self.attempts = 0

    def next_s(self) -> float:
        """The delay to wait before the next try; the one after it is longer."""
        delay = self.policy.delay_s(self.attempts)
        # Bounded like the exponent, so a loop that fails for weeks keeps a small counter.
        self.attempts = min(self.attempts + 1, MAX_EXPONENT)
        return delay

    def reset(self) -> None:
        """The last try worked: the next failure waits only ``min_s`` again."""
        self.attempts = 0

    def slowest(self) -> None:
        """Wait the longest from now on, for failures that a quick retry will not fix."""
        self.attempts = max(self.attempts, self.policy.attempts_to_max)
