"""Declarative rules: when an event matches, do actions. Loaded from a small TOML file.

    [[rule]]
    id = "panic-app-lockdown"
    when = { kind = "alarm", source = "panic_app" }
    do = [
      { action = "set_state", state = "lockdown", scope = "building/{location.building}" },
      { action = "radio_alert", text = "Panic app: {location.building} {location.room}" },
    ]

Matching is indexed by ``(kind, source)`` with ``source`` optional, so an event is checked
only against the rules that name its kind (and its source, or no source); location and data
fields are then compared for equality. ``{dotted.path}`` in action strings is filled from
the event.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gatewayd.kernel.errors import ConfigError
from gatewayd.kernel.siteinfo import Hazard, SrpState
from gatewayd.kernel.validation import read_toml, validated

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_FIELD = re.compile(r"\{([A-Za-z0-9_.]+)\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class When(_Model):
    kind: str = Field(min_length=1)
    source: str | None = None
    #: Equality on the event's ``location`` (building, floor, room).
    location: dict[str, str] = Field(default_factory=dict)
    #: Equality on fields of the event's ``data`` (string, number or boolean).
    data: dict[str, str | int | float | bool] = Field(default_factory=dict)


class SetState(_Model):
    action: Literal["set_state"]
    state: SrpState
    #: Scope template, e.g. ``building/{location.building}`` or ``campus``.
    scope: str
    hazard: Hazard | None = None


class Publish(_Model):
    action: Literal["publish"]
    kind: str = "state"
    message: str = ""
    severity: Literal["low", "medium", "high"] = "medium"


class RadioAlert(_Model):
    action: Literal["radio_alert"]
    text: str = Field(min_length=1, max_length=200)
    #: Which radio (device id); None means the site's PSAP radio.
    device: str | None = None


class Snapshot(_Model):
    action: Literal["snapshot"]
    #: Camera device ids; empty means every camera in the event's building (or campus).
    cameras: tuple[str, ...] = ()


Action = Annotated[SetState | Publish | RadioAlert | Snapshot, Field(discriminator="action")]


class Rule(_Model):
    id: str = Field(pattern=_ID)
    when: When
    do: tuple[Action, ...] = Field(min_length=1)
    enabled: bool = True


class RuleFile(_Model):
    rule: tuple[Rule, ...] = ()


class RuleSet:
    """Rules indexed by (kind, source) and (kind, any source)."""

    def __init__(self, rules: tuple[Rule, ...] = ()) -> None:
        self.rules = tuple(r for r in rules if r.enabled)
        self._index: dict[tuple[str, str | None], list[Rule]] = defaultdict(list)
        for rule in self.rules:
            self._index[(rule.when.kind, rule.when.source)].append(rule)
        #: Events evaluated and rules fired since start.
        self.evaluated = 0
        self.fired = 0

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, event: Mapping[str, Any]) -> list[Rule]:
        """The rules an event fires, in file order within each index bucket."""
        self.evaluated += 1
        kind, source = str(event.get("kind")), str(event.get("source"))
        candidates = self._index.get((kind, source), []) + self._index.get((kind, None), [])
        fired = [r for r in candidates if _fields_match(r.when, event)]
        self.fired += len(fired)
        return fired

    def statistics(self) -> dict[str, int]:
        return {"rules": len(self.rules), "evaluated": self.evaluated, "fired": self.fired}


def _fields_match(when: When, event: Mapping[str, Any]) -> bool:
    location = event.get("location") or {}
    data = event.get("data") or {}
    return all(str(location.get(k)) == v for k, v in when.location.items()) and all(
        data.get(k) == v for k, v in when.data.items()
    )


def render(template: str, event: Mapping[str, Any]) -> str:
    """Fill ``{a.b}`` from the event; a missing field is a :class:`KeyError` naming it."""

    def one(match: re.Match[str]) -> str:
        node: Any = event
        for part in match.group(1).split("."):
            if not isinstance(node, Mapping) or node.get(part) is None:
                raise KeyError(match.group(1))
            node = node[part]
        return str(node)

    return _FIELD.sub(one, template)


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rule file; raise :class:`ConfigError` naming every problem."""
    path = Path(path)
    return parse_rules(read_toml(path), source=str(path))


def parse_rules(raw: Mapping[str, Any], source: str = "<rules>") -> RuleSet:
    parsed = validated(RuleFile, raw, source)
    seen: set[str] = set()
    dupes = []
    for i, rule in enumerate(parsed.rule):
        if rule.id in seen:
            dupes.append(f"rule[{i}].id: duplicate id {rule.id!r}")
        seen.add(rule.id)
    if dupes:
        raise ConfigError(source, dupes)
    return RuleSet(parsed.rule)
