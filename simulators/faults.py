"""Fault injection settings shared by the simulators, changeable while they run."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum


class Corruption(StrEnum):
    """How a corrupted reply is garbled."""

    #: The function code of another request (a read-coils reply says "discrete inputs").
    FUNCTION = "function"
    #: The byte count or the echoed count disagrees with the request.
    COUNT = "count"
    #: Random PDU bytes behind a well-formed MBAP header.
    NOISE = "noise"


#: Function code a FUNCTION corruption substitutes: same reply layout, wrong meaning.
_SWAPPED_FUNCTION = {1: 2, 2: 1, 5: 6, 15: 16}


@dataclass
class Faults:
    """What a simulator does wrong; tests change these fields at run time."""

    #: Every reply is sent this much later (the request is also processed this late).
    delay_ms: float = 0.0
    #: Probability (0..1) that a request is lost: not processed, never answered.
    drop: float = 0.0
    #: The next N requests are lost, whatever ``drop`` says (counts down to 0).
    drop_next: int = 0
    #: Probability (0..1) that a reply is garbled, in the way ``corrupt_mode`` says.
    corrupt: float = 0.0
    corrupt_mode: Corruption = Corruption.FUNCTION
    #: Requests are read and ignored: a half-open connection.
    hang: bool = False
    #: Seeded so a failing test can be replayed.
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def roll(self, probability: float) -> bool:
        """True with the given probability; never consumes randomness for 0 or 1."""
        if probability <= 0.0:
            return False
        if probability >= 1.0:
            return True
        return self.rng.random() < probability

    def lost(self) -> bool:
        """Whether this request is lost: one of the ``drop_next``, else by ``drop``."""
        if self.drop_next > 0:
            self.drop_next -= 1
            return True
        return self.roll(self.drop)

    def garble(self, pdu: bytes) -> bytes:
        """Return a corrupted copy of a reply PDU (function code first)."""
        if self.corrupt_mode is Corruption.NOISE:
            return bytes([pdu[0]]) + self.rng.randbytes(max(1, len(pdu) - 1))
        if self.corrupt_mode is Corruption.FUNCTION:
            return bytes([_SWAPPED_FUNCTION.get(pdu[0], pdu[0] ^ 0x40)]) + pdu[1:]
        return _miscount(pdu)


def _miscount(pdu: bytes) -> bytes:
    """Shorten a read reply by one data byte, or make a write echo the wrong count."""
    function = pdu[0]
    if function in (1, 2) and len(pdu) >= 3:
        return bytes([function, pdu[1] - 1]) + pdu[2:-1]
    if function == 15 and len(pdu) == 5:
        count = int.from_bytes(pdu[3:5], "big")
        return pdu[:3] + ((count + 1) & 0xFFFF).to_bytes(2, "big")
    if function == 5 and len(pdu) == 5:
        # Echo the opposite value: the write "did something else".
        value = b"\x00\x00" if pdu[3:5] == b"\xff\x00" else b"\xff\x00"
        return pdu[:3] + value
    return pdu[:-1] if len(pdu) > 1 else pdu
