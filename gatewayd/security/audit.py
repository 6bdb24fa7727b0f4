"""Append-only, hash-chained audit log (JSON lines) in rotated files, and its verifier.

Each line is the canonical JSON (RFC 8785) of ``{seq, ts, kind, actor, data, prev, hash}``;
``hash`` is the SHA-256 of the canonical record without ``hash``, ``prev`` the previous
record's ``hash``. A sidecar ``<log>.head`` holds the last ``seq`` and ``hash`` so that whole
records cut from the end are found too. Format and rules: docs/security.md.

Files rotate at a size: ``audit.log`` becomes ``audit.log.1`` (the older ones shift up, the
oldest beyond the kept count is deleted), and the new file opens with a ``log.rotated`` record
that chains to the last record before it and carries a snapshot of the safety state, so the
chain runs across files and the newest file alone says what was in force.

:class:`AuditLog` is used by one thread (the journal's writer); :meth:`AuditLog.append_many`
writes a group of records with one ``write`` and one ``fsync``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog

from gatewayd.kernel.errors import ErrorCode, GatewayError
from gatewayd.security.canonical import CanonicalError, Encoded, canonical

log = structlog.get_logger(__name__)

#: ``prev`` of the first record.
GENESIS = "0" * 64
#: How far back from the end the tail is searched for the last record.
_TAIL_CHUNK = 64 * 1024
#: A record's ``data`` larger than this is replaced by its digest; a torn tail longer than a
#: record can be is not a torn write, and is never cut automatically.
MAX_RECORD_BYTES = 64 * 1024
_FIELDS = ("seq", "ts", "kind", "actor", "data", "prev", "hash")
#: Who writes the log's own records (start, stop, rotation, repairs).
LOG_ACTOR = "gatewayd"


class AuditKind(StrEnum):
    COMMAND = "command"
    REFUSAL = "refusal"
    STATE = "state"
    OVERRIDE = "override"
    FIRE = "fire"
    BUDGET = "budget"
    #: What one actuation did: doors commanded, confirmed (when), failed (why).
    OUTCOME = "outcome"
    #: What a rule's device action did: a radio alert and its acknowledgement, a snapshot.
    ACTION = "action"
    #: A credential at a reader: granted (with the unlock it made) or refused, and why.
    ACCESS = "access"
    #: The daemon itself: start-up, stop, a safety state rebuilt, a clock step.
    DAEMON = "daemon"
    #: The log's own events: a torn last line removed, a cut detected, a rotation.
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


#: What a caller hands to :meth:`AuditLog.append_many`: (kind, actor, data).
Item = tuple[str, str, dict[str, Any]]


def record_hash(fields: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical form of a record without its ``hash``."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def head_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".head")


def rotated_path(log_path: Path, n: int) -> Path:
    return log_path.with_name(f"{log_path.name}.{n}")


def log_files(log_path: Path) -> list[Path]:
    """Every file of a log, oldest first: ``audit.log.N`` .. ``audit.log.1``, ``audit.log``."""
    rotated = []
    n = 1
    while rotated_path(log_path, n).exists():
        rotated.append(rotated_path(log_path, n))
        n += 1
    return [*reversed(rotated), *([log_path] if log_path.exists() else [])]


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class AuditLog:
    """The one writer of a log; recovers a torn tail and notices a cut one when it opens.

    ``expected_seq`` is the last sequence number another durable record says was written (the
    journal's index); a log that ends before it was cut, and says so in a new record.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        max_file_bytes: int = 32 * 1024 * 1024,
        keep_files: int = 8,
        expected_seq: int = 0,
    ) -> None:
        self.path = Path(path)
        self.max_file_bytes = max_file_bytes
        self.keep_files = keep_files
        #: Records appended, and bytes of a torn last line removed, since start.
        self.appended = 0
        #: Heads that could not be replaced after their records were written (a full disk).
        self.head_failures = 0
        self.torn_bytes = 0
        self.rotations = 0
        #: What was found wrong at open and recorded in the chain (empty when all was well).
        self.problems: list[str] = []
        self._broken: str | None = None
        self._fd = -1
        self._open_file()
        try:
            self._seq, self._hash = self._load_tail()
            self._check_head(expected_seq)
        except BaseException:
            self.close()
            raise

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def last_hash(self) -> str:
        return self._hash

    @property
    def size(self) -> int:
        return self._size

    def append(self, kind: str, actor: str, data: dict[str, Any]) -> AuditRecord:
        """Write, fsync and return one record; raise :class:`AuditUnavailable` if it fails."""
        return self.append_many([(kind, actor, data)])[0]

    def append_many(self, items: Sequence[Item], *, head: bool = True) -> list[AuditRecord]:
        """Chain, write and fsync a group of records at once, or none of them.

        ``head=False`` leaves the head file to the caller (:meth:`write_head`), who may first
        tell whoever waits that the records are on disk: the head is not part of that.
        """
        if self._broken is not None:
            raise AuditUnavailable(f"audit log {self.path} is unusable: {self._broken}")
        seq, prev = self._seq, self._hash
        records, lines = [], []
        for kind, actor, data in items:
            seq += 1
            fields, line = _fields(seq, str(kind), actor, data, prev)
            lines.append(line)
            records.append(AuditRecord(**fields))
            prev = fields["hash"]
        self._write(b"".join(lines))
        self._seq, self._hash = seq, prev
        self.appended += len(records)
        if head:
            self.write_head()
        return records

    def write_head(self) -> None:
        """Bring the head file up to the last record; a failure is logged and counted only.

        The records are on disk: saying otherwise would have a refused release written after
        all (and kept records written twice). A head that lags is a lower bound, as after a
        power cut; the next append brings it up to date.
        """
        try:
            self._write_head()
        except AuditUnavailable as exc:
            self.head_failures += 1
            log.warning("audit.head_not_written", seq=self._seq, error=str(exc))

    def rotate(self, snapshot: dict[str, Any]) -> AuditRecord:
        """Start a new file whose first record chains to this one and carries ``snapshot``."""
        previous = {"file": self.path.name, "seq": self._seq, "hash": self._hash}
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            for n in range(self.keep_files, 0, -1):
                older = rotated_path(self.path, n)
                if older.exists():
                    if n >= self.keep_files:
                        older.unlink()
                    else:
                        os.replace(older, rotated_path(self.path, n + 1))
            os.replace(self.path, rotated_path(self.path, 1))
        except OSError as exc:
            self._broken = f"rotation failed: {exc}"
            raise AuditUnavailable(f"cannot rotate {self.path}: {exc}") from exc
        self._open_file()
        self.rotations += 1
        event = {"event": "log.rotated", "previous": previous, "snapshot": snapshot}
        return self.append(AuditKind.LOG, LOG_ACTOR, event)

    def records(self, after_seq: int = 0) -> Iterator[dict[str, Any]]:
        """Records with ``seq > after_seq``, oldest first, read back from the files."""
        return read_records(self.path, after_seq)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def statistics(self) -> dict[str, Any]:
        return {
            "appended": self.appended,
            "last_seq": self._seq,
            "bytes": self._size,
            "rotations": self.rotations,
            "torn_bytes": self.torn_bytes,
            "broken": self._broken,
        }

    # --- writing -------------------------------------------------------------------------

    def _open_file(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            self._size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise AuditUnavailable(f"cannot open audit log {self.path}: {exc.strerror}") from exc

    def _write(self, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            self._undo()
            raise AuditUnavailable(f"cannot write audit log {self.path}: {exc}") from exc
        self._size += len(data)

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
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, canonical({"seq": self._seq, "hash": self._hash}) + b"\n")
            finally:
                os.close(fd)
            os.replace(tmp, head)
        except OSError as exc:
            raise AuditUnavailable(f"cannot write {head}: {exc}") from exc

    # --- opening -------------------------------------------------------------------------

    def _load_tail(self) -> tuple[int, str]:
        if self._size == 0:
            return self._previous_file_tail()
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

    def _previous_file_tail(self) -> tuple[int, str]:
        """An empty current file continues the chain of the newest rotated one, if any."""
        older = rotated_path(self.path, 1)
        if not older.exists():
            return 0, GENESIS
        with older.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            tail = _read_tail(f.fileno(), size) if size else b""
        if not tail.endswith(b"\n"):
            return 0, GENESIS
        record = json.loads(tail[:-1].rsplit(b"\n", 1)[-1])
        return int(record["seq"]), str(record["hash"])

    def _recover(self, keep: int, torn: bytes) -> tuple[int, str]:
        """Cut a torn last line (a crash mid-write), keep its bytes aside, say so in the chain."""
        if len(torn) > MAX_RECORD_BYTES + 1024:
            # Longer than any record: not one torn write. Nothing is cut by itself.
            raise AuditUnavailable(
                f"{self.path} ends in {len(torn)} bytes that are no record; it was not written"
                " this way: run `gatewayd audit verify`"
            )
        aside = self.path.with_name(self.path.name + ".torn")
        try:
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, torn + b"\n")
            finally:
                os.close(fd)
            os.ftruncate(self._fd, keep)
            os.fsync(self._fd)
        except OSError as exc:
            raise AuditUnavailable(f"cannot repair the torn end of {self.path}: {exc}") from exc
        self._size = keep
        self.torn_bytes = len(torn)
        self._seq, self._hash = self._load_tail()
        self.append(
            AuditKind.LOG,
            LOG_ACTOR,
            {
                "event": "torn_tail_removed",
                "bytes": len(torn),
                "sha256": hashlib.sha256(torn).hexdigest(),
                "kept_in": aside.name,
            },
        )
        self.problems.append(f"a torn last record ({len(torn)} bytes) was removed")
        return self._seq, self._hash

    def _check_head(self, expected_seq: int) -> None:
        """A head (or the journal) that knows of records the log has lost: record the cut."""
        head = _read_head(head_path(self.path))
        head_seq = head[0] if head else 0
        if head is not None and head_seq == self._seq and head[1] != self._hash:
            self._alarm("head_mismatch", head_seq=head_seq, head_hash=head[1])
        lost_to = max(head_seq, expected_seq)
        if lost_to > self._seq:
            self._alarm(
                "log_truncated",
                log_seq=self._seq,
                head_seq=head_seq,
                expected_seq=expected_seq,
                lost=lost_to - self._seq,
            )

    def _alarm(self, event: str, **detail: Any) -> None:
        self.append(AuditKind.LOG, LOG_ACTOR, {"event": event, **detail})
        self.problems.append(f"{event}: {detail}")


def read_records(log_path: Path, after_seq: int = 0) -> Iterator[dict[str, Any]]:
    """Records with ``seq > after_seq`` from a log's files, oldest first (read-only)."""
    for path in log_files(log_path):
        with path.open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    # A torn last line: what follows it is not a record.
                    return
                record = json.loads(raw)
                if int(record["seq"]) > after_seq:
                    yield record


def _fields(
    seq: int, kind: str, actor: str, data: dict[str, Any], prev: str
) -> tuple[dict[str, Any], bytes]:
    """A record's fields with its hash, and its line (canonical, with the newline).

    ``data`` is encoded once: the hash and the line take it as it is (:class:`Encoded`),
    byte for byte what :func:`record_hash` and :func:`canonical` would make of it again.
    """
    fields: dict[str, Any] = {
        "seq": seq,
        "ts": _utc_now(),
        "kind": kind,
        "actor": actor,
        "data": data,
        "prev": prev,
    }
    try:
        body = canonical(data)
        if len(body) > MAX_RECORD_BYTES:
            fields["data"] = {"oversized": len(body), "sha256": hashlib.sha256(body).hexdigest()}
            body = canonical(fields["data"])
    except CanonicalError as exc:
        # Keep the record (who did what) even when a value has no JSON form.
        fields["data"] = {"unencodable": str(exc), "repr": repr(data)[:4096]}
        body = canonical(fields["data"])
    encoded = {**fields, "data": Encoded(body.decode("utf-8"))}
    fields["hash"] = encoded["hash"] = hashlib.sha256(canonical(encoded)).hexdigest()
    return fields, canonical(encoded) + b"\n"


def _read_head(path: Path) -> tuple[int, str] | None:
    try:
        head = json.loads(path.read_bytes())
        return int(head["seq"]), str(head["hash"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return (-1, "")


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
    #: The file the problem is in (a log may span rotated files).
    file: str | None = None
    #: The first seq checked (above 1 when the oldest rotated files were deleted).
    first_seq: int = 1

    def __str__(self) -> str:
        if self.ok:
            since = f" from seq {self.first_seq}" if self.first_seq > 1 else ""
            return f"OK {self.records} records{since}, last hash {self.last_hash}"
        where = f"{self.file} " if self.file else ""
        return f"FAIL {where}line {self.line}: {self.problem}"


def verify(path: Path | str, *, expect_records: bool = False) -> VerifyResult:
    """Check each record's form, hash, seq and chain across the files, then the head.

    ``expect_records``: the state directory has been used before (the journal's index exists),
    so an empty log with no head is a log that was emptied, not a new one.
    """
    path = Path(path)
    files = log_files(path)
    hashes: list[str] = []
    prev, first_seq, expected = GENESIS, 1, 1
    for index, file in enumerate(files):
        # Named only when the problem is in an older, rotated file.
        name = None if file == path else file.name
        try:
            data = file.read_bytes()
        except OSError as exc:
            return VerifyResult(False, len(hashes), prev, f"cannot read: {exc.strerror}", 0,
                                name)  # fmt: skip
        lines = data.split(b"\n")
        complete, torn = lines[:-1], lines[-1]
        for number, raw in enumerate(complete, start=1):
            if index == 0 and number == 1:
                start = _rotated_start(raw)
                if start is not None:
                    # The older files were deleted: the chain is checked from here.
                    prev, first_seq, expected = start[1], start[0], start[0]
            problem = _check_line(raw, expected_seq=expected, prev=prev)
            if problem is not None:
                return VerifyResult(False, len(hashes), prev, problem, number, name,
                                    first_seq)  # fmt: skip
            prev = json.loads(raw)["hash"]
            hashes.append(prev)
            expected += 1
        if torn:
            return VerifyResult(False, len(hashes), prev, "truncated record (no end of line)",
                                len(complete) + 1, name, first_seq)  # fmt: skip
    if not hashes and not head_path(path).exists():
        if expect_records:
            return VerifyResult(False, 0, GENESIS, "the log is empty and has no head, but the"
                                " state directory has been used: it was emptied", 0)  # fmt: skip
        return VerifyResult(True, 0, GENESIS)
    return _check_head(path, hashes, first_seq)


def _rotated_start(raw: bytes) -> tuple[int, str] | None:
    """(seq, prev) of a file that opens with ``log.rotated``, for a log whose oldest are gone."""
    try:
        record = json.loads(raw)
        if record.get("kind") == AuditKind.LOG and record["data"].get("event") == "log.rotated":
            return int(record["seq"]), str(record["prev"])
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


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


def _check_head(path: Path, hashes: list[str], first_seq: int) -> VerifyResult:
    count = len(hashes)
    last_seq = first_seq + count - 1
    last_hash = hashes[-1] if hashes else GENESIS
    head_file = head_path(path)
    if not head_file.exists():
        return VerifyResult(False, count, last_hash, f"{head_file.name} is missing", count,
                            first_seq=first_seq)  # fmt: skip
    head = _read_head(head_file)
    if head is None or head[0] < 0:
        return VerifyResult(False, count, last_hash, f"{head_file.name} is unreadable", count,
                            first_seq=first_seq)  # fmt: skip
    head_seq, head_hash = head
    if head_seq > last_seq:
        return VerifyResult(False, count, last_hash,
                            f"log ends at seq {last_seq} but the head says {head_seq}:"
                            f" records {last_seq + 1}..{head_seq} were cut (truncated)",
                            count + 1, first_seq=first_seq)  # fmt: skip
    # The head may lag the log after a crash (it is written after the record), never lead it.
    if head_seq >= first_seq and hashes[head_seq - first_seq] != head_hash:
        return VerifyResult(False, count, last_hash,
                            f"record seq {head_seq} differs from the head's hash", head_seq,
                            first_seq=first_seq)  # fmt: skip
    return VerifyResult(True, count, last_hash, first_seq=first_seq)
