"""SRP policy and the engine over the demo campus: pure decisions, no hardware."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.kernel.campus import Campus
from gatewayd.kernel.errors import CommandError, ConfigError
from gatewayd.kernel.scope import CAMPUS, Scope
from gatewayd.kernel.site import DoorKind
from gatewayd.kernel.siteinfo import Hazard, SrpState
from gatewayd.rules.config import PolicyConfig
from gatewayd.rules.engine import Change, Engine
from gatewayd.rules.policy import (
    TRANSITIONS,
    check_transition,
    door_actions,
    fire_source,
    responder_override,
    room_release,
    srp_source,
)
from gatewayd.rules.sources import Source
from gatewayd.service.config import load_config, parse_config
from gatewayd.service.expiry import remaining_s

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo-campus.toml"
CONFIG = load_config(DEMO)
CAMPUS_MODEL = Campus(CONFIG)
POLICY = PolicyConfig()
SCOPES = [
    CAMPUS,
    *(Scope("building", b) for b in "ABCD"),
    Scope("zone", "A1"),
    Scope("zone", "B2"),
    Scope("door", "A-101"),
    Scope("door", "A-119"),
]


def engine() -> Engine:
    return Engine(CAMPUS_MODEL)


def srp(state: SrpState, scope: Scope, hazard: Hazard | None = None) -> Source:
    return srp_source(POLICY, state, scope, actor="t", since=0.0, hazard=hazard)


def kind_of(door_id: str) -> DoorKind:
    return CAMPUS_MODEL.doors[door_id].kind


def test_default_policy_locks_what_the_srp_says() -> None:
    def locks(state: SrpState) -> set[str]:
        return {str(k) for k in door_actions(POLICY, state, Hazard.TORNADO).lock}

    assert locks(SrpState.HOLD) == {"classroom"}
    assert locks(SrpState.SECURE) == {"exterior"}
    assert locks(SrpState.LOCKDOWN) == {"classroom", "interior", "exterior", "egress"}
    assert locks(SrpState.SHELTER) == {"exterior"}
    evacuate = door_actions(POLICY, SrpState.EVACUATE, None)
    assert evacuate.unlock == {DoorKind.EGRESS, DoorKind.INTERIOR}
    no_perimeter = PolicyConfig(lockdown_perimeter=False)
    assert door_actions(no_perimeter, SrpState.LOCKDOWN, None).lock == {
        DoorKind.CLASSROOM,
        DoorKind.INTERIOR,
    }


def test_policy_is_validated_with_path_named_errors() -> None:
    raw = {
        "site": {"id": "x", "name": "x"},
        "buildings": [{"id": "A", "name": "A"}],
        "policy": {
            "fire_verification_s": 600,
            "hold": {"lock": ["classroom"], "unlock": ["classroom"]},
        },
    }
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    text = str(err.value)
    assert "policy.fire_verification_s" in text
    assert "policy.hold" in text and "both locked and unlocked" in text


def test_illegal_transition_names_both_states() -> None:
    check_transition(SrpState.SECURE, SrpState.LOCKDOWN, CAMPUS)
    check_transition(SrpState.LOCKDOWN, SrpState.SECURE, CAMPUS)
    for state in SrpState:
        if state is not SrpState.NORMAL:
            check_transition(state, SrpState.EVACUATE, CAMPUS)
    with pytest.raises(CommandError) as err:
        check_transition(SrpState.LOCKDOWN, SrpState.HOLD, Scope("building", "A"))
    assert err.value.code == "illegal_transition"
    assert "lockdown -> hold" in str(err.value)
    assert set(TRANSITIONS) == set(SrpState)


def test_campus_lockdown_and_building_secure_give_each_door_the_strictest() -> None:
    e = engine()
    e.put(srp(SrpState.SECURE, Scope("building", "A")))
    e.put(srp(SrpState.LOCKDOWN, CAMPUS))
    for door_id in CAMPUS_MODEL.resolve(Scope("building", "A")):
        decision = e.decide(door_id)
        assert decision.locked, door_id
        assert decision.reason == "lockdown (campus)"


def test_evacuate_releases_egress_even_under_a_wider_lockdown() -> None:
    e = engine()
    e.put(srp(SrpState.LOCKDOWN, CAMPUS))
    e.put(srp(SrpState.EVACUATE, Scope("building", "C")))
    for door_id in CAMPUS_MODEL.resolve(Scope("building", "C")):
        kind = kind_of(door_id)
        assert e.decide(door_id).locked is (kind is not DoorKind.EGRESS), door_id


def test_room_release_and_responder_override_win_over_lockdown_only_for_their_door() -> None:
    e = engine()
    e.put(srp(SrpState.LOCKDOWN, CAMPUS))
    e.put(room_release(Scope("door", "A-101"), actor="t", since=0.0))
    e.put(responder_override(Scope("door", "A-102"), actor="r", since=0.0, until=5.0))
    assert e.decide("A-101").locked is False
    assert e.decide("A-102").locked is False
    assert e.decide("A-103").locked is True
    e.put(fire_source(POLICY, "fire-A", Scope("building", "A"), since=0.0))
    # Fire releases egress only: a classroom under lockdown stays locked.
    assert e.decide("A-103").locked is True


def test_a_bounded_source_never_lasts_longer_than_its_duration() -> None:
    override = responder_override(Scope("door", "A-102"), actor="r", since=1000.0, until=1010.0)
    assert remaining_s(override, wall_now=1004.0) == 6.0
    # The wall clock stepped back an hour: still at most the ten seconds it was given.
    assert remaining_s(override, wall_now=1004.0 - 3600) == 10.0
    # Stepped forward past the end: over.
    assert remaining_s(override, wall_now=2000.0) == 0.0


def test_unlocks_names_the_doors_a_change_would_leave_unlocked() -> None:
    e = engine()
    lockdown = srp(SrpState.LOCKDOWN, CAMPUS)
    e.put(lockdown)
    before = e.sources
    assert e.unlocks(Change(put=(srp(SrpState.LOCKDOWN, Scope("building", "A")),))) == []
    released = e.unlocks(Change(remove=(lockdown.key,)))
    assert "A-101" in released
    assert e.sources == before  # asking changes nothing


# --- properties -------------------------------------------------------------------------------

srp_sources = st.builds(
    srp,
    st.sampled_from([s for s in SrpState if s is not SrpState.NORMAL]),
    st.sampled_from(SCOPES),
    st.sampled_from(list(Hazard)),
)
door_scopes = st.sampled_from([Scope("door", d) for d in list(CAMPUS_MODEL.doors)[:40]])
overrides = st.one_of(
    st.builds(lambda s: responder_override(s, actor="r", since=0.0, until=9.0), door_scopes),
    st.builds(lambda s: room_release(s, actor="o", since=0.0), door_scopes),
)
any_sources = st.lists(st.one_of(srp_sources, overrides), max_size=10)


@given(any_sources, st.sampled_from("ABCD"), st.booleans())
def test_no_source_ever_locks_an_egress_door_while_its_fire_alarm_is_active(
    sources: list[Source], building: str, release_all: bool
) -> None:
    e = engine()
    policy = PolicyConfig(fire_release_all=release_all)
    for source in sources:
        e.put(source)
    e.put(fire_source(policy, f"fire-{building}", Scope("building", building), since=0.0))
    for door_id in CAMPUS_MODEL.resolve(Scope("building", building)):
        if release_all or kind_of(door_id) is DoorKind.EGRESS:
            assert e.decide(door_id).locked is False, door_id


@given(any_sources, st.data())
def test_releasing_one_source_never_drops_another_sources_hold(
    sources: list[Source], data: st.DataObject
) -> None:
    e = engine()
    for source in sources:
        e.put(source)
    active = e.sources
    if not active:
        return
    gone = data.draw(st.sampled_from(sorted(active)))
    before = e.decide_all(CAMPUS_MODEL.doors)
    e.remove(gone)
    after = e.decide_all(CAMPUS_MODEL.doors)
    for door_id, decision in before.items():
        if decision.claim is not None and decision.claim.source != gone:
            assert after[door_id] == decision, door_id


@given(any_sources)
def test_decisions_do_not_depend_on_the_order_states_were_set(sources: list[Source]) -> None:
    forward, backward = engine(), engine()
    # The last source with a key wins; keep one per key so both orders hold the same set.
    unique = list({s.key: s for s in sources}.values())
    for source in unique:
        forward.put(source)
    for source in reversed(unique):
        backward.put(source)
    assert forward.decide_all(CAMPUS_MODEL.doors) == backward.decide_all(CAMPUS_MODEL.doors)


@given(any_sources)
def test_deciding_doors_together_matches_deciding_each_alone(sources: list[Source]) -> None:
    e = engine()
    for source in {s.key: s for s in sources}.values():
        e.put(source)
    together = e.decide_all(CAMPUS_MODEL.doors)
    assert together == {d: e.decide(d) for d in CAMPUS_MODEL.doors}


@given(any_sources, st.one_of(srp_sources, overrides), st.data())
def test_asking_what_a_change_would_unlock_leaves_every_source_and_decision_as_it_was(
    sources: list[Source], new: Source, data: st.DataObject
) -> None:
    e = engine()
    for source in sources:
        e.put(source)
    keys = sorted(e.sources)
    gone = data.draw(st.lists(st.sampled_from(keys), max_size=2, unique=True)) if keys else []
    change = Change(put=(new,), remove=tuple(gone))
    before = (e.sources, e.decide_all(CAMPUS_MODEL.doors), e.versions(change))
    e.unlocks(change)
    assert (e.sources, e.decide_all(CAMPUS_MODEL.doors), e.versions(change)) == before
    # And the engine goes on as one that was never asked.
    fresh = engine()
    for source in sources:
        fresh.put(source)
    assert e.apply(change) == fresh.apply(change)
    assert e.decide_all(CAMPUS_MODEL.doors) == fresh.decide_all(CAMPUS_MODEL.doors)


@given(any_sources, st.data())
def test_the_doors_a_change_may_move_come_once_each_in_campus_order(
    sources: list[Source], data: st.DataObject
) -> None:
    e = engine()

    def in_order(doors: list[str]) -> bool:
        return doors == sorted(set(doors), key=CAMPUS_MODEL.door_index.__getitem__)

    for source in sources:
        assert in_order(e.put(source)), source.key
    for key in data.draw(st.permutations(sorted(e.sources))):
        assert in_order(e.apply(Change(remove=(key,)))), key


@given(any_sources, st.one_of(srp_sources, overrides))
def test_a_new_source_that_only_locks_never_leaves_a_door_unlocked(
    sources: list[Source], new: Source
) -> None:
    # Engine.unlocks answers "none" for such a change without deciding the doors: hold it to
    # what deciding every door before and after says.
    e = engine()
    for source in sources:
        e.put(source)
    if new.key in e.sources or not all(effect.locked for effect in new.effects):
        return
    before = e.decide_all(CAMPUS_MODEL.doors)
    assert e.unlocks(Change(put=(new,))) == []
    e.put(new)
    after = e.decide_all(CAMPUS_MODEL.doors)
    assert not [d for d in before if before[d].locked and not after[d].locked]
