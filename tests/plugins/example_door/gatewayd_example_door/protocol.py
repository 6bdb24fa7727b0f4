"""Point names and the controller's two requests, mapped to and from ASCII lines.

Requests are ``GET`` and ``SET <mask>`` (one ``1`` lock, ``0`` release or ``-`` leave per
strike); both are answered ``STATE <bits>`` (one ``1``/``0`` per strike, 1 = locked). The
transport adds and checks a sequence number in front of each line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gatewayd.kernel.errors import BadDeviceReply, BadPoint

GET = "GET"
_POINT = re.compile(r"strike:(\d{1,2})")


def parse_point(raw: str) -> str:
    """``strike:N`` in normal form, or :class:`BadPoint`."""
    found = _POINT.fullmatch(raw.strip().lower())
    if found is None:
        raise BadPoint(f"{raw!r}: expected strike:N, N a strike number from 0")
    return f"strike:{int(found[1])}"


def strike(point: str) -> int:
    """The strike number of a normalised point."""
    return int(point.partition(":")[2])


def set_request(strikes: int, writes: Mapping[int, bool]) -> str:
    mask = "".join("-" if i not in writes else "1" if writes[i] else "0" for i in range(strikes))
    return f"SET {mask}"


def parse_state(reply: str, strikes: int) -> list[bool]:
    """Lock state of every strike from a ``STATE`` reply; anything else is untrusted."""
    word, _, bits = reply.partition(" ")
    if word != "STATE" or len(bits) != strikes or set(bits) - {"0", "1"}:
        raise BadDeviceReply(f"expected STATE and {strikes} bits, got {reply[:40]!r}")
    return [bit == "1" for bit in bits]
