"""State files readable by the gateway's user only, whatever the umask it was started with.

systemd's unit sets ``UMask=0077``; a gateway started by hand (or by another supervisor) may
run with 022. The audit log names actors and doors, the journal lists who may act, the head
key signs for the gateway: none of them is for other users of the box.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if missing; make it 0700 if it is ours."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    with contextlib.suppress(OSError):
        # Not ours (a shared folder an admin pointed us at), or a read-only disk: leave it;
        # the files are still created 0600.
        if path.stat().st_uid == os.geteuid():
            path.chmod(DIR_MODE)


def private_file(path: Path) -> None:
    """Make an existing file 0600 (SQLite's -wal and -shm copy the database file's mode)."""
    with contextlib.suppress(OSError):  # gone, not ours, or a read-only disk
        path.chmod(FILE_MODE)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, created 0600, synced."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
