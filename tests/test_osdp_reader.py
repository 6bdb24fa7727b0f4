"""The OSDP reader driver (libosdp control panel) against libosdp's peripheral device, over a
real pty with the secure channel: cards, PINs, LED and buzzer, tamper, keys and faults."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from gatewayd.drivers.osdp_reader import OsdpReaderConfig, OsdpReaderDriver
from gatewayd.drivers.osdp_reader.config import DEFAULT_SCBK
from gatewayd.drivers.osdp_reader.frames import FrameScanner, crc16
from gatewayd.kernel.errors import DeviceOffline
from gatewayd.kernel.events import (
    CredentialRead,
    DriverEvent,
    Health,
    Indication,
    ReaderReport,
    ReaderSignal,
)
from gatewayd.simulators.osdp_reader import Mode, OsdpReaderSim
from tests.support.harness import DriverHarness, health, is_fault
from tests.support.waiting import eventually

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
OTHER_KEY = bytes.fromhex("ffeeddccbbaa99887766554433221100")

Reader = DriverHarness[OsdpReaderDriver, OsdpReaderSim]


def settings(url: str, **overrides: Any) -> OsdpReaderConfig:
    values: dict[str, Any] = {
        "id": "reader-t",
        "driver": "osdp_reader",
        "url": url,
        "scbk": KEY.hex(),
        "reconnect_min_ms": 50,
        "reconnect_max_ms": 300,
        "online_timeout_ms": 2000,
    }
    return OsdpReaderConfig.model_validate({**values, **overrides})


@contextlib.asynccontextmanager
async def running(
    mode: Mode = "pty",
    *,
    sim_key: bytes | None = KEY,
    sim_install: bool = False,
    online: bool = True,
    **overrides: Any,
) -> AsyncIterator[Reader]:
    sim = OsdpReaderSim(mode, scbk=sim_key, install_mode=sim_install, door="A-101")
    await sim.start()
    config = settings(sim.url, **overrides)
    reader = Reader(lambda emit: OsdpReaderDriver(config, frozenset(), emit), sim)
    try:
        await reader.start(timeout_s=10)
        if online:
            await reader.wait_for(health(Health.ONLINE), timeout_s=10)
        yield reader
    finally:
        await reader.stop()
        await sim.stop()


def credential(kind: str) -> Any:
    def match(event: DriverEvent) -> bool:
        return isinstance(event, CredentialRead) and event.kind == kind

    return match


async def test_reader_comes_online_over_the_secure_channel_on_a_pty() -> None:
    async with running() as reader:
        await eventually(lambda: reader.sim.describe()["secure"], message="PD sees SC active")
        assert reader.stat("secure") == "True"
        assert int(reader.stat("packets_good")) > 0


async def test_card_read_becomes_one_credential_event_with_the_card_number() -> None:
    async with running() as reader:
        reader.sim.present_card("1000001")
        event = await reader.wait_for(credential("card"), timeout_s=5)
        assert isinstance(event, CredentialRead)
        assert (event.value, event.bits) == ("1000001", 26)
        # The number never shows in a log line or a repr.
        assert "1000001" not in repr(event)


async def test_a_long_card_number_keeps_every_digit() -> None:
    async with running() as reader:
        reader.sim.present_card("98765432109876")
        event = await reader.wait_for(credential("card"), timeout_s=5)
        assert isinstance(event, CredentialRead)
        assert event.value == "98765432109876"


async def test_pin_typed_with_hash_is_one_event() -> None:
    async with running() as reader:
        reader.sim.key_pin("4321")
        event = await reader.wait_for(credential("pin"), timeout_s=5)
        assert isinstance(event, CredentialRead)
        assert event.value == "4321"


@pytest.mark.parametrize(
    ("indication", "led", "last"),
    [
        (Indication.LOCKDOWN, "red", "red"),
        (Indication.RESPONDER, "green", "green"),
        (Indication.FAULT, "amber", "amber"),
        (Indication.IDLE, "off", "off"),
    ],
)
async def test_steady_indications_set_the_readers_permanent_led(
    indication: Indication, led: str, last: str
) -> None:
    async with running() as reader:
        result = await reader.driver.execute(ReaderSignal(indication))
        assert result.done_ns >= result.on_wire_ns > 0
        await eventually(lambda: reader.sim.led == led)
        assert reader.sim.last_led == last


async def test_refusal_flashes_red_and_buzzes_over_the_steady_colour() -> None:
    async with running() as reader:
        await reader.driver.execute(ReaderSignal(Indication.LOCKDOWN))
        await reader.driver.execute(ReaderSignal(Indication.REFUSED))
        await eventually(lambda: reader.sim.counts["buzzer"] == 1)
        signals = list(reader.sim.write_log)
        assert [(s.kind, s.color, s.temporary) for s in signals] == [
            ("led", "red", False),
            ("led", "red", True),
            ("buzzer", "tone", False),
        ]
        assert signals[-1].times == 3
        # The temporary flash leaves the door's steady colour as it was.
        assert reader.sim.led == "red"


async def test_tamper_and_power_reports_become_reader_events() -> None:
    async with running() as reader:
        reader.sim.set_tamper(True)
        event = await reader.wait_for(
            lambda e: isinstance(e, ReaderReport) and e.report == "tamper", timeout_s=5
        )
        assert isinstance(event, ReaderReport) and event.active
        mark = reader.mark()
        reader.sim.set_power(True)
        event = await reader.wait_for(
            lambda e: isinstance(e, ReaderReport) and e.report == "power", timeout_s=5, since=mark
        )
        assert isinstance(event, ReaderReport) and event.active
        # Tamper did not change, so it is not reported again.
        assert not [
            e for e in reader.events[mark:] if isinstance(e, ReaderReport) and e.report == "tamper"
        ]


async def test_wrong_key_keeps_the_reader_offline_and_says_so() -> None:
    async with running(sim_key=OTHER_KEY, online=False) as reader:
        event = await reader.wait_for(health(Health.OFFLINE, "secure channel"), timeout_s=10)
        assert "scbk" in str(getattr(event, "detail", ""))
        with pytest.raises(DeviceOffline):
            await reader.driver.execute(ReaderSignal(Indication.LOCKDOWN))
        assert reader.sim.counts["led"] == 0


async def test_install_mode_pairs_a_new_reader_with_its_own_key() -> None:
    async with running(sim_key=None, sim_install=True, online=False, install_mode=True) as r:
        await r.wait_for(health(Health.DEGRADED, "install mode"), timeout_s=10)
        await eventually(lambda: r.sim.scbk == KEY, message="reader took the panel's key")
        sim = r.sim
    # Paired: the same reader now talks only with its own key, install mode off.
    await sim.start()
    config = settings(sim.url)
    again = Reader(lambda emit: OsdpReaderDriver(config, frozenset(), emit), sim)
    try:
        await again.start()
        await again.wait_for(health(Health.ONLINE, "secure channel"), timeout_s=10)
    finally:
        await again.stop()
        await sim.stop()


async def test_garbled_reader_packets_are_faults_and_it_goes_offline() -> None:
    async with running("tcp") as reader:
        mark = reader.mark()
        reader.sim.faults.corrupt = 1.0
        await reader.recorder.wait_count(is_fault, 1, timeout_s=5, since=mark)
        await reader.wait_for(health(Health.OFFLINE), timeout_s=10, since=mark)
        reader.sim.faults.corrupt = 0.0
        await reader.wait_for(health(Health.ONLINE), timeout_s=10, since=mark)


async def test_unreachable_line_is_offline_with_the_reason() -> None:
    config = settings("socket://127.0.0.1:1")
    reader = DriverHarness[OsdpReaderDriver, None](
        lambda emit: OsdpReaderDriver(config, frozenset(), emit), None
    )
    try:
        await reader.start()
        await reader.wait_for(health(Health.OFFLINE, "cannot open"), timeout_s=5)
    finally:
        await reader.stop()


def test_config_refuses_the_default_key_short_keys_and_unknown_urls() -> None:
    with pytest.raises(ValidationError, match="SCBK-D"):
        settings("/dev/ttyS0", scbk=DEFAULT_SCBK.hex())
    with pytest.raises(ValidationError, match="32 hex digits"):
        settings("/dev/ttyS0", scbk="abcd")
    with pytest.raises(ValidationError, match="hex digits"):
        settings("/dev/ttyS0", scbk="z" * 32)
    with pytest.raises(ValidationError, match="scheme 'http'"):
        settings("http://x:1")
    with pytest.raises(ValidationError, match="host and a port"):
        settings("socket://x")
    assert "0011" not in repr(settings("/dev/ttyS0"))


def test_scanner_counts_sound_packets_and_names_a_bad_crc() -> None:
    body = bytes([0x53, 0x80, 0x08, 0x00, 0x04, 0x40])
    crc = crc16(body)
    packet = body + bytes([crc & 0xFF, crc >> 8])
    scanner = FrameScanner()
    assert scanner.feed(b"\xff" + packet) == []
    assert scanner.good == 1
    broken = packet[:-1] + bytes([packet[-1] ^ 1])
    problems = scanner.feed(broken)
    assert problems and "CRC" in problems[0]
    assert scanner.feed(b"garbage") == ["7 stray bytes outside any packet"]
