"""Where events wait for the broker: the publish-queue contract, in memory and on disk.

:class:`Outbox` is the durable one (SQLite, WAL). Every write happens on the outbox's own
writer thread, never on the event loop: ``put`` stages the entry in memory and returns; a
life-safety entry starts a commit with ``synchronous=FULL`` at once, telemetry is committed in
groups a few milliseconds later, so ``put`` stays non-blocking at 10,000 events/s. A row is
deleted only after the broker's PUBACK. Every queued entry is also kept in memory (bounded by
``max_rows``): publishing never waits for the disk, and the database is read only at start-up.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from gatewayd.kernel.errors import ErrorCode, GatewayError
from gatewayd.security.files import private_file

log = structlog.get_logger(__name__)

#: Telemetry is committed this long after it was queued, at the latest.
FLUSH_INTERVAL_S = 0.01
#: ... or as soon as this many rows wait, whichever comes first.
FLUSH_ROWS = 1_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    life_safety INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
"""


class OutboxError(GatewayError):
    """The outbox could not queue an event."""

    code: str = ErrorCode.OUTBOX_ERROR


class PublishQueueFull(OutboxError):
    """A life-safety message could not be queued: it is never dropped silently."""

    code: str = ErrorCode.QUEUE_FULL


class OutboxClosed(OutboxError):
    code: str = ErrorCode.OUTBOX_CLOSED


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One queued event; ``seq`` is a single sequence over both traffic classes."""

    seq: int
    #: Topic below ``<prefix>/<site>/``, e.g. ``event/alarm``.
    topic: str
    payload: bytes
    life_safety: bool


class PublishQueue(Protocol):
    """Where events wait for the broker.

    ``get`` hands out the oldest life-safety entry, else the oldest telemetry entry; it stays
    in flight until ``ack`` (after PUBACK) removes it, or ``rewind`` (connection lost) makes
    every in-flight entry pending again, ahead of newer ones.
    """

    def put(self, topic: str, payload: bytes, *, life_safety: bool) -> None:
        """Never blocks; raises :class:`PublishQueueFull` for life-safety traffic when full."""
        ...

    async def get(self) -> Outgoing: ...

    def ack(self, entry: Outgoing) -> None: ...

    def rewind(self) -> None: ...

    def close(self) -> None:
        """Make what is queued durable (if the queue is durable) and release resources."""
        ...

    def __len__(self) -> int:
        """Entries not yet acknowledged (pending and in flight)."""
        ...

    def statistics(self) -> dict[str, int]: ...


class _Entries:
    """The in-memory side shared by both queues: pending per class, in flight, readiness."""

    def __init__(self) -> None:
        # Index 0: life safety, 1: telemetry; each in seq order.
        self.pending: tuple[deque[Outgoing], deque[Outgoing]] = (deque(), deque())
        self.in_flight: dict[int, Outgoing] = {}
        self.ready = asyncio.Event()

    def add(self, entry: Outgoing) -> None:
        self.pending[0 if entry.life_safety else 1].append(entry)
        self.ready.set()

    async def get(self) -> Outgoing:
        while True:
            for pending in self.pending:
                if pending:
                    entry = pending.popleft()
                    self.in_flight[entry.seq] = entry
                    return entry
            self.ready.clear()
            await self.ready.wait()

    def rewind(self) -> None:
        for entry in sorted(self.in_flight.values(), key=lambda e: e.seq, reverse=True):
            self.pending[0 if entry.life_safety else 1].appendleft(entry)
        self.in_flight.clear()
        if any(self.pending):
            self.ready.set()

    def count(self, life_safety: bool) -> int:
        in_flight = sum(e.life_safety == life_safety for e in self.in_flight.values())
        return len(self.pending[0 if life_safety else 1]) + in_flight

    def __len__(self) -> int:
        return len(self.pending[0]) + len(self.pending[1]) + len(self.in_flight)

    def statistics(self) -> dict[str, int]:
        return {
            "queued": len(self),
            "queued_life_safety": self.count(True),
            "in_flight": len(self.in_flight),
        }


class MemoryQueue:
    """In-memory :class:`PublishQueue`: telemetry drops its oldest when full, life safety never."""

    def __init__(self, *, telemetry_max: int = 10_000, life_safety_max: int = 100_000) -> None:
        self._telemetry_max = telemetry_max
        self._life_safety_max = life_safety_max
        self._entries = _Entries()
        self._seq = itertools.count()
        #: Telemetry entries dropped because the queue was full.
        self.dropped_telemetry = 0

    def put(self, topic: str, payload: bytes, *, life_safety: bool) -> None:
        pending = self._entries.pending[0 if life_safety else 1]
        if life_safety and len(pending) >= self._life_safety_max:
            raise PublishQueueFull(
                f"life-safety queue full ({self._life_safety_max} entries); {topic} not queued"
            )
        if not life_safety and len(pending) >= self._telemetry_max:
            pending.popleft()
            self.dropped_telemetry += 1
            _log_drop(self.dropped_telemetry)
        self._entries.add(Outgoing(next(self._seq), topic, payload, life_safety))

    async def get(self) -> Outgoing:
        return await self._entries.get()

    def ack(self, entry: Outgoing) -> None:
        self._entries.in_flight.pop(entry.seq, None)

    def rewind(self) -> None:
        self._entries.rewind()

    def close(self) -> None:
        """Nothing to keep: an in-memory queue ends with the process."""

    def __len__(self) -> int:
        return len(self._entries)

    def statistics(self) -> dict[str, int]:
        return {**self._entries.statistics(), "dropped_telemetry": self.dropped_telemetry}


def _log_drop(dropped: int) -> None:
    if dropped == 1 or dropped % 1000 == 0:
        log.warning("outbox.telemetry_dropped", dropped=dropped)


class Outbox:
    """Durable :class:`PublishQueue` in one SQLite file (WAL), safe against ``kill -9``.

    At most ``max_rows`` un-acknowledged entries; telemetry may use all but
    ``life_safety_reserve`` of them. When telemetry is at its share, its oldest pending entry
    is dropped (and counted); a life-safety entry evicts telemetry to make room and is
    refused (:class:`PublishQueueFull`) only when every row holds life-safety traffic.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_rows: int = 100_000,
        life_safety_reserve: int = 20_000,
        flush_interval_s: float = FLUSH_INTERVAL_S,
    ) -> None:
        if not 0 <= life_safety_reserve < max_rows:
            raise ValueError("life_safety_reserve must be below max_rows")
        self.path = Path(path)
        self._max_rows = max_rows
        self._telemetry_max = max_rows - life_safety_reserve
        self._flush_interval_s = flush_interval_s
        self._entries = _Entries()
        # Rows queued but not yet written, rows being written, and written rows acked since.
        self._staged: dict[int, Outgoing] = {}
        self._writing: dict[int, Outgoing] = {}
        self._deletes: list[int] = []
        self._timer: asyncio.TimerHandle | None = None
        #: One commit at a time, on this thread; the loop only hands it rows.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="outbox-writer")
        self._inflight: asyncio.Future[bool] | None = None
        self._want_full = False
        self._stats = dict.fromkeys(
            ("dropped_telemetry", "commits", "commits_full", "rows_written", "rows_deleted",
             "recovered", "write_errors", "moved_aside"),
            0,
        )  # fmt: skip
        self._db: sqlite3.Connection | None = self._open()
        last = self._load()
        self._seq = itertools.count(last + 1)

    # --- PublishQueue -------------------------------------------------------------------------

    def put(self, topic: str, payload: bytes, *, life_safety: bool) -> None:
        if self._db is None:
            raise OutboxClosed(f"outbox {self.path} is closed; {topic} not queued")
        if not self._make_room(topic, life_safety=life_safety):
            return
        entry = Outgoing(next(self._seq), topic, payload, life_safety)
        self._staged[entry.seq] = entry
        self._entries.add(entry)
        if life_safety:
            # On disk within one commit (synced): an alarm survives a power cut from there.
            self._want_full = True
            self._schedule(0.0)
        elif len(self._staged) >= FLUSH_ROWS:
            self._schedule(0.0)
        else:
            self._schedule(self._flush_interval_s)

    async def get(self) -> Outgoing:
        return await self._entries.get()

    def ack(self, entry: Outgoing) -> None:
        if self._entries.in_flight.pop(entry.seq, None) is None:
            return
        # Published before its group commit: it never needs to touch the disk.
        if self._staged.pop(entry.seq, None) is None:
            # Written (or being written): its row goes in the next commit.
            self._deletes.append(entry.seq)
            self._schedule(self._flush_interval_s)

    def rewind(self) -> None:
        self._entries.rewind()

    def close(self) -> None:
        """Commit what is staged and close the file; idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._db is None:
            return
        self.flush(full=True)
        self._writer.shutdown(wait=True)
        self._db.close()
        self._db = None
        log.info("outbox.closed", path=str(self.path), queued=len(self))

    def __len__(self) -> int:
        return len(self._entries)

    def statistics(self) -> dict[str, int]:
        return {**self._entries.statistics(), **self._stats, "staged": len(self._staged)}

    def flush(self, *, full: bool = False) -> None:
        """Commit everything staged now, on the calling thread (close, tests)."""
        if self._db is None:
            return
        # Wait for a commit in flight; its rows are written again here, which is harmless.
        self._writer.submit(lambda: None).result()
        rows = [*self._writing.values(), *self._staged.values()]
        deletes, self._deletes = self._deletes, []
        if self._write(rows, deletes, full=full):
            self._writing.clear()
            self._staged.clear()
        else:
            self._deletes = deletes + self._deletes

    async def synced(self) -> None:
        """Wait until what is queued now has been committed (or a commit failed)."""
        while self._staged or self._writing or self._deletes or self._inflight is not None:
            if self._inflight is not None:
                await asyncio.wait([self._inflight])
            else:
                self._start_commit()
                if self._inflight is None:
                    return

    # --- bounds -------------------------------------------------------------------------------

    def _make_room(self, topic: str, *, life_safety: bool) -> bool:
        """Evict telemetry if the new entry needs its room; False: drop the new entry."""
        telemetry = self._entries.pending[1]
        if len(self._entries) < self._max_rows and (
            life_safety or self._entries.count(False) < self._telemetry_max
        ):
            return True
        if telemetry:
            self._drop(telemetry.popleft())
            return True
        if life_safety:
            raise PublishQueueFull(
                f"outbox full of life-safety events ({self._max_rows}); {topic} not queued"
            )
        # Every telemetry row is in flight: the newest one gives way.
        self._stats["dropped_telemetry"] += 1
        _log_drop(self._stats["dropped_telemetry"])
        return False

    def _drop(self, entry: Outgoing) -> None:
        if self._staged.pop(entry.seq, None) is None:
            self._deletes.append(entry.seq)
        self._stats["dropped_telemetry"] += 1
        _log_drop(self._stats["dropped_telemetry"])

    # --- disk ---------------------------------------------------------------------------------

    def _schedule(self, delay_s: float) -> None:
        if self._db is None:
            return
        if self._timer is not None and delay_s == 0.0:
            self._timer.cancel()
            self._timer = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # No loop (a tool or a test without one): there is nobody to block; write now.
            self.flush(full=self._want_full)
            return
        if self._timer is None:
            self._timer = loop.call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._start_commit()

    def _start_commit(self) -> None:
        """Hand the staged rows and acked deletes to the writer thread, one commit at a time."""
        if self._inflight is not None or self._db is None:
            return
        if not (self._staged or self._deletes):
            return
        rows = list(self._staged.values())
        self._writing.update(self._staged)
        self._staged.clear()
        deletes, self._deletes = self._deletes, []
        full, self._want_full = self._want_full, False
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._writer, self._write, rows, deletes, full)
        self._inflight = future
        future.add_done_callback(lambda f: self._committed(f, rows, deletes, full))

    def _committed(
        self, future: asyncio.Future[bool], rows: list[Outgoing], deletes: list[int], full: bool
    ) -> None:
        self._inflight = None
        ok = not future.cancelled() and future.exception() is None and future.result()
        for entry in rows:
            written = self._writing.pop(entry.seq, None)
            if not ok and written is not None:
                # Still unacked: stage it again for the retry (acked ones queued a delete).
                self._staged[entry.seq] = written
        if not ok:
            self._deletes = deletes + self._deletes
            self._want_full = self._want_full or full
            self._schedule(1.0)
        elif self._staged or self._deletes:
            self._schedule(0.0 if self._want_full else self._flush_interval_s)

    def _write(self, rows: list[Outgoing], deletes: list[int], full: bool) -> bool:
        """Write rows and delete acked ones in one transaction (the writer thread, or close)."""
        db = self._db
        if db is None or not (rows or deletes):
            return True
        try:
            # FULL syncs the WAL at commit (power-loss safe); NORMAL survives a process crash.
            db.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?)",
                    [(e.seq, int(e.life_safety), e.topic, e.payload) for e in rows],
                )
                db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in deletes])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            # Entries stay in memory: the broker still gets them; the commit is retried.
            self._stats["write_errors"] += 1
            log.critical("outbox.write_failed", path=str(self.path), error=str(exc),
                         rows=len(rows))  # fmt: skip
            return False
        self._stats["commits"] += 1
        self._stats["commits_full"] += full
        self._stats["rows_written"] += len(rows)
        self._stats["rows_deleted"] += len(deletes)
        return True

    def _open(self) -> sqlite3.Connection:
        """Open and check the file; a damaged one is moved aside and a fresh one created."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return _connect(self.path)
        except sqlite3.OperationalError as exc:
            # Cannot be opened or written (a read-only disk): not damaged, so not moved.
            log.critical("outbox.memory_only", path=str(self.path), error=str(exc),
                         note="events are sent but not kept across a restart")  # fmt: skip
            return _connect(":memory:")
        except sqlite3.DatabaseError as exc:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            log.critical(
                "outbox.corrupt_moved_aside",
                path=str(self.path),
                moved_to=str(aside),
                error=str(exc),
                note="queued events in it are not sent",
            )
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    try:
                        src.rename(f"{aside}{suffix}")
                    except OSError as move_exc:
                        log.critical("outbox.not_moved", path=str(src), error=str(move_exc))
            self._stats["moved_aside"] += 1
        try:
            return _connect(self.path)
        except sqlite3.Error as exc:
            # Never crash-loop a safety daemon over its outbox: run without durability.
            log.critical("outbox.memory_only", path=str(self.path), error=str(exc))
            return _connect(":memory:")

    def _load(self) -> int:
        """Queue the rows a previous run left, in order; return the last sequence number."""
        assert self._db is not None
        last = 0
        for seq, life_safety, topic, payload in self._db.execute(
            "SELECT seq, life_safety, topic, payload FROM outbox ORDER BY seq"
        ):
            entry = Outgoing(seq, topic, bytes(payload), bool(life_safety))
            self._entries.pending[0 if entry.life_safety else 1].append(entry)
            last = seq
        self._stats["recovered"] = len(self._entries)
        if self._entries.count(False) > self._telemetry_max:
            # The bounds shrank since the rows were written: keep the newest telemetry.
            while self._entries.count(False) > self._telemetry_max:
                self._drop(self._entries.pending[1].popleft())
            self.flush()
        if len(self._entries):
            self._entries.ready.set()
            log.info(
                "outbox.recovered",
                path=str(self.path),
                rows=len(self._entries),
                life_safety=self._entries.count(True),
            )
        return last


def _connect(path: Path | str) -> sqlite3.Connection:
    # A lock held elsewhere (a backup) is waited for on the writer thread only, and briefly.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=1.0)
    try:
        result = db.execute("PRAGMA quick_check").fetchone()
        if result is None or result[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {result[0] if result else 'no answer'}")
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        # Queued events name actors and doors: the gateway's user only (like the audit log).
        private_file(Path(path))
    except BaseException:
        db.close()
        raise
    return db
