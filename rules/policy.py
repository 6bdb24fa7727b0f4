"""SRP policy: which doors each state locks or releases, legal transitions, source builders.

Site policy is data (:class:`gatewayd.config.PolicyConfig`); this module turns it into
sources the engine arbitrates. Strictness inside the lockdown family is the ``rank`` of a
claim (lower wins, locked wins a tie), so overlapping scopes resolve the same way whatever
order the states were set in.
"""

from __future__ import annotations

from gatewayd.kernel.errors import CommandError
from gatewayd.kernel.scope import Scope
from gatewayd.kernel.site import DoorKind
from gatewayd.kernel.siteinfo import Hazard, SrpState
from gatewayd.rules.arbitration import Priority
from gatewayd.rules.config import DoorActions, PolicyConfig
from gatewayd.rules.sources import Effect, Source

#: Exceptions that must win inside the family: a responder override, a per-room release,
#: and EVACUATE's egress release (people told to leave must never meet a locked exit).
RANK_EXCEPTION = 0
#: Strictness of the family's lock claims; lower is stricter and wins.
RANK: dict[SrpState, int] = {
    SrpState.LOCKDOWN: 1,
    SrpState.SHELTER: 2,
    SrpState.SECURE: 3,
    SrpState.HOLD: 4,
    SrpState.EVACUATE: 5,
}

_ANY = frozenset(SrpState) - {SrpState.NORMAL}
#: Legal transitions per scope, from the state the scope holds now to the state asked for.
#: Re-asserting the same state is legal (it refreshes the actor). De-escalation to NORMAL is
#: ``release``, never a transition. LOCKDOWN only steps down to SECURE (threat outside).
TRANSITIONS: dict[SrpState, frozenset[SrpState]] = {
    SrpState.NORMAL: _ANY,
    SrpState.HOLD: _ANY,
    SrpState.SECURE: _ANY,
    SrpState.LOCKDOWN: frozenset({SrpState.LOCKDOWN, SrpState.SECURE, SrpState.EVACUATE}),
    SrpState.EVACUATE: frozenset(
        {SrpState.EVACUATE, SrpState.LOCKDOWN, SrpState.SECURE, SrpState.SHELTER}
    ),
    SrpState.SHELTER: frozenset(
        {SrpState.SHELTER, SrpState.LOCKDOWN, SrpState.SECURE, SrpState.EVACUATE}
    ),
}

PERIMETER = frozenset({DoorKind.EXTERIOR, DoorKind.EGRESS})


def check_transition(current: SrpState, wanted: SrpState, scope: Scope) -> None:
    """Raise ``illegal_transition`` naming both states when the table forbids the move."""
    if wanted not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current]))
        raise CommandError(
            "illegal_transition",
            f"{scope} is in {current}; {current} -> {wanted} is not allowed"
            f" (allowed: {allowed}, or release first)",
        )


def door_actions(policy: PolicyConfig, state: SrpState, hazard: Hazard | None) -> DoorActions:
    """The door kinds a state locks and releases under a site's policy."""
    match state:
        case SrpState.HOLD:
            return policy.hold
        case SrpState.SECURE:
            return policy.secure
        case SrpState.LOCKDOWN:
            lock = policy.lockdown.lock | (PERIMETER if policy.lockdown_perimeter else frozenset())
            return DoorActions(lock=lock - policy.lockdown.unlock, unlock=policy.lockdown.unlock)
        case SrpState.EVACUATE:
            extra = frozenset({DoorKind.INTERIOR}) if policy.evacuate_interior else frozenset()
            unlock = policy.evacuate.unlock | extra
            return DoorActions(lock=policy.evacuate.lock - unlock, unlock=unlock)
        case SrpState.SHELTER:
            return policy.shelter_for(hazard or Hazard.TORNADO)
        case _:
            return DoorActions()


def effects_of(policy: PolicyConfig, state: SrpState, hazard: Hazard | None) -> tuple[Effect, ...]:
    actions = door_actions(policy, state, hazard)
    rank = RANK.get(state, 9)
    effects = []
    if actions.unlock:
        # EVACUATE's egress release is the exception that wins inside the family.
        egress = actions.unlock & {DoorKind.EGRESS} if state is SrpState.EVACUATE else frozenset()
        if egress:
            effects.append(Effect(egress, False, RANK_EXCEPTION))
        if actions.unlock - egress:
            effects.append(Effect(actions.unlock - egress, False, rank))
    if actions.lock:
        effects.append(Effect(actions.lock, True, rank))
    return tuple(effects)


def srp_source(
    policy: PolicyConfig,
    state: SrpState,
    scope: Scope,
    *,
    actor: str,
    since: float,
    hazard: Hazard | None = None,
    drill: bool = False,
    dry_run: bool = False,
    expires_at: float | None = None,
) -> Source:
    """The one source an SRP state (or a drill of it) puts on a scope."""
    return Source(
        key=f"{'drill' if drill else 'srp'}:{scope}",
        scope=scope,
        priority=Priority.LOCKDOWN,
        # A dry run holds no door: its decisions are only published.
        effects=() if dry_run else effects_of(policy, state, hazard),
        name=str(state),
        actor=actor,
        since=since,
        expires_at=expires_at,
        drill=drill,
        state=str(state),
        hazard=str(hazard) if hazard else None,
        dry_run=dry_run,
    )


def room_release(scope: Scope, *, actor: str, since: float) -> Source:
    """A per-room exception: this door released inside a scope's state, until re-locked."""
    return Source(
        key=f"srp:{scope}",
        scope=scope,
        priority=Priority.LOCKDOWN,
        effects=(Effect(frozenset(), False, RANK_EXCEPTION),),
        name="room-release",
        actor=actor,
        since=since,
        state="released",
    )


def responder_override(scope: Scope, *, actor: str, since: float, until: float) -> Source:
    """A bounded responder unlock of one door; pre-empts the lockdown family, not fire."""
    return Source(
        key=f"responder:{scope}",
        scope=scope,
        priority=Priority.LOCKDOWN,
        effects=(Effect(frozenset(), False, RANK_EXCEPTION),),
        name="responder",
        actor=actor,
        since=since,
        expires_at=until,
    )


def access_grant(scope: Scope, *, actor: str, since: float, until: float) -> Source:
    """A credential's momentary unlock of one door; every SRP state and fire alarm beats it."""
    return Source(
        key=f"access:{scope}",
        scope=scope,
        priority=Priority.ACCESS,
        effects=(Effect(frozenset(), False),),
        name="access",
        actor=actor,
        since=since,
        expires_at=until,
    )


def fire_source(policy: PolicyConfig, input_id: str, scope: Scope, *, since: float) -> Source:
    """Life safety: egress (or every) door released while the fire alarm input is active."""
    kinds = frozenset() if policy.fire_release_all else frozenset({DoorKind.EGRESS})
    return Source(
        key=f"fire:{input_id}",
        scope=scope,
        priority=Priority.LIFE_SAFETY,
        effects=(Effect(kinds, False),),
        name="fire-alarm",
        actor=f"input:{input_id}",
        since=since,
        durable=False,
    )


def state_of(source: Source | None) -> SrpState:
    """The SRP state an ``srp:`` source holds (a per-room release counts as NORMAL)."""
    if source is None or source.state is None:
        return SrpState.NORMAL
    try:
        return SrpState(source.state)
    except ValueError:
        return SrpState.NORMAL
