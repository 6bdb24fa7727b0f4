"""OSDP packet framing, just enough to tell a reader's sound packets from garbage.

libosdp parses and checks every packet itself, but drops a bad one silently; the gateway must
say when a reader sends something it cannot trust (a ``DeviceFault``), so the bytes the reader
sends are also split here and their CRC checked. Plain functions, no I/O.

A packet: SOM (0x53), address, length (2 bytes, little endian, the whole packet), control,
... , then a CRC-16 (little endian) when control bit 2 is set, else a one-byte checksum. A
0xFF mark byte may precede SOM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SOM = 0x53
MARK = 0xFF
#: Control bit: the packet ends with a CRC-16 rather than a checksum.
CTRL_CRC = 0x04
#: Address bit set in every reply from a peripheral device.
REPLY_BIT = 0x80
#: SOM, address, two length bytes, control, reply code, one check byte.
MIN_PACKET = 7
#: libosdp's packet buffer; a longer length field is garbage.
MAX_PACKET = 256


def crc16(data: bytes) -> int:
    """CRC-16/AUG-CCITT (polynomial 0x1021, initial 0x1D0F), the OSDP packet CRC."""
    crc = 0x1D0F
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def checksum(data: bytes) -> int:
    """The one-byte checksum of a packet without CRC: the two's complement of the sum."""
    return (-sum(data)) & 0xFF


@dataclass
class FrameScanner:
    """Splits the reader's byte stream into packets; counts the sound and the bad ones."""

    #: Packets whose length and check byte(s) were right.
    good: int = 0
    #: Bytes or packets that were not sound OSDP.
    bad: int = 0
    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[str]:
        """Take the next bytes; return one problem per bad packet or run of stray bytes."""
        self._buffer += data
        problems: list[str] = []
        while self._buffer:
            start = self._skip_to_som(problems)
            if not start:
                break
            buf = self._buffer
            if len(buf) < 4:
                break
            length = buf[2] | (buf[3] << 8)
            if not MIN_PACKET <= length <= MAX_PACKET:
                problems.append(f"packet length {length} out of range")
                self.bad += 1
                del buf[:1]
                continue
            if len(buf) < length:
                break
            packet = bytes(buf[:length])
            problem = check_packet(packet)
            if problem is None:
                self.good += 1
                del buf[:length]
            else:
                problems.append(problem)
                self.bad += 1
                # Resynchronise at the next SOM inside the bad packet.
                del buf[:1]
        return problems

    def _skip_to_som(self, problems: list[str]) -> bool:
        buf = self._buffer
        stray = 0
        while buf and buf[0] != SOM:
            if buf[0] != MARK:
                stray += 1
            del buf[:1]
        if stray:
            self.bad += 1
            problems.append(f"{stray} stray bytes outside any packet")
        return bool(buf)

    def reset(self) -> None:
        self._buffer.clear()


def check_packet(packet: bytes) -> str | None:
    """None if ``packet`` (SOM to check bytes) is sound, else what is wrong with it."""
    if not packet[1] & REPLY_BIT:
        return f"address byte {packet[1]:#04x} is not a reply"
    if packet[4] & CTRL_CRC:
        want = crc16(packet[:-2])
        got = packet[-2] | (packet[-1] << 8)
        if want != got:
            return f"CRC {got:#06x}, expected {want:#06x}"
        return None
    want_sum = checksum(packet[:-1])
    if want_sum != packet[-1]:
        return f"checksum {packet[-1]:#04x}, expected {want_sum:#04x}"
    return None
