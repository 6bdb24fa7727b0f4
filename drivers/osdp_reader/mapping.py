"""What each indication puts on the wire, and what a reader's events mean. No I/O.

An OSDP reader LED has a permanent setting and a temporary one that overlays it for a time
(then the reader returns to the permanent setting by itself). A door's state is permanent;
the answer to a card is temporary, with the buzzer.
"""

from __future__ import annotations

from typing import Any

import osdp

from gatewayd.kernel.events import Indication

Color = osdp.CommandLEDColor
#: LED control codes (OSDP osdp_LED): set the permanent state; set the temporary state.
LED_PERMANENT = 1
LED_TEMPORARY = 2
#: Buzzer control code: the default tone.
BUZZ_TONE = 2
#: Times are in units of 100 ms.
BRIEF_100MS = 20

#: Colour names as readers and the simulator report them.
COLOR_NAMES: dict[int, str] = {
    Color.Black: "off",
    Color.Red: "red",
    Color.Green: "green",
    Color.Amber: "amber",
    Color.Blue: "blue",
}

#: Steady colour for each permanent indication.
STEADY: dict[Indication, int] = {
    Indication.IDLE: Color.Black,
    Indication.LOCKDOWN: Color.Red,
    Indication.RESPONDER: Color.Green,
    Indication.FAULT: Color.Amber,
}
#: (colour, on, off in 100 ms, buzzer beeps) of each brief indication.
BRIEF: dict[Indication, tuple[int, int, int, int]] = {
    Indication.GRANTED: (Color.Green, 20, 0, 1),
    Indication.REFUSED: (Color.Red, 2, 2, 3),
    Indication.PIN_WANTED: (Color.Amber, 3, 3, 0),
}


def signal_commands(indication: Indication) -> list[dict[str, Any]]:
    """The libosdp command dicts that show ``indication`` on reader 0, LED 0."""
    led: dict[str, Any] = {"command": osdp.Command.LED, "reader": 0, "led_number": 0,
                           "off_color": Color.Black}  # fmt: skip
    if indication in STEADY:
        return [{**led, "control_code": LED_PERMANENT, "temporary": False, "on_count": 10,
                 "off_count": 0, "on_color": STEADY[indication]}]  # fmt: skip
    color, on, off, beeps = BRIEF[indication]
    flash = {**led, "control_code": LED_TEMPORARY, "temporary": True, "on_count": on,
             "off_count": off, "on_color": color, "timer_count": BRIEF_100MS}  # fmt: skip
    commands: list[dict[str, Any]] = [flash]
    if beeps:
        commands.append({"command": osdp.Command.Buzzer, "reader": 0, "control_code": BUZZ_TONE,
                         "on_count": 2, "off_count": 1, "rep_count": beeps})  # fmt: skip
    return commands


def card_number(event: dict[str, Any]) -> tuple[str, int] | None:
    """(decimal card number, bits) of a libosdp card-read event, or None if unreadable."""
    data = event.get("data")
    if not isinstance(data, bytes) or not data:
        return None
    if event.get("format") == osdp.CardFormat.ASCII:
        text = data.decode("ascii", "replace").strip()
        return (text, 0) if text.isdigit() else None
    bits = event.get("length")
    if not isinstance(bits, int) or not 0 < bits <= 8 * len(data):
        return None
    # Raw bits arrive left-aligned in whole bytes.
    value = int.from_bytes(data, "big") >> (8 * len(data) - bits)
    return str(value), bits


#: Keypad codes: OSDP sends ASCII; '#' ends an entry (0x0D), '*' clears it (0x7F).
KEY_ENTER = frozenset({0x0D, ord("#")})
KEY_CLEAR = frozenset({0x7F, ord("*")})


def key_digits(data: bytes) -> list[str | None]:
    """The keys of a keypad event: a digit, ``"#"`` (enter), ``"*"`` (clear), None (other)."""
    keys: list[str | None] = []
    for code in data:
        if ord("0") <= code <= ord("9"):
            keys.append(chr(code))
        elif code in KEY_ENTER:
            keys.append("#")
        elif code in KEY_CLEAR:
            keys.append("*")
        else:
            keys.append(None)
    return keys


def local_status(report: bytes) -> dict[str, bool]:
    """A local status report: byte 0 the tamper switch, byte 1 the power supply (1 = fault)."""
    out: dict[str, bool] = {}
    if len(report) >= 1:
        out["tamper"] = bool(report[0])
    if len(report) >= 2:
        out["power"] = bool(report[1])
    return out
