"""A persistent cache of accepted command ids, so a command is carried out at most once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gatewayd.kernel.errors import CommandError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, ts REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_ts ON seen (ts);
CREATE TABLE IF NOT EXISTS horizon (k INTEGER PRIMARY KEY CHECK (k = 0), ts REAL NOT NULL);
"""


class ReplayCache:
    """Command ids seen within the timestamp window, in SQLite (WAL, ``synchronous=FULL``).

    An id is recorded (and on disk) before the command is accepted, so a crash right after
    acceptance cannot let the same command run again. Rows older than the window are pruned;
    the oldest ``ts`` still covered (the *horizon*) is persisted too, and any command older
    than it is refused as ``expired`` even if the wall clock later steps backwards.
    """

    def __init__(self, path: Path, window_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.window_s = window_s
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT ts FROM horizon WHERE k = 0").fetchone()
        #: Commands issued before this epoch time are refused whatever the clock says.
        self.horizon: float = float(row[0]) if row else float("-inf")
        #: Ids recorded and replays refused since start.
        self.recorded = 0
        self.replays = 0

    def record(self, command_id: str, ts: float, now: float) -> None:
        """Persist ``command_id`` or raise ``replayed`` / ``expired``; prunes as it goes."""
        if ts < self.horizon:
            raise CommandError("expired", "command is older than the replay cache covers")
        cutoff = now - self.window_s
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if cutoff > self.horizon:
                self._db.execute("DELETE FROM seen WHERE ts < ?", (cutoff,))
                self._db.execute("INSERT OR REPLACE INTO horizon (k, ts) VALUES (0, ?)", (cutoff,))
            self._db.execute("INSERT INTO seen (id, ts) VALUES (?, ?)", (command_id, ts))
        except sqlite3.IntegrityError as exc:
            self._db.execute("ROLLBACK")
            self.replays += 1
            raise CommandError("replayed", f"command id {command_id!r} was already used") from exc
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self.horizon = max(self.horizon, cutoff)
        self.recorded += 1

    def __len__(self) -> int:
        row = self._db.execute("SELECT count(*) FROM seen").fetchone()
        return int(row[0])

    def close(self) -> None:
        self._db.close()

    def statistics(self) -> dict[str, int | float | None]:
        # JSON has no -Infinity: no horizon yet is null.
        horizon = self.horizon if self.horizon != float("-inf") else None
        return {"recorded": self.recorded, "replays": self.replays, "horizon": horizon}
