"""Per-door arbitration in the manner of a BACnet priority array.

Pure functions over frozen values: no I/O, no clocks. Every active source puts a
:class:`Claim` on a door; the door does what the highest-priority claim says.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum


class Priority(IntEnum):
    """Lower value wins, as in a BACnet priority array (1 highest, 16 lowest)."""

    #: Fire alarm: egress doors released.
    LIFE_SAFETY = 1
    #: The SRP lockdown family (hold, secure, lockdown, shelter, evacuate), and the door
    #: exceptions inside it (per-room release, responder override), ordered by ``rank``.
    LOCKDOWN = 5
    #: The SPEC's responder level. A responder override must pre-empt the lockdown family for
    #: its one door, so its claim is made at LOCKDOWN with the top rank (docs/rules.md).
    RESPONDER = 8
    #: A credential's momentary unlock at a reader in normal state: below the whole lockdown
    #: family, so no lockdown is ever opened by it (docs/drivers/osdp.md).
    ACCESS = 9
    #: An operator's lock/unlock of one door.
    MANUAL = 10
    SCHEDULE = 12
    NORMAL = 16


@dataclass(frozen=True, slots=True)
class Claim:
    """One source's wish for one door."""

    #: Stable key of the source, e.g. ``srp:building/A`` or ``manual:door/A-101``.
    source: str
    priority: Priority
    locked: bool
    #: What holds the door, shown on its topic, e.g. ``lockdown (building/A)``.
    reason: str
    #: Strictness inside one priority level, lower wins (see :data:`rules.policy.RANK`).
    rank: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    locked: bool
    #: The winning claim; None when the door is at its normal state.
    claim: Claim | None

    @property
    def reason(self) -> str:
        return self.claim.reason if self.claim else "normal"

    @property
    def priority(self) -> Priority:
        return self.claim.priority if self.claim else Priority.NORMAL


def arbitrate(claims: Iterable[Claim], *, normal_locked: bool) -> Decision:
    """The winning claim: highest priority, then lowest rank, then locked, then source name.

    The order is total, so the result never depends on the order claims were made.
    """
    best: Claim | None = None
    for claim in claims:
        if best is None or _key(claim) < _key(best):
            best = claim
    if best is None:
        return Decision(normal_locked, None)
    return Decision(best.locked, best)


def _key(claim: Claim) -> tuple[int, int, bool, str]:
    return (claim.priority, claim.rank, not claim.locked, claim.source)
