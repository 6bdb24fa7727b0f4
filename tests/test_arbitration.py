"""Arbitration is a pure priority array: properties hold for any set of claims."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gatewayd.rules.arbitration import Claim, Priority, arbitrate

claims = st.builds(
    Claim,
    source=st.text("abcdef:/", min_size=1, max_size=8),
    priority=st.sampled_from(list(Priority)),
    locked=st.booleans(),
    reason=st.just("r"),
    rank=st.integers(0, 5),
)
claim_sets = st.lists(claims, max_size=12, unique_by=lambda c: c.source)


def test_no_claim_leaves_the_door_at_its_normal_state() -> None:
    assert arbitrate([], normal_locked=True).locked is True
    assert arbitrate([], normal_locked=False).reason == "normal"


def test_lockdown_outranks_a_manual_unlock() -> None:
    decision = arbitrate(
        [
            Claim("manual:door/A-101", Priority.MANUAL, False, "unlock (door/A-101)"),
            Claim("srp:campus", Priority.LOCKDOWN, True, "lockdown (campus)"),
        ],
        normal_locked=False,
    )
    assert decision.locked is True
    assert decision.reason == "lockdown (campus)"


def test_life_safety_release_outranks_lockdown() -> None:
    decision = arbitrate(
        [
            Claim("srp:campus", Priority.LOCKDOWN, True, "lockdown (campus)"),
            Claim("fire:fire-A", Priority.LIFE_SAFETY, False, "fire alarm (building/A)"),
        ],
        normal_locked=True,
    )
    assert decision.locked is False


@given(claim_sets, st.booleans())
def test_decision_does_not_depend_on_claim_order(cs: list[Claim], normal: bool) -> None:
    assert arbitrate(cs, normal_locked=normal) == arbitrate(reversed(cs), normal_locked=normal)


@given(claim_sets, st.booleans())
def test_winner_has_the_highest_priority_then_strictest_rank_and_locked_wins_ties(
    cs: list[Claim], normal: bool
) -> None:
    decision = arbitrate(cs, normal_locked=normal)
    if not cs:
        assert decision.claim is None
        return
    top = min(c.priority for c in cs)
    rank = min(c.rank for c in cs if c.priority == top)
    assert decision.priority == top
    assert decision.claim is not None and decision.claim.rank == rank
    assert decision.locked == any(c.locked for c in cs if (c.priority, c.rank) == (top, rank))


@given(claim_sets, st.booleans())
def test_an_active_life_safety_release_always_unlocks(cs: list[Claim], normal: bool) -> None:
    fire = Claim("fire:x", Priority.LIFE_SAFETY, False, "fire alarm")
    others = [c for c in cs if c.priority is not Priority.LIFE_SAFETY]
    assert arbitrate([*others, fire], normal_locked=normal).locked is False


@given(claim_sets, claims, st.booleans())
def test_removing_a_lower_claim_never_changes_the_decision(
    cs: list[Claim], extra: Claim, normal: bool
) -> None:
    decision = arbitrate(cs, normal_locked=normal)
    if decision.claim is None or extra.source in {c.source for c in cs}:
        return
    if extra.priority > decision.priority:
        assert arbitrate([*cs, extra], normal_locked=normal) == decision
