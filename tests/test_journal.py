"""The journal: one durable record, written off the loop in groups, and an index rebuilt from it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewayd.security.audit import AuditKind, AuditLog, AuditUnavailable, head_path, verify
from gatewayd.security.journal import Journal
from tests.support.disk import Disk, locked
from tests.support.waiting import eventually

#: Makes a record larger than a page, so that a full disk cannot take it in a page's slack.
PAD = "x" * 8192


def source(key: str) -> dict[str, Any]:
    return {"key": key, "scope": "campus", "priority": 5, "effects": [], "name": "lockdown",
            "actor": "t", "since": 1.0}  # fmt: skip


def put(*keys: str) -> dict[str, Any]:
    return {"put": [source(k) for k in keys], "removed": []}


def removed(*keys: str) -> dict[str, Any]:
    return {"put": [], "removed": list(keys)}


_OPENED: list[Journal] = []


@pytest.fixture(autouse=True)
def _close_journals() -> Iterator[None]:
    """A failing test must not leave its writer thread behind for the next one."""
    yield
    while _OPENED:
        _OPENED.pop().close()


def opened(state: Path, **settings: Any) -> Journal:
    journal = Journal(state, **settings)
    journal.open()
    journal.start(asyncio.get_running_loop())
    _OPENED.append(journal)
    return journal


def reopen(state: Path, **settings: Any) -> tuple[dict[str, Any], list[str], bool]:
    journal = Journal(state, **settings)
    recovered = journal.open()
    journal.close()
    return recovered.sources, recovered.problems, recovered.rebuilt


async def test_many_records_cost_few_fsyncs_and_all_reach_the_disk(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    pending = [journal.record(AuditKind.STATE, "t", {"n": i}) for i in range(2000)]
    assert all(await asyncio.gather(*(p.written(10) for p in pending)))
    journal.close()
    stats = journal.stats
    assert stats["records"] == 2000
    assert stats["fsyncs"] < 200, stats  # grouped, not one each
    assert verify(journal.audit_path).ok


async def test_sources_come_back_after_a_restart_from_the_index(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    await journal.record(AuditKind.STATE, "t", {"change": put("srp:campus", "x")}).durable(5)
    await journal.record(AuditKind.STATE, "t", {"change": removed("x")}).durable(5)
    journal.close()
    sources, problems, rebuilt = reopen(tmp_path)
    assert list(sources) == ["srp:campus"] and not problems and not rebuilt


async def test_a_corrupt_index_is_moved_aside_and_rebuilt_from_the_log(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    await journal.record(AuditKind.STATE, "t", {"change": put("srp:campus")}).durable(5)
    journal.close()
    journal.index_path.write_bytes(b"not a database at all" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{journal.index_path}{suffix}").unlink(missing_ok=True)
    sources, problems, rebuilt = reopen(tmp_path)
    assert rebuilt and list(sources) == ["srp:campus"]
    assert any("moved to" in p for p in problems), problems
    assert list(tmp_path.glob("journal.sqlite.corrupt-*"))


async def test_a_deleted_index_is_rebuilt_and_said_so(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    await journal.record(AuditKind.STATE, "t", {"change": put("srp:building/A")}).durable(5)
    journal.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{journal.index_path}{suffix}").unlink(missing_ok=True)
    sources, problems, rebuilt = reopen(tmp_path)
    assert rebuilt and list(sources) == ["srp:building/A"]
    assert any("missing" in p for p in problems), problems


async def test_a_locked_index_holds_up_nothing_and_catches_up(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    await journal.record(AuditKind.STATE, "t", {"change": put("a")}).durable(5)
    with locked(journal.index_path):
        record = journal.record(AuditKind.STATE, "t", {"change": put("b")}, required=True)
        # The record itself is on disk; only the index waits for its lock.
        assert (await record.durable(5)).seq == 2
        await eventually(lambda: journal.stats["index_failures"] >= 1)
        assert not journal.healthy
    await journal.record(AuditKind.STATE, "t", {"change": put("c")}).durable(5)
    await eventually(lambda: journal.healthy)
    journal.close()
    sources, _, _ = reopen(tmp_path)
    assert sorted(sources) == ["a", "b", "c"]


async def test_a_waiter_is_told_once_the_records_are_on_disk_not_after_the_head_file(
    tmp_path: Path,
) -> None:
    journal = opened(tmp_path)
    await journal.record(AuditKind.STATE, "t", {"change": put("a")}).durable(5)
    # The writer tells the waiter before it writes the head: let it finish that first record,
    # or the head held up below would be the first record's, and the second never be taken.
    await eventually(lambda: journal.statistics()["batches"] == 1)
    assert journal._log is not None
    head_written = journal._log._write_head
    release = threading.Event()

    def slow_head() -> None:
        release.wait(10)
        head_written()

    journal._log._write_head = slow_head  # type: ignore[method-assign]
    try:
        record = journal.record(AuditKind.STATE, "t", {"change": put("b")}, required=True)
        # The head file (a lower bound of the chain) is held up; the release it guards is not.
        assert (await record.durable(5)).seq == 2
        assert json.loads(head_path(journal.audit_path).read_text())["seq"] == 1
    finally:
        release.set()
    await eventually(lambda: json.loads(head_path(journal.audit_path).read_text())["seq"] == 2)
    journal.close()
    assert verify(journal.audit_path).ok


async def test_a_full_disk_fails_required_records_and_keeps_the_others(disk: Disk) -> None:
    state = disk.path / "state"
    journal = opened(state)
    await journal.record(AuditKind.STATE, "t", {"change": put("kept-before")}).durable(5)
    disk.fill()
    # Larger than the slack of the file's last page: it needs a block the disk no longer has.
    release = journal.record(AuditKind.STATE, "t", {"change": removed("kept-before"),
                             "pad": PAD}, required=True)  # fmt: skip
    with pytest.raises(AuditUnavailable):
        await release.durable(5)
    lockdown = journal.record(AuditKind.STATE, "t", {"change": put("lockdown"), "pad": PAD})
    assert not await lockdown.written(0.5)
    await eventually(lambda: not journal.healthy)
    disk.free()
    # Kept and retried: written once there is room again.
    assert await lockdown.written(10)
    journal.close()
    sources, _, _ = reopen(state)
    assert sorted(sources) == ["kept-before", "lockdown"]


async def test_rotation_carries_the_chain_and_the_state_across_files(tmp_path: Path) -> None:
    journal = opened(tmp_path, max_file_bytes=4096, keep_files=3)
    await journal.record(AuditKind.STATE, "t", {"change": put("srp:campus")}).durable(5)
    for i in range(200):
        await journal.record(AuditKind.REFUSAL, "-", {"n": i, "pad": "x" * 64}).durable(5)
    await journal.record(AuditKind.STATE, "t", {"n": "last"}).durable(5)
    journal.close()
    files = sorted(tmp_path.glob("audit.log*"))
    assert len([f for f in files if f.name.startswith("audit.log.")
                and f.suffix[1:].isdigit()]) == 3  # fmt: skip
    result = verify(journal.audit_path)
    # The oldest files were deleted: the chain is checked from the oldest kept.
    assert result.ok and result.first_seq > 1, result
    first = json.loads(journal.audit_path.read_bytes().splitlines()[0])
    assert first["data"]["event"] == "log.rotated"
    assert "srp:campus" in first["data"]["snapshot"]["sources"]
    # The newest file alone rebuilds the state.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{journal.index_path}{suffix}").unlink(missing_ok=True)
    sources, _, rebuilt = reopen(tmp_path, max_file_bytes=4096, keep_files=3)
    assert rebuilt and list(sources) == ["srp:campus"]


def test_records_cut_from_the_end_are_found_and_recorded_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    for i in range(5):
        log.append(AuditKind.COMMAND, "op", {"n": i})
    log.close()
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]))
    reopened = AuditLog(path)
    last = json.loads(path.read_bytes().splitlines()[-1])
    assert last["data"]["event"] == "log_truncated"
    assert last["data"]["head_seq"] == 5 and last["data"]["log_seq"] == 3
    assert reopened.problems
    reopened.close()


def test_an_emptied_log_with_no_head_fails_where_the_state_dir_was_used(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    assert verify(path).ok  # a new state directory
    assert not verify(path, expect_records=True).ok


def test_a_long_unterminated_tail_is_not_cut(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.append(AuditKind.COMMAND, "op", {"n": 1})
    log.close()
    with path.open("ab") as f:
        f.write(b"x" * (200 * 1024))  # no record is this long: not a torn write
    size = os.path.getsize(path)
    with pytest.raises(AuditUnavailable):
        AuditLog(path)
    assert os.path.getsize(path) == size
    assert head_path(path).exists()


# --- the property: failures and restarts in any order ------------------------------------------

KEYS = ["srp:campus", "srp:building/A", "drill:building/B", "responder:door/A-101"]
op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.booleans()),
    st.tuples(st.just("remove"), st.sampled_from(KEYS), st.booleans()),
    st.tuples(st.sampled_from(["fill", "free", "restart"]), st.just(""), st.just(False)),
)


@settings(
    max_examples=int(os.environ.get("JOURNAL_EXAMPLES", "12")),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(op, min_size=1, max_size=10))
async def test_what_was_acknowledged_survives_full_disks_and_restarts_and_nothing_refused_does(
    disk: Disk, ops: list[tuple[str, str, bool]]
) -> None:
    disk.free()
    state = disk.path / f"state-{uuid.uuid4().hex[:8]}"
    journal = opened(state)
    model: set[str] = set()
    full = False
    try:
        for name, key, required in ops:
            if name in ("put", "remove"):
                change = put(key) if name == "put" else removed(key)
                record = journal.record(AuditKind.STATE, "t", {"change": change, "pad": PAD},
                                        required=required)  # fmt: skip
                if required and full:
                    # A release that cannot be recorded is refused: it never happened.
                    with pytest.raises(AuditUnavailable):
                        await record.durable(5)
                    continue
                if not full:
                    await record.durable(5)
                # Not required (a lockdown): it stands at once; its record is retried.
                model.add(key) if name == "put" else model.discard(key)
            elif name == "fill":
                disk.fill()
                full = True
            elif name == "free":
                disk.free()
                full = False
            else:
                # A restart: the disk is back first (a daemon cannot start on a full one and
                # keep what it was never able to write; that is the full-disk test above).
                disk.free()
                full = False
                journal.close()
                _OPENED.remove(journal)
                journal = Journal(state)
                recovered = journal.open()
                journal.start(asyncio.get_running_loop())
                _OPENED.append(journal)
                assert set(recovered.sources) == model, (ops, recovered.problems)
        disk.free()
        journal.close()
        _OPENED.remove(journal)
        stats, problem = dict(journal.stats), journal.problem
        sources, problems, _ = reopen(state)
        assert set(sources) == model, (ops, problems, stats, problem)
        assert verify(journal.audit_path).ok
    finally:
        disk.free()
        # Examples share one small disk: what one leaves would fill it for the next.
        shutil.rmtree(state, ignore_errors=True)


def test_a_new_state_directory_is_not_a_rebuild(tmp_path: Path) -> None:
    sources, problems, rebuilt = reopen(tmp_path / "new")
    assert (sources, problems, rebuilt) == ({}, [], False)
