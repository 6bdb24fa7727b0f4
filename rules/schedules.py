"""Door schedules: weekly windows and a holiday calendar, as sources at the schedule priority.

``[schedules]`` of the campus file names a time zone, the days the school is closed and the
windows: "main entrance unlocked 07:30-08:15 on school days" is ``start``, ``end`` and an
iCalendar RRULE (RFC 5545) read by python-dateutil's ``rrulestr``; each holiday becomes an
EXDATE of every window that keeps the calendar. Times are wall-clock times in the site's zone
(``zoneinfo``), so a window opens at 07:30 on both sides of a DST change. A time the spring
change skips (02:30) is read with the offset before the gap and a time the autumn change
repeats with its first occurrence, as RFC 5545 says.

Pure: the wall clock is an argument. A window in force is a :class:`Source` at
:attr:`Priority.SCHEDULE` (12) on each of its doors, so every SRP state, a fire alarm, a
responder override and an operator's lock or unlock beat it, and it holds again when they end.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rruleset, rrulestr
from pydantic import Field, field_validator, model_validator

from gatewayd.kernel.driver import ID_PATTERN
from gatewayd.kernel.scope import Scope
from gatewayd.kernel.validation import Model
from gatewayd.rules.arbitration import Priority
from gatewayd.rules.sources import Effect, Source

#: Key prefix of every schedule source; the scheduler owns them and a restart re-derives them.
KEY_PREFIX = "schedule:"
#: Actor of every schedule change in the audit log.
ACTOR = "system:schedule"
#: Where an RRULE counts from when a window names no ``first_day`` (INTERVAL, COUNT).
DEFAULT_FIRST_DAY = dt.date(2024, 1, 1)
#: Window starts are expanded for this long around the wall clock (then looked up by
#: bisection), and again when the clock comes within the margin of the horizon's end.
HORIZON_BACK_S = 2 * 86_400.0
HORIZON_AHEAD_S = 400 * 86_400.0
HORIZON_MARGIN_S = 35 * 86_400.0
#: Longest holiday range one entry may name (a typo like 2026 -> 2062 is an error).
MAX_HOLIDAY_RANGE_DAYS = 366


class WindowConfig(Model):
    """One recurring window: these doors unlocked (or locked) from ``start`` to ``end``."""

    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    #: Door ids; every one must be a door of the campus.
    doors: tuple[str, ...] = Field(min_length=1)
    #: Wall-clock times in the site's zone; an ``end`` at or before ``start`` is the next day.
    start: dt.time
    end: dt.time
    #: RFC 5545 RRULE: which days the window recurs (default: Monday to Friday).
    rrule: str = "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
    #: What the window does to its doors while it is in force.
    action: Literal["unlock", "lock"] = "unlock"
    #: Skip the days of ``[schedules] holidays`` (each becomes an EXDATE of this window).
    holidays: bool = True
    #: The first day the rule counts from (INTERVAL=2 is every other week from here).
    first_day: dt.date = DEFAULT_FIRST_DAY

    @field_validator("rrule")
    @classmethod
    def _rrule(cls, text: str) -> str:
        text = text.strip().removeprefix("RRULE:")
        if "\n" in text or "DTSTART" in text.upper():
            raise ValueError("one RRULE line only; the start is start/first_day")
        try:
            rrulestr(text, dtstart=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not an RFC 5545 RRULE ({exc})") from exc
        return text

    @field_validator("start", "end")
    @classmethod
    def _naive(cls, value: dt.time) -> dt.time:
        if value.tzinfo is not None:
            raise ValueError("a wall-clock time without offset; the zone is [schedules] timezone")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> WindowConfig:
        if self.start == self.end:
            raise ValueError("start and end are the same time: the window would be empty")
        if len(set(self.doors)) != len(self.doors):
            raise ValueError("a door is listed twice")
        return self


class SchedulesConfig(Model):
    """``[schedules]``: the zone, the holiday calendar and the windows."""

    #: IANA time zone of the site, e.g. ``America/Chicago``.
    timezone: str
    #: Days without school: ``YYYY-MM-DD`` or an inclusive range ``YYYY-MM-DD/YYYY-MM-DD``.
    holidays: tuple[str, ...] = ()
    windows: tuple[WindowConfig, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r} (an IANA name such as"
                             " 'America/Chicago')") from exc  # fmt: skip
        return name

    @field_validator("holidays")
    @classmethod
    def _days(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        for entry in entries:
            holiday_days(entry)
        return entries

    @model_validator(mode="after")
    def _unique(self) -> SchedulesConfig:
        ids = [w.id for w in self.windows]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate window id: {', '.join(dupes)}")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def closed_days(self) -> frozenset[dt.date]:
        return frozenset(d for entry in self.holidays for d in holiday_days(entry))


def holiday_days(entry: str) -> list[dt.date]:
    """The days of one holiday entry; a ValueError saying what is wrong."""
    first_text, sep, last_text = entry.partition("/")
    try:
        first = dt.date.fromisoformat(first_text.strip())
        last = dt.date.fromisoformat(last_text.strip()) if sep else first
    except ValueError as exc:
        raise ValueError(
            f"holiday {entry!r}: expected YYYY-MM-DD or YYYY-MM-DD/YYYY-MM-DD"
        ) from exc
    span = (last - first).days
    if span < 0:
        raise ValueError(f"holiday {entry!r}: the range ends before it begins")
    if span >= MAX_HOLIDAY_RANGE_DAYS:
        raise ValueError(f"holiday {entry!r}: longer than {MAX_HOLIDAY_RANGE_DAYS} days")
    return [first + dt.timedelta(days=n) for n in range(span + 1)]


def check_doors(config: SchedulesConfig, doors: Iterable[str]) -> list[str]:
    """Problems of references: windows naming doors the campus does not have."""
    known = set(doors)
    problems = []
    for i, window in enumerate(config.windows):
        for door in window.doors:
            if door not in known:
                problems.append(f"schedules.windows[{i}]({window.id}).doors: unknown door {door!r}")
    return problems


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One window in time: epoch seconds, and the wall-clock moments as written."""

    window: str
    start: float
    end: float
    start_local: dt.datetime
    end_local: dt.datetime


@dataclass(frozen=True, slots=True)
class Transition:
    """A moment a window begins or ends."""

    at: float
    local: dt.datetime
    window: str
    #: ``begins`` or ``ends``.
    edge: str
    action: str
    doors: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.local.isoformat(),
            "epoch": self.at,
            "window": self.window,
            "edge": self.edge,
            "action": self.action,
            "doors": list(self.doors),
        }


class Window:
    """A window compiled: its RRULE set over the site's zone, holidays as EXDATEs.

    Expanding an RRULE walks from its first day, so the starts are expanded once for a
    horizon around the wall clock (:data:`HORIZON_BACK_S` before, :data:`HORIZON_AHEAD_S`
    after) and looked up by bisection; a clock that leaves the horizon expands it again.
    """

    def __init__(self, config: WindowConfig, zone: ZoneInfo, closed: frozenset[dt.date]) -> None:
        self.config = config
        self.zone = zone
        first = dt.datetime.combine(config.first_day, config.start, zone)
        rules = rrulestr(config.rrule, dtstart=first, forceset=True)
        assert isinstance(rules, rruleset)
        if config.holidays:
            for day in sorted(closed):
                rules.exdate(dt.datetime.combine(day, config.start, zone))
        self._rules = rules
        self._overnight = config.end <= config.start
        #: Starts inside the horizon (local datetimes, epoch seconds) and the horizon's
        #: bounds, replaced as one value: a thread may expand while the loop reads.
        self._cache: tuple[list[dt.datetime], list[float], float, float] = ([], [], math.inf,
                                                                            -math.inf)  # fmt: skip

    def stale(self, wall_s: float) -> bool:
        """Whether ``wall_s`` is outside the expanded horizon (or near its end)."""
        _, _, low, high = self._cache
        return not low + HORIZON_BACK_S / 2 <= wall_s <= high - HORIZON_MARGIN_S

    def prepare(self, wall_s: float) -> None:
        """Expand the starts around ``wall_s`` if needed (slow: tens of ms; off the loop)."""
        if not self.stale(wall_s):
            return
        start = dt.datetime.fromtimestamp(wall_s - HORIZON_BACK_S, self.zone)
        end = dt.datetime.fromtimestamp(wall_s + HORIZON_AHEAD_S, self.zone)
        starts = list(self._rules.between(start, end, inc=True))
        self._cache = (starts, [s.timestamp() for s in starts], start.timestamp(),
                       end.timestamp())  # fmt: skip

    def _lookup(self, wall_s: float) -> tuple[list[dt.datetime], list[float]]:
        self.prepare(wall_s)
        starts, epochs, _, _ = self._cache
        return starts, epochs

    def _occurrence(self, start_local: dt.datetime) -> Occurrence:
        day = start_local.date() + dt.timedelta(days=1 if self._overnight else 0)
        end_local = dt.datetime.combine(day, self.config.end, self.zone)
        return Occurrence(self.config.id, start_local.timestamp(), end_local.timestamp(),
                          start_local, end_local)  # fmt: skip

    def active_at(self, wall_s: float) -> Occurrence | None:
        """The occurrence in force at ``wall_s`` (epoch seconds), if any."""
        starts, epochs = self._lookup(wall_s)
        # The latest start at or before now is the only one that can hold (a window is
        # shorter than a day, and a rule recurs at most daily at one time).
        i = bisect.bisect_right(epochs, wall_s)
        if i == 0:
            return None
        occurrence = self._occurrence(starts[i - 1])
        return occurrence if occurrence.start <= wall_s < occurrence.end else None

    def _starts_after(self, wall_s: float, count: int) -> list[dt.datetime]:
        starts, epochs = self._lookup(wall_s)
        i = bisect.bisect_right(epochs, wall_s)
        found = starts[i : i + count]
        # A rare rule (yearly, or ending soon) may have fewer starts in the horizon.
        cursor = found[-1] if found else dt.datetime.fromtimestamp(wall_s, self.zone)
        while len(found) < count:
            start = self._rules.after(cursor, inc=False)
            if start is None:
                break
            found.append(start)
            cursor = start
        return found

    def transitions(self, wall_s: float, count: int) -> list[Transition]:
        """The next ``count`` begins and ends after ``wall_s``."""
        out: list[Transition] = []
        doors, action = self.config.doors, self.config.action
        current = self.active_at(wall_s)
        if current is not None:
            out.append(Transition(current.end, current.end_local, self.config.id, "ends",
                                  action, doors))  # fmt: skip
        for start in self._starts_after(wall_s, (count + 1) // 2):
            occurrence = self._occurrence(start)
            out.append(Transition(occurrence.start, start, self.config.id, "begins", action,
                                  doors))  # fmt: skip
            out.append(Transition(occurrence.end, occurrence.end_local, self.config.id, "ends",
                                  action, doors))  # fmt: skip
        return sorted(out, key=lambda t: t.at)[:count]


class Calendar:
    """Every window of a site: what is in force now, what changes next."""

    def __init__(self, config: SchedulesConfig | None) -> None:
        self.config = config
        self.windows: dict[str, Window] = {}
        if config is not None:
            zone, closed = config.zone, config.closed_days()
            self.windows = {w.id: Window(w, zone, closed) for w in config.windows}

    def stale(self, wall_s: float) -> bool:
        return any(w.stale(wall_s) for w in self.windows.values())

    def prepare(self, wall_s: float) -> None:
        """Expand every window around ``wall_s`` (run it off the event loop)."""
        for window in self.windows.values():
            window.prepare(wall_s)

    def active(self, wall_s: float) -> dict[str, Occurrence]:
        found = {}
        for ident, window in self.windows.items():
            occurrence = window.active_at(wall_s)
            if occurrence is not None:
                found[ident] = occurrence
        return found

    def sources(self, wall_s: float) -> dict[str, Source]:
        """The schedule sources that should be in force at ``wall_s``, by key."""
        out: dict[str, Source] = {}
        for ident, occurrence in self.active(wall_s).items():
            config = self.windows[ident].config
            for door in config.doors:
                source = window_source(config, door, since=occurrence.start)
                out[source.key] = source
        return out

    def transitions(self, wall_s: float, count: int = 4) -> dict[str, list[Transition]]:
        return {i: w.transitions(wall_s, count) for i, w in self.windows.items()}

    def next_change(self, wall_s: float) -> float | None:
        """When the next window begins or ends (epoch seconds), or None if none ever will."""
        upcoming = [t.at for ts in self.transitions(wall_s, 1).values() for t in ts]
        return min(upcoming, default=None)


def window_source(config: WindowConfig, door: str, *, since: float) -> Source:
    """The source a window in force puts on one of its doors.

    It carries no ``expires_at``: the scheduler ends the window by the wall clock, so no
    monotonic expiry fights the calendar.
    """
    return Source(
        key=f"{KEY_PREFIX}{config.id}:{door}",
        scope=Scope("door", door),
        priority=Priority.SCHEDULE,
        effects=(Effect(frozenset(), config.action == "lock"),),
        name=f"schedule:{config.id}",
        actor=ACTOR,
        since=since,
        durable=False,
    )


def describe(transitions: Mapping[str, list[Transition]]) -> list[str]:
    """One line per upcoming transition, for ``gatewayd check`` and the logs."""
    lines = []
    for ident, items in transitions.items():
        if not items:
            lines.append(f"{ident}: no further transitions")
        for t in items:
            verb = f"{t.action}s" if t.edge == "begins" else "back to normal:"
            lines.append(f"{ident}: {t.local.isoformat(timespec='minutes')} {verb}"
                         f" {', '.join(t.doors)}")  # fmt: skip
    return lines
