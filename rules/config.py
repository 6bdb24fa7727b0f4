"""``[policy]`` of the campus file: what each SRP state does to each kind of door."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gatewayd.kernel.site import DoorKind
from gatewayd.kernel.siteinfo import Hazard, SrpState
from gatewayd.kernel.validation import Model


class DoorActions(Model):
    """Door kinds a state locks and kinds it releases (unlocks); a kind may be in one only."""

    lock: frozenset[DoorKind] = frozenset()
    unlock: frozenset[DoorKind] = frozenset()

    @model_validator(mode="after")
    def _disjoint(self) -> DoorActions:
        both = self.lock & self.unlock
        if both:
            raise ValueError(f"kinds both locked and unlocked: {', '.join(sorted(both))}")
        return self


def _shelter_defaults() -> dict[Hazard, DoorActions]:
    return {h: DoorActions(lock=frozenset({DoorKind.EXTERIOR})) for h in Hazard}


class PolicyConfig(Model):
    """Site policy for the SRP engine (``[policy]``); every key has a safe default."""

    hold: DoorActions = DoorActions(lock=frozenset({DoorKind.CLASSROOM}))
    secure: DoorActions = DoorActions(lock=frozenset({DoorKind.EXTERIOR}))
    lockdown: DoorActions = DoorActions(lock=frozenset({DoorKind.CLASSROOM, DoorKind.INTERIOR}))
    #: LOCKDOWN also locks the perimeter (exterior and egress doors).
    lockdown_perimeter: bool = True
    evacuate: DoorActions = DoorActions(unlock=frozenset({DoorKind.EGRESS}))
    #: EVACUATE also releases interior doors, so people can move to the exits.
    evacuate_interior: bool = True
    #: SHELTER door actions per hazard; hazards not listed lock exterior doors.
    shelter: dict[Hazard, DoorActions] = Field(default_factory=_shelter_defaults)
    #: SHELTER for these hazards also stops the air handlers' fans and closes outside air
    #: (``[[air_handlers]]``); release gives the air back to the building's controls.
    shelter_air_hazards: frozenset[Hazard] = frozenset({Hazard.HAZMAT})
    #: A fire alarm releases every door, not only egress doors.
    fire_release_all: bool = False
    #: Seconds a fire alarm must stay active before doors release (fire authority approval).
    fire_verification_s: float = Field(default=0.0, ge=0.0, le=120.0)
    #: What a wired panic button does, and to which scope (its building, or the campus).
    panic_state: SrpState = SrpState.LOCKDOWN
    panic_scope: Literal["building", "campus"] = "building"
    #: Responder unlock: default (momentary) and longest allowed duration.
    responder_momentary_s: float = Field(default=5.0, gt=0.0, le=60.0)
    responder_max_s: float = Field(default=300.0, gt=0.0, le=3600.0)
    #: Longest drill.
    drill_max_s: float = Field(default=3600.0, gt=0.0, le=86_400.0)
    #: Trigger -> all doors confirmed; a slower trigger raises a ``budget`` event.
    budget_ms: float = Field(default=100.0, gt=0.0, le=60_000.0)
    #: Declarative rule file (TOML), relative to the campus file.
    rules: str | None = None

    @model_validator(mode="after")
    def _bounds(self) -> PolicyConfig:
        if self.responder_momentary_s > self.responder_max_s:
            raise ValueError("responder_momentary_s must not exceed responder_max_s")
        if self.panic_state in (SrpState.NORMAL, SrpState.SHELTER):
            raise ValueError("panic_state must be hold, secure, lockdown or evacuate")
        return self

    def shelter_for(self, hazard: Hazard) -> DoorActions:
        return self.shelter.get(hazard, DoorActions(lock=frozenset({DoorKind.EXTERIOR})))
