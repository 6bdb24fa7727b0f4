"""Incidents and drills, read back from the durable record (the hash-chained audit log).

An incident opens when an SRP state, a drill or a fire alarm comes into force where none was,
and closes when the last of them ends (``change`` of the records, as the journal's index reads
them). Everything recorded while it is open belongs to it: the commands that triggered and
released it (who), the decisions (state records), what each actuation did (``outcome``: every
door commanded, when each confirmed, which failed and why), the rules' radio alerts and
snapshots (``action``), responder unlocks (``override``), budget breaches, refusals and
restarts. Outcomes and actions of its commands that are written after it closed still count.

An incident is a drill when every source it put was a drill; time to secure is measured by the
gateway from the command's arrival to each door's confirmed read-back (monotonic clock).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gatewayd.kernel.campus import Campus
from gatewayd.security.audit import read_records

#: Source keys that make an incident (a room's release or an override does not).
INCIDENT_PREFIXES = ("srp:", "drill:", "fire:")
#: Actuations that end or undo a state: not the one whose time to secure is measured.
NOT_SECURING = frozenset({"release", "expiry", "unlock", "lock"})
#: After an incident closes, its late outcome and action records are still looked for this long.
LATE_S = 120.0


@dataclass(frozen=True, slots=True)
class Step:
    """One line of the timeline."""

    seq: int
    ts: str
    what: str
    actor: str
    text: str


@dataclass(frozen=True, slots=True)
class SecureTime:
    """Time to secure of one building or zone in one actuation."""

    scope: str
    doors: int
    confirmed: int
    #: The last of its doors confirmed this long after the trigger; None if any failed.
    ms: float | None
    failed: dict[str, str]


@dataclass(slots=True)
class Incident:
    id: str
    started: str
    drill: bool
    ended: str | None = None
    #: (state, scope) put during the incident, in order.
    states: list[tuple[str, str]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    commands: set[str] = field(default_factory=set)
    #: Time to secure per building and zone (the first securing actuation that covered it).
    secure: dict[str, SecureTime] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return "DRILL" if self.drill else "REAL"

    @property
    def title(self) -> str:
        states = ", ".join(f"{s} {scope}" for s, scope in self.states[:3]) or "incident"
        return f"{self.tag}: {states}"

    @property
    def securing(self) -> list[dict[str, Any]]:
        """The actuations that carried the states out (not releases, unlocks, expiries)."""
        return [o for o in self.outcomes if _securing(o)]

    @property
    def commanded(self) -> int:
        """Doors commanded by the actuations that carried the states out."""
        return sum(int(o["commanded"]) for o in self.securing)

    @property
    def confirmed(self) -> int:
        return sum(int(o["confirmed"]) for o in self.securing)

    @property
    def failed(self) -> dict[str, str]:
        """Every door that failed in any actuation of the incident, and why (the last reason)."""
        out: dict[str, str] = {}
        for outcome in self.outcomes:
            out.update(outcome.get("failed") or {})
        return out

    def worst_secure_ms(self) -> float | None:
        """The slowest building's time to secure (None: none measured, or a door failed)."""
        times = [t.ms for k, t in self.secure.items() if k.startswith("building/")]
        if not times or any(t is None for t in times):
            return None
        return max(t for t in times if t is not None)


def load_incidents(audit_path: Path, campus: Campus) -> list[Incident]:
    """Every incident and drill in the audit log, oldest first."""
    return incidents_of(read_records(audit_path), campus)


@dataclass(slots=True)
class _Track:
    """Real incidents and drills are followed apart: a drill in one building while another
    is locked down for real is a drill of its own, and never tags the real one."""

    drill: bool
    active: set[str] = field(default_factory=set)
    current: Incident | None = None
    #: The latest closed incident and when it closed (for late outcomes and actions).
    closed: tuple[Incident, float] | None = None

    def owns(self, key: str) -> bool:
        return key.startswith("drill:") == self.drill

    def open_or_late(self, record: Mapping[str, Any]) -> Incident | None:
        if self.current is not None:
            return self.current
        if self.closed is not None and _late_for(self.closed, record):
            return self.closed[0]
        return None


def incidents_of(records: Iterable[Mapping[str, Any]], campus: Campus) -> list[Incident]:
    found: list[Incident] = []
    real, drill = _Track(drill=False), _Track(drill=True)
    #: Command records by id, until the record of what they did says where they belong.
    waiting: dict[str, Mapping[str, Any]] = {}
    for record in records:
        data = record.get("data") or {}
        kind = record.get("kind")
        if kind == "command":
            waiting[str(data.get("command"))] = record
            if len(waiting) > 100:
                waiting.pop(next(iter(waiting)))
            continue
        change = data.get("change") or {}
        puts = [s for s in change.get("put", ()) if _incident_source(s)]
        removed = [k for k in change.get("removed", ()) if k.startswith(INCIDENT_PREFIXES)]
        targets: list[tuple[_Track, Incident]] = []
        for track in (real, drill):
            mine = [s for s in puts if track.owns(str(s["key"]))]
            gone = [k for k in removed if track.owns(k)]
            if mine and track.current is None:
                track.current = Incident(id=str(record["seq"]), started=str(record["ts"]),
                                         drill=track.drill)  # fmt: skip
                track.closed = None
                found.append(track.current)
            if (mine or gone) and track.current is not None:
                for source in mine:
                    track.active.add(str(source["key"]))
                    track.current.states.append((str(source.get("state") or source.get("name")),
                                                 str(source["scope"])))  # fmt: skip
                track.active.difference_update(gone)
                targets.append((track, track.current))
        if not targets:
            target = _other_target(record, real, drill)
            if target is not None:
                targets.append((real, target))
        for _, incident in targets:
            command = waiting.pop(str(data.get("command")), None)
            if command is not None:
                _add(incident, command, campus)
            _add(incident, record, campus)
        for track, incident in targets:
            if track.current is incident and not track.active:
                incident.ended = str(record["ts"])
                track.closed = (incident, _epoch(incident.ended))
                track.current = None
    found.sort(key=lambda i: int(i.id))
    return found


def _other_target(record: Mapping[str, Any], real: _Track, drill: _Track) -> Incident | None:
    """Where a record that changes no incident source belongs (an outcome, a radio alert...)."""
    data = record.get("data") or {}
    if record.get("kind") == "outcome":
        for track in (real, drill):
            for incident in (track.current, track.closed[0] if track.closed else None):
                if incident is not None and str(data.get("command_id")) in incident.commands:
                    return incident
    if "drill" in data and record.get("kind") in ("outcome", "action", "budget"):
        track = drill if data.get("drill") else real
        return track.open_or_late(record)
    return real.current or drill.current


def _incident_source(source: Mapping[str, Any]) -> bool:
    key = str(source.get("key", ""))
    return key.startswith(INCIDENT_PREFIXES) and source.get("state") != "released"


def _late_for(closed: tuple[Incident, float], record: Mapping[str, Any]) -> bool:
    incident, at = closed
    data = record.get("data") or {}
    if record.get("kind") == "outcome":
        return str(data.get("command_id")) in incident.commands
    return record.get("kind") == "action" and _epoch(str(record["ts"])) - at <= LATE_S


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _add(incident: Incident, record: Mapping[str, Any], campus: Campus) -> None:
    """One record into an incident: a timeline step, and its figures where it has some."""
    kind = str(record.get("kind"))
    data: Mapping[str, Any] = record.get("data") or {}
    actor = str(data.get("via") or record.get("actor"))
    if data.get("command"):
        incident.commands.add(str(data["command"]))
    text = _describe(kind, data, actor)
    if text is None:
        return
    what, line = text
    incident.steps.append(Step(int(record["seq"]), str(record["ts"]), what, actor, line))
    if kind == "outcome":
        incident.outcomes.append(dict(data))
        if _securing(data):
            for scope, secure in secure_times(data, campus).items():
                incident.secure.setdefault(scope, secure)
    elif kind == "action":
        incident.actions.append(dict(data))


def _securing(outcome: Mapping[str, Any]) -> bool:
    """The actuation that carries a state out (lockdown, a drill, evacuate, a fire release)."""
    trigger = str(outcome.get("trigger", ""))
    first = trigger.split(" ", maxsplit=1)[0]
    return first not in NOT_SECURING and not trigger.startswith("fire reset")


def secure_times(outcome: Mapping[str, Any], campus: Campus) -> dict[str, SecureTime]:
    """Per building and zone of an outcome: doors, confirmed, the last confirmation, failures."""
    failed: Mapping[str, str] = outcome.get("failed") or {}
    out = {}
    for scope, figures in (outcome.get("scopes") or {}).items():
        kind, _, ident = str(scope).partition("/")
        bad = {}
        for door_id, why in failed.items():
            door = campus.doors.get(door_id)
            if door is not None and ident == (door.building if kind == "building" else door.zone):
                bad[door_id] = str(why)
        ms = figures.get("ms")
        out[str(scope)] = SecureTime(str(scope), int(figures["doors"]), int(figures["confirmed"]),
                                     None if ms is None else float(ms), bad)  # fmt: skip
    return out


def _describe(kind: str, data: Mapping[str, Any], actor: str) -> tuple[str, str] | None:
    """(category, sentence) of one record for the timeline; None to leave it out."""
    if kind == "command":
        where = data.get("scope") or (f"door/{data['door']}" if data.get("door") else "")
        params = data.get("params") or {}
        if data.get("action") == "drill":
            live = "dry run" if params.get("dry_run", True) else "live"
            return "trigger", (f"drill {params.get('state')} {params.get('scope')} ({live},"
                               f" {params.get('duration_s')} s) asked by {actor}")  # fmt: skip
        return "trigger", f"{data.get('action')} {where} asked by {actor}"
    if kind in ("state", "fire"):
        if kind == "fire":
            on = "active: egress released" if data.get("active") else "reset"
            return "trigger", f"fire alarm {data.get('input')} {on} ({data.get('scope')})"
        if data.get("ended"):
            return "release", f"{data.get('key') or data.get('keys')} ended: {data['ended']}"
        if data.get("state") == "normal":
            return "release", f"released {data.get('scope')} by {actor}"
        return "decided", f"{data.get('state')} in force on {data.get('scope')}" + (
            " (DRILL)" if data.get("drill") else "")  # fmt: skip
    if kind == "outcome":
        lat = data.get("latency_ms") or {}
        text = (f"{data.get('trigger')}: {data.get('confirmed')}/{data.get('commanded')} doors"
                f" confirmed, on the wire {lat.get('on_wire')} ms, confirmed"
                f" {lat.get('confirmed')} ms")  # fmt: skip
        failed = data.get("failed") or {}
        if failed:
            text += "; failed: " + ", ".join(f"{d} ({why})" for d, why in failed.items())
        return ("failed" if failed else "doors"), text
    if kind == "action":
        ok = "ok" if data.get("ok") else f"FAILED {data.get('error')}: {data.get('message', '')}"
        if data.get("kind") == "radio":
            return "radio", (f"radio alert via {data.get('device')}: {ok} (acknowledged after"
                             f" {data.get('attempts')} attempt(s), {data.get('rtt_ms')} ms;"
                             f" drill {data.get('device_drill')})")  # fmt: skip
        return "camera", f"snapshot {data.get('device')}: {ok} {data.get('path', '')}"
    if kind == "override":
        if data.get("unlock_s"):
            return "responder", (f"responder unlock {data.get('door')} by {actor} for"
                                 f" {data.get('unlock_s')} s")  # fmt: skip
        if data.get("ended"):
            return "responder", f"{data.get('key')} ended: relocked"
        return "override", f"{data.get('manual')} {data.get('door')} by {actor}"
    if kind == "budget":
        return (
            "budget",
            f"latency budget {data.get('budget_ms')} ms exceeded: {data.get('trigger')}",
        )
    if kind == "refusal":
        return "refusal", f"refused {data.get('action', '')}: {data.get('error')}"
    if kind == "daemon":
        return "daemon", f"gateway {data.get('event')}"
    return None
