"""SRP states, fire alarms and panic alarms as OASIS CAP 1.2 alerts, for signage, PA and
notification systems that speak CAP.

Each alert goes out on ``<prefix>/<site>/cap`` (QoS 1, through the same durable outbox as the
events) and is kept for the console's Atom feed. An incident is one chain of messages per scope
(or alarm input): the first is ``Alert``, every later change ``Update``, the end ``Cancel``; each
later message references every message before it, and all carry the first one's identifier in
``incidents``. A drill is always ``status`` ``Exercise``, whatever else it says; a drill that
a real incident pre-empts is cancelled as an exercise too.

The XML is built with the standard library (``xml.etree``); tests check it against the OASIS
schema and an independent CAP parser (docs/mqtt-api.md, "CAP alerts").
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from xml.etree import ElementTree as ET

import structlog
from pydantic import Field

from gatewayd.kernel.campus import Campus
from gatewayd.kernel.errors import GatewayError
from gatewayd.kernel.scope import Scope
from gatewayd.kernel.validation import Model

log = structlog.get_logger(__name__)

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
#: Alerts kept for the console's Atom feed.
FEED_SIZE = 100
#: Events waiting to become CAP messages; beyond this the oldest is dropped (and logged).
PENDING_MAX = 1000
#: While doors are being written, CAP waits this long first: the doors go before the notice.
YIELD_TO_DOORS_S = 0.05

# A prefix of our own, never the global default: another module's default namespace (the
# floor plans' SVG) would otherwise take it over. Alerts are written with CAP as the default.
ET.register_namespace("cap", CAP_NS)


class CapConfig(Model):
    """``[cap]`` of the campus file: who the alerts say they are from and who may see them."""

    #: Off: no CAP messages at all.
    enabled: bool = True
    #: CAP ``sender``: unique to this gateway; empty means ``gatewayd@<site id>``.
    sender: str = Field(default="", pattern=r"^[^\s,<&]*$")
    #: ``Public`` (anyone: signage, PA, a community notification system) or ``Restricted``.
    scope: Literal["Public", "Restricted"] = "Restricted"
    #: Who a ``Restricted`` alert is for (CAP ``restriction``).
    restriction: str = "school staff, district operations and first responders"
    language: str = "en-US"


@dataclass(frozen=True, slots=True)
class Meaning:
    """What one kind of change means in CAP's words."""

    event: str
    response: str
    urgency: str
    severity: str
    certainty: str
    instruction: str
    categories: tuple[str, ...] = ("Safety",)


#: SRP states and alarms; the wording of instructions follows the "I Love U Guys" SRP.
MEANINGS: dict[str, Meaning] = {
    "lockdown": Meaning("Lockdown", "Shelter", "Immediate", "Extreme", "Observed",
                        "Locks, lights, out of sight. Stay away from the buildings named."),
    "secure": Meaning("Secure", "Shelter", "Immediate", "Severe", "Observed",
                      "Get inside. Lock outside doors. Business as usual inside."),
    "hold": Meaning("Hold", "Shelter", "Immediate", "Moderate", "Observed",
                    "In your room or area. Clear the halls."),
    "evacuate": Meaning("Evacuate", "Evacuate", "Immediate", "Extreme", "Observed",
                        "Leave the buildings named by the nearest exit; follow staff."),
    "shelter": Meaning("Shelter", "Shelter", "Immediate", "Severe", "Observed",
                       "Shelter for the hazard named; follow staff."),
    "fire_alarm": Meaning("Fire alarm", "Evacuate", "Immediate", "Extreme", "Likely",
                          "Leave the building by the nearest exit; egress doors are released.",
                          ("Safety", "Fire")),
    "panic": Meaning("Panic alarm", "Monitor", "Immediate", "Severe", "Possible",
                     "A panic alarm was raised; staff follow the site's procedure."),
}  # fmt: skip


class CapOutlet(Protocol):
    """The slice of the uplink CAP messages go out through."""

    def publish_message(self, topic_suffix: str, payload: bytes, *, life_safety: bool) -> None: ...


@dataclass(slots=True)
class _Chain:
    """The messages sent so far about one incident on one scope."""

    incident: str
    exercise: bool
    #: What the first message said (the ``Cancel`` names the same event).
    meaning: Meaning
    #: ``sender,identifier,sent`` of every message of the chain, oldest first.
    refs: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CapMessage:
    """One CAP alert as sent."""

    identifier: str
    sent: str
    msg_type: str
    status: str
    event: str
    area: str
    xml: bytes


def cap_time(iso_or_epoch: str | float | None) -> str:
    """CAP's ``dateTime``: seconds, an explicit offset (``+00:00``), never ``Z``."""
    if isinstance(iso_or_epoch, str):
        moment = datetime.fromisoformat(iso_or_epoch.replace("Z", "+00:00"))
    else:
        moment = datetime.fromtimestamp(time.time() if iso_or_epoch is None else iso_or_epoch, UTC)
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


class CapAlerts:
    """Turns the gateway's state and alarm events into CAP messages (a Publisher listener)."""

    def __init__(
        self,
        campus: Campus,
        config: CapConfig,
        outlet: CapOutlet,
        *,
        actuating: Callable[[], bool] = lambda: False,
    ) -> None:
        self._campus = campus
        self.config = config
        self._outlet = outlet
        self._actuating = actuating
        self._pending: deque[Mapping[str, Any]] = deque()
        self._wake = asyncio.Event()
        self.dropped = 0
        self.sender = config.sender or f"gatewayd@{campus.site}"
        #: Open chains by key (``scope/building/A``, ``input/fire-A``).
        self._chains: dict[str, _Chain] = {}
        #: The latest messages, oldest first (the Atom feed).
        self.messages: deque[CapMessage] = deque(maxlen=FEED_SIZE)
        self.sent = 0

    def event(self, event: Mapping[str, Any]) -> None:
        """A published event (Publisher listener): kept for :meth:`run`, never worked on here.

        The listener runs between a decision and its door writes; building XML there would put
        a notice in front of the doors.
        """
        if not self.config.enabled or event.get("kind") not in ("state", "alarm"):
            return
        if len(self._pending) >= PENDING_MAX:
            self._pending.popleft()
            self.dropped += 1
            log.error("cap.dropped", dropped=self.dropped)
        self._pending.append(event)
        self._wake.set()

    async def run(self) -> None:
        """Turn pending events into CAP messages, after the doors of the moment are written."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)
            if self._actuating():
                await asyncio.sleep(YIELD_TO_DOORS_S)
            self.drain()

    def drain(self) -> None:
        """Send what is pending now (also called directly by tests and at shutdown)."""
        while self._pending:
            event = self._pending.popleft()
            try:
                self._event(event)
            except (GatewayError, KeyError, ValueError) as exc:
                # A CAP message is a report: a bad one is logged, never raised into the loop.
                log.error("cap.not_sent", kind=event.get("kind"), error=str(exc))

    def _event(self, event: Mapping[str, Any]) -> None:
        data = event.get("data") or {}
        drill = bool(event.get("drill"))
        if event.get("kind") == "state":
            self._state(event, data, drill)
        elif event.get("kind") == "alarm":
            self._alarm(event, data, drill)

    def _state(self, event: Mapping[str, Any], data: Mapping[str, Any], drill: bool) -> None:
        if "scope" not in data or "would_set" in data:
            return
        scope = Scope.parse(str(data["scope"]))
        if scope.kind == "door":
            # One door is an unlock or a room's release, not a notice to the community.
            return
        key = f"scope/{scope}"
        state = str(data.get("state", ""))
        ended = data.get("ended") or ("released" if state == "normal" else None)
        if ended:
            self._cancel(key, event, scope, why=str(data.get("by") or ended), drill=drill)
            return
        if state not in MEANINGS or data.get("dry_run"):
            return
        hazard = data.get("hazard")
        detail = f" ({hazard})" if hazard else ""
        self._send(key, event, scope, MEANINGS[state], drill=drill,
                   headline=f"{MEANINGS[state].event}{detail}")  # fmt: skip

    def _alarm(self, event: Mapping[str, Any], data: Mapping[str, Any], drill: bool) -> None:
        kind = str(data.get("type", ""))
        if kind not in ("fire_alarm", "panic"):
            return
        location = event.get("location") or {}
        building = location.get("building")
        scope = Scope("building", building) if building else Scope.parse(
            str(data.get("scope") or "campus"))  # fmt: skip
        key = f"input/{data['input']}" if "input" in data else f"panic/{event.get('id')}"
        if data.get("active") is False:
            self._cancel(key, event, scope, why="alarm input reset", drill=drill)
            return
        room = location.get("room")
        where = f" near room {room}" if room else ""
        self._send(key, event, scope, MEANINGS[kind], drill=drill,
                   headline=f"{MEANINGS[kind].event}{where}")  # fmt: skip
        if "input" not in data:
            # A panic-app message has no reset: its chain is the one alert.
            self._chains.pop(key, None)

    # --- messages ------------------------------------------------------------------------------

    def _send(self, key: str, event: Mapping[str, Any], scope: Scope, meaning: Meaning, *,
              drill: bool, headline: str) -> None:  # fmt: skip
        chain = self._chains.get(key)
        if chain is not None and chain.exercise and not drill:
            # A real incident where a drill was: the real one starts its own chain.
            chain = None
        msg_type = "Alert" if chain is None else "Update"
        identifier = self._identifier(event)
        if chain is None:
            chain = _Chain(incident=identifier, exercise=drill, meaning=meaning)
            self._chains[key] = chain
        self._emit(chain, identifier, event, scope, meaning=meaning, msg_type=msg_type,
                   headline=headline)  # fmt: skip

    def _cancel(self, key: str, event: Mapping[str, Any], scope: Scope, *, why: str,
                drill: bool) -> None:  # fmt: skip
        chain = self._chains.pop(key, None)
        if chain is None:
            return
        self._emit(chain, self._identifier(event), event, scope, meaning=_ended(chain.meaning),
                   msg_type="Cancel", headline=f"All clear: {why}")  # fmt: skip

    def _emit(self, chain: _Chain, identifier: str, event: Mapping[str, Any], scope: Scope, *,
              meaning: Meaning, msg_type: str, headline: str) -> None:  # fmt: skip
        sent = cap_time(event.get("ts"))
        status = "Exercise" if chain.exercise else "Actual"
        area = self.areas(scope)
        xml = self.build(identifier=identifier, sent=sent, status=status, msg_type=msg_type,
                         references=list(chain.refs), incident=chain.incident,
                         meaning=meaning, headline=headline, areas=area,
                         expires=(event.get("data") or {}).get("until"))  # fmt: skip
        chain.refs.append(f"{self.sender},{identifier},{sent}")
        message = CapMessage(identifier, sent, msg_type, status, meaning.event, "; ".join(area),
                             xml)  # fmt: skip
        self.messages.append(message)
        self.sent += 1
        log.info("cap.sent", identifier=identifier, msg_type=msg_type, status=status,
                 cap_event=meaning.event, area=message.area)  # fmt: skip
        try:
            self._outlet.publish_message("cap", xml, life_safety=True)
        except GatewayError as exc:
            log.critical("cap.not_queued", identifier=identifier, error=str(exc))

    def _identifier(self, event: Mapping[str, Any]) -> str:
        return f"{self._campus.site}-{event.get('id') or int(time.time() * 1000)}"

    def areas(self, scope: Scope) -> list[str]:
        """``areaDesc`` per building the scope covers: "Building A (Main), Lincoln High"."""
        site = self._campus.model.site.name
        if scope.kind == "campus":
            buildings = list(self._campus.buildings)
        elif scope.kind == "zone":
            buildings = [self._campus.zones[scope.ident].building]
        else:
            buildings = [scope.ident]
        out = []
        for building_id in buildings:
            building = self._campus.buildings[building_id]
            text = f"Building {building.id} ({building.name}), {site}"
            if scope.kind == "zone":
                zone = self._campus.zones[scope.ident]
                text = f"{zone.name or zone.id} in {text}"
            out.append(text)
        return out

    def build(self, *, identifier: str, sent: str, status: str, msg_type: str,
              references: list[str], incident: str, meaning: Meaning, headline: str,
              areas: list[str], expires: float | None = None) -> bytes:  # fmt: skip
        """One ``<alert>`` document, elements in the order the CAP 1.2 schema requires."""
        alert = ET.Element(f"{{{CAP_NS}}}alert")

        def add(parent: ET.Element, name: str, text: str) -> ET.Element:
            child = ET.SubElement(parent, f"{{{CAP_NS}}}{name}")
            child.text = text
            return child

        add(alert, "identifier", identifier)
        add(alert, "sender", self.sender)
        add(alert, "sent", sent)
        add(alert, "status", status)
        add(alert, "msgType", msg_type)
        add(alert, "source", f"gatewayd {self._campus.site}")
        add(alert, "scope", self.config.scope)
        if self.config.scope == "Restricted":
            add(alert, "restriction", self.config.restriction)
        if status == "Exercise":
            add(alert, "note", "DRILL - this is an exercise, not a real incident")
        if references:
            add(alert, "references", " ".join(references))
        add(alert, "incidents", incident)
        info = ET.SubElement(alert, f"{{{CAP_NS}}}info")
        add(info, "language", self.config.language)
        for category in meaning.categories:
            add(info, "category", category)
        add(info, "event", meaning.event)
        add(info, "responseType", meaning.response)
        add(info, "urgency", meaning.urgency)
        add(info, "severity", meaning.severity)
        add(info, "certainty", meaning.certainty)
        if expires:
            add(info, "expires", cap_time(float(expires)))
        add(info, "senderName", self._campus.model.site.name)
        add(info, "headline", ("DRILL: " if status == "Exercise" else "") + headline)
        add(info, "description", f"{headline} at {'; '.join(areas)}.")
        add(info, "instruction", meaning.instruction)
        for text in areas:
            area = ET.SubElement(info, f"{{{CAP_NS}}}area")
            add(area, "areaDesc", text)
        return bytes(
            ET.tostring(alert, encoding="utf-8", xml_declaration=True, default_namespace=CAP_NS)
        )

    @property
    def public(self) -> bool:
        """Whether anyone may read the alerts (the console's feed needs no sign-in then)."""
        return self.config.scope == "Public"

    def statistics(self) -> dict[str, int]:
        return {"sent": self.sent, "open": len(self._chains), "dropped": self.dropped}


def _ended(meaning: Meaning) -> Meaning:
    return Meaning(
        meaning.event,
        "AllClear",
        "Past",
        "Minor",
        "Observed",
        "The incident has ended; follow staff instructions.",
        meaning.categories,
    )
