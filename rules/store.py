"""Durable safety state: active sources survive a crash, restart or power loss.

SQLite in WAL mode with ``synchronous=FULL``: when :meth:`SafetyStore.put` returns, the
source is on disk, so a command is acknowledged only after its effect would be re-asserted.
Responder overrides and drills are sources with an ``expires_at``, so their expiry persists
with them and a restart honours it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from gatewayd.kernel.errors import ErrorCode, GatewayError
from gatewayd.rules.sources import Source

SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    key TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
"""


class StoreError(GatewayError):
    """The safety store could not read or write."""

    code: str = ErrorCode.STORE_FAILED


class SafetyStore:
    """A tiny key -> source table."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open safety store {path}: {exc}") from exc

    def load(self) -> list[Source]:
        """Every persisted source; a corrupt row is an error, never silently skipped."""
        rows = self._run("SELECT key, body FROM sources ORDER BY rowid").fetchall()
        return [Source.from_json(json.loads(body)) for _key, body in rows]

    def put(self, source: Source) -> None:
        self._run(
            "INSERT OR REPLACE INTO sources(key, body) VALUES (?, ?)",
            (source.key, json.dumps(source.to_json(), sort_keys=True)),
        )

    def delete(self, key: str) -> None:
        self._run("DELETE FROM sources WHERE key = ?", (key,))

    def close(self) -> None:
        self._db.close()

    def _run(self, sql: str, args: tuple[str, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"safety store {self.path}: {exc}") from exc
