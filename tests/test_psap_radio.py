"""The PSAP radio driver against the radio simulator, over a real pty and real TCP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from gatewayd.drivers.psap_radio import PsapRadioConfig, PsapRadioDriver, frames
from gatewayd.drivers.psap_radio.frames import FrameType, Reason
from gatewayd.drivers.psap_radio.session import RadioRefused
from gatewayd.kernel.errors import BadPoint, DeviceOffline, DeviceTimeout, UnsupportedCommand
from gatewayd.kernel.events import (
    DeviceFault,
    Health,
    PointChanged,
    SendAlert,
    TakeSnapshot,
)
from gatewayd.simulators.psap_radio import Mode, PsapRadioSim
from tests.support.harness import DriverHarness, health
from tests.support.waiting import eventually

SITE = "Lincoln High School"
ALERT = SendAlert("LOCKDOWN", "LOCKDOWN, Building A, Room 114, 09:42")
DRILL = SendAlert("LOCKDOWN", "LOCKDOWN, Building A, Room 114, 09:42", drill=True)


Radio = DriverHarness[PsapRadioDriver, PsapRadioSim]


def settings(url: str, **overrides: Any) -> PsapRadioConfig:
    values: dict[str, Any] = {
        "id": "radio-t",
        "driver": "psap_radio",
        "url": url,
        "site_label": SITE,
        "ack_timeout_ms": 100,
        "max_attempts": 3,
        "nak_backoff_ms": 10,
        "heartbeat_s": 5,
        "reconnect_min_ms": 20,
        "reconnect_max_ms": 200,
    }
    return PsapRadioConfig.model_validate({**values, **overrides})


@contextlib.asynccontextmanager
async def running(
    mode: Mode = "tcp", *, online: bool = True, **overrides: Any
) -> AsyncIterator[Radio]:
    """A started radio and a driver pointed at it; both stopped afterwards."""
    sim = PsapRadioSim(mode)
    await sim.start()
    config = settings(sim.url, **overrides)
    radio = Radio(lambda emit: PsapRadioDriver(config, frozenset(), emit), sim)
    try:
        await radio.start()
        if online:
            await radio.wait_for(health(Health.ONLINE))
        yield radio
    finally:
        await radio.stop()
        await sim.stop()


def outcomes(sim: PsapRadioSim, frame_type: FrameType) -> list[tuple[int, str]]:
    return [
        (h.frame.seq, h.outcome)
        for h in sim.heard
        if h.frame is not None and h.frame.type is frame_type
    ]


# --- alerts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pty", "tcp"])
async def test_alert_is_sent_as_emergency_then_text_and_acknowledged(mode: Mode) -> None:
    async with running(mode) as radio:
        result = await radio.driver.execute(ALERT)
        assert radio.sim.url.startswith("/dev/" if mode == "pty" else "socket://")
        assert [f.payload for f in radio.sim.acted_on(FrameType.EMG)] == [f"LOCKDOWN,{SITE}"]
        assert [f.payload for f in radio.sim.acted_on(FrameType.TXT)] == [ALERT.text]
        emg, txt = radio.sim.acted_on(FrameType.EMG)[0], radio.sim.acted_on(FrameType.TXT)[0]
        assert result.values == ()
        assert 0 < result.on_wire_ns <= result.done_ns
        assert result.detail["seq"] == f"{emg.seq:03d}"
        assert result.detail["txt_seq"] == f"{txt.seq:03d}"
        assert (result.detail["attempts"], result.detail["drill"]) == ("1", "no")
        stats = radio.driver.statistics()
        assert stats["alerts"] == 1 and stats["retries"] == 0
        assert isinstance(stats["last_rtt_ms"], float) and stats["last_rtt_ms"] > 0


async def test_a_dropped_frame_is_sent_again_with_the_same_seq() -> None:
    async with running() as radio:
        radio.sim.faults.drop_next = 2
        result = await radio.driver.execute(ALERT)
        seq = int(result.detail["seq"])
        assert outcomes(radio.sim, FrameType.EMG) == [
            (seq, "dropped"),
            (seq, "dropped"),
            (seq, "ack"),
        ]
        assert result.detail["attempts"] == "3"
        assert radio.driver.statistics()["retries"] == 2


async def test_a_late_ack_leads_to_a_repeat_that_the_radio_does_not_act_on_twice() -> None:
    async with running() as radio:
        radio.sim.faults.delay_ms = 150
        result = await radio.driver.execute(ALERT)
        emg = outcomes(radio.sim, FrameType.EMG)
        assert emg[0] == (int(result.detail["seq"]), "ack")
        assert {outcome for _, outcome in emg[1:]} == {"repeat"}
        assert len(radio.sim.acted_on(FrameType.EMG)) == 1
        assert len(radio.sim.acted_on(FrameType.TXT)) == 1


async def test_a_nak_is_retried_after_the_backoff_and_counted() -> None:
    async with running() as radio:
        radio.sim.faults.nak_next = 1
        result = await radio.driver.execute(ALERT)
        assert result.detail["attempts"] == "2"
        assert radio.driver.statistics()["naks"] == 1


async def test_nak_on_every_attempt_is_a_refusal_with_its_reason() -> None:
    async with running() as radio:
        radio.sim.faults.nak = 1.0
        radio.sim.faults.nak_reason = Reason.INH
        refused = r"EMG \d+ not acknowledged after 3 attempts: NAK INH"
        with pytest.raises(RadioRefused, match=refused):
            await radio.driver.execute(ALERT)
        assert len(outcomes(radio.sim, FrameType.EMG)) == 3
        assert not radio.sim.frames(FrameType.TXT)
        assert radio.driver.statistics()["alerts_failed"] == 1


async def test_an_unanswered_alert_gives_up_after_max_attempts_with_device_timeout() -> None:
    async with running(max_attempts=4) as radio:
        radio.sim.faults.drop = 1.0
        with pytest.raises(DeviceTimeout, match="not acknowledged after 4 attempts"):
            await radio.driver.execute(ALERT)
        seqs = {seq for seq, _ in outcomes(radio.sim, FrameType.EMG)}
        assert len(outcomes(radio.sim, FrameType.EMG)) == 4 and len(seqs) == 1
        assert not radio.sim.frames(FrameType.TXT)


async def test_an_alert_during_an_outage_is_delivered_when_the_radio_returns() -> None:
    async with running(max_attempts=10) as radio:
        await radio.sim.vanish()
        await radio.wait_for(health(Health.OFFLINE))
        sending = asyncio.create_task(radio.driver.execute(ALERT))
        await eventually(lambda: int(radio.stat("retries")) >= 1)
        await radio.sim.reappear()
        result = await asyncio.wait_for(sending, 5)
        assert int(result.detail["attempts"]) > 1
        assert len(radio.sim.acted_on(FrameType.EMG)) == 1


# --- drills -----------------------------------------------------------------------------------


async def test_a_drill_puts_nothing_on_the_air_unless_test_traffic_is_allowed() -> None:
    async with running() as radio:
        result = await radio.driver.execute(DRILL)
        assert result.detail["drill"] == "suppressed"
        assert not radio.sim.frames(FrameType.EMG)
        assert not radio.sim.frames(FrameType.TXT)
        # The link was still proven: the result's SEQ is a heartbeat the radio acknowledged.
        hbt = [f.seq for f in radio.sim.acted_on(FrameType.HBT)]
        assert int(result.detail["seq"]) in hbt
        assert radio.driver.statistics()["drills_suppressed"] == 1


async def test_a_drill_with_test_traffic_allowed_is_marked_drill_and_never_a_real_emg() -> None:
    async with running(allow_test_traffic=True) as radio:
        result = await radio.driver.execute(DRILL)
        assert result.detail["drill"] == "marked"
        assert [f.payload for f in radio.sim.frames(FrameType.EMG)] == [f"DRILL LOCKDOWN,{SITE}"]
        assert [f.payload for f in radio.sim.frames(FrameType.TXT)] == [f"DRILL: {DRILL.text}"]
        assert radio.sim.real_emergencies() == []


async def test_a_real_alert_never_carries_a_drill_marking() -> None:
    async with running(allow_test_traffic=True) as radio:
        await radio.driver.execute(SendAlert("drill lockdown", "DRILL: LOCKDOWN, Room 1"))
        emg, txt = radio.sim.frames(FrameType.EMG)[0], radio.sim.frames(FrameType.TXT)[0]
        assert (emg.is_drill, txt.is_drill) == (False, False)
        assert (emg.fields[0], txt.payload) == ("LOCKDOWN", "LOCKDOWN, Room 1")


def test_alert_text_is_made_wire_safe_and_cut_to_the_field() -> None:
    driver = PsapRadioDriver(settings("socket://127.0.0.1:1"), frozenset(), lambda e: None)
    status, text = driver.wire_content(
        SendAlert("shelter-in-place!", "Salle 12, bâtiment B $" + "x" * 80, drill=True)
    )
    assert status == "DRILL SHELTER IN PLACE"
    assert text.startswith("DRILL: Salle 12, batiment B ?x") and len(text) == 68


# --- supervision and faults -------------------------------------------------------------------


async def test_missed_heartbeats_degrade_then_take_the_radio_offline_and_it_recovers() -> None:
    async with running(heartbeat_s=0.1, ack_timeout_ms=50, offline_after_misses=3) as radio:
        mark = radio.mark()
        radio.sim.faults.hang = True
        await radio.wait_for(health(Health.DEGRADED), since=mark)
        await radio.wait_for(health(Health.OFFLINE), since=mark)
        misses = radio.driver.statistics()["heartbeat_misses"]
        assert isinstance(misses, int) and misses >= 3
        mark = radio.mark()
        radio.sim.faults.hang = False
        await radio.wait_for(health(Health.ONLINE), since=mark)


@pytest.mark.parametrize("mode", ["pty", "tcp"])
async def test_garbage_lines_are_device_faults_and_change_nothing(mode: Mode) -> None:
    async with running(mode) as radio:
        mark = radio.mark()
        radio.sim.inject(b"\x00\xff\xfe junk\r\n$001,EMG,FIRE,Elsewhere*00\r\n" + b"A" * 300)
        radio.sim.inject(b"\r\n" + ALERT_ACK_FOR_NOTHING)
        fault = await radio.wait_for(lambda e: isinstance(e, DeviceFault), since=mark)
        assert isinstance(fault, DeviceFault) and fault.error == "bad_device_reply"
        assert "not printable ASCII" in fault.detail
        await eventually(lambda: radio.driver.statistics()["stray"] == 1)
        assert radio.driver.statistics()["garbage"] == 3
        # Rate-limited: one fault for the burst, and health is untouched.
        new = radio.events[mark:]
        assert [type(e) for e in new] == [DeviceFault]
        assert not any(isinstance(e, PointChanged) for e in new)
        assert radio.driver.health is Health.ONLINE
        # The line resynchronised: the next alert goes through.
        await radio.driver.execute(ALERT)


#: A well-formed ACK of a SEQ the gateway never sent: stray, not garbage.
ALERT_ACK_FOR_NOTHING = frames.ack(900, 777).encode()


async def test_a_port_that_cannot_be_opened_is_offline_and_start_up_does_not_wait() -> None:
    async with running(online=False) as radio:
        await radio.sim.vanish()
    config = settings("/dev/no-such-radio", max_attempts=2)
    nowhere = DriverHarness(lambda emit: PsapRadioDriver(config, frozenset(), emit), None)
    try:
        await nowhere.start(timeout_s=2)
        assert nowhere.driver.health is Health.OFFLINE
        with pytest.raises(DeviceOffline, match="not acknowledged after 2 attempts"):
            await nowhere.driver.execute(ALERT)
    finally:
        await nowhere.stop()


# --- contract edges ---------------------------------------------------------------------------


async def test_only_alerts_are_supported_and_the_radio_has_no_points() -> None:
    driver = PsapRadioDriver(settings("socket://127.0.0.1:1"), frozenset(), lambda e: None)
    with pytest.raises(UnsupportedCommand, match="PsapRadioDriver cannot TakeSnapshot"):
        await driver.execute(TakeSnapshot())
    with pytest.raises(BadPoint, match="the radio has no points"):
        PsapRadioDriver.parse_point("coil:1")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"url": "http://radio:80"}, "URL scheme 'http' is not one of"),
        ({"url": "socket://radio"}, "needs a host and a port"),
        ({"site_label": "Lincoln, High"}, "site_label has the reserved character ','"),
        ({"site_label": "École"}, "only printable ASCII is allowed"),
        ({"ack_timeout_ms": 2000, "heartbeat_s": 1}, "must be shorter than heartbeat_s"),
    ],
)
def test_bad_settings_fail_at_load_with_the_reason(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**{"url": "/dev/ttyUSB0", **overrides})


async def test_an_over_long_line_gets_the_documented_len_nak_and_the_radio_resynchronises() -> None:
    sim = PsapRadioSim("tcp")
    await sim.start()
    try:
        host, port = sim.url.removeprefix("socket://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        # 200 bytes and no LF yet: more than a line (82 bytes), so one bad line...
        writer.write(b"$042,TXT," + b"A" * 200)
        await writer.drain()
        nak = frames.parse((await asyncio.wait_for(reader.readline(), 3)).rstrip(b"\r\n"))
        assert nak.type is FrameType.NAK and nak.payload == "042,LEN"
        # ...whose rest up to the LF is discarded; the next frame is answered as usual.
        writer.write(b"B" * 50 + b"\r\n" + frames.hbt(7, 5000).encode())
        await writer.drain()
        ack = frames.parse((await asyncio.wait_for(reader.readline(), 3)).rstrip(b"\r\n"))
        assert ack.type is FrameType.ACK and ack.payload.startswith("007")
        writer.close()
    finally:
        await sim.stop()
