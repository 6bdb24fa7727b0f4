"""The radio interface's line protocol: one frame per line, parsed and encoded without I/O.

``$SEQ,TYPE,PAYLOAD*CK\\r\\n`` -- see ``docs/psap-radio-protocol.md`` for the full grammar.
Every malformed input raises :class:`FrameError` with a message saying what is wrong and a
NAK reason code, so the simulator and the driver apply exactly the same rules.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

#: Longest line on the wire, ``$`` through CR LF (NMEA 0183's limit).
MAX_LINE = 82
#: ``$`` + ``*CK`` + CR LF around the body.
_OVERHEAD = 6
#: Longest body (``SEQ,TYPE,PAYLOAD``).
MAX_BODY = MAX_LINE - _OVERHEAD
#: Longest payload: the body less ``NNN,TTT,``.
MAX_PAYLOAD = MAX_BODY - 8
#: Sequence numbers roll over from 999 to 000.
SEQ_MODULO = 1000
MAX_STATUS = 24
MAX_SITE = 40
#: Characters that delimit a frame and so never appear inside one.
RESERVED = "$*"
DRILL_STATUS_PREFIX = "DRILL "
DRILL_TEXT_PREFIX = "DRILL: "

_STATUS_RE = re.compile(r"[A-Z][A-Z0-9]*(?: [A-Z0-9]+)*")
_SEQ_RE = re.compile(r"[0-9]{3}")
_REASON_RE = re.compile(r"[A-Z]{3}")
_INTERVAL_RE = re.compile(r"[1-9][0-9]{0,6}")
_HEX = frozenset(b"0123456789ABCDEFabcdef")


class FrameType(StrEnum):
    EMG = "EMG"  #: Emergency status (gateway -> radio).
    TXT = "TXT"  #: Short text for the dispatcher (gateway -> radio).
    ACK = "ACK"  #: Frame accepted (radio -> gateway).
    NAK = "NAK"  #: Frame refused, with a reason (radio -> gateway).
    HBT = "HBT"  #: Link heartbeat (gateway -> radio), answered by ACK.


class Reason(StrEnum):
    """NAK reason codes; a receiver accepts any three capitals, these are the defined ones."""

    CHK = "CHK"  #: Checksum mismatch.
    FMT = "FMT"  #: Malformed frame or payload.
    TYP = "TYP"  #: Unknown frame type.
    LEN = "LEN"  #: Line too long.
    BSY = "BSY"  #: Radio busy (channel in use); send again later.
    INH = "INH"  #: Transmission inhibited at the radio.


class FrameError(ValueError):
    """A line that is not a valid frame; ``reason`` is the NAK code a radio would answer."""

    def __init__(self, message: str, reason: Reason = Reason.FMT, seq: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        #: The sequence number, if it could be read (a radio NAKs it), else None.
        self.seq = seq


def checksum(body: bytes) -> int:
    """XOR of every byte of the body (between ``$`` and ``*``)."""
    value = 0
    for byte in body:
        value ^= byte
    return value


@dataclass(frozen=True, slots=True)
class Frame:
    """One valid frame; constructing an invalid one raises FrameError."""

    seq: int
    type: FrameType
    payload: str

    def __post_init__(self) -> None:
        if not 0 <= self.seq < SEQ_MODULO:
            raise FrameError(f"sequence {self.seq} is outside 000-999")
        _check_payload(self.type, self.payload, self.seq)

    @property
    def fields(self) -> tuple[str, ...]:
        """The payload's fields; a TXT payload is one field, commas and all."""
        if self.type is FrameType.TXT:
            return (self.payload,)
        return tuple(self.payload.split(","))

    @property
    def refers_to(self) -> int:
        """The sequence number an ACK or NAK answers."""
        if self.type not in (FrameType.ACK, FrameType.NAK):
            raise FrameError(f"a {self.type} frame does not answer another frame", seq=self.seq)
        return int(self.fields[0])

    @property
    def is_drill(self) -> bool:
        """True for an EMG or TXT marked DRILL."""
        if self.type is FrameType.EMG:
            return self.payload.startswith(DRILL_STATUS_PREFIX)
        return self.type is FrameType.TXT and self.payload.startswith(DRILL_TEXT_PREFIX)

    def encode(self) -> bytes:
        """The frame as sent: ``$`` body ``*`` checksum CR LF (checksum in capitals)."""
        body = f"{self.seq:03d},{self.type},{self.payload}".encode("ascii")
        return b"$" + body + b"*" + f"{checksum(body):02X}".encode("ascii") + b"\r\n"


# --- constructors ------------------------------------------------------------------------------


def emg(seq: int, status: str, site: str) -> Frame:
    return Frame(seq, FrameType.EMG, f"{status},{site}")


def txt(seq: int, text: str) -> Frame:
    return Frame(seq, FrameType.TXT, text)


def ack(seq: int, acked: int) -> Frame:
    return Frame(seq, FrameType.ACK, f"{acked:03d}")


def nak(seq: int, refused: int, reason: Reason | str) -> Frame:
    return Frame(seq, FrameType.NAK, f"{refused:03d},{reason}")


def hbt(seq: int, interval_ms: int) -> Frame:
    return Frame(seq, FrameType.HBT, str(interval_ms))


# --- parsing ----------------------------------------------------------------------------------


def parse(line: bytes) -> Frame:
    """Parse one line, with or without its CR LF (a bare LF is accepted too)."""
    line = line.removesuffix(b"\n").removesuffix(b"\r")
    if len(line) + 2 > MAX_LINE:
        raise FrameError(f"line is {len(line) + 2} bytes with CR LF, max {MAX_LINE}", Reason.LEN)
    for offset, byte in enumerate(line):
        if not 0x20 <= byte <= 0x7E:
            raise FrameError(f"byte 0x{byte:02X} at offset {offset} is not printable ASCII")
    if not line.startswith(b"$"):
        raise FrameError("line does not start with '$'")
    body, star, check = line[1:].rpartition(b"*")
    if not star:
        raise FrameError("no '*' before the checksum")
    seq = _readable_seq(body)
    if len(check) != 2 or not _HEX.issuperset(check):
        raise FrameError(f"checksum {check.decode()!r} is not 2 hex digits", seq=seq)
    if int(check, 16) != checksum(body):
        raise FrameError(
            f"checksum mismatch: frame says {check.decode().upper()},"
            f" body gives {checksum(body):02X}",
            Reason.CHK,
            seq,
        )
    return _parse_body(body.decode("ascii"), seq)


def _readable_seq(body: bytes) -> int | None:
    """The sequence number if the body starts with one (for a NAK), else None."""
    head = body[:4]
    if len(head) == 4 and head[3:] == b"," and _SEQ_RE.fullmatch(head[:3].decode("ascii")):
        return int(head[:3])
    return None


def _parse_body(body: str, seq: int | None) -> Frame:
    for char in RESERVED:
        if char in body:
            raise FrameError(f"reserved character {char!r} inside the frame", seq=seq)
    parts = body.split(",", 2)
    if len(parts) < 3:
        raise FrameError(f"missing fields: expected SEQ,TYPE,PAYLOAD, got {body!r}", seq=seq)
    raw_seq, raw_type, payload = parts
    if seq is None:
        raise FrameError(f"sequence {raw_seq!r} is not 3 digits")
    try:
        frame_type = FrameType(raw_type)
    except ValueError:
        known = ", ".join(FrameType)
        raise FrameError(
            f"unknown type {raw_type!r} (expected one of {known})", Reason.TYP, seq
        ) from None
    return Frame(seq, frame_type, payload)


def _check_payload(frame_type: FrameType, payload: str, seq: int) -> None:
    """Raise FrameError unless ``payload`` is valid for ``frame_type``."""
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(
            f"{frame_type} payload is {len(payload)} characters long, max {MAX_PAYLOAD}",
            Reason.LEN,
            seq,
        )
    problem = check_text(payload, MAX_PAYLOAD, what=f"{frame_type} payload", empty_ok=False)
    if problem:
        raise FrameError(problem, seq=seq)
    match frame_type:
        case FrameType.EMG:
            _check_emg(payload, seq)
        case FrameType.ACK:
            _check_fields(payload, seq, "ACK", _SEQ_RE)
        case FrameType.NAK:
            _check_fields(payload, seq, "NAK", _SEQ_RE, _REASON_RE)
        case FrameType.HBT:
            _check_fields(payload, seq, "HBT", _INTERVAL_RE)
        case FrameType.TXT:
            pass


def _check_emg(payload: str, seq: int) -> None:
    status, comma, site = payload.partition(",")
    if not comma or not site:
        raise FrameError(f"EMG payload {payload!r} needs STATUS,SITE", seq=seq)
    if len(status) > MAX_STATUS or not _STATUS_RE.fullmatch(status):
        raise FrameError(
            f"EMG status {status!r} must be up to {MAX_STATUS} capitals, digits and single"
            " spaces, starting with a letter",
            seq=seq,
        )
    problem = check_text(site, MAX_SITE, what="EMG site", empty_ok=False, commas=False)
    if problem:
        raise FrameError(problem, seq=seq)


def _check_fields(payload: str, seq: int, what: str, *patterns: re.Pattern[str]) -> None:
    fields = payload.split(",")
    if len(fields) != len(patterns) or not all(
        p.fullmatch(f) for p, f in zip(patterns, fields, strict=True)
    ):
        shapes = {
            "ACK": "NNN (the acknowledged sequence)",
            "NAK": "NNN,RSN (refused sequence, 3-capital reason)",
            "HBT": "the heartbeat interval in ms (1-9999999)",
        }
        raise FrameError(f"{what} payload {payload!r} must be {shapes[what]}", seq=seq)


def check_text(
    text: str, max_len: int, *, what: str, empty_ok: bool = True, commas: bool = True
) -> str:
    """What is wrong with ``text`` as a frame field ("" if nothing)."""
    if not text and not empty_ok:
        return f"{what} is empty"
    if len(text) > max_len:
        return f"{what} is {len(text)} characters long, max {max_len}"
    for char in text:
        if not " " <= char <= "~":
            return f"{what} has {char!r}: only printable ASCII is allowed"
        if char in RESERVED or (char == "," and not commas):
            return f"{what} has the reserved character {char!r}"
    return ""


def to_wire_text(text: str) -> str:
    """Printable ASCII for a frame field: accents dropped, other characters become '?'."""
    return " ".join("".join(_wire_char(c) for c in text).split())


def _wire_char(char: str) -> str:
    """One character as printable ASCII: 'é' -> 'e', a tab -> ' ', '$' or '北' -> '?'."""
    if char in "\t\r\n":
        return " "
    if char in RESERVED:
        return "?"
    if " " <= char <= "~":
        return char
    # A letter with an accent decomposes to its base letter and a combining mark.
    base = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode("ascii")
    return base if base and all(" " <= c <= "~" and c not in RESERVED for c in base) else "?"
