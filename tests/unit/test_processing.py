from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.events import CampaignInteraction, LoyaltyPoints, OrderPlaced
from worker.features import VOCABULARY, AccountState
from worker.membership import change_id
from worker.processing import evaluate, membership_reasons, process_event
from worker.rules import load_definitions

DEFINITIONS = load_definitions(
    """
version: "t-1"
families:
  program:
    exclusive: true
    segments:
      - id: champions
        when: points_earned_90d >= 1000 and response_rate_365d >= 0.5
      - id: active_members
        when: points_earned_90d > 0
      - id: never_participated
        when: true
  buyers:
    exclusive: false
    segments:
      - id: big_spenders
        when: revenue_90d >= 1000
      - id: recent_buyers
        when: recency_days <= 30
""",
    VOCABULARY,
)
T0 = datetime(2026, 1, 10, 8, tzinfo=UTC)


def order(event_id: str, at: datetime, total: float) -> OrderPlaced:
    return OrderPlaced(
        event_id=event_id, occurred_at=at, account_id="A1", order_id=event_id, total=total
    )


def points(event_id: str, at: datetime, earned: int) -> LoyaltyPoints:
    return LoyaltyPoints(
        event_id=event_id,
        occurred_at=at,
        account_id="A1",
        kind="earned",
        points=earned,
        reason="purchase",
    )


def campaign(event_id: str, at: datetime, kind: str) -> CampaignInteraction:
    return CampaignInteraction(
        event_id=event_id, occurred_at=at, account_id="A1", campaign_id="c", kind=kind
    )


def summary(changes):
    return [(c.family, c.segment_id, c.change, c.previous_segment_id) for c in changes]


def test_first_event_enters_the_catch_all_and_matching_segments():
    state = AccountState("A1")
    changes = process_event(state, order("o1", T0, 1200.0), DEFINITIONS)
    assert summary(changes) == [
        ("program", "never_participated", "entered", None),
        ("buyers", "big_spenders", "entered", None),
        ("buyers", "recent_buyers", "entered", None),
    ]
    first = changes[1]
    assert first.change_id == change_id("A1", "buyers", "big_spenders", "entered", "o1")
    assert first.reason == "revenue_90d >= 1000 (revenue_90d=1200)"
    assert first.features == {"revenue_90d": 1200.0}
    assert first.occurred_at == T0
    assert first.definition_version == "t-1"
    assert first.cause == "o1"


def test_exclusive_move_exits_then_enters_with_previous_segment():
    state = AccountState("A1")
    process_event(state, order("o1", T0, 10.0), DEFINITIONS)
    changes = process_event(state, points("p1", T0 + timedelta(days=1), 1500), DEFINITIONS)
    assert summary(changes) == [
        ("program", "never_participated", "exited", None),
        ("program", "active_members", "entered", "never_participated"),
    ]
    assert changes[0].reason.startswith("moved to active_members: no longer matches: true")
    process_event(state, campaign("c1", T0 + timedelta(days=2), "sent"), DEFINITIONS)
    changes = process_event(state, campaign("c2", T0 + timedelta(days=2), "responded"), DEFINITIONS)
    assert summary(changes) == [
        ("program", "active_members", "exited", None),
        ("program", "champions", "entered", "active_members"),
    ]
    assert changes[1].features == {"points_earned_90d": 1500.0, "response_rate_365d": 1.0}


def test_leaving_a_non_exclusive_segment_says_which_values_failed():
    state = AccountState("A1")
    process_event(state, order("o1", T0, 1200.0), DEFINITIONS)
    changes = process_event(state, points("p1", T0 + timedelta(days=31), 10), DEFINITIONS)
    assert ("buyers", "recent_buyers", "exited", None) in summary(changes)
    exit_ = next(c for c in changes if c.segment_id == "recent_buyers")
    assert exit_.reason == "no longer matches: recency_days <= 30 (recency_days=31)"


def test_a_redelivered_event_produces_nothing():
    state = AccountState("A1")
    assert process_event(state, order("o1", T0, 1200.0), DEFINITIONS, ("orders:0", 1))
    assert process_event(state, order("o1", T0, 1200.0), DEFINITIONS, ("orders:0", 1)) is None


def test_removed_family_and_segment_memberships_are_exited():
    state = AccountState("A1")
    process_event(state, order("o1", T0, 1200.0), DEFINITIONS)
    smaller = load_definitions(
        'version: "t-2"\nfamilies:\n  buyers:\n    exclusive: false\n    segments:\n'
        "      - id: big_spenders\n        when: revenue_90d >= 1000\n",
        VOCABULARY,
    )
    changes = evaluate(state, smaller, cause="recompute")
    assert sorted(summary(changes)) == [
        ("buyers", "recent_buyers", "exited", None),
        ("program", "never_participated", "exited", None),
    ]
    assert state.memberships == {
        "buyers": {"big_spenders": state.memberships["buyers"]["big_spenders"]}
    }


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 120), st.sampled_from(["o", "p", "s", "r"])), max_size=25))
def test_replaying_a_history_gives_identical_changes_and_ids(steps):
    """Determinism is what makes change ids stable across crashes and redeliveries."""
    makers = {
        "o": lambda n, at: order(f"e{n}", at, 700.0),
        "p": lambda n, at: points(f"e{n}", at, 600),
        "s": lambda n, at: campaign(f"e{n}", at, "sent"),
        "r": lambda n, at: campaign(f"e{n}", at, "responded"),
    }
    history = [makers[kind](n, T0 + timedelta(days=day)) for n, (day, kind) in enumerate(steps)]

    def run():
        state, out = AccountState("A1"), []
        for offset, event in enumerate(history):
            out.extend(process_event(state, event, DEFINITIONS, ("t:0", offset)) or [])
        return state, out

    (state_a, changes_a), (state_b, changes_b) = run(), run()
    assert changes_a == changes_b
    assert state_a.to_dict() == state_b.to_dict()
    # exclusive families never exit a segment the account did not enter
    inside: dict[tuple[str, str], bool] = {}
    for change in changes_a:
        key = (change.family, change.segment_id)
        assert inside.get(key, False) == (change.change == "exited")
        inside[key] = change.change == "entered"


def test_evaluating_does_not_touch_features():
    state = AccountState("A1")
    process_event(state, order("o1", T0, 1200.0), DEFINITIONS)
    before = copy.deepcopy(state.to_dict())
    evaluate(state, DEFINITIONS, cause="again")
    assert state.to_dict() == before


def test_memberships_are_explained_from_current_features_not_stored_text():
    state = AccountState("A1")
    process_event(state, order("o1", T0, 1500.0), DEFINITIONS)
    assert all(set(entry) == {"since"} for f in state.memberships.values() for entry in f.values())
    reasons = membership_reasons(state, DEFINITIONS)
    assert reasons[("buyers", "big_spenders")] == "revenue_90d >= 1000 (revenue_90d=1500)"
    assert reasons[("program", "never_participated")] == "true"

    state.memberships["gone"] = {"old": {"since": T0.timestamp()}}
    state.memberships["buyers"]["recent_buyers"]["outside_since"] = T0.timestamp()
    state.clock += 40 * 86400  # recency now 40 days
    reasons = membership_reasons(state, DEFINITIONS)
    assert reasons[("gone", "old")] == "segment family gone is no longer defined"
    assert reasons[("buyers", "recent_buyers")] == (
        "held (min_dwell/exit_grace); no longer matching since 2026-01-10: "
        "recency_days <= 30 (recency_days=40)"
    )
