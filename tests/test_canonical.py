"""Canonical JSON is RFC 8785: the RFC's own example, and numbers that round-trip."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.security.canonical import CanonicalError, canonical, es_number

RFC_8785_INPUT = r"""{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],
"string":"\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/","literals":[null,true,false]}"""
RFC_8785_OUTPUT = (
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
)


def test_rfc_8785_example() -> None:
    assert canonical(json.loads(RFC_8785_INPUT)) == RFC_8785_OUTPUT.encode()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (1795945323.0, "1795945323"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (1e-6, "0.000001"),
        (-2.5, "-2.5"),
        (5e-324, "5e-324"),
    ],
)
def test_numbers_are_written_as_ecmascript_writes_them(value: float, text: str) -> None:
    assert es_number(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_finite_double_round_trips(value: float) -> None:
    assert float(es_number(value)) == value or (value == 0 and float(es_number(value)) == 0)


def test_members_sort_by_utf16_code_units() -> None:
    # U+10000 is D800 DC00 in UTF-16: before U+E000, though after it by code point.
    assert canonical({"\ue000": 1, "\U00010000": 2}) == '{"\U00010000":2,"\ue000":1}'.encode()


@pytest.mark.parametrize("value", [math.nan, math.inf, 2**53, {1: 2}, "\ud800", object()])
def test_values_without_a_canonical_form_are_refused(value: object) -> None:
    with pytest.raises(CanonicalError):
        canonical(value)
