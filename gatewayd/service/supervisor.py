"""Runs every driver in one task group, restarts a failed driver with backoff.

A driver that raises is reported offline and restarted after a capped, jittered backoff;
one driver's trouble never delays another's. Start-up waits for each driver's started
handshake (bounded by a deadline), and stopping is idempotent and bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from contextlib import AsyncExitStack

import structlog

from gatewayd.kernel.backoff import Backoff
from gatewayd.kernel.driver import AnyDriver, Emit
from gatewayd.kernel.events import DeviceHealth, Health

log = structlog.get_logger(__name__)

#: How long a crashed driver waits before it runs again.
RESTART_BACKOFF = Backoff()


class Supervisor:
    """Owns the driver tasks; use as ``async with Supervisor(...) as sup:``."""

    def __init__(
        self,
        drivers: Mapping[str, AnyDriver],
        emit: Emit,
        *,
        backoff: Backoff = RESTART_BACKOFF,
        start_timeout_s: float = 5.0,
        stop_timeout_s: float = 3.0,
    ) -> None:
        self.drivers = dict(drivers)
        self._emit = emit
        self._backoff = backoff
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._started = {name: asyncio.Event() for name in self.drivers}
        self._restarts = dict.fromkeys(self.drivers, 0)
        self._stack: AsyncExitStack | None = None
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Supervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self, wait_for: Collection[str] | None = None) -> None:
        """Spawn every driver; wait (bounded) for the started handshakes of ``wait_for``.

        The gateway waits only for the devices that drive doors, so a slow camera never
        delays re-asserting a lockdown at start-up.
        """
        self._stack = AsyncExitStack()
        self._group = await self._stack.enter_async_context(asyncio.TaskGroup())
        for name, driver in self.drivers.items():
            self._tasks.append(
                self._group.create_task(self._keep_running(name, driver), name=f"driver:{name}")
            )
        names = self.drivers if wait_for is None else wait_for
        waits = [self._started[name].wait() for name in names]
        try:
            async with asyncio.timeout(self._start_timeout_s):
                await asyncio.gather(*waits)
        except TimeoutError:
            late = [n for n in names if not self._started[n].is_set()]
            log.warning("supervisor.start_timeout", late=late, timeout_s=self._start_timeout_s)

    async def stop(self) -> None:
        """Cancel every driver task and wait for them, at most ``stop_timeout_s``."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        for task in self._tasks:
            task.cancel()
        try:
            async with asyncio.timeout(self._stop_timeout_s):
                await stack.aclose()
        except TimeoutError:
            log.error("supervisor.stop_timeout", timeout_s=self._stop_timeout_s)
        self._tasks.clear()

    async def _keep_running(self, name: str, driver: AnyDriver) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await driver.run(self._started[name].set)
                detail = "driver returned"
            except asyncio.CancelledError:
                raise
            # A driver bug must not take the other drivers or the daemon down: report it,
            # mark the device offline and restart the driver after a backoff.
            except Exception as exc:
                detail = f"{type(exc).__name__}: {exc}"
                log.exception("driver.crashed", device=name)
            self._started[name].set()
            if loop.time() - began > self._backoff.reset_after_s:
                attempt = 0
            delay = self._backoff.delay_s(attempt)
            attempt += 1
            self._restarts[name] += 1
            self._emit(DeviceHealth(name, Health.OFFLINE, f"restarting: {detail}"))
            log.warning("driver.restart", device=name, delay_s=round(delay, 2), detail=detail)
            await asyncio.sleep(delay)

    def statistics(self) -> dict[str, dict[str, object]]:
        return {
            name: {
                "health": str(driver.health),
                "restarts": self._restarts[name],
                **driver.statistics(),
            }
            for name, driver in self.drivers.items()
        }
