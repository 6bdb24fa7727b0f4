"""One backoff for everything that retries: the policy, and a timer for one retry loop."""

from __future__ import annotations

import random

import pytest

from gatewayd.kernel.backoff import Backoff, BackoffTimer


@pytest.fixture(autouse=True)
def seeded() -> None:
    random.seed(1234)


def test_full_jitter_waits_anywhere_from_the_minimum_up_to_the_doubled_step() -> None:
    policy = Backoff(min_s=0.5, max_s=10.0)
    for attempt, step in [(0, 0.5), (1, 1.0), (3, 4.0), (5, 10.0), (60, 10.0)]:
        delays = [policy.delay_s(attempt) for _ in range(500)]
        assert all(0.5 <= d <= step for d in delays)
        if attempt:
            assert min(delays) < (0.5 + step) / 2 < max(delays)


def test_a_small_jitter_waits_most_of_the_step_and_never_beyond_the_maximum() -> None:
    policy = Backoff(min_s=0.1, max_s=5.0, jitter=0.2)
    for attempt, step in [(0, 0.1), (2, 0.4), (10, 5.0)]:
        assert all(0.8 * step <= policy.delay_s(attempt) <= step for _ in range(500))


def test_a_huge_attempt_number_does_not_overflow() -> None:
    assert Backoff(min_s=0.2, max_s=3.0).step_s(10_000) == 3.0


def test_the_timer_doubles_after_each_failure_and_starts_over_after_reset() -> None:
    timer = BackoffTimer(Backoff(min_s=1.0, max_s=8.0, jitter=0.0))
    assert [timer.next_s() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    timer.reset()
    assert timer.next_s() == 1.0


def test_slowest_makes_the_next_wait_the_maximum() -> None:
    timer = BackoffTimer(Backoff(min_s=0.1, max_s=1.0, jitter=0.0))
    timer.slowest()
    assert timer.next_s() == 1.0
    timer.reset()
    assert timer.next_s() == 0.1


def test_the_timer_counter_stays_bounded_in_a_long_outage() -> None:
    timer = BackoffTimer(Backoff(min_s=0.01, max_s=0.02))
    for _ in range(1000):
        timer.next_s()
    assert timer.attempts <= 32
