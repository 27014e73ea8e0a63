"""A kind of family the worker does not ship goes through evaluation, impact and the
schedule like the shipped ones (``tests/familykinds.py``; the HTTP views and the report
are covered in ``tests/integration/test_family_kinds.py``)."""

from __future__ import annotations

from datetime import timedelta

from tests.clock import TEST_NOW
from tests.familykinds import DAY, DORMANT_AFTER, SpendBands
from tests.unit.core.test_impact import history, replay
from worker.config.settings import DEFAULT_DEFINITIONS
from worker.core.definitions import load_definitions
from worker.core.events import AccountProfile, CampaignInteraction, OrderPlaced
from worker.core.families import worker_families
from worker.core.features import VOCABULARY, AccountState
from worker.core.impact import Impact
from worker.core.processing import evaluate, membership_reasons, process_event
from worker.core.schedule import Schedule

DEFINITIONS = load_definitions(DEFAULT_DEFINITIONS, VOCABULARY)
FAMILIES = worker_families(DEFINITIONS, SpendBands())


def order(n: int, days: int, total: float) -> OrderPlaced:
    return OrderPlaced(
        event_id=f"o-{n}",
        occurred_at=TEST_NOW - timedelta(days=100) + timedelta(days=days),
        account_id="ACME",
        order_id=f"SO-{n}",
        total=total,
    )


def opened(n: int, days: int) -> CampaignInteraction:
    return CampaignInteraction(
        event_id=f"c-{n}",
        occurred_at=TEST_NOW - timedelta(days=100) + timedelta(days=days),
        account_id="ACME",
        campaign_id="spring",
        kind="opened",
    )


def test_it_is_evaluated_explained_and_emitted_like_the_others() -> None:
    state = AccountState("ACME")
    changes = process_event(state, order(1, 0, 400.0), FAMILIES) or []
    bands = [(c.segment_id, c.change, c.reason) for c in changes if c.family == "spend_band"]
    assert bands == [("small", "entered", "revenue_365d < 1000 (revenue_365d=400)")]
    changes = process_event(state, order(2, 1, 2_000.0), FAMILIES) or []
    moved = [(c.segment_id, c.change) for c in changes if c.family == "spend_band"]
    assert moved == [("small", "exited"), ("mid", "entered")]
    reasons = membership_reasons(state, FAMILIES)
    assert reasons[("spend_band", "mid")] == "revenue_365d < 10000 (revenue_365d=2400)"


def test_impact_skips_it_only_for_events_that_touch_none_of_its_inputs() -> None:
    impact, schedule = Impact(FAMILIES), Schedule(FAMILIES)
    state = AccountState("ACME")
    process_event(state, order(1, 0, 400.0), FAMILIES, impact=impact)
    impact.mark(state, schedule.next_due(state))
    # A campaign interaction counts as activity: it may wake a dormant account.
    assert "spend_band" not in impact.unaffected(state, opened(1, 2))
    assert "spend_band" not in impact.unaffected(state, order(2, 2, 10.0))
    profile = AccountProfile(
        event_id="p-1",
        occurred_at=TEST_NOW - timedelta(days=100, minutes=-10),  # before any due time
        account_id="ACME",
        industry="retail",
        employees=12,
        country="DE",
    )
    assert "spend_band" in impact.unaffected(state, profile)  # reads neither rows nor days
    assert impact.inputs["spend_band"] == {"orders", "last_activity_day"}
    assert impact.family_fingerprints["spend_band"] != impact.family_fingerprints["value"]


def test_the_schedule_asks_it_when_time_alone_changes_its_answer() -> None:
    schedule = Schedule(FAMILIES)
    state = AccountState("ACME")
    process_event(state, order(1, 0, 400.0), FAMILIES)
    last = state.last_activity_day
    assert last is not None
    due = schedule.next_due(state)
    assert due is not None and due <= (last + DORMANT_AFTER) * DAY
    # Swept at every due time, the account becomes dormant on the 45th day, no sooner.
    changes = []
    while (due := schedule.next_due(state)) is not None and due <= (last + 60) * DAY:
        changes += [
            (int(due // DAY) - last, c.segment_id, c.change)
            for c in evaluate(state, FAMILIES, f"time:{due}", at=due)
            if c.family == "spend_band"
        ]
    assert changes == [(DORMANT_AFTER, "small", "exited"), (DORMANT_AFTER, "dormant", "entered")]


def test_skipping_it_changes_nothing_over_a_generated_history() -> None:
    events = history(accounts=20, days=150, seed=4)
    reference, reference_memberships = replay(FAMILIES, events, None, 1)
    fast, fast_memberships = replay(FAMILIES, events, Impact(FAMILIES), 1)
    assert sum(c.family == "spend_band" for c in reference) > 20
    assert [c.model_dump() for c in fast] == [c.model_dump() for c in reference]
    assert fast_memberships == reference_memberships
