"""Drive a running campus of simulators from outside: one JSON object a line over TCP.

Each line a client sends is one request, ``{"op": ..., ...}``; each gets one answer line,
``{"ok": true, "out": ...}`` or ``{"ok": false, "error": "..."}``, in order. Blank lines are
ignored. The ops (docs/simulators.md has examples):

- ``input`` (``device``, ``input``, ``value``): set a discrete input of a door controller,
  named by a campus alarm input id (``fire-A``) or a point in the device's notation
  (``input:64``). ``value`` is the contact as the device reports it. A door's position input
  opens or closes the door; a lock sense cannot be set (it follows the bolt: jam the door).
- ``jam`` / ``unjam`` (``door``): the bolt of a campus door sticks, or works again.
- ``coils`` (``device``): every lock output of a controller (True = locked).
- ``writes`` (``device``): every write the device received, each with ``ns``, the
  ``CLOCK_MONOTONIC`` time in nanoseconds (``time.monotonic_ns()`` on the same machine).
- ``vanish`` / ``reappear`` (``device``): power loss and return, on the same port.
- ``camera_event`` (``device``, ``topic``, optional ``active`` and ``source``): a camera
  event into every live pull-point subscription; ``topic`` is ``motion``, ``tamper``,
  ``digital_input`` or a ``tns1:`` topic.
- ``readers``: every OSDP card reader, ``[{"id", "door", "led", ...}]``, ``led`` the steady
  colour it was last told to show (``off``, ``red``, ``green``, ``amber``).
- ``card`` (``reader``, ``card``) / ``pin`` (``reader``, ``pin``): present a card number or key
  a PIN (then ``#``) at a reader.
- ``devices``: every simulated device with its kind, port and whether it listens.
- ``statistics`` (``device``): the device's counters.

Bounded: a line longer than ``max_line`` bytes is answered with an error and skipped to its
end; beyond ``max_clients`` connections a newcomer is told so and closed. Garbage (not
UTF-8, not JSON, not an object, wrong types, unknown fields) is an error answer, never a
crash, and the connection stays usable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gatewayd.kernel.site import AlarmInput, Door, Site
from gatewayd.simulators.base import Listener
from gatewayd.simulators.campus import CampusSim, Simulated
from gatewayd.simulators.doors import DoorControls

if TYPE_CHECKING:
    from gatewayd.simulators.osdp_reader import OsdpReaderSim

#: Longest request line accepted, in bytes (requests are small; this bounds a client's cost).
MAX_LINE = 8192
#: Connections served at once; a client beyond it is refused with an error line.
MAX_CLIENTS = 64
#: How many names an "unknown ..." error lists before it says how many more there are.
LISTED = 20
#: Every op and the fields it takes (required, optional).
OPS: Mapping[str, tuple[frozenset[str], frozenset[str]]] = {
    "input": (frozenset({"device", "input", "value"}), frozenset()),
    "jam": (frozenset({"door"}), frozenset()),
    "unjam": (frozenset({"door"}), frozenset()),
    "coils": (frozenset({"device"}), frozenset()),
    "writes": (frozenset({"device"}), frozenset()),
    "vanish": (frozenset({"device"}), frozenset()),
    "reappear": (frozenset({"device"}), frozenset()),
    "camera_event": (frozenset({"device", "topic"}), frozenset({"active", "source"})),
    "readers": (frozenset(), frozenset()),
    "card": (frozenset({"reader", "card"}), frozenset()),
    "pin": (frozenset({"reader", "pin"}), frozenset()),
    "devices": (frozenset(), frozenset()),
    "statistics": (frozenset({"device"}), frozenset()),
}


class ControlError(Exception):
    """A request the control interface refuses; the message is the answer's ``error``."""


class ControlServer(Listener):
    """The control interface of a :class:`CampusSim` (or of simulators run alone, by id), on
    ``host:port`` (0: a free port). Without a campus, what needs its site (alarm input ids,
    doors) is refused with a clear error; points, coils, writes and camera events work.
    """

    kind = "control"

    def __init__(
        self,
        campus: CampusSim[Any] | None = None,
        *,
        devices: Mapping[str, Simulated] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_line: int = MAX_LINE,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        super().__init__("control", host=host, port=port)
        if (campus is None) == (devices is None):
            raise ValueError("a control interface serves a campus or a set of devices")
        self.campus = campus
        self.devices: Mapping[str, Simulated] = campus.devices if campus else dict(devices or {})
        self.controllers: Mapping[str, DoorControls] = (
            campus.controllers
            if campus
            else {i: d for i, d in self.devices.items() if isinstance(d, DoorControls)}
        )
        self.max_line = max_line
        self.max_clients = max_clients
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._counts: dict[str, int] = dict.fromkeys(
            ("requests", "errors", "clients", "clients_refused", "overlong"), 0
        )

    def statistics(self) -> dict[str, int]:
        return {**self._counts, "clients_open": len(self._writers)}

    # --- lifecycle ------------------------------------------------------------------------

    async def _open(self) -> int:
        self._server = await asyncio.start_server(self._client, self.host, self._port)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if server is not None:
            await server.wait_closed()

    # --- connections ----------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._owned():
            try:
                if len(self._writers) >= self.max_clients:
                    self._counts["clients_refused"] += 1
                    await _send(writer, _error(f"too many clients (at most {self.max_clients})"))
                    return
                self._writers.add(writer)
                self._counts["clients"] += 1
                # A client that resets its connection has simply gone away.
                with contextlib.suppress(ConnectionError):
                    await self._serve(reader, writer)
            finally:
                self._writers.discard(writer)
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer each line in order; skip what is left of an overlong line."""
        buffer = bytearray()
        skipping = False
        while chunk := await reader.read(65536):
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                if skipping:
                    skipping = False
                elif len(line) > self.max_line:
                    await self._overlong(writer)
                else:
                    await self._answer(writer, line)
            if len(buffer) > self.max_line:
                if not skipping:
                    await self._overlong(writer)
                skipping = True
                buffer.clear()
        if buffer and not skipping:
            # The last request may come without its newline, just before the client closes.
            await self._answer(writer, bytes(buffer))

    async def _overlong(self, writer: asyncio.StreamWriter) -> None:
        self._counts["overlong"] += 1
        self._counts["errors"] += 1
        await _send(writer, _error(f"line longer than {self.max_line} bytes; skipped"))

    async def _answer(self, writer: asyncio.StreamWriter, line: bytes) -> None:
        if not line.strip():
            return
        answer = await self.answer_line(line)
        await _send(writer, answer)

    # --- requests -------------------------------------------------------------------------

    async def answer_line(self, line: bytes) -> dict[str, Any]:
        """The answer to one request line (also usable without a socket)."""
        self._counts["requests"] += 1
        try:
            out = await self.handle(parse_request(line))
        except ControlError as exc:
            self._counts["errors"] += 1
            return _error(str(exc))
        except Exception as exc:
            # A bug here must cost one answer, never the simulators a test is driving.
            self._counts["errors"] += 1
            self.log.exception("control.failed", line=line[:200].decode("utf-8", "replace"))
            return _error(f"internal error: {type(exc).__name__}: {exc}")
        return {"ok": True, "out": out}

    async def handle(self, request: Mapping[str, Any]) -> Any:
        """Carry out one parsed request and return its ``out``; ControlError if refused."""
        op = _check_fields(request)
        match op:
            case "input":
                return self._input(request)
            case "jam" | "unjam":
                return self._jam(request, jam=op == "jam")
            case "coils":
                return self._controller(request).outputs()
            case "writes":
                return self._device(request).writes()
            case "vanish" | "reappear":
                return await self._power(request, on=op == "reappear")
            case "camera_event":
                return self._camera_event(request)
            case "readers":
                return [sim.describe() for sim in self._readers().values()]
            case "card" | "pin":
                return self._present(request, op)
            case "devices":
                return {
                    ident: {"kind": sim.kind, "port": sim.port, "listening": sim.listening}
                    for ident, sim in self.devices.items()
                }
            case "statistics":
                return self._device(request).statistics()
        raise AssertionError(f"op {op!r} is listed in OPS but not handled")

    def _input(self, request: Mapping[str, Any]) -> dict[str, Any]:
        device = _text(request, "device")
        controller = self._controller(request)
        name = _text(request, "input")
        value = _flag(request, "value")
        alarm = self._alarm(name)
        if alarm is not None and alarm.point.device != device:
            raise ControlError(
                f"input {name!r} is wired to {alarm.point.device} ({alarm.point.point}),"
                f" not {device}"
            )
        point = alarm.point.point if alarm is not None else name
        try:
            point = controller.set_point(point, value)
        except ValueError as exc:
            raise ControlError(f"input {name!r} on {device}: {exc}") from exc
        out: dict[str, Any] = {"device": device, "input": point, "value": value}
        wired = alarm or self._alarm_at(device, point)
        if wired is not None:
            out |= {"alarm": wired.id, "active": value == wired.active_high}
        return out

    def _jam(self, request: Mapping[str, Any], *, jam: bool) -> dict[str, Any]:
        door = self._door(_text(request, "door"))
        lock = door.lock
        controller = self.controllers.get(lock.device)
        if controller is None:
            raise ControlError(f"door {door.id}'s lock is on {lock.device}, which is not simulated")
        try:
            index = controller.door_at(lock.point)
        except ValueError as exc:
            raise ControlError(f"door {door.id}: {exc}") from exc
        controller.jam(index) if jam else controller.unjam(index)
        return {"door": door.id, "device": lock.device, "lock": lock.point, "jammed": jam}

    async def _power(self, request: Mapping[str, Any], *, on: bool) -> dict[str, Any]:
        ident = _text(request, "device")
        sim = self._device(request)
        try:
            await (sim.reappear() if on else sim.vanish())
        except RuntimeError as exc:
            raise ControlError(f"{ident}: {exc}") from exc
        return {"device": ident, "listening": sim.listening, "port": sim.port}

    def _camera_event(self, request: Mapping[str, Any]) -> dict[str, Any]:
        ident = _text(request, "device")
        sim = self._device(request)
        if sim.kind != "onvif_camera":
            raise ControlError(f"{ident} ({sim.kind}) is not a camera")
        # Loaded already: the campus made this camera from it.
        from gatewayd.simulators.onvif_camera import NEUTRAL_TOPICS, OnvifCameraSim

        assert isinstance(sim, OnvifCameraSim)
        topic = _text(request, "topic")
        full = NEUTRAL_TOPICS.get(topic, topic)
        if not full.startswith("tns1:"):
            raise ControlError(
                f"topic {topic!r}: expected {', '.join(NEUTRAL_TOPICS)} or a 'tns1:...' topic"
            )
        active = _flag(request, "active") if "active" in request else True
        source = _text(request, "source") if "source" in request else "VideoSource_1"
        queued = sim.inject(full, active, source)
        return {"device": ident, "topic": full, "active": active, "subscriptions": queued}

    def _readers(self) -> dict[str, OsdpReaderSim]:
        from gatewayd.simulators.osdp_reader import OsdpReaderSim

        return {i: d for i, d in self.devices.items() if isinstance(d, OsdpReaderSim)}

    def _present(self, request: Mapping[str, Any], op: str) -> dict[str, Any]:
        ident = _text(request, "reader")
        readers = self._readers()
        sim = readers.get(ident)
        if sim is None:
            raise ControlError(f"unknown reader {ident!r}; readers are {_names(readers)}")
        value = _text(request, op)
        try:
            sim.present_card(value) if op == "card" else sim.key_pin(value)
        except (ValueError, RuntimeError) as exc:
            raise ControlError(f"reader {ident}: {exc}") from exc
        return {"reader": ident, "door": sim.door, "presented": op}

    # --- lookups --------------------------------------------------------------------------

    @property
    def _site(self) -> Site:
        if self.campus is None:
            raise ControlError("this simulator runs alone: doors and alarm input ids belong to"
                               " a campus (run `campus -c FILE --control ...`)")  # fmt: skip
        site: Site = self.campus.site
        return site

    def _device(self, request: Mapping[str, Any]) -> Simulated:
        ident = _text(request, "device")
        sim = self.devices.get(ident)
        if sim is None:
            raise ControlError(f"unknown device {ident!r}; devices are {_names(self.devices)}")
        return sim

    def _controller(self, request: Mapping[str, Any]) -> DoorControls:
        sim = self._device(request)
        if not isinstance(sim, DoorControls):
            raise ControlError(
                f"{sim.name} ({sim.kind}) is not a door controller; controllers are"
                f" {_names(self.controllers)}"
            )
        return sim

    def _door(self, ident: str) -> Door:
        for door in self._site.doors:
            if door.id == ident:
                return door
        raise ControlError(
            f"unknown door {ident!r}; doors are {_names([d.id for d in self._site.doors])}"
        )

    def _alarm(self, ident: str) -> AlarmInput | None:
        if self.campus is None:
            return None  # alone, an input is named by its point
        return next((i for i in self._site.inputs if i.id == ident), None)

    def _alarm_at(self, device: str, point: str) -> AlarmInput | None:
        if self.campus is None:
            return None
        return next(
            (i for i in self._site.inputs if i.point.device == device and i.point.point == point),
            None,
        )


def parse_request(line: bytes) -> dict[str, Any]:
    """One request line as a JSON object, or a ControlError saying what is wrong with it."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ControlError(f"not UTF-8 text (byte {exc.start})") from exc
    try:
        request = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ControlError(f"bad JSON: {exc.msg} at column {exc.colno}") from exc
    except RecursionError as exc:
        raise ControlError("bad JSON: nested too deeply") from exc
    if not isinstance(request, dict):
        raise ControlError(f"expected a JSON object, got {_json_type(request)}")
    return request


def _check_fields(request: Mapping[str, Any]) -> str:
    """The request's op, once its fields are the ones that op takes."""
    if "op" not in request:
        raise ControlError(f"missing field 'op'; ops are {', '.join(OPS)}")
    op = request["op"]
    if not isinstance(op, str):
        raise ControlError(f"field 'op' must be a string, got {_json_type(op)}")
    if op not in OPS:
        raise ControlError(f"unknown op {op!r}; ops are {', '.join(OPS)}")
    required, optional = OPS[op]
    given = set(request) - {"op"}
    if missing := sorted(required - given):
        raise ControlError(f"op {op!r} needs {', '.join(repr(f) for f in missing)}")
    if extra := sorted(given - required - optional):
        takes = ", ".join(repr(f) for f in sorted(required | optional)) or "no other fields"
        raise ControlError(f"op {op!r} takes {takes}; unknown: {', '.join(map(repr, extra))}")
    return op


def _text(request: Mapping[str, Any], field: str) -> str:
    value = request[field]
    if not isinstance(value, str) or not value:
        raise ControlError(f"field {field!r} must be a non-empty string, got {_json(value)}")
    return value


def _flag(request: Mapping[str, Any], field: str) -> bool:
    value = request[field]
    # bool, not int: JSON 1 is not true here.
    if not isinstance(value, bool):
        raise ControlError(f"field {field!r} must be true or false, got {_json(value)}")
    return value


def _json(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _names(names: Mapping[str, object] | list[str]) -> str:
    listed = list(names)
    shown = ", ".join(listed[:LISTED])
    more = len(listed) - LISTED
    return f"{shown} (and {more} more)" if more > 0 else shown or "none"


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


async def _send(writer: asyncio.StreamWriter, answer: Mapping[str, Any]) -> None:
    writer.write(json.dumps(answer, separators=(",", ":")).encode() + b"\n")
    await writer.drain()


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a pair, for argparse's ``type=``.

    Port 0 means any free port.
    """
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with PORT 0..65535, got {text!r}")
    return host, int(port)
