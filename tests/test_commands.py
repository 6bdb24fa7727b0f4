"""The command envelope parser refuses every malformed body with a stable code."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.kernel.command import MAX_COMMAND_BYTES, Action, command_id_of, parse_command
from gatewayd.kernel.errors import CommandError


def body(**fields: object) -> bytes:
    base: dict[str, object] = {
        "id": "c-1",
        "ts": 1795945323.5,
        "actor": "office",
        "action": "lockdown",
        "scope": "building/A",
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def test_valid_command_parses() -> None:
    command = parse_command(body())
    assert command.action is Action.LOCKDOWN
    assert command.scope == "building/A"


def test_iso_timestamp_with_zone_is_accepted() -> None:
    assert parse_command(body(ts="2026-11-29T09:42:03Z")).ts == pytest.approx(1795945323.0)


@pytest.mark.parametrize(
    ("payload", "code", "mentions"),
    [
        (b"\xff\xfe", "bad_request", "UTF-8"),
        (b"{not json", "bad_request", "JSON"),
        (b"[1, 2]", "bad_request", "object"),
        (body(action="dance"), "bad_request", "action"),
        (body(id=None), "bad_request", "id"),
        (body(ts="yesterday"), "bad_request", "ts"),
        (body(ts="2026-11-29T09:42:03"), "bad_request", "zone"),
        (body(ts=True), "bad_request", "ts"),
        (body(extra=1), "bad_request", "extra"),
        (b" " * (MAX_COMMAND_BYTES + 1), "too_large", "bytes"),
    ],
)
def test_malformed_commands_are_refused_with_a_stable_code(
    payload: bytes, code: str, mentions: str
) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(payload)
    assert info.value.code == code
    assert mentions in str(info.value)


def test_id_of_a_refused_command_is_echoed_when_readable() -> None:
    assert command_id_of(body(action="dance")) == "c-1"
    assert command_id_of(b"\xff") is None


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise_anything_but_command_error(payload: bytes) -> None:
    try:
        parse_command(payload)
    except CommandError as exc:
        assert exc.code in {"bad_request", "too_large"}


@given(
    st.dictionaries(
        st.sampled_from(["id", "ts", "actor", "action", "scope", "door", "params", "sig", "x"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=20),
            st.floats(allow_nan=True),
            st.lists(st.integers(), max_size=3),
        ),
    )
)
def test_arbitrary_json_objects_never_raise_anything_but_command_error(
    fields: dict[str, object],
) -> None:
    try:
        parse_command(json.dumps(fields).encode())
    except CommandError as exc:
        assert exc.code == "bad_request"
