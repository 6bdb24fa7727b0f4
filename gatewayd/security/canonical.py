"""Canonical JSON bytes (RFC 8785, JSON Canonicalization Scheme) for signatures and hashes.

JCS is chosen over "sorted keys, no whitespace" because it also fixes how numbers are written
(ECMAScript ``Number.prototype.toString``): ``1700000000``, ``1700000000.0`` and ``1.7e9`` are the
same value and canonicalize to the same bytes, and any language with a JCS library (JavaScript,
Go, Java, Rust, ...) produces them. See docs/security.md for the rules and a test vector.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

#: Integers beyond this are not exactly representable as IEEE doubles, which JCS requires.
MAX_SAFE_INTEGER = 2**53 - 1
#: A JSON string as ``json.dumps(text, ensure_ascii=False)`` writes it (the C encoder, without
#: building an encoder per call: every command's signature check canonicalizes its body).
_string = encode_basestring
_LITERALS = {None: "null", True: "true", False: "false"}


class CanonicalError(ValueError):
    """A value has no canonical JSON form (NaN, infinity, a huge integer, a lone surrogate)."""


class Encoded(str):
    """Text that :func:`canonical` made already, written into an enclosing value as it is.

    An audit record's ``data`` is its bulk: encoded once, it goes into both the record's hash
    and its line without being encoded twice more.
    """


def canonical(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value."""
    parts: list[str] = []
    _write(value, parts)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalError("string holds a lone surrogate, which UTF-8 cannot carry") from exc


def _write(value: Any, out: list[str]) -> None:
    # bool before int: True is an int in Python; Encoded before str, which it is too.
    if type(value) is Encoded:
        out.append(value)
    elif value is None or isinstance(value, bool):
        out.append(_LITERALS[value])
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalError(f"integer {value} is outside the IEEE double safe range")
        out.append(str(value))
    elif isinstance(value, float):
        out.append(es_number(value))
    elif isinstance(value, Mapping):
        _write_object(value, out)
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise CanonicalError(f"{type(value).__name__} is not a JSON value")


def _write_object(value: Mapping[Any, Any], out: list[str]) -> None:
    for key in value:
        if not isinstance(key, str):
            raise CanonicalError(f"object key {key!r} is not a string")
    # JCS orders members by the UTF-16 code units of their names, not by code points; for
    # ASCII names (nearly all) the two orders are one.
    if all(key.isascii() for key in value):
        keys = sorted(value)
    else:
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
    out.append("{")
    for i, key in enumerate(keys):
        if i:
            out.append(",")
        out.append(_string(key))
        out.append(":")
        _write(value[key], out)
    out.append("}")


def es_number(value: float) -> str:
    """A double written as ECMAScript ``Number.prototype.toString`` writes it."""
    if math.isnan(value) or math.isinf(value):
        raise CanonicalError("NaN and infinity have no JSON form")
    if value == 0:
        # Covers -0.0 too, which ECMAScript writes as "0".
        return "0"
    sign = "-" if value < 0 else ""
    # repr() gives the shortest digits that round-trip, as ECMAScript requires.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    assert isinstance(exponent, int)
    k = len(digits)
    # n: the position of the decimal point relative to the digits (value = 0.digits * 10**n).
    n = exponent + len(digit_tuple)
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        exp = n - 1
        mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp)}"
    return sign + text
