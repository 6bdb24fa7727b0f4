"""The priority lane serves commands before polls that were waiting longer."""

from __future__ import annotations

import asyncio

import pytest

from gatewayd.kernel.lane import COMMAND, POLL, LaneFull, PriorityLane


async def test_waiters_are_served_by_priority_then_arrival() -> None:
    lane = PriorityLane()
    order: list[str] = []

    async def use(name: str, priority: int) -> None:
        async with lane.hold(priority):
            order.append(name)

    await lane.acquire(POLL)
    tasks = [
        asyncio.create_task(use(name, prio))
        for name, prio in [
            ("poll-1", POLL),
            ("poll-2", POLL),
            ("cmd-1", COMMAND),
            ("cmd-2", COMMAND),
        ]
    ]
    await asyncio.sleep(0)
    assert lane.waiting == 4
    lane.release()
    await asyncio.gather(*tasks)
    assert order == ["cmd-1", "cmd-2", "poll-1", "poll-2"]
    assert not lane.locked


async def test_cancelled_waiter_does_not_block_the_lane() -> None:
    lane = PriorityLane()
    await lane.acquire(POLL)
    cancelled = asyncio.create_task(lane.acquire(COMMAND))
    later = asyncio.create_task(lane.acquire(POLL))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    lane.release()
    await asyncio.wait_for(later, 1)
    assert lane.locked
    lane.release()
    assert not lane.locked


async def test_waiter_cancelled_after_being_granted_passes_the_lane_on() -> None:
    lane = PriorityLane()
    await lane.acquire(POLL)
    first = asyncio.create_task(lane.acquire(COMMAND))
    second = asyncio.create_task(lane.acquire(POLL))
    await asyncio.sleep(0)
    lane.release()  # grants ``first``, which is cancelled before it runs
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)
    lane.release()
    assert not lane.locked


async def test_full_lane_refuses_at_once() -> None:
    lane = PriorityLane(max_waiters=1)
    await lane.acquire(POLL)
    waiting = asyncio.create_task(lane.acquire(COMMAND))
    await asyncio.sleep(0)
    with pytest.raises(LaneFull):
        await lane.acquire(COMMAND)
    lane.release()
    await waiting
    lane.release()


async def test_release_of_a_free_lane_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        PriorityLane().release()
