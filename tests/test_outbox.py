"""The durable outbox on its own: what is on disk when, bounds, recovery, damaged files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gatewayd.uplink.outbox import Outbox, OutboxClosed, Outgoing, PublishQueueFull
from tests.support.waiting import eventually


def rows(path: Path) -> list[tuple[int, int, str, bytes]]:
    """The outbox table as another process would read it."""
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT seq, life_safety, topic, payload FROM outbox ORDER BY seq"))


async def take(outbox: Outbox, n: int) -> list[Outgoing]:
    return [await outbox.get() for _ in range(n)]


async def test_a_life_safety_event_is_committed_off_the_loop_at_once(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", flush_interval_s=60)
    outbox.put("event/alarm", b"fire", life_safety=True)
    # put() returned without touching the disk; the writer thread commits it (synced) now,
    # not after the telemetry interval.
    await outbox.synced()
    assert rows(tmp_path / "o.sqlite") == [(1, 1, "event/alarm", b"fire")]
    assert outbox.statistics()["commits_full"] == 1
    outbox.close()


async def test_a_commit_that_fails_keeps_the_events_and_retries(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    outbox = Outbox(path, flush_interval_s=0.01)
    # Another process holds the write lock (a backup, an admin's shell).
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    outbox.put("event/alarm", b"fire", life_safety=True)
    await eventually(lambda: outbox.statistics()["write_errors"] >= 1, timeout_s=10)
    # Still queued in memory for the broker, whatever the disk does.
    assert (await outbox.get()).payload == b"fire"
    blocker.execute("ROLLBACK")
    blocker.close()
    await eventually(lambda: rows(path) == [(1, 1, "event/alarm", b"fire")], timeout_s=10)
    outbox.close()


async def test_telemetry_is_committed_in_a_group_shortly_after(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", flush_interval_s=0.01)
    for i in range(5):
        outbox.put("event/door", str(i).encode(), life_safety=False)
    assert rows(tmp_path / "o.sqlite") == []
    outbox.flush()
    assert [r[3] for r in rows(tmp_path / "o.sqlite")] == [b"0", b"1", b"2", b"3", b"4"]
    assert outbox.statistics()["commits"] == 1
    outbox.close()


async def test_a_row_is_deleted_only_after_ack(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.put("event/alarm", b"a", life_safety=True)
    entry = await outbox.get()
    outbox.flush()
    assert len(rows(tmp_path / "o.sqlite")) == 1
    outbox.ack(entry)
    outbox.flush()
    assert rows(tmp_path / "o.sqlite") == []
    outbox.close()


async def test_telemetry_acked_before_its_commit_never_touches_the_disk(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.put("event/door", b"t", life_safety=False)
    outbox.ack(await outbox.get())
    outbox.close()
    assert outbox.statistics()["rows_written"] == 0
    assert rows(tmp_path / "o.sqlite") == []


async def test_unacked_rows_come_back_after_a_restart_in_order_life_safety_first(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.sqlite"
    first = Outbox(path)
    for i in range(3):
        first.put("event/door", f"t{i}".encode(), life_safety=False)
        first.put("event/alarm", f"a{i}".encode(), life_safety=True)
    first.ack(await first.get())  # a0 reached the broker
    in_flight = await first.get()  # a1 was on the wire when the process died
    assert in_flight.payload == b"a1"
    first.close()
    second = Outbox(path)
    assert second.statistics()["recovered"] == 5
    recovered = await take(second, 5)
    assert [e.payload for e in recovered] == [b"a1", b"a2", b"t0", b"t1", b"t2"]
    # New entries go after the recovered ones: the sequence continues.
    second.put("event/door", b"new", life_safety=False)
    assert (await second.get()).seq > max(e.seq for e in recovered)
    second.close()


async def test_full_telemetry_drops_its_oldest_and_an_alarm_evicts_telemetry(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", max_rows=4, life_safety_reserve=1)
    for i in range(5):
        outbox.put("event/door", str(i).encode(), life_safety=False)
    assert outbox.statistics()["dropped_telemetry"] == 2
    outbox.put("event/alarm", b"fire", life_safety=True)  # the reserve
    outbox.put("event/alarm", b"fire2", life_safety=True)  # evicts telemetry "2"
    assert outbox.statistics()["dropped_telemetry"] == 3
    got = [e.payload for e in await take(outbox, 4)]
    assert got == [b"fire", b"fire2", b"3", b"4"]
    outbox.close()


async def test_an_outbox_full_of_alarms_refuses_loudly_rather_than_drop_one(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", max_rows=2, life_safety_reserve=1)
    outbox.put("event/alarm", b"1", life_safety=True)
    outbox.put("event/alarm", b"2", life_safety=True)
    with pytest.raises(PublishQueueFull):
        outbox.put("event/alarm", b"3", life_safety=True)
    await outbox.synced()
    assert [r[3] for r in rows(tmp_path / "o.sqlite")] == [b"1", b"2"]
    outbox.close()


def test_a_corrupt_file_is_moved_aside_and_a_fresh_outbox_works(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not a database" * 200)
    outbox = Outbox(path)
    assert outbox.statistics()["moved_aside"] == 1
    assert len(list(tmp_path.glob("o.sqlite.corrupt-*"))) == 1
    outbox.put("event/alarm", b"fire", life_safety=True)
    assert rows(path) == [(1, 1, "event/alarm", b"fire")]
    outbox.close()


async def test_a_damaged_page_fails_the_integrity_check_and_is_moved_aside(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.sqlite"
    first = Outbox(path)
    for i in range(2000):
        first.put("event/door", b"x" * 100 + str(i).encode(), life_safety=False)
    first.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    # Scribble over the middle pages, leaving the header valid so the file still opens.
    data[8192:16384] = b"\xff" * 8192
    path.write_bytes(bytes(data))
    outbox = Outbox(path)
    assert outbox.statistics()["moved_aside"] == 1
    assert len(outbox) == 0
    outbox.close()


async def test_a_closed_outbox_refuses_new_events(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.close()
    outbox.close()
    with pytest.raises(OutboxClosed):
        outbox.put("event/alarm", b"late", life_safety=True)
