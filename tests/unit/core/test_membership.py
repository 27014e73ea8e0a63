from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.definitions import DefinitionsError, load_definitions
from worker.core.events import AccountProfile, OrderPlaced, OrderReturned
from worker.core.features import VOCABULARY, AccountState
from worker.core.processing import evaluate, membership_reasons, process_event
from worker.core.schedule import DAY, Schedule

DEFINITIONS = load_definitions(
    """
version: "h-1"
families:
  buyers:
    exclusive: false
    segments:
      - id: recent
        when: recency_days <= 30
        exit_grace: 5d
      - id: big
        when: revenue_90d >= 1000
        min_dwell: 20d
  level:
    exclusive: true
    segments:
      - id: high
        when: revenue_90d >= 1000
        min_dwell: 10d
      - id: low
        when: true
""",
    VOCABULARY,
)
T0 = datetime(2026, 3, 2, 10, tzinfo=UTC)


def order(n: int, day: int, total: float) -> OrderPlaced:
    return OrderPlaced(
        event_id=f"o{n}",
        occurred_at=T0 + timedelta(days=day),
        account_id="A1",
        order_id=f"o{n}",
        total=total,
    )


def at(day: float) -> float:
    return (T0 + timedelta(days=day)).timestamp()


def summary(changes):
    return [(c.family, c.segment_id, c.change) for c in changes]


def test_exit_grace_delays_the_exit_until_the_condition_was_false_long_enough():
    state = AccountState("A1")
    process_event(state, order(1, 0, 10.0), DEFINITIONS)
    # recency 31 on day 31: outside, but within the 5-day grace
    assert evaluate(state, DEFINITIONS, "t31", at=at(31)) == []
    assert "outside_since" in state.memberships["buyers"]["recent"]
    assert evaluate(state, DEFINITIONS, "t35", at=at(35.5)) == []
    changes = evaluate(state, DEFINITIONS, "t36", at=at(36))
    assert summary(changes) == [("buyers", "recent", "exited")]
    assert changes[0].member_since == T0


def test_coming_back_within_the_grace_clears_it():
    state = AccountState("A1")
    process_event(state, order(1, 0, 10.0), DEFINITIONS)
    evaluate(state, DEFINITIONS, "t31", at=at(31))
    assert process_event(state, order(2, 33, 10.0), DEFINITIONS) == []
    assert "outside_since" not in state.memberships["buyers"]["recent"]


def test_min_dwell_keeps_an_exclusive_segment_and_defers_the_move():
    state = AccountState("A1")
    changes = process_event(state, order(1, 0, 1500.0), DEFINITIONS)
    assert ("level", "high", "entered") in summary(changes)
    # revenue leaves the 90-day window on day 90, but "big" dwells 20 days only
    # from entry; "high" must stay 10 days: both long over, so both leave on day 90
    changes = evaluate(state, DEFINITIONS, "t90", at=at(90))
    assert summary(changes) == [
        ("buyers", "big", "exited"),
        ("level", "high", "exited"),
        ("level", "low", "entered"),
    ]
    assert changes[2].previous_segment_id == "high"


def test_min_dwell_holds_a_membership_whose_condition_turned_false_early():
    state = AccountState("A1")
    process_event(state, order(1, 0, 1500.0), DEFINITIONS)
    returned = OrderReturned(
        event_id="r1",
        occurred_at=T0 + timedelta(days=1),
        account_id="A1",
        order_id="o1",
        amount=1000.0,
    )
    assert process_event(state, returned, DEFINITIONS) == []  # revenue 500, held by the dwells
    assert evaluate(state, DEFINITIONS, "t5", at=at(5)) == []  # held by both dwells
    assert state.memberships["level"] == {"high": state.memberships["level"]["high"]}
    changes = evaluate(state, DEFINITIONS, "t10", at=at(10))
    assert summary(changes) == [("level", "high", "exited"), ("level", "low", "entered")]
    changes = evaluate(state, DEFINITIONS, "t20", at=at(20))
    assert summary(changes) == [("buyers", "big", "exited")]


def test_schedule_points_at_the_hysteresis_expiry():
    state = AccountState("A1")
    process_event(state, order(1, 0, 10.0), DEFINITIONS)
    evaluate(state, DEFINITIONS, "t31", at=at(31))
    assert Schedule(DEFINITIONS).next_due(state) == at(36)


def test_schedule_points_at_window_edges_and_recency_crossings():
    state = AccountState("A1")
    process_event(state, order(1, 0, 10.0), DEFINITIONS)
    schedule = Schedule(DEFINITIONS)
    first_day = int(at(0) // DAY)
    assert schedule.next_due(state) == (first_day + 30) * DAY  # recency 30 / 30-day window
    state.clock = (first_day + 31) * DAY
    assert schedule.next_due(state) == (first_day + 90) * DAY  # the 90-day window edge


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.sampled_from([0.0, 10.0, 2000.0])), max_size=15))
def test_following_the_schedule_finds_every_time_driven_change(orders):
    """Sweeping only at due times gives the same memberships as evaluating every day."""
    history = sorted(orders)
    daily, swept = AccountState("A1"), AccountState("A1")
    schedule = Schedule(DEFINITIONS)

    def advance(until: float) -> None:
        if daily.clock:
            for day in range(int(daily.clock // DAY) + 1, int(until // DAY) + 1):
                evaluate(daily, DEFINITIONS, f"d{day}", at=day * DAY)
        while swept.clock and (due := schedule.next_due(swept)) is not None and due <= until:
            evaluate(swept, DEFINITIONS, f"s{due}", at=due)

    for n, (day, total) in enumerate(history):
        advance(at(day))
        process_event(daily, order(n, day, total), DEFINITIONS)
        process_event(swept, order(n, day, total), DEFINITIONS)
    advance(at(400))
    if history:
        evaluate(daily, DEFINITIONS, "end", at=at(400))
        evaluate(swept, DEFINITIONS, "end", at=at(400))
    assert _segments(swept) == _segments(daily)


def _segments(state: AccountState) -> dict[str, list[str]]:
    return {family: sorted(members) for family, members in state.memberships.items()}


TIERS_YAML = """
version: "h-2"
families:
  tier:
    exclusive: true
    segments:
      - id: top
        when: revenue_90d >= 1000
      - id: buying
        when: revenue_90d > 0
        min_dwell: 10d
      - id: idle
        when: true
"""
TIERS = load_definitions(TIERS_YAML, VOCABULARY)


def test_a_held_membership_whose_condition_holds_says_an_earlier_segment_matches():
    state = AccountState("A1")
    process_event(state, order(1, 0, 10.0), TIERS)
    assert process_event(state, order(2, 1, 1500.0), TIERS) == []  # "buying" dwells 10 days
    assert membership_reasons(state, TIERS)[("tier", "buying")] == (
        "held (min_dwell/exit_grace) since 2026-03-03; top comes first and now matches "
        "(revenue_90d=1510); this segment's own condition still holds: "
        "revenue_90d > 0 (revenue_90d=1510)"
    )
    exit_, entry = evaluate(state, TIERS, "t10", at=at(10))
    assert exit_.reason == "moved to top, which comes first and now matches (revenue_90d=1510)"
    assert (entry.segment_id, entry.reason) == ("top", "revenue_90d >= 1000 (revenue_90d=1510)")


def test_a_held_membership_whose_condition_turned_false_says_so():
    state = AccountState("A1")
    process_event(state, order(1, 0, 10.0), TIERS)
    process_event(state, order(2, 1, 1500.0), TIERS)  # held from day 1: "top" matches
    for n, amount in ((1, 10.0), (2, 1500.0)):  # both returned on day 3: nothing matches
        returned = OrderReturned(
            event_id=f"r{n}", occurred_at=T0 + timedelta(days=3), account_id="A1",
            order_id=f"o{n}", amount=amount,
        )  # fmt: skip
        assert process_event(state, returned, TIERS) == []
    # held since day 1, but its own condition held until day 3: no "no longer since day 1"
    assert membership_reasons(state, TIERS)[("tier", "buying")] == (
        "held (min_dwell/exit_grace) since 2026-03-03; no longer matches: "
        "revenue_90d > 0 (revenue_90d=0)"
    )
    (exit_, _) = evaluate(state, TIERS, "t10", at=at(10))
    assert exit_.reason == "moved to idle: no longer matches: revenue_90d > 0 (revenue_90d=0)"


def test_a_membership_not_evaluated_since_an_earlier_segment_matches_says_so():
    """explain reads the current features: a membership may predate a change the worker
    has not evaluated yet (a definitions change before the recompute)."""
    state = AccountState("A1")
    process_event(state, order(1, 0, 500.0), TIERS)
    lower = load_definitions(TIERS_YAML.replace(">= 1000", ">= 100"), VOCABULARY)
    assert membership_reasons(state, lower)[("tier", "buying")] == (
        "matched when last evaluated; top comes first and now matches (revenue_90d=500); "
        "this segment's own condition still holds: revenue_90d > 0 (revenue_90d=500)"
    )


# -- enter_after: an entry waits until the account has qualified long enough ----------

DEBOUNCED = load_definitions(
    """
version: "e-1"
families:
  apriori:
    exclusive: true
    segments:
      - {id: manufacturing, when: industry == "manufacturing"}
      - {id: unprofiled, when: true, enter_after: 1h}
  level:
    exclusive: true
    segments:
      - {id: high, when: revenue_90d >= 1000, enter_after: 2d}
      - {id: low, when: true}
  flags:
    exclusive: false
    segments:
      - {id: big, when: revenue_90d >= 1000, enter_after: 2d}
""",
    VOCABULARY,
)


def profile(n: int, at_time: datetime) -> AccountProfile:
    return AccountProfile(
        event_id=f"p{n}",
        occurred_at=at_time,
        account_id="A1",
        industry="manufacturing",
        employees=300,
        country="DE",
    )


def test_first_contact_does_not_flicker_through_a_placeholder_segment():
    state = AccountState("A1")
    first = process_event(state, order(1, 0, 50.0), DEBOUNCED) or []
    assert ("apriori", "unprofiled", "entered") not in summary(first)
    assert state.pending["apriori"] == {"unprofiled": at(0)}
    assert "apriori" not in state.memberships  # nowhere yet, not in the placeholder
    second = process_event(state, profile(1, T0 + timedelta(seconds=1)), DEBOUNCED) or []
    assert summary(second) == [("apriori", "manufacturing", "entered")]
    assert "apriori" not in state.pending


def test_a_pending_entry_completes_at_its_due_time_and_says_so():
    state = AccountState("A1")
    process_event(state, order(1, 0, 50.0), DEBOUNCED)
    due = Schedule(DEBOUNCED).next_due(state)
    assert due == at(0) + 3600
    changes = evaluate(state, DEBOUNCED, "time:x", at=due)
    (entered,) = [c for c in changes if c.family == "apriori"]
    assert (entered.segment_id, entered.change) == ("unprofiled", "entered")
    assert "qualified continuously since 2026-03-02T10:00:00+00:00" in entered.reason
    # The entry is the time sweep's: so its membership says, as the change did.
    assert (entered.origin, entered.live) == ("time", False)
    assert state.memberships["apriori"] == {
        "unprofiled": {"since": due, "origin": "time", "live": False}
    }


def test_while_an_entry_waits_an_exclusive_family_keeps_its_one_segment():
    state = AccountState("A1")
    assert summary(process_event(state, order(1, 0, 100.0), DEBOUNCED) or [])[-1:] == [
        ("level", "low", "entered")
    ]
    waiting = process_event(state, order(2, 1, 5_000.0), DEBOUNCED) or []
    assert [c for c in summary(waiting) if c[0] in ("level", "flags")] == []
    # still exactly one
    assert state.memberships["level"] == {"low": {"since": at(0), "origin": "event", "live": False}}
    assert state.pending["level"] == {"high": at(1)} and state.pending["flags"] == {"big": at(1)}
    moved = evaluate(state, DEBOUNCED, "time:y", at=at(3))
    assert [c for c in summary(moved) if c[0] in ("level", "flags")] == [
        ("level", "low", "exited"),
        ("level", "high", "entered"),
        ("flags", "big", "entered"),
    ]


def test_an_entry_that_stops_qualifying_is_forgotten():
    state = AccountState("A1")
    process_event(state, order(1, 0, 5_000.0), DEBOUNCED)
    assert state.pending["flags"] == {"big": at(0)}
    returned = OrderReturned(
        event_id="r1", occurred_at=T0 + timedelta(days=1), account_id="A1", order_id="o1",
        amount=4_900.0,
    )  # fmt: skip
    process_event(state, returned, DEBOUNCED)
    assert "flags" not in state.pending and "high" not in state.pending.get("level", {})
    assert not [c for c in evaluate(state, DEBOUNCED, "time:z", at=at(5)) if c.family == "flags"]


def test_enter_after_is_a_checked_key():
    try:
        load_definitions(
            'version: "1"\nfamilies:\n  f:\n    exclusive: false\n    segments:\n'
            "      - {id: a, when: true, enter_after: 2}\n",
            VOCABULARY,
        )
    except DefinitionsError as error:
        assert "enter_after" in str(error) and "invalid duration" in str(error)
    else:
        raise AssertionError("a duration without a unit was accepted")
