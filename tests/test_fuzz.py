"""Property fuzzing of every decoder that takes outside input: config, commands, board replies.

Each one must answer garbage with its own error type, and nothing else: no crash, no other
exception, no state change. (tests/test_commands.py fuzzes flat command bodies; here the
nested shapes and mutations of a valid command.)
"""

from __future__ import annotations

import asyncio
import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import DecodePDU, ModbusPDU

from gatewayd.drivers.modbus_relay.transport import ModbusLink, ModbusRefused
from gatewayd.kernel.command import parse_command
from gatewayd.kernel.errors import BadDeviceReply, CommandError, ConfigError
from gatewayd.service.config import load_config, parse_config

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo-campus.toml"
DEMO_RAW: dict[str, Any] = tomllib.loads(DEMO.read_text(encoding="utf-8"))

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True), st.text(max_size=30),
)  # fmt: skip
#: JSON-like values: what a TOML or JSON document can hold (None only in JSON).
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a nested dict/list document."""
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc[:3]):
            found += paths(value, (*prefix, i))
    return found


DEMO_PATHS = paths(DEMO_RAW)


def mutate(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    changed = copy.deepcopy(doc)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


# --- config ---------------------------------------------------------------------------------


@given(st.dictionaries(
    st.sampled_from(["site", "mqtt", "buildings", "zones", "devices", "doors", "inputs",
                     "policy", "state_dir", "x"]),
    values, max_size=6,
))  # fmt: skip
def test_arbitrary_documents_raise_only_config_error(doc: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        parse_config(doc)


@settings(max_examples=300)
@given(st.sampled_from(DEMO_PATHS), values)
def test_the_demo_campus_with_one_value_replaced_loads_or_raises_config_error(
    path: tuple[Any, ...], value: Any
) -> None:
    try:
        parse_config(mutate(DEMO_RAW, path, value))
    except ConfigError as exc:
        assert exc.problems


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2048) | st.text(max_size=2048).map(str.encode))
def test_arbitrary_file_bytes_raise_only_config_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "campus.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError):
        load_config(path)


# --- commands (extends tests/test_commands.py) -----------------------------------------------

VALID_COMMAND = {
    "id": "c-1",
    "ts": 1_700_000_000.0,
    "actor": "op",
    "action": "lockdown",
    "scope": "campus",
    "params": {},
}


@given(values)
def test_any_json_document_is_a_command_or_a_command_error(doc: Any) -> None:
    try:
        parse_command(json.dumps(doc).encode())
    except CommandError as exc:
        assert exc.code in {"bad_request", "too_large"}


@given(st.sampled_from([*sorted(VALID_COMMAND), "door", "sig", "extra"]), values)
def test_a_valid_command_with_one_field_replaced_parses_or_is_refused(
    field: str, value: Any
) -> None:
    try:
        parse_command(json.dumps({**VALID_COMMAND, field: value}).encode())
    except CommandError as exc:
        assert exc.code == "bad_request"


# --- Modbus board replies --------------------------------------------------------------------


class ReplyingClient:
    """Stands in for pymodbus's client at the transport edge: every request gets one frame.

    The frame is decoded by pymodbus's own PDU decoder, as the real client would; a frame
    the decoder refuses raises the way the client does.
    """

    connected = True

    def __init__(self, frame: bytes) -> None:
        self.frame = frame

    async def _reply(self) -> ModbusPDU:
        pdu = DecodePDU(False).decode(self.frame)
        if pdu is None:
            raise ModbusException("unable to decode response")
        return pdu

    async def read_coils(self, *_: Any, **__: Any) -> ModbusPDU:
        return await self._reply()

    read_discrete_inputs = read_coils
    write_coils = read_coils

    def close(self) -> None:
        """Nothing is open."""


frames = st.one_of(
    st.binary(min_size=1, max_size=40),
    # Well-formed headers of the three function codes we use (and their error forms).
    st.tuples(st.sampled_from([1, 2, 15, 0x81, 0x82, 0x8F, 3, 5]), st.binary(max_size=12)).map(
        lambda t: bytes([t[0]]) + t[1]
    ),
)


@settings(max_examples=400)
@given(
    frames,
    st.sampled_from(["read_coils", "read_inputs", "write_coils"]),
    st.integers(min_value=1, max_value=64),
)
def test_any_board_reply_is_accepted_refused_or_raises_bad_device_reply(
    frame: bytes, request: str, count: int
) -> None:
    link = ModbusLink("127.0.0.1", 502, unit=1, timeout_ms=100)
    link._client = ReplyingClient(frame)  # type: ignore[assignment]

    async def ask() -> list[bool] | int:
        if request == "write_coils":
            return await link.write_coils(0, [True] * count)
        return await getattr(link, request)(0, count)  # type: ignore[no-any-return]

    try:
        result = asyncio.run(ask())
    # A well-formed exception reply is the board refusing (named, with a hint), not garbage.
    except (BadDeviceReply, ModbusRefused):
        assert link.failures == 1
        return
    # Accepted: it must have been a well-formed answer to exactly what was asked.
    assert link.failures == 0
    if isinstance(result, list):
        assert len(result) == count
