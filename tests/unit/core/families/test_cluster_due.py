"""Cluster memberships follow time: an account is re-assigned the day time alone moves it.

The behaviour model reads ``recency_days``, which grows every day. The worker's due
index must hold the first day another centroid can win an account without an event
(``ClusterFamily.next_due``), so that sweeps at due times give the memberships a daily
re-evaluation of every account would give.
"""

from __future__ import annotations

import copy
import random
from collections import defaultdict

import pytest

from tests.unit.core.test_impact import history
from worker.config.settings import DEFAULT_DEFINITIONS, Settings
from worker.core.clustering import (
    BEHAVIOUR,
    NEEDS,
    Cluster,
    ClusterLearner,
    ClusterSnapshot,
    assign,
)
from worker.core.decoding import Record
from worker.core.definitions import load_definitions
from worker.core.families import raw_sample
from worker.core.families.clusters import days_until_switch
from worker.core.features import VOCABULARY, AccountState, FeatureView, Globals, apply
from worker.core.processing import evaluate
from worker.core.schedule import DAY
from worker.runtime.metrics import Metrics
from worker.runtime.processor import BatchProcessor

MEANS, STDS = (3.0, 5.0, 1.0, 1.0, 0.2), (1.5, 3.0, 1.0, 3.0, 0.2)


def random_model(rng: random.Random) -> ClusterSnapshot:
    clusters = tuple(
        Cluster(f"c{i + 1}", tuple(rng.gauss(0, 1.5) for _ in MEANS), 1)
        for i in range(rng.randint(2, 6))
    )
    return ClusterSnapshot(1, BEHAVIOUR, MEANS, STDS, clusters, len(clusters) + 1, 10)


@pytest.mark.parametrize("seed", range(4))
def test_the_solved_day_is_the_first_day_assign_moves_the_account(seed: int) -> None:
    rng = random.Random(seed)
    moved = 0
    for _ in range(500):
        model = random_model(rng)
        features = {
            "recency_days": rng.choice([0, 1, rng.randint(0, 399)]),
            "revenue_365d": rng.choice([0.0, 10 ** rng.uniform(0, 5)]),
            "orders_365d": rng.randint(0, 50),
            "points_earned_365d": rng.randint(0, 5000),
            "response_rate_365d": rng.random(),
        }
        margin = rng.choice([0.0, 0.1, 0.3])
        current = assign(features, model, rng.choice(model.ids), margin)
        first = None
        for days in range(1, 401):  # recency is capped at 400: nothing changes after
            later = {**features, "recency_days": features["recency_days"] + days}
            if assign(later, model, current, margin) != current:
                first = days
                break
        moved += first is not None
        assert days_until_switch(model, features, current, margin, "recency_days") == first
    assert moved > 50  # the growing recency does move accounts


def trained_models(events: list, seed: int) -> Globals:
    """Behaviour and needs models of the accounts' features halfway through ``events``."""
    states: dict[str, AccountState] = {}
    for event in events[: len(events) // 2]:
        apply(states.setdefault(event.account_id, AccountState(event.account_id)), event)
    models = {}
    for family, spec in (("cluster", BEHAVIOUR), ("needs_cluster", NEEDS)):
        learner = ClusterLearner(spec, n_clusters=4, warmup=20, seed=seed)
        for state in states.values():
            learner.learn_one(raw_sample(FeatureView(state, state.now_day), spec))
        models[family] = learner.snapshot(1)
    return Globals.from_thresholds(None, models)


@pytest.mark.parametrize("seed", [21, 22])
def test_sweeps_at_due_times_keep_clusters_as_daily_evaluation_does(seed: int) -> None:
    """The worker's own batch steps (``BatchProcessor._apply`` for events, ``_reevaluate``
    for the time sweep at the due times they index) against evaluating every account
    every day: the cluster memberships agree on every day."""
    definitions = load_definitions(DEFAULT_DEFINITIONS, VOCABULARY)
    events = history(accounts=25, days=400, seed=seed)
    globals = trained_models(events, seed)
    processor = BatchProcessor(Settings(), definitions, None, None, Metrics())  # type: ignore[arg-type]
    swept: dict[str, AccountState] = {}
    daily: dict[str, AccountState] = {}
    due: dict[str, float | None] = {}
    by_day = defaultdict(list)
    for offset, event in enumerate(events):
        by_day[int(event.occurred_at.timestamp() // DAY)].append((offset, event))
    first, last = min(by_day), max(by_day) + 120  # and four months without events
    time_moves = 0
    for day in range(first, last + 1):
        now = day * DAY
        for account in [a for a, at in due.items() if at is not None and at <= now]:
            result = processor._reevaluate({account: swept[account]}, globals, "time", now)
            due.update(result.due)
            time_moves += sum(c.family == "cluster" for c in result.changes)
        for state in daily.values():
            evaluate(state, definitions, "daily", globals, at=now)
        for offset, event in by_day.get(day, []):
            account = event.account_id
            state = swept.setdefault(account, AccountState(account))
            record = Record("orders", 0, offset, account.encode(), b"")
            due.update(processor._apply({account: state}, globals, [(event, record)]).due)
            reference = daily.setdefault(account, AccountState(account))
            processor._apply({account: reference}, globals, [(event, copy.copy(record))])
        held = {a: s.memberships.get("cluster") for a, s in swept.items()}
        expected = {a: s.memberships.get("cluster") for a, s in daily.items()}
        assert {a: set(m or ()) for a, m in held.items()} == {
            a: set(m or ()) for a, m in expected.items()
        }, f"day {day - first}"
    assert time_moves > 0  # accounts did move between clusters without an event


def test_an_account_without_events_leaves_the_recent_cluster_on_the_solved_day() -> None:
    """Hand-made: one cluster of recent buyers, one of lapsed ones; an order, then nothing."""
    model = ClusterSnapshot(
        1,
        BEHAVIOUR,
        MEANS,
        STDS,
        (Cluster("c1", (-1.0, 0, 0, 0, 0), 5), Cluster("c2", (1.0, 0, 0, 0, 0), 5)),
        next_id=3,
        samples=10,
    )
    globals = Globals(clusters={"cluster": model})
    definitions = load_definitions(DEFAULT_DEFINITIONS, VOCABULARY)
    processor = BatchProcessor(Settings(), definitions, None, None, Metrics())  # type: ignore[arg-type]
    [event] = [e for e in history(accounts=1, days=30, seed=3) if e.type == "order_placed"][:1]
    state = AccountState(event.account_id)
    result = processor._apply(
        {state.account_id: state}, globals, [(event, Record("o", 0, 0, None, b""))]
    )
    assert set(state.memberships["cluster"]) == {"c1"}
    (cluster,) = [f for f in processor.families.bind(globals) if f.id == "cluster"]
    moves_at = cluster.next_due(state, FeatureView(state, state.now_day, globals))
    assert moves_at is not None and moves_at > state.clock
    due = result.due[state.account_id]
    assert due is not None and due <= moves_at  # the sweep comes by then (or earlier)

    def cluster_moves(at: float) -> list[tuple[str, str]]:
        changes = evaluate(copy.deepcopy(state), definitions, "t", globals, at=at)
        return [(c.segment_id, c.change) for c in changes if c.family == "cluster"]

    assert cluster_moves(moves_at - DAY) == []
    assert cluster_moves(moves_at) == [("c1", "exited"), ("c2", "entered")]
