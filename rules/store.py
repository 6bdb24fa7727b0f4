"""Durable safety state: active sources survive a crash, restart or power loss.

SQLite in WAL mode with ``synchronous=FULL``: when :meth:`SafetyStore.put` returns, the
source is on disk, so a command is acknowledged only after its effect would be re-asserted.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from rules.sources import Source

SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    key TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
"""


class SafetyStore:
    """A tiny key -> source table."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def load(self) -> list[Source]:
        """Every persisted source; a corrupt row is an error, never silently skipped."""
        rows = self._db.execute("SELECT key, body FROM sources ORDER BY rowid").fetchall()
        return [Source.from_json(json.loads(body)) for _key, body in rows]

    def put(self, source: Source) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sources(key, body) VALUES (?, ?)",
            (source.key, json.dumps(source.to_json(), sort_keys=True)),
        )

    def delete(self, key: str) -> None:
        self._db.execute("DELETE FROM sources WHERE key = ?", (key,))

    def close(self) -> None:
        self._db.close()
