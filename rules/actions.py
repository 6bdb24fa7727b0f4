"""Actions on hardware the gateway may not drive yet: PSAP radio alerts, camera snapshots.

Rules dispatch through :class:`ActionSink`; the drivers for the radio and cameras will
implement it. Until they exist, :class:`NoDriverSink` logs each action as undeliverable.
Every call carries ``drill`` so that a drill can never become a real PSAP alert: a sink
must send drill traffic marked DRILL, or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ExternalAction:
    """One radio alert or snapshot request, already rendered from its rule."""

    #: ``radio_alert`` or ``snapshot``.
    kind: str
    rule: str
    drill: bool
    text: str = ""
    targets: tuple[str, ...] = ()
    location: Mapping[str, Any] = field(default_factory=dict)


class ActionSink(Protocol):
    async def dispatch(self, action: ExternalAction) -> None: ...


class NoDriverSink:
    """Logs what would have been sent; keeps the last few for status and tests."""

    def __init__(self) -> None:
        self.seen: list[ExternalAction] = []

    async def dispatch(self, action: ExternalAction) -> None:
        self.seen.append(action)
        del self.seen[:-100]
        log.warning(
            "action.no_driver",
            kind=action.kind,
            rule=action.rule,
            drill=action.drill,
            text=action.text,
            targets=list(action.targets),
        )
