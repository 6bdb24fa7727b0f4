"""Background work the services start (a fire release, a rule's actions) in the gateway's group."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class Tasks:
    """Spawns into the running gateway's task group, so nothing outlives the gateway."""

    def __init__(self) -> None:
        self._group: asyncio.TaskGroup | None = None

    def attach(self, group: asyncio.TaskGroup | None) -> None:
        self._group = group

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        if self._group is None:
            # Not running (a unit test driving commands directly): nothing may outlive us.
            coro.close()
            log.error("gateway.not_running", task=name)
            return None
        try:
            return self._group.create_task(coro, name=name)
        except RuntimeError:
            # The gateway is stopping (its group is cancelling): the caller, maybe in the
            # middle of writing doors, must not fail because a side task cannot start.
            coro.close()
            log.info("gateway.stopping_task_not_started", task=name)
            return None
