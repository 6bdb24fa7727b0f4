"""Honouring a cancellation that a library call swallowed."""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Re-raise a cancellation of the current task that a library swallowed.

    On Python 3.11 ``asyncio.wait_for`` returns the result and drops a cancellation that
    arrives together with it; aiomqtt's publish (with its PUBACK) and pymodbus's requests
    (with their reply) both await through one. The task still counts the request. Without
    this, a loop that goes on waiting, or a task that goes on after a command it ran for its
    caller (a door command, the expiry's relock), would hold a shutdown up for ever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
