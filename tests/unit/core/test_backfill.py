"""Folding imported history (``worker.core.backfill``) against streaming it event by event."""

from __future__ import annotations

import copy
import json
import math
import random
from collections import defaultdict
from datetime import timedelta

import pytest

from tests.clock import TEST_NOW
from worker.config.settings import DEFAULT_DEFINITIONS
from worker.core.backfill import fold_history, memory_windows
from worker.core.definitions import load_definitions
from worker.core.events import AnyInputEvent, decode_input
from worker.core.families import Families, worker_families
from worker.core.features import VOCABULARY, AccountState
from worker.core.impact import Impact
from worker.core.processing import evaluate, process_event
from worker.core.schedule import Schedule
from worker.devtools.generator import generate_events, make_accounts

DAYS = 500
FAMILIES = worker_families(load_definitions(DEFAULT_DEFINITIONS, VOCABULARY))


@pytest.fixture(scope="module")
def history() -> dict[str, list[AnyInputEvent]]:
    """500 days of every input event type for 120 accounts, with import ids."""
    rng = random.Random(11)
    start = TEST_NOW - timedelta(days=DAYS)
    by_account: dict[str, list[AnyInputEvent]] = defaultdict(list)
    for _, event in generate_events(make_accounts(120, rng), start, DAYS, rng, id_prefix="imp"):
        decoded = decode_input(json.dumps(event))
        by_account[decoded.account_id].append(decoded)
    return dict(by_account)


def streamed(
    events: list[AnyInputEvent], families: Families, end: float
) -> tuple[AccountState, int]:
    """The worker's path: every event evaluated, and the time sweep at each due time.
    Returns the state and the number of evaluations."""
    schedule, impact = Schedule(families), Impact(families)
    state = AccountState(events[0].account_id)
    evaluations = 1
    for event in events:
        moment = event.occurred_at.timestamp()
        while (due := schedule.next_due(state)) is not None and due < moment:
            evaluate(state, families, "time", at=due)
            evaluations += 1
        process_event(state, event, families, None, impact=impact)
        evaluations += 1
    while (due := schedule.next_due(state)) is not None and due < end:
        evaluate(state, families, "time", at=due)
        evaluations += 1
    evaluate(state, families, "time", at=end)
    return state, evaluations


def fold(state: AccountState, events: list[AnyInputEvent], end: float, cause: str = "imp-f"):
    return fold_history(
        state,
        events,
        FAMILIES,
        end=end,
        cause=cause,
        windows=memory_windows(FAMILIES),
        impact=Impact(FAMILIES),
    )


def members(state: AccountState) -> dict[str, set[str]]:
    return {family: set(segments) for family, segments in state.memberships.items()}


def test_folding_reaches_the_features_memberships_and_pending_entries_of_streaming(history):
    end = TEST_NOW.timestamp()
    differing = []
    evaluations = streaming_evaluations = 0
    for account, events_of in history.items():
        folded_state = AccountState(account)
        folded = fold(folded_state, events_of, end)
        reference, count = streamed(events_of, FAMILIES, end)
        streaming_evaluations += count
        evaluations += folded.evaluations
        for facet in ("orders", "points", "campaigns", "categories", "roles", "profile"):
            assert getattr(folded_state, facet) == getattr(reference, facet), (account, facet)
        if (members(folded_state), folded_state.pending) != (
            members(reference),
            reference.pending,
        ):
            differing.append((account, members(folded_state), members(reference)))
    assert differing == []
    # Never more evaluations than streaming (most of the fold's are of one family).
    assert evaluations <= streaming_evaluations, (evaluations, streaming_evaluations)


def test_only_the_net_change_per_segment_is_emitted_and_never_live(history):
    end = TEST_NOW.timestamp()
    account, events_of = max(history.items(), key=lambda item: len(item[1]))
    first_half, second_half = events_of[: len(events_of) // 2], events_of[len(events_of) // 2 :]
    state = AccountState(account)
    middle = first_half[-1].occurred_at.timestamp()
    entered = fold(state, first_half, middle).changes
    before = members(state)
    assert entered and {c.change for c in entered} == {"entered"}
    changes = fold(state, second_half, end).changes
    after = members(state)
    for change in changes:
        was = change.segment_id in before.get(change.family, set())
        now = change.segment_id in after.get(change.family, set())
        assert was != now and change.change == ("entered" if now else "exited"), change
        assert change.origin == "import" and change.live is False
    every_difference = {
        (family, segment)
        for family in set(before) | set(after)
        for segment in before.get(family, set()) ^ after.get(family, set())
    }
    assert {(c.family, c.segment_id) for c in changes} == every_difference


def test_folding_the_same_history_again_applies_and_emits_nothing(history):
    end = TEST_NOW.timestamp()
    account, events_of = next(iter(history.items()))
    state = AccountState(account)
    first = fold(state, events_of, end)
    again = copy.deepcopy(state)
    second = fold(again, events_of, end)
    assert (second.applied, second.duplicates, second.changes) == (0, len(events_of), [])
    assert again == state
    # The same file into the same starting state: the same change ids.
    repeat = fold(AccountState(account), events_of, end)
    assert [c.change_id for c in repeat.changes] == [c.change_id for c in first.changes]


def test_how_far_back_each_family_is_evaluated():
    windows = memory_windows(FAMILIES)
    assert windows["value"] == 0  # no holds: the evaluation at the end only
    # enter_after 2d + exit_grace 14d (needs), the longest bounded chain: one window
    assert windows["needs"] == windows["apriori"] == 2 * 16 * 86_400 + 86_400
    assert windows["program"] == math.inf  # min_dwell: from the first event on


def test_an_account_is_not_evaluated_before_its_first_event():
    """A customer whose first order is the import's last event: its placeholder segments
    (``enter_after: 1h``) are pending at the end, as streaming leaves them."""
    from worker.core.events import OrderPlaced

    end = TEST_NOW.timestamp()
    order = OrderPlaced(
        event_id="imp-new", account_id="NEW", occurred_at=TEST_NOW, order_id="o-1", total=9.0
    )
    state = AccountState("NEW")
    folded = fold(state, [order], end)
    reference, _ = streamed([order], FAMILIES, end)
    assert members(state) == members(reference)
    assert state.pending == reference.pending and "apriori" in state.pending
    assert ("apriori", "unprofiled") not in {(c.family, c.segment_id) for c in folded.changes}
