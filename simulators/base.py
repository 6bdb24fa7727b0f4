"""What every simulator shares: a lifecycle, bounded logs with monotonic timestamps, faults.

:class:`Listener` is the lifecycle of anything that listens on a port: ``start`` and ``stop``
are idempotent, serialised and bounded by a deadline, ``async with`` works, and the port
bound for port 0 is read back and kept, so a simulator that vanishes reappears where it was.
:class:`Simulator` adds what a fake device needs on top: :class:`Faults` changeable at run
time, ``vanish`` / ``reappear`` (power loss), a request log and a write log (bounded deques
of records whose first field is ``ns``, ``time.monotonic_ns()``), counters, and helpers that
keep every timer and every delayed request owned, so that ``stop`` leaves nothing behind.

A subclass implements :meth:`Listener._open` (bind, return the bound port) and
:meth:`Listener._close` (stop listening, drop clients); :meth:`Listener._stopped` is for
what ends only with ``stop`` (door timers, a pty).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import structlog

from gatewayd.simulators.faults import Faults

log = structlog.get_logger("simulators")

#: Bounded so a simulator left running for days does not grow without limit.
LOG_LIMIT = 100_000


class Timestamped(Protocol):
    """A log record: a NamedTuple whose ``ns`` is ``time.monotonic_ns()`` when it happened."""

    @property
    def ns(self) -> int: ...

    def _asdict(self) -> dict[str, Any]: ...


W = TypeVar("W", bound=Timestamped)
R = TypeVar("R", bound=Timestamped)
T = TypeVar("T", bound=Timestamped)


class RecordLog(Generic[T]):
    """A bounded log of one NamedTuple type, kept as plain tuples; read back as the records.

    A relay board logs every request: 32 boards polled at 100 ms add 320 records a second.
    NamedTuples are scanned by every full garbage collection, and the simulators' process
    paused 12-31 ms in them (bench.lockdown saw one inside a timed cycle); a plain tuple of
    numbers and strings is left alone by the collector after its first look.
    """

    def __init__(self, maxlen: int) -> None:
        self._rows: deque[tuple[Any, ...]] = deque(maxlen=maxlen)
        #: The records' NamedTuple type, from the first one appended.
        self._type: Any = None

    def append(self, record: T) -> None:
        if self._type is None:
            self._type = type(record)
        elif type(record) is not self._type:
            raise TypeError(f"a log of {self._type.__name__} cannot take {type(record).__name__}")
        self._rows.append(tuple(record))  # type: ignore[arg-type]

    def clear(self) -> None:
        self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[T]:
        return iter(()) if self._type is None else map(self._type._make, self._rows)

    def __getitem__(self, index: int) -> T:
        row = self._rows[index]
        record: T = self._type._make(row)
        return record


class Listener(abc.ABC):
    """Something listening on ``host:port``; start and stop are idempotent and bounded."""

    #: Names the log events (``relay_board.listening``) and the control interface's answers.
    kind: ClassVar[str] = "listener"

    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        start_timeout_s: float = 5.0,
        stop_timeout_s: float = 2.0,
    ) -> None:
        #: Device id: in logs, the ready line and the control interface.
        self.name = name
        self.host = host
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log = log.bind(device=name)
        self._port = port
        self._listening = False
        # One transition at a time: a control client's vanish must not race a stop.
        self._lifecycle = asyncio.Lock()
        self._timers: set[asyncio.TimerHandle] = set()
        self._inflight: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        """The bound port (the one the kernel chose, once started with port 0)."""
        return self._port

    @property
    def listening(self) -> bool:
        return self._listening

    async def start(self) -> None:
        """Bind and listen within ``start_timeout_s``; a no-op if already listening."""
        async with self._lifecycle:
            if await self._up():
                self.log.info(
                    f"{self.kind}.listening", host=self.host, port=self._port, **self._about()
                )

    async def stop(self) -> None:
        """Stop listening and end everything in flight within ``stop_timeout_s``; idempotent."""
        async with self._lifecycle:
            try:
                await self._down()
            finally:
                self._stopped()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _up(self) -> bool:
        """Open unless listening; True if it opened."""
        if self._listening:
            return False
        async with asyncio.timeout(self.start_timeout_s):
            self._port = await self._open()
        self._listening = True
        return True

    async def _down(self) -> bool:
        """Close (if listening) and end what is in flight, within ``stop_timeout_s``.

        True if it was listening.
        """
        was, self._listening = self._listening, False
        try:
            async with asyncio.timeout(self.stop_timeout_s):
                if was:
                    await self._close()
                await self._drain()
        except TimeoutError:
            # Bounded means bounded: what did not end in time is abandoned, and said so.
            self.log.warning(f"{self.kind}.stop_overran", timeout_s=self.stop_timeout_s)
        return was

    @abc.abstractmethod
    async def _open(self) -> int:
        """Bind ``self.host`` and ``self.port`` (0: any free port); return the bound port."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Stop listening and drop every client; the port may be bound again afterwards."""

    def _stopped(self) -> None:  # noqa: B027 - a hook most listeners need nothing in
        """Release what only a stop ends (door timers, a pty); called even after an overrun."""

    def _about(self) -> dict[str, Any]:
        """Extra fields of the ``listening`` log event."""
        return {}

    # --- owned timers and requests ----------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Delayed answers not sent yet plus owned tasks still running (see :meth:`_owned`)."""
        return len(self._timers) + len(self._inflight)

    def _later(self, delay_s: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        """``loop.call_later`` whose handle the simulator owns: a stop cancels it."""
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            callback()

        handle = asyncio.get_running_loop().call_later(delay_s, fire)
        self._timers.add(handle)
        return handle

    @contextlib.asynccontextmanager
    async def _owned(self) -> AsyncIterator[None]:
        """Around work in a task of its own (a request handler, a client's connection): a
        stop or vanish cancels the task, so none outlives the simulator."""
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _drain(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        current = asyncio.current_task()
        tasks = [t for t in self._inflight if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded by stop()'s deadline; a handler that ignores cancellation is abandoned.
            await asyncio.wait(tasks)
        self._inflight.difference_update(tasks)


class Simulator(Listener, Generic[W, R]):
    """A fake device: a listener with faults, power loss, request and write logs, counters."""

    kind: ClassVar[str] = "simulator"

    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        log_limit: int = LOG_LIMIT,
    ) -> None:
        super().__init__(name, host=host, port=port)
        #: Fault settings; change fields at run time.
        self.faults = faults if faults is not None else Faults()
        #: Every write that changed (or tried to change) what the device does, in order.
        self.write_log: RecordLog[W] = RecordLog(log_limit)
        #: Every request received, in order, before any fault applied.
        self.request_log: RecordLog[R] = RecordLog(log_limit)
        #: Event counters; :meth:`statistics` reports them.
        self.counts: Counter[str] = Counter()

    # --- power and faults -----------------------------------------------------------------

    async def vanish(self) -> None:
        """Stop listening and reset every connection, as a device losing power."""
        async with self._lifecycle:
            if await self._down():
                self.counts["vanished"] += 1
                self.log.info(f"{self.kind}.vanished", port=self._port)

    async def reappear(self) -> None:
        """Power back: listen again on the same port after :meth:`vanish`."""
        async with self._lifecycle:
            if await self._up():
                self.log.info(f"{self.kind}.reappeared", port=self._port)

    async def _delay(self) -> None:
        """Wait out ``faults.delay_ms`` (inside :meth:`_owned`)."""
        if self.faults.delay_ms > 0:
            self.counts["delayed"] += 1
            await asyncio.sleep(self.faults.delay_ms / 1000)

    # --- logs and counters ----------------------------------------------------------------

    def writes(self) -> list[dict[str, Any]]:
        """The write log as JSON-ready objects, oldest first, each with its ``ns``."""
        return [w._asdict() for w in self.write_log]

    def statistics(self) -> dict[str, int | float]:
        """Every counter, plus what is in flight right now."""
        return {
            **self.counts,
            "requests_logged": len(self.request_log),
            "writes_logged": len(self.write_log),
            "in_flight": self.in_flight,
        }


async def tcp_server(
    host: str, port: int, factory: Callable[[], asyncio.Protocol]
) -> tuple[asyncio.Server, int]:
    """Listen on ``host:port`` and return the server and the port it bound."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host, port, reuse_address=True)
    bound: int = server.sockets[0].getsockname()[1]
    return server, bound


async def close_tcp_server(
    server: asyncio.Server | None, transports: Iterable[asyncio.Transport]
) -> None:
    """Stop accepting, reset every connection (RST, as a power loss) and wait for the socket."""
    if server is not None:
        server.close()
    for transport in transports:
        transport.abort()
    if server is not None:
        await server.wait_closed()
