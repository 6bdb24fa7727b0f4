"""The audit log: every record chained and on disk; any edit, loss or reordering is found."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.security.audit import (
    GENESIS,
    AuditKind,
    AuditLog,
    AuditUnavailable,
    head_path,
    record_hash,
    verify,
)
from gatewayd.security.canonical import canonical

RECORDS = 8


def write_log(path: Path, records: int = RECORDS) -> AuditLog:
    log = AuditLog(path)
    kinds = list(AuditKind)
    for i in range(records):
        log.append(kinds[i % len(kinds)], f"actor-{i}", {"n": i, "note": "café", "x": i / 3})
    return log


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "audit.log"
    write_log(path).close()
    return path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_intact_log_verifies(log_path: Path) -> None:
    result = verify(log_path)
    assert result.ok, result
    assert result.records == RECORDS


def test_records_chain_to_each_other_in_canonical_form(log_path: Path) -> None:
    records = [json.loads(line) for line in lines(log_path)]
    assert records[0]["prev"] == GENESIS
    assert [r["seq"] for r in records] == list(range(1, RECORDS + 1))
    for before, after in itertools.pairwise(records):
        assert after["prev"] == before["hash"]
    assert all(canonical(r) + b"\n" == raw for r, raw in zip(records, lines(log_path), strict=True))


#: Text with a UTF-8 form (no lone surrogates), and any JSON value with a canonical form.
TEXT = st.text(st.characters(codec="utf-8"), max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=16,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(data=st.dictionaries(TEXT, JSON_VALUES, max_size=5))
def test_any_record_is_hashed_and_written_as_its_canonical_form(
    tmp_path_factory: pytest.TempPathFactory, data: dict[str, object]
) -> None:
    # The data is encoded once for both the hash and the line: byte for byte the same.
    log = AuditLog(tmp_path_factory.mktemp("audit") / "audit.log")
    record = log.append(AuditKind.COMMAND, "actor", data)
    log.close()
    fields = record.as_dict()
    assert fields["data"] == data
    assert fields["hash"] == record_hash(fields)
    assert log.path.read_bytes() == canonical(fields) + b"\n"


def test_reopened_log_continues_the_chain(log_path: Path) -> None:
    log = AuditLog(log_path)
    record = log.append(AuditKind.STATE, "system", {"state": "lockdown"})
    log.close()
    assert record.seq == RECORDS + 1
    assert verify(log_path).ok


@settings(max_examples=60)
@given(data=st.data())
def test_flipping_any_byte_is_found_on_its_line(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("flip") / "audit.log"
    write_log(path, 4).close()
    raw = bytearray(path.read_bytes())
    at = data.draw(st.integers(0, len(raw) - 1), label="offset")
    raw[at] ^= data.draw(st.integers(1, 255), label="mask")
    path.write_bytes(bytes(raw))
    result = verify(path)
    assert not result.ok
    # A flipped newline merges two lines: the fault is then reported on the first of them.
    assert result.line == raw[:at].count(b"\n") + 1, result


def test_a_dropped_record_is_reported_where_it_was(log_path: Path) -> None:
    kept = lines(log_path)
    del kept[3]
    log_path.write_bytes(b"".join(kept))
    result = verify(log_path)
    assert (result.ok, result.line) == (False, 4)
    assert "seq 4 is missing" in str(result.problem)


def test_two_swapped_records_are_reported(log_path: Path) -> None:
    kept = lines(log_path)
    kept[2], kept[3] = kept[3], kept[2]
    log_path.write_bytes(b"".join(kept))
    result = verify(log_path)
    assert (result.ok, result.line) == (False, 3)


def test_a_rewritten_record_with_a_fresh_hash_breaks_the_chain(log_path: Path) -> None:
    kept = lines(log_path)
    record = json.loads(kept[4])
    record["data"]["n"] = 999
    record["hash"] = record_hash(record)
    kept[4] = canonical(record) + b"\n"
    log_path.write_bytes(b"".join(kept))
    result = verify(log_path)
    assert (result.ok, result.line) == (False, 6)
    assert "does not chain" in str(result.problem)


def test_a_partial_last_line_is_reported(log_path: Path) -> None:
    data = log_path.read_bytes()
    log_path.write_bytes(data[:-20])
    result = verify(log_path)
    assert (result.ok, result.line) == (False, RECORDS)
    assert "truncated" in str(result.problem)


def test_whole_records_cut_from_the_end_are_reported(log_path: Path) -> None:
    kept = lines(log_path)
    log_path.write_bytes(b"".join(kept[:5]))
    result = verify(log_path)
    assert (result.ok, result.line) == (False, 6)
    assert "records 6..8 were cut" in str(result.problem)


def test_a_missing_head_is_reported(log_path: Path) -> None:
    head_path(log_path).unlink()
    assert not verify(log_path).ok


def test_a_torn_tail_from_a_crash_is_cut_and_recorded_at_start(log_path: Path) -> None:
    log_path.write_bytes(log_path.read_bytes() + b'{"seq":9,"ts":"2026-')
    log = AuditLog(log_path)
    log.append(AuditKind.COMMAND, "op", {"after": "crash"})
    log.close()
    assert verify(log_path).ok
    recovery = json.loads(lines(log_path)[RECORDS])
    assert recovery["kind"] == "log"
    assert recovery["data"]["event"] == "torn_tail_removed"
    assert recovery["data"]["bytes"] == 20


def test_a_failed_write_raises_and_leaves_the_log_intact(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(log_path)
    real_fsync, calls = os.fsync, []

    def disk_full_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", disk_full_once)
        with pytest.raises(AuditUnavailable):
            log.append(AuditKind.COMMAND, "op", {"n": "lost"})
    log.append(AuditKind.COMMAND, "op", {"n": "kept"})
    log.close()
    assert verify(log_path).ok
    assert verify(log_path).records == RECORDS + 1


def test_an_unopenable_log_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(AuditUnavailable):
        AuditLog(tmp_path / "file" / "audit.log")


def test_values_without_a_json_form_are_still_recorded(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    record = log.append(AuditKind.REFUSAL, "-", {"params": {"n": 2**60}})
    log.close()
    assert "unencodable" in record.data
    assert verify(tmp_path / "audit.log").ok
