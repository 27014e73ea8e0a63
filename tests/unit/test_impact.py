"""Skipping the families an event cannot change must never change an outcome.

The reference evaluates every family on every event; the worker's path skips what
``Impact`` says is unaffected. Both see the same synthetic history and the same
sweeps at due times, and must emit identical changes (ids, reasons, values) and end
with identical memberships.
"""

from __future__ import annotations

import json
import random
from copy import deepcopy
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest

from worker.events import decode_input
from worker.features import (
    FEATURE_INPUTS,
    FEATURES,
    GLOBAL_FEATURES,
    TOUCHES,
    VOCABULARY,
    AccountState,
    FeatureView,
    apply,
)
from worker.generator import generate_events, make_accounts
from worker.impact import Impact, family_inputs, fingerprint
from worker.processing import evaluate, process_event
from worker.rules import load_definitions
from worker.schedule import Schedule
from worker.settings import DEFAULT_DEFINITIONS

HYSTERESIS = """
version: "h-1"
families:
  activity:
    exclusive: false
    segments:
      - {id: recent, when: recency_days <= 30, exit_grace: 5d}
      - {id: steady, when: orders_90d >= 2, min_dwell: 20d}
  program:
    exclusive: true
    segments:
      - {id: gold, when: tier == "gold", exit_grace: 10d}
      - {id: earning, when: points_earned_90d > 0, min_dwell: 15d}
      - {id: none, when: true}
  engagement:
    exclusive: false
    segments:
      - {id: opener, when: campaigns_opened_90d >= 1, exit_grace: 3d}
      - {id: decider, when: decider_engaged_30d}
  firmographic:
    exclusive: true
    segments:
      - {id: big, when: 'size_class in ["large", "enterprise"]'}
      - {id: other, when: true}
  needs:
    exclusive: false
    segments:
      - {id: tools, when: share("tools") >= 0.4, exit_grace: 7d}
"""


def history(accounts: int, days: int, seed: int) -> list:
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=days + 1)
    return [
        decode_input(json.dumps(event).encode())
        for _topic, event in generate_events(make_accounts(accounts, rng), start, days, rng)
    ]


def replay(definitions, events, impact: Impact | None, sweep_days: int | None):
    """Events in order, plus a sweep of every due account every ``sweep_days`` (or never).

    Sweeps that lag behind due times are the worker's normal case: an event may then
    arrive after its account's due time, and the skipped families must be evaluated.
    """
    schedule = Schedule(definitions)
    states: dict[str, AccountState] = {}
    changes = []
    swept_day = None
    for event in events:
        day = int(event.occurred_at.timestamp() // 86400)
        if sweep_days is not None and (swept_day is None or day >= swept_day + sweep_days):
            swept_day = day
            for state in states.values():
                due = schedule.next_due(state)
                if due is not None and due <= day * 86400:
                    changes += evaluate(state, definitions, f"time:{day}", at=day * 86400)
                    if impact is not None:
                        impact.mark(state, schedule.next_due(state))
        state = states.setdefault(event.account_id, AccountState(event.account_id))
        changes += process_event(state, event, definitions, impact=impact) or []
        if impact is not None:
            impact.mark(state, schedule.next_due(state))
    return changes, {account: state.memberships for account, state in states.items()}


@pytest.mark.parametrize(
    ("source", "seed", "sweep_days"),
    [
        (DEFAULT_DEFINITIONS, 1, 1),
        (DEFAULT_DEFINITIONS, 1, None),
        (HYSTERESIS, 2, 1),
        (HYSTERESIS, 3, 7),
        (HYSTERESIS, 3, None),
    ],
)
def test_skipping_unaffected_families_changes_nothing(source, seed, sweep_days):
    definitions = load_definitions(source, VOCABULARY)
    events = history(accounts=25, days=200, seed=seed)
    impact = Impact(definitions)
    skipped = sum(len(impact.unaffected(AccountState("x"), e)) for e in events)
    assert skipped == 0  # an unmarked state is always evaluated in full

    reference, reference_memberships = replay(definitions, events, None, sweep_days)
    fast, fast_memberships = replay(definitions, events, impact, sweep_days)

    assert len(reference) > 100
    assert [c.model_dump() for c in fast] == [c.model_dump() for c in reference]
    assert fast_memberships == reference_memberships


def test_the_worker_path_does_skip_families():
    definitions = load_definitions(HYSTERESIS, VOCABULARY)
    impact = Impact(definitions)
    schedule = Schedule(definitions)
    skipped = 0
    states: dict[str, AccountState] = {}
    for event in history(accounts=10, days=120, seed=4):
        state = states.setdefault(event.account_id, AccountState(event.account_id))
        skipped += len(impact.unaffected(state, event))
        process_event(state, event, definitions, impact=impact)
        impact.mark(state, schedule.next_due(state))
    assert skipped > 0


def test_an_applied_event_clears_the_mark_until_evaluated():
    definitions = load_definitions(HYSTERESIS, VOCABULARY)
    impact = Impact(definitions)
    event = history(accounts=1, days=5, seed=5)[0]
    state = AccountState(event.account_id)
    impact.mark(state, None)
    assert impact.is_marked(state)
    assert apply(state, event)
    assert not impact.is_marked(state)


def test_other_definitions_invalidate_the_mark():
    one = load_definitions(HYSTERESIS, VOCABULARY)
    other = load_definitions(HYSTERESIS.replace("orders_90d >= 2", "orders_90d >= 3"), VOCABULARY)
    assert fingerprint(one) != fingerprint(other)
    state = AccountState("A")
    Impact(one).mark(state, None)
    assert not Impact(other).is_marked(state)


def test_family_inputs_follow_features_and_functions():
    definitions = load_definitions(HYSTERESIS, VOCABULARY)
    inputs = {family.id: family_inputs(family) for family in definitions.families}
    assert inputs["firmographic"] == {"profile"}
    assert inputs["needs"] == {"categories"}
    assert inputs["activity"] == {"last_order_day", "orders"}


def test_every_feature_declares_its_inputs():
    assert set(FEATURE_INPUTS) == set(FEATURES) | set(GLOBAL_FEATURES)


class _Recorder:
    """An AccountState stand-in that records which attributes a feature reads."""

    def __init__(self, state: AccountState) -> None:
        object.__setattr__(self, "_state", state)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name: str):
        self.read.add(name)
        return getattr(self._state, name)


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_a_feature_reads_only_its_declared_inputs(name):
    events = history(accounts=3, days=60, seed=6)
    state = AccountState(events[0].account_id)
    for event in events:
        if event.account_id == state.account_id:
            apply(state, event)
    recorder = _Recorder(state)
    FeatureView(recorder, state.now_day)[name]  # type: ignore[arg-type]
    assert recorder.read <= FEATURE_INPUTS[name]


def test_an_event_changes_only_the_attributes_it_declares():
    bookkeeping = {"clock", "applied", "recent_ids", "imported_until", "evaluated"}
    seen: set[type] = set()
    states: dict[str, AccountState] = {}
    for event in history(accounts=20, days=120, seed=7):
        state = states.setdefault(event.account_id, AccountState(event.account_id))
        before = deepcopy(state)
        apply(state, event)
        changed = {
            f.name for f in fields(state) if getattr(state, f.name) != getattr(before, f.name)
        }
        # pruning drops rows no window reaches any more; that is not a feature change
        pruned = {"orders", "points", "campaigns", "categories"} & changed
        for attribute in pruned - TOUCHES[type(event)]:
            kept = getattr(state, attribute)
            old = getattr(before, attribute)
            assert all(item in old for item in kept), attribute
        assert changed - bookkeeping - pruned <= TOUCHES[type(event)]
        seen.add(type(event))
    assert seen == set(TOUCHES)
