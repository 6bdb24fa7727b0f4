"""Disk faults injected into this process: fsyncs counted and slowed, audit writes failing.

These patch ``os`` in the bench's own process (where the gateway runs), so they reach what
Python calls: the audit log's ``os.write`` and ``os.fsync``. SQLite (the journal's index, the
outbox) syncs from C and is not seen; its faults are made for real (a lock held by another
process) instead.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any


@dataclass(frozen=True, slots=True)
class Sync:
    """One ``fsync``/``fdatasync`` call: when it started and ended, on which thread, of what."""

    start_ns: int
    end_ns: int
    thread: str
    path: str


def _path_of(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"fd:{fd}"


class FsyncProbe:
    """Wraps ``os.fsync`` and ``os.fdatasync``: every call recorded, each delayed by ``delay_s``."""

    def __init__(self) -> None:
        #: Added before each sync (a slow disk); change it at any time.
        self.delay_s = 0.0
        self.calls: list[Sync] = []
        self._lock = threading.Lock()
        self._saved: tuple[Any, Any] | None = None

    def __enter__(self) -> FsyncProbe:
        self._saved = (os.fsync, os.fdatasync)
        os.fsync = self._wrap(self._saved[0])  # type: ignore[assignment]
        os.fdatasync = self._wrap(self._saved[1])  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._saved is not None
        os.fsync, os.fdatasync = self._saved

    def _wrap(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def sync(fd: int) -> None:
            start = time.monotonic_ns()
            if self.delay_s:
                time.sleep(self.delay_s)
            try:
                real(fd)
            finally:
                call = Sync(start, time.monotonic_ns(), threading.current_thread().name,
                            _path_of(fd))  # fmt: skip
                with self._lock:
                    self.calls.append(call)

        return sync

    def between(self, start_ns: int, end_ns: int) -> list[Sync]:
        """Syncs that started in ``[start_ns, end_ns]``."""
        with self._lock:
            return [c for c in self.calls if start_ns <= c.start_ns <= end_ns]


class FailingAuditDisk:
    """Every ``os.write`` and ``os.fsync`` of a file named ``prefix*`` fails with EIO."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = str(prefix)
        self.failed = 0
        self._saved: tuple[Callable[[int, bytes], int], Callable[[int], None]] | None = None

    def __enter__(self) -> FailingAuditDisk:
        real_write, real_fsync = self._saved = (os.write, os.fsync)

        def write(fd: int, data: bytes) -> int:
            self._check(fd)
            return real_write(fd, data)

        def fsync(fd: int) -> None:
            self._check(fd)
            real_fsync(fd)

        os.write, os.fsync = write, fsync  # type: ignore[assignment]
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._saved is not None
        os.write, os.fsync = self._saved  # type: ignore[assignment]

    def _check(self, fd: int) -> None:
        if _path_of(fd).startswith(self.prefix):
            self.failed += 1
            raise OSError(errno.EIO, "injected I/O error (bench)")
