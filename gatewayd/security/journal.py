"""The durable record: the audit chain, written by one thread with group commit, and an index
of what it implies (the active safety sources, the recent command ids) for a fast start.

The audit log is the one authoritative record: every change of a safety source and every
accepted command is an audit record, and a group of records costs one ``write`` and one
``fsync``. The SQLite index (WAL, ``synchronous=NORMAL``: no fsync of its own) is a copy of
what the records say, tagged with the last seq it has seen, so a restart reads it and then
only the records after that seq. When the index is missing or unreadable it is moved aside and
rebuilt from the log (from the snapshot that opens the newest file, or from the start); when
it cannot be written (locked by a backup, a full disk) nothing waits: the writer keeps its own
copy and rewrites the index when it can.

Nothing here runs on the event loop: :meth:`Journal.record` queues and returns a
:class:`Pending`; a caller that must know the record is on disk before acting (a release)
awaits it, everyone else goes on at once (docs/security.md, section 7).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from gatewayd.kernel.backoff import Backoff
from gatewayd.security.audit import (
    LOG_ACTOR,
    AuditKind,
    AuditLog,
    AuditRecord,
    AuditUnavailable,
    read_records,
)
from gatewayd.security.files import private_dir, private_file

log = structlog.get_logger(__name__)

#: Records written in one group at most (one write, one fsync).
MAX_BATCH = 512
#: Records waiting for the writer at most; beyond, :meth:`Journal.record` refuses at once.
MAX_QUEUED = 50_000
#: How long the index may wait for a lock another process holds before the writer moves on.
INDEX_LOCK_TIMEOUT_S = 0.05
#: How long stopping waits for the writer to drain.
CLOSE_TIMEOUT_S = 3.0
RETRY_BACKOFF = Backoff(min_s=0.05, max_s=2.0)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (key TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commands (id TEXT PRIMARY KEY, ts REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""

#: Reports a change of the journal's health: (healthy, what is wrong).
HealthListener = Callable[[bool, str], None]
#: Told of the records of each group once they are on disk (on the event loop).
RecordListener = Callable[[AuditRecord], None]


@dataclass
class Recovered:
    """What the durable record says at start-up."""

    #: Active safety sources, key -> their JSON body.
    sources: dict[str, dict[str, Any]]
    #: Accepted command ids -> the ``ts`` they were sent with.
    commands: dict[str, float]
    #: The index was missing or unreadable and was rebuilt from the audit log.
    rebuilt: bool = False
    #: What was wrong and repaired (a torn tail, a cut log, a corrupt index).
    problems: list[str] = field(default_factory=list)


class Pending:
    """One queued record; await :meth:`durable` to know it is on disk."""

    def __init__(self, required: bool) -> None:
        #: The caller will act only once it is written, and refuses if it cannot be.
        self.required = required
        self.future: concurrent.futures.Future[AuditRecord] = concurrent.futures.Future()
        self._taken = False
        self._lock = threading.Lock()

    def take(self) -> bool:
        """The writer claims it for a batch; False if the caller gave up first."""
        with self._lock:
            if self.future.cancelled():
                return False
            self._taken = True
            return True

    def abandon(self) -> bool:
        """The caller gives up: True if the record will never be written."""
        with self._lock:
            return not self._taken and self.future.cancel()

    async def written(self, timeout_s: float) -> bool:
        """Whether the record reached the disk within ``timeout_s`` (it is never given up)."""
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self.future)), timeout_s)
        except (TimeoutError, AuditUnavailable, concurrent.futures.CancelledError):
            return False
        return True

    async def durable(self, timeout_s: float) -> AuditRecord:
        """The written record; :class:`AuditUnavailable` if it failed or did not start in time.

        A record the writer has already taken is waited for to the end: once its bytes may be
        on disk, the caller must know whether they are.
        """
        waiter = asyncio.wrap_future(self.future)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError:
            if self.abandon():
                raise AuditUnavailable(
                    f"the audit log did not take the record within {timeout_s:g} s"
                ) from None
            return await waiter


@dataclass(slots=True)
class _Entry:
    kind: str
    actor: str
    data: dict[str, Any]
    pending: Pending


class Journal:
    """Queue of records for the audit log, its writer thread, and the index it keeps."""

    def __init__(
        self,
        state_dir: Path | str,
        *,
        audit_name: str = "audit.log",
        index_name: str = "journal.sqlite",
        window_s: float = 30.0,
        max_file_bytes: int = 32 * 1024 * 1024,
        keep_files: int = 8,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.audit_path = self.state_dir / audit_name
        self.index_path = self.state_dir / index_name
        self.window_s = window_s
        self._max_file_bytes = max_file_bytes
        self._keep_files = keep_files
        self._log: AuditLog | None = None
        self._db: sqlite3.Connection | None = None
        self._sources: dict[str, dict[str, Any]] = {}
        self._commands: dict[str, float] = {}
        self._index_stale = False
        #: The last seq folded into the copy (and, once flushed, into the index).
        self._last_seq = 0
        #: Records folded in since the index was last written.
        self._dirty_index: list[Mapping[str, Any]] = []
        self._queue: deque[_Entry] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[HealthListener] = []
        self._record_listeners: list[RecordListener] = []
        self._healthy = True
        self._problem = ""
        self._open_error: str | None = None
        self.stats = dict.fromkeys(
            ("records", "batches", "fsyncs", "write_failures", "index_failures", "refused",
             "dropped_required", "max_batch"), 0)  # fmt: skip

    # --- start-up ------------------------------------------------------------------------

    def open(self) -> Recovered:
        """Open the log and the index, repair what can be repaired; blocking, at start-up."""
        private_dir(self.state_dir)
        problems: list[str] = []
        db, index_seq, rebuilt = self._open_index(problems)
        try:
            self._log = AuditLog(
                self.audit_path,
                max_file_bytes=self._max_file_bytes,
                keep_files=self._keep_files,
                expected_seq=index_seq,
            )
        except AuditUnavailable as exc:
            # Start anyway: fire release and lockdown still work; releases are refused.
            self._open_error = str(exc)
            problems.append(str(exc))
            log.critical("audit.unavailable_at_start", error=str(exc),
                         note="releases and unlocks are refused until it is fixed")  # fmt: skip
            self._healthy, self._problem = False, str(exc)
        problems += self._log.problems if self._log else []
        self._db = db
        self._last_seq = index_seq
        # Read even when it cannot be written: the safety state must come back either way.
        self._catch_up(0 if rebuilt else index_seq)
        if self._log is not None:
            # After a cut the log goes on below the index's seq: follow the log from here.
            self._last_seq = self._log.last_seq
        self._index_stale = self._index_stale or rebuilt
        self._flush_index()
        return Recovered(dict(self._sources), dict(self._commands), rebuilt, problems)

    def _open_index(self, problems: list[str]) -> tuple[sqlite3.Connection | None, int, bool]:
        """The index and the last seq it holds; missing or corrupt means rebuild from the log.

        An index that can be read but not written (a read-only disk, a lock held elsewhere)
        is still read: the safety state it holds is put back, only its updates wait.
        """
        existed = self.index_path.exists()
        try:
            db = _connect(self.index_path)
        except sqlite3.DatabaseError as exc:
            if existed and not _unopenable(exc):
                return self._rebuild_index(problems, f"unreadable ({exc})")
            problems.append(f"the index {self.index_path.name} cannot be written ({exc})")
            return None, self._read_only_index(problems), False
        if not existed:
            # A new state directory has neither: nothing was lost, nothing to rebuild or say.
            had_log = self.audit_path.exists() and self.audit_path.stat().st_size > 0
            if had_log:
                problems.append(f"the index {self.index_path.name} was missing; rebuilt from"
                                " the audit log")  # fmt: skip
            return db, 0, had_log
        try:
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {ok}")
            seq = self._load_index(db)
        except (sqlite3.DatabaseError, ValueError) as exc:
            db.close()
            return self._rebuild_index(problems, f"unreadable ({exc})")
        return db, seq, False

    def _load_index(self, db: sqlite3.Connection) -> int:
        rows = db.execute("SELECT key, body FROM sources")
        self._sources = {k: json.loads(b) for k, b in rows}
        self._commands = dict(db.execute("SELECT id, ts FROM commands"))
        return int(_meta(db, "seq") or 0)

    def _read_only_index(self, problems: list[str]) -> int:
        if not self.index_path.exists():
            return 0
        try:
            db = sqlite3.connect(f"file:{self.index_path}?mode=ro", uri=True, timeout=1.0)
            try:
                return self._load_index(db)
            finally:
                db.close()
        except (sqlite3.Error, ValueError) as exc:
            problems.append(f"the index {self.index_path.name} cannot be read either ({exc})")
            return 0

    def _rebuild_index(
        self, problems: list[str], why: str
    ) -> tuple[sqlite3.Connection | None, int, bool]:
        aside = self.index_path.with_name(f"{self.index_path.name}.corrupt-{int(time.time())}")
        moved = True
        for suffix in ("", "-wal", "-shm"):
            try:
                Path(f"{self.index_path}{suffix}").replace(f"{aside}{suffix}")
            except FileNotFoundError:
                pass
            except OSError:
                moved = False
        problems.append(f"the index {self.index_path.name} was {why};"
                        f" {'moved to ' + aside.name if moved else 'left in place'}"
                        " and rebuilt from the audit log")  # fmt: skip
        self._sources, self._commands = {}, {}
        try:
            return _connect(self.index_path), 0, True
        except sqlite3.Error as exc:
            problems.append(f"a new index cannot be made either ({exc})")
            return None, 0, True

    def _catch_up(self, after_seq: int) -> None:
        """Apply the records the index has not seen (all of them for a rebuild)."""
        if after_seq == 0:
            self._sources, self._commands = {}, {}
        try:
            for record in read_records(self.audit_path, after_seq):
                self._apply(record)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # What was read stands; the rest of the log cannot be trusted to say more.
            log.critical("journal.catch_up_failed", error=str(exc), after_seq=after_seq)

    # --- the loop's side -----------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the writer thread; records queued before are written first."""
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    def listen(self, listener: HealthListener) -> None:
        self._listeners.append(listener)

    def listen_records(self, listener: RecordListener) -> None:
        self._record_listeners.append(listener)

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def problem(self) -> str:
        return self._problem

    def record(
        self, kind: AuditKind | str, actor: str, data: dict[str, Any], *, required: bool = False
    ) -> Pending:
        """Queue one record; never blocks. ``required``: the caller awaits it and acts only
        once it is written, so a write error fails it instead of retrying it."""
        pending = Pending(required)
        if self._log is None:
            pending.future.set_exception(AuditUnavailable(self._open_error or "no audit log"))
            return pending
        if len(self._queue) >= MAX_QUEUED:
            self.stats["refused"] += 1
            pending.future.set_exception(
                AuditUnavailable(f"{MAX_QUEUED} records are already waiting for the disk")
            )
            return pending
        with self._wake:
            self._queue.append(_Entry(str(kind), actor, data, pending))
            self._wake.notify()
        return pending

    def close(self) -> None:
        """Write what is queued (bounded by a deadline), stop the writer, close the files."""
        thread = self._thread
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if thread is not None:
            thread.join(CLOSE_TIMEOUT_S)
            if thread.is_alive():
                log.error("journal.close_timeout", queued=len(self._queue))
                return
        if self._log is not None:
            self._log.close()
        if self._db is not None:
            self._db.close()

    def statistics(self) -> dict[str, Any]:
        return {**self.stats, "queued": len(self._queue), "healthy": self._healthy,
                "problem": self._problem, "sources": len(self._sources),
                "log": self._log.statistics() if self._log else None}  # fmt: skip

    # --- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        # The writer must outlive any bug in a record's handling: a dead writer would leave
        # every later release waiting for a disk that no one writes to.
        while True:
            try:
                self._loop_forever()
            except Exception:
                log.exception("journal.writer_failed")
                self._set_health(False, "the journal writer failed; restarting it")
            else:
                return

    def _loop_forever(self) -> None:
        attempt = 0
        last_try = False
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if not self._queue and self._stopping:
                    return
                batch = self._take()
            if not batch:
                continue
            if self._write(batch):
                attempt = 0
                continue
            # Kept records wait for the disk; a stop gives them one more try, made after the
            # stop was asked for (a try that failed just before must not be the last one).
            if self._stopping:
                if last_try:
                    return
                last_try = True
                continue
            delay_s = RETRY_BACKOFF.delay_s(attempt)
            attempt += 1
            with self._wake:
                self._wake.wait(delay_s)

    def _take(self) -> list[_Entry]:
        batch: list[_Entry] = []
        while self._queue and len(batch) < MAX_BATCH:
            entry = self._queue.popleft()
            if entry.pending.take():
                batch.append(entry)
        return batch

    def _write(self, batch: list[_Entry]) -> bool:
        assert self._log is not None
        try:
            records = self._log.append_many([(e.kind, e.actor, e.data) for e in batch], head=False)
        except AuditUnavailable as exc:
            self._failed(batch, exc)
            return False
        # On disk: whoever waits (a release, before its doors move) is told first; the
        # head file, the writer's copy of the state and the index follow.
        for entry, record in zip(batch, records, strict=True):
            entry.pending.future.set_result(record)
        self._log.write_head()
        self.stats["records"] += len(records)
        self.stats["batches"] += 1
        self.stats["fsyncs"] += 1
        self.stats["max_batch"] = max(self.stats["max_batch"], len(records))
        for record in records:
            self._apply(record.as_dict())
        self._tell_loop(self._announce, records)
        if self._flush_index() and self._maybe_rotate():
            self._set_health(True, "")
        return True

    def _failed(self, batch: list[_Entry], exc: AuditUnavailable) -> None:
        self.stats["write_failures"] += 1
        kept = []
        for entry in batch:
            if entry.pending.required:
                self.stats["dropped_required"] += 1
                entry.pending.future.set_exception(exc)
            else:
                kept.append(entry)
        with self._wake:
            self._queue.extendleft(reversed(kept))
        self._set_health(False, f"audit log: {exc}")

    def _maybe_rotate(self) -> bool:
        """Start a new file once this one is full; False if that failed."""
        assert self._log is not None
        if self._log.size < self._max_file_bytes:
            return True
        try:
            snapshot = {"sources": dict(self._sources), "commands": dict(self._commands)}
            self._log.rotate(snapshot)
            self.stats["fsyncs"] += 1
        except AuditUnavailable as exc:
            self._set_health(False, f"audit log rotation: {exc}")
            return False
        return True

    # --- the index -----------------------------------------------------------------------

    def _apply(self, record: Mapping[str, Any]) -> None:
        """Fold one record into the writer's copy of the safety state."""
        data = record.get("data") or {}
        if record.get("kind") == AuditKind.LOG and data.get("event") == "log.rotated":
            snapshot = data.get("snapshot") or {}
            self._sources = dict(snapshot.get("sources") or {})
            self._commands = dict(snapshot.get("commands") or {})
            self._last_seq = int(record["seq"])
            self._index_stale = True
            return
        changes = _change_of(data)
        for key in changes.get("removed") or ():
            self._sources.pop(str(key), None)
        for body in changes.get("put") or ():
            self._sources[str(body["key"])] = body
        if record.get("kind") == AuditKind.COMMAND and isinstance(data.get("sent_ts"), int | float):
            self._commands[str(data["command"])] = float(data["sent_ts"])
        self._last_seq = int(record["seq"])
        self._dirty_index.append(record)

    def _flush_index(self) -> bool:
        """Bring the index up to the records written; a locked or broken one is retried later."""
        dirty, self._dirty_index = self._dirty_index, []
        if self._db is None:
            return True
        horizon = time.time() - 2 * self.window_s
        self._commands = {k: ts for k, ts in self._commands.items() if ts >= horizon}
        try:
            with self._db:
                if self._index_stale:
                    self._db.execute("DELETE FROM sources")
                    self._db.execute("DELETE FROM commands")
                    self._db.executemany(
                        "INSERT INTO sources VALUES (?, ?)",
                        [(k, json.dumps(b)) for k, b in self._sources.items()],
                    )
                    self._db.executemany("INSERT INTO commands VALUES (?, ?)",
                                         list(self._commands.items()))  # fmt: skip
                else:
                    _apply_to_index(self._db, dirty)
                    self._db.execute("DELETE FROM commands WHERE ts < ?", (horizon,))
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('seq', ?)",
                                 (str(self._last_seq),))  # fmt: skip
            self._index_stale = False
        except sqlite3.Error as exc:
            self.stats["index_failures"] += 1
            # The writer's own copy is whole: the next good write rewrites the index from it.
            self._index_stale = True
            self._set_health(False, f"index {self.index_path.name}: {exc}")
            return False
        return True

    def _set_health(self, healthy: bool, problem: str) -> None:
        if healthy == self._healthy and problem == self._problem:
            return
        self._healthy, self._problem = healthy, problem
        for listener in self._listeners:
            self._tell_loop(listener, healthy, problem)

    def _announce(self, records: list[AuditRecord]) -> None:
        for record in records:
            for listener in self._record_listeners:
                listener(record)

    def _tell_loop(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # A loop closing under the writer (shutdown) is no one left to tell.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, *args)


def _apply_to_index(db: sqlite3.Connection, records: Iterable[Mapping[str, Any]]) -> None:
    for record in records:
        data = record.get("data") or {}
        changes = _change_of(data)
        for key in changes.get("removed") or ():
            db.execute("DELETE FROM sources WHERE key = ?", (str(key),))
        for body in changes.get("put") or ():
            db.execute("INSERT OR REPLACE INTO sources VALUES (?, ?)",
                       (str(body["key"]), json.dumps(body)))  # fmt: skip
        if record.get("kind") == AuditKind.COMMAND and isinstance(data.get("sent_ts"), int | float):
            db.execute("INSERT OR REPLACE INTO commands VALUES (?, ?)",
                       (str(data["command"]), float(data["sent_ts"])))  # fmt: skip


def _change_of(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The change of safety sources a record makes (``{"put": [...], "removed": [...]}``)."""
    change = data.get("change")
    return change if isinstance(change, Mapping) else {}


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=INDEX_LOCK_TIMEOUT_S,
                         check_same_thread=False)  # fmt: skip
    db.execute("PRAGMA journal_mode=WAL")
    # The audit log is what is durable; the index may lag it after a power cut.
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    private_file(path)
    return db


def _unopenable(exc: sqlite3.DatabaseError) -> bool:
    """The file cannot be opened or written (permissions, a read-only disk), not damaged."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and (
        "unable to open" in text or "readonly" in text or "read-only" in text
        or "locked" in text or "disk i/o" in text
    )  # fmt: skip


def _meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def daemon_record(journal: Journal, event: str, **detail: Any) -> Pending:
    """The daemon's own record: start-up, stop, a rebuilt state, a clock step."""
    return journal.record(AuditKind.DAEMON, LOG_ACTOR, {"event": event, **detail})
