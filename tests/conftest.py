"""Shared fixtures; each area keeps its own in a ``tests.support`` module registered here."""

import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator

import pytest
from hypothesis import settings

from tests.support.waiting import eventually

pytest_plugins = [
    "tests.support.bacnet",
    "tests.support.harness",
    "tests.support.modbus",
    "tests.support.mqtt",
    "tests.support.gateway",
    "tests.support.tls",
    "tests.support.console",
    "tests.support.disk",
    "tests.support.district",
    "tests.support.daemon",
]

# Timing on a shared 2-core machine is noisy: no per-example deadline.
settings.register_profile("gatewayd", deadline=None)
settings.load_profile("gatewayd")


@pytest.fixture(autouse=True)
async def no_leaks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks or threads running after its fixtures closed."""
    threads_before = set(threading.enumerate())
    yield
    current = asyncio.current_task()

    def pending_tasks() -> list[asyncio.Task[object]]:
        return [
            t
            for t in asyncio.all_tasks()
            if t is not current and not t.done() and not _server_leftover(t)
        ]

    # Cancelled tasks (a server's request handlers) may need a few turns of the loop to end.
    with contextlib.suppress(AssertionError):
        await eventually(lambda: not pending_tasks(), timeout_s=0.5)
    pending = pending_tasks()
    # "asyncio_N" threads are the loop's default executor (getaddrinfo) and "asyncio-waitpid"
    # its child watcher: both belong to the loop and end with it.
    leaked_threads = [
        t
        for t in set(threading.enumerate()) - threads_before
        if t.is_alive() and not t.name.startswith(("asyncio_", "asyncio-waitpid"))
    ]
    for task in pending:
        # Where each leftover task is stuck is what a person needs to fix the leak.
        task.print_stack(limit=6, file=sys.stderr)
        task.cancel()
    assert not pending, f"test left tasks running: {[t.get_name() for t in pending]}"
    assert not leaked_threads, f"test left threads running: {[t.name for t in leaked_threads]}"


def _server_leftover(task: asyncio.Task[object]) -> bool:
    """A request handler of an aiohttp server that the test has already stopped."""
    # aiohttp (3.14) can leave the handler of a connection it closed at shutdown waiting on
    # a cancelled future until the loop closes; it belongs to the stopped server, and the
    # server's own cleanup is tested by the simulators' stop() tests.
    name = getattr(task.get_coro(), "__qualname__", "")
    return name.startswith("RequestHandler.")
