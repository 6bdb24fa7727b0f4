"""A real small file system for the state directory: fill it, make it read-only, lock files.

Faults the gateway must survive are made for real (a tmpfs mounted for the test, as root),
not patched into the code under test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gatewayd.simulators.broker import Mosquitto
from gatewayd.simulators.campus import CampusSim
from tests.support.gateway import Site, demo_config

__all__ = ["Disk", "disk", "locked", "site_on_disk"]


class Disk:
    """A tmpfs of ``size_kb`` at ``path``."""

    def __init__(self, path: Path, size_kb: int = 8192) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0700", "tmpfs",
                        str(path)], check=True, capture_output=True)  # fmt: skip
        self._filler = path / ".filler"

    def fill(self) -> None:
        """Write until the disk is full (ENOSPC for everyone after)."""
        with contextlib.suppress(OSError), self._filler.open("ab") as f:
            block = b"\0" * 65536
            while True:
                f.write(block)
                f.flush()
        # What is left below a block: take it too.
        with contextlib.suppress(OSError), self._filler.open("ab") as f:
            while True:
                f.write(b"\0")
                f.flush()

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True,
                       capture_output=True)  # fmt: skip

    def writable(self) -> None:
        subprocess.run(["mount", "-o", "remount,rw", str(self.path)], check=True,
                       capture_output=True)  # fmt: skip

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a test file system needs root (CI runs as root)")
    small = Disk(tmp_path / "disk")
    try:
        yield small
    finally:
        small.close()


@contextlib.contextmanager
def locked(db_path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's write lock on a SQLite file (a backup, an admin's shell).

    Waits for the lock like a backup would: the writer may hold it for a moment itself.
    """
    other = sqlite3.connect(db_path, isolation_level=None, timeout=10)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.fixture
async def site_on_disk(mosquitto: Mosquitto, disk: Disk) -> AsyncIterator[tuple[Site, Disk]]:
    """The demo campus whose state directory is on ``disk``."""
    base = demo_config(mosquitto, disk.path / "state")
    sim = CampusSim(base, free_ports=True, actuation_ms=2)
    async with sim:
        running = Site(sim, sim.config())
        await running.start_gateway()
        try:
            yield running, disk
        finally:
            disk.writable()
            disk.free()
            await running.stop_gateway()
