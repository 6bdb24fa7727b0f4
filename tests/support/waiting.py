"""The one poll-until helper: wait for a condition that has no event to await."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

__all__ = ["describe", "eventually"]

T = TypeVar("T")


@overload
async def eventually(
    condition: Callable[[], Awaitable[T]],
    *,
    timeout_s: float = ...,
    interval_s: float = ...,
    message: str | None = ...,
) -> T: ...


@overload
async def eventually(
    condition: Callable[[], T],
    *,
    timeout_s: float = ...,
    interval_s: float = ...,
    message: str | None = ...,
) -> T: ...


async def eventually(
    condition: Callable[[], object],
    *,
    timeout_s: float = 5.0,
    interval_s: float = 0.01,
    message: str | None = None,
) -> object:
    """The first truthy value of ``condition()``, polled every ``interval_s``; else fail.

    ``condition`` may be a coroutine function (a status request, a log read). The failure names
    what was awaited (``message``, else the condition's source) and the last value it gave, so a
    red test says which state never came.
    """
    last: object = None
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            while True:
                value = condition()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return value
                last = value
                await asyncio.sleep(interval_s)
    except TimeoutError:
        # A time-out raised inside the condition itself is the condition's failure, not ours.
        if not deadline.expired():
            raise
        what = message or describe(condition)
        raise AssertionError(f"not within {timeout_s} s: {what} (last gave {last!r})") from None


def describe(function: Callable[..., object]) -> str:
    """A short human name for ``function``: a lambda's source text, else its qualified name."""
    name = str(getattr(function, "__qualname__", repr(function)))
    if "<lambda>" not in name:
        return name
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return name
    start = source.find("lambda")
    if start < 0:
        return name
    return _until_unbalanced(" ".join(source[start:].split()))


def _until_unbalanced(text: str) -> str:
    """``text`` up to the bracket or comma that closes the call the lambda was passed to."""
    depth = 0
    # Commas before the colon separate the lambda's own parameters.
    body = text.find(":")
    for index, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                return text[:index]
        elif char == "," and depth == 0 and index > body:
            return text[:index]
    return text
