"""The radio line protocol: every malformed line is a FrameError, valid frames round-trip."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.drivers.psap_radio import frames
from gatewayd.drivers.psap_radio.frames import Frame, FrameError, FrameType, Reason


def line(body: str, check: str | None = None) -> bytes:
    """A line around ``body`` with its correct checksum unless ``check`` is given."""
    raw = body.encode("latin-1")
    return b"$" + raw + b"*" + (check or f"{frames.checksum(raw):02X}").encode() + b"\r\n"


def test_documented_examples_parse_to_what_they_say() -> None:
    assert frames.parse(b"$012,EMG,LOCKDOWN,Lincoln High School*16\r\n") == frames.emg(
        12, "LOCKDOWN", "Lincoln High School"
    )
    text = frames.parse(b"$013,TXT,LOCKDOWN, Building A, Room 114, 09:42*36\r\n")
    assert text.fields == ("LOCKDOWN, Building A, Room 114, 09:42",)
    assert frames.parse(b"$407,ACK,012*49\r\n").refers_to == 12
    refused = frames.parse(b"$408,NAK,013,BSY*2E")
    assert (refused.refers_to, refused.fields[1]) == (13, "BSY")
    assert frames.parse(b"$014,HBT,10000*5A\n").type is FrameType.HBT


def test_checksum_is_accepted_in_either_case_and_sent_in_capitals() -> None:
    encoded = frames.ack(1, 999).encode()
    assert encoded == line("001,ACK,999")
    assert frames.parse(encoded.lower().replace(b"ack", b"ACK")) == frames.ack(1, 999)


@pytest.mark.parametrize(
    ("raw", "message", "reason"),
    [
        (line("001,ACK,000", "00"), "checksum mismatch: frame says 00, body gives", Reason.CHK),
        (line("001,XYZ,000"), "unknown type 'XYZ' (expected one of EMG, TXT", Reason.TYP),
        (b"$" + b"0" * 90 + b"*00\r\n", "line is 96 bytes with CR LF, max 82", Reason.LEN),
        (line("001,TXT,caf\xe9"), r"byte 0xE9 at offset 12 is not printable ASCII", Reason.FMT),
        (b"$001,ACK,000*0\x00", "byte 0x00 at offset 14", Reason.FMT),
        (line("001,ACK"), "missing fields: expected SEQ,TYPE,PAYLOAD", Reason.FMT),
        (line("001,HBT,"), "HBT payload is empty", Reason.FMT),
        (b"001,ACK,000*31\r\n", "line does not start with '$'", Reason.FMT),
        (b"$001,ACK,000\r\n", "no '*' before the checksum", Reason.FMT),
        (b"$001,ACK,000*3G\r\n", "checksum '3G' is not 2 hex digits", Reason.FMT),
        (line("01,ACK,000"), "sequence '01' is not 3 digits", Reason.FMT),
        (line("001,ACK,12"), "ACK payload '12' must be NNN", Reason.FMT),
        (line("001,NAK,012"), "NAK payload '012' must be NNN,RSN", Reason.FMT),
        (line("001,EMG,LOCKDOWN"), "EMG payload 'LOCKDOWN' needs STATUS,SITE", Reason.FMT),
        (line("001,EMG,lockdown,Site"), "EMG status 'lockdown' must be up to 24", Reason.FMT),
        (line("001,EMG,LOCKDOWN,A,B"), "EMG site has the reserved character ','", Reason.FMT),
        (line("001,TXT,a$b"), "reserved character '$' inside the frame", Reason.FMT),
    ],
)
def test_malformed_lines_say_what_is_wrong(raw: bytes, message: str, reason: Reason) -> None:
    with pytest.raises(FrameError, match=re.escape(message)) as err:
        frames.parse(raw)
    assert err.value.reason is reason


def test_a_readable_sequence_is_kept_for_the_nak_even_when_the_checksum_fails() -> None:
    with pytest.raises(FrameError) as err:
        frames.parse(line("042,TXT,hello", "00"))
    assert (err.value.seq, err.value.reason) == (42, Reason.CHK)
    with pytest.raises(FrameError) as unreadable:
        frames.parse(line("4x2,TXT,hello", "00"))
    assert unreadable.value.seq is None


def test_frames_that_cannot_be_valid_cannot_be_built() -> None:
    with pytest.raises(FrameError, match="sequence 1000 is outside 000-999"):
        frames.ack(1000, 1)
    with pytest.raises(FrameError, match="EMG site has the reserved character ','"):
        frames.emg(1, "LOCKDOWN", "Lincoln, High")
    with pytest.raises(FrameError, match="TXT payload is 69 characters long, max 68") as err:
        frames.txt(1, "x" * 69)
    assert err.value.reason is Reason.LEN
    with pytest.raises(FrameError, match="a TXT frame does not answer another frame"):
        _ = frames.txt(1, "hi").refers_to


def test_drill_marking_is_read_from_the_payload() -> None:
    assert frames.emg(1, "DRILL LOCKDOWN", "S").is_drill
    assert not frames.emg(1, "LOCKDOWN", "S").is_drill
    assert frames.txt(1, "DRILL: LOCKDOWN, Building A").is_drill
    assert not frames.txt(1, "LOCKDOWN, Building A, not a DRILL: at all").is_drill


def test_wire_text_is_printable_ascii_without_reserved_characters() -> None:
    assert frames.to_wire_text("École Saint-Jérôme\tRoom 1\n") == "Ecole Saint-Jerome Room 1"
    assert frames.to_wire_text("Cost $5 * 2, 北楼") == "Cost ?5 ? 2, ??"


@given(
    st.one_of(
        st.binary(max_size=120),
        # Mostly protocol characters, so the fuzzer gets past the first checks.
        st.text("$*,0123456789ABCDEFGHKMNTXY:- \r\n", max_size=90).map(str.encode),
    )
)
def test_any_bytes_parse_or_raise_frame_error(raw: bytes) -> None:
    try:
        frame = frames.parse(raw)
    except FrameError as exc:
        assert str(exc)
    else:
        assert frames.parse(frame.encode()) == frame


def wire_text(min_size: int, max_size: int, *, commas: bool = True) -> st.SearchStrategy[str]:
    alphabet = st.characters(
        min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="$*" + ("" if commas else ",")
    )
    return st.text(alphabet, min_size=min_size, max_size=max_size)


seqs = st.integers(0, 999)
statuses = st.from_regex(r"\A[A-Z][A-Z0-9]{0,10}( [A-Z0-9]{1,5}){0,2}\Z")
valid_frames = st.one_of(
    st.builds(frames.emg, seqs, statuses, wire_text(1, 40, commas=False)),
    st.builds(frames.txt, seqs, wire_text(1, frames.MAX_PAYLOAD)),
    st.builds(frames.ack, seqs, seqs),
    st.builds(frames.nak, seqs, seqs, st.sampled_from(list(Reason))),
    st.builds(frames.hbt, seqs, st.integers(1, 9_999_999)),
)


@given(valid_frames)
def test_encode_then_parse_gives_the_same_frame(frame: Frame) -> None:
    encoded = frame.encode()
    assert len(encoded) <= frames.MAX_LINE
    assert encoded.endswith(b"\r\n")
    assert frames.parse(encoded) == frame
    assert frames.parse(encoded[:-2]) == frame


@given(valid_frames, st.integers(0, 200), st.integers(1, 255))
def test_any_flipped_byte_is_caught(frame: Frame, where: int, flip: int) -> None:
    encoded = bytearray(frame.encode()[:-2])
    index = where % len(encoded)
    encoded[index] ^= flip
    try:
        parsed = frames.parse(bytes(encoded))
    except FrameError:
        return
    # XOR misses a flip only if it cancels out, which one flipped byte cannot do in the body;
    # a flip that turns the checksum's case (a -> A) still decodes to the same frame.
    assert parsed == frame
