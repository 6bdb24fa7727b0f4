"""Append-only, hash-chained audit log (JSON lines) and its verifier.

Each line is the canonical JSON (RFC 8785) of ``{seq, ts, kind, actor, data, prev, hash}``;
``hash`` is the SHA-256 of the canonical record without ``hash``, ``prev`` the previous
record's ``hash``. A sidecar ``<log>.head`` holds the last ``seq`` and ``hash`` so that whole
records cut from the end are detected too. Format and rules: docs/security.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from gatewayd.kernel.errors import ErrorCode, GatewayError
from gatewayd.security.canonical import CanonicalError, canonical

#: ``prev`` of the first record.
GENESIS = "0" * 64
#: How far back from the end the tail is searched for the last record.
_TAIL_CHUNK = 64 * 1024
_FIELDS = ("seq", "ts", "kind", "actor", "data", "prev", "hash")


class AuditKind(StrEnum):
    COMMAND = "command"
    REFUSAL = "refusal"
    STATE = "state"
    OVERRIDE = "override"
    FIRE = "fire"
    BUDGET = "budget"
    #: The log's own events: a torn last line removed at start-up.
    LOG = "log"


class AuditUnavailable(GatewayError):
    """The audit log cannot be written; safety-relevant commands must be refused."""

    code: str = ErrorCode.AUDIT_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    ts: str
    kind: str
    actor: str
    data: dict[str, Any]
    prev: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _FIELDS}


def record_hash(fields: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical form of a record without its ``hash``."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def head_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".head")


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class AuditLog:
    """One writer of one log file; every record is fsynced before ``append`` returns."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        #: Records appended, and bytes of a torn last line removed, since start.
        self.appended = 0
        self.torn_bytes = 0
        self._broken: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as exc:
            raise AuditUnavailable(f"cannot open audit log {self.path}: {exc.strerror}") from exc
        try:
            self._size = os.fstat(self._fd).st_size
            self._seq, self._hash = self._load_tail()
        except BaseException:
            os.close(self._fd)
            raise

    @property
    def last_seq(self) -> int:
        return self._seq

    def append(self, kind: AuditKind, actor: str, data: dict[str, Any]) -> AuditRecord:
        """Write, fsync and return one record; raise :class:`AuditUnavailable` if it fails."""
        if self._broken is not None:
            raise AuditUnavailable(f"audit log {self.path} is unusable: {self._broken}")
        fields: dict[str, Any] = {
            "seq": self._seq + 1,
            "ts": _utc_now(),
            "kind": str(kind),
            "actor": actor,
            "data": data,
            "prev": self._hash,
        }
        try:
            fields["hash"] = record_hash(fields)
        except CanonicalError as exc:
            # Keep the record (who did what) even when a value has no JSON form.
            fields["data"] = {"unencodable": str(exc), "repr": repr(data)[:4096]}
            fields["hash"] = record_hash(fields)
        line = canonical(fields) + b"\n"
        self._write(line)
        self._seq, self._hash = fields["seq"], fields["hash"]
        self._write_head()
        self.appended += 1
        return AuditRecord(**fields)

    def _write(self, line: bytes) -> None:
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            self._undo()
            raise AuditUnavailable(f"cannot write audit log {self.path}: {exc}") from exc
        self._size += len(line)

    def _undo(self) -> None:
        # A partial line would break the chain for every later record: cut it off again.
        try:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
        except OSError as exc:
            self._broken = f"a failed write could not be undone: {exc}"

    def _write_head(self) -> None:
        # Replace, not fsync: a head that lags after power loss is harmless (it is a lower
        # bound), and the record itself is already on disk.
        head = head_path(self.path)
        tmp = head.with_name(head.name + ".tmp")
        try:
            tmp.write_bytes(canonical({"seq": self._seq, "hash": self._hash}) + b"\n")
            os.replace(tmp, head)
        except OSError as exc:
            raise AuditUnavailable(f"cannot write {head}: {exc}") from exc

    def _load_tail(self) -> tuple[int, str]:
        if self._size == 0:
            return 0, GENESIS
        tail = _read_tail(self._fd, self._size)
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n") + 1
            return self._recover(self._size - (len(tail) - cut), tail[cut:])
        last = tail[:-1].rsplit(b"\n", 1)[-1]
        try:
            record = json.loads(last)
            seq, digest = int(record["seq"]), str(record["hash"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditUnavailable(
                f"last record of {self.path} is unreadable; run `gatewayd audit verify`"
            ) from exc
        return seq, digest

    def _recover(self, keep: int, torn: bytes) -> tuple[int, str]:
        """Cut a torn last line (a crash mid-write) and say so in the chain."""
        os.ftruncate(self._fd, keep)
        os.fsync(self._fd)
        self._size = keep
        self.torn_bytes = len(torn)
        seq, digest = self._load_tail()
        self._seq, self._hash = seq, digest
        self.append(
            AuditKind.LOG,
            "gatewayd",
            {
                "event": "torn_tail_removed",
                "bytes": len(torn),
                "sha256": hashlib.sha256(torn).hexdigest(),
            },
        )
        return self._seq, self._hash

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def statistics(self) -> dict[str, Any]:
        return {
            "appended": self.appended,
            "last_seq": self._seq,
            "torn_bytes": self.torn_bytes,
            "broken": self._broken,
        }


def _read_tail(fd: int, size: int) -> bytes:
    """The end of the file, long enough to hold the last complete line."""
    chunk = _TAIL_CHUNK
    while True:
        start = max(0, size - chunk)
        data = os.pread(fd, size - start, start)
        # Two newlines (or the start of the file) bracket the last complete line.
        if start == 0 or data.count(b"\n") >= 2:
            return data
        chunk *= 4


# --- verification -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    #: Intact records read before the first problem.
    records: int
    last_hash: str
    #: What is wrong, and where: 1-based line number, and the seq expected there.
    problem: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"OK {self.records} records, last hash {self.last_hash}"
        return f"FAIL line {self.line}: {self.problem}"


def verify(path: Path | str) -> VerifyResult:
    """Check each record's form, hash, seq and chain, then the head; stop at the first fault."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return VerifyResult(False, 0, GENESIS, f"cannot read {path}: {exc.strerror}", 0)
    prev, hashes = GENESIS, list[str]()
    lines = data.split(b"\n")
    # After the last newline comes b"" for an intact file, or a torn record.
    complete, torn = lines[:-1], lines[-1]
    for number, raw in enumerate(complete, start=1):
        problem = _check_line(raw, expected_seq=number, prev=prev)
        if problem is not None:
            return VerifyResult(False, len(hashes), prev, problem, number)
        prev = json.loads(raw)["hash"]
        hashes.append(prev)
    if torn:
        return VerifyResult(
            False, len(hashes), prev, "truncated record (no end of line)", len(hashes) + 1
        )
    return _check_head(path, hashes)


def _check_line(raw: bytes, *, expected_seq: int, prev: str) -> str | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return "not a JSON record (changed or truncated)"
    if not isinstance(record, dict) or sorted(record) != sorted(_FIELDS):
        return "not an audit record (fields missing or added)"
    try:
        if canonical(record) != raw:
            return "not in canonical form (edited)"
        if record["hash"] != record_hash(record):
            return f"record seq {record['seq']} was changed (hash mismatch)"
    except CanonicalError as exc:
        return f"record has no canonical form ({exc})"
    seq = record["seq"]
    if seq != expected_seq:
        if isinstance(seq, int) and seq > expected_seq:
            return f"record seq {expected_seq} is missing (deleted); found seq {seq}"
        return f"records out of order: expected seq {expected_seq}, found seq {seq}"
    if record["prev"] != prev:
        return f"record seq {seq} does not chain to the record before it"
    return None


def _check_head(path: Path, hashes: list[str]) -> VerifyResult:
    count, last_hash = len(hashes), hashes[-1] if hashes else GENESIS
    head_file = head_path(path)
    if not head_file.exists():
        return VerifyResult(
            count == 0,
            count,
            last_hash,
            None if count == 0 else f"{head_file.name} is missing",
            count,
        )
    try:
        head = json.loads(head_file.read_bytes())
        head_seq, head_hash = int(head["seq"]), str(head["hash"])
    except (OSError, ValueError, KeyError, TypeError):
        return VerifyResult(False, count, last_hash, f"{head_file.name} is unreadable", count)
    if head_seq > count:
        return VerifyResult(
            False,
            count,
            last_hash,
            f"log ends at seq {count} but the head says {head_seq}:"
            f" records {count + 1}..{head_seq} were cut (truncated)",
            count + 1,
        )
    # The head may lag the log after a crash (it is written after the record), never lead it.
    if head_seq >= 1 and hashes[head_seq - 1] != head_hash:
        return VerifyResult(
            False, count, last_hash, f"record seq {head_seq} differs from the head's hash", head_seq
        )
    return VerifyResult(True, count, last_hash)
