"""Skipping the families an event cannot change must never change an outcome.

The reference evaluates every family on every event; the worker's path skips what
``Impact`` says is unaffected. Both see the same synthetic history and the same
sweeps at due times, and must emit identical changes (ids, reasons, values) and end
with identical memberships. With cluster models, both also see the same models
published, replaced, rolled back and re-read with another margin mid-replay, each
followed by the worker's re-assignment pass.
"""

from __future__ import annotations

import json
import random
from copy import deepcopy
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest

from tests.clock import TEST_NOW
from worker.config.settings import DEFAULT_DEFINITIONS
from worker.core.clustering import (
    BEHAVIOUR,
    NEEDS,
    Cluster,
    ClusterLearner,
    ClusterSnapshot,
    Dimension,
    FeatureSpec,
    needs_spec,
)
from worker.core.clustering import DEFAULT_CATEGORIES as NEEDS_CATEGORIES
from worker.core.definitions import load_definitions
from worker.core.events import (
    AccountProfile,
    CampaignInteraction,
    OrderLine,
    OrderPlaced,
    decode_input,
)
from worker.core.families import raw_sample
from worker.core.families.clusters import ClusterFamily, spec_inputs
from worker.core.families.rules import family_inputs
from worker.core.features import (
    FEATURE_INPUTS,
    FEATURES,
    GLOBAL_FEATURES,
    GLOBAL_INPUT,
    TOUCHES,
    VOCABULARY,
    AccountState,
    FeatureView,
    Globals,
    apply,
)
from worker.core.features.inputs import prune
from worker.core.impact import Impact
from worker.core.processing import evaluate, process_event
from worker.core.schedule import Schedule, stable_until
from worker.devtools.generator import generate_events, make_accounts

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


#: The programme family without holds or debounce: every change shows at once.
PROGRAM = """
version: "p-1"
families:
  program:
    exclusive: true
    segments:
      - {id: champions, when: points_earned_90d >= 2000}
      - {id: active_members, when: points_earned_90d > 0 or points_redeemed_90d > 0}
      - {id: dormant_members, when: is_member}
      - {id: never_participated, when: true}
  region:
    exclusive: true
    segments:
      - {id: dach, when: 'country in ["DE", "AT", "CH"]'}
      - {id: elsewhere, when: true}
"""

#: Entry debounce in exclusive and non-exclusive families, beside the holds.
DEBOUNCED = """
version: "d-1"
families:
  apriori:
    exclusive: true
    segments:
      - {id: big, when: 'size_class in ["large", "enterprise"]'}
      - {id: unprofiled, when: true, enter_after: 1h}
  program:
    exclusive: true
    segments:
      - {id: earning, when: points_earned_90d > 0, enter_after: 3d, exit_grace: 2d}
      - {id: none, when: true}
  needs:
    exclusive: false
    segments:
      - {id: tools, when: share("tools") >= 0.4, enter_after: 10d}
      - {id: opener, when: campaigns_opened_90d >= 1, enter_after: 1d, min_dwell: 5d}
"""


def history(accounts: int, days: int, seed: int) -> list:
    rng = random.Random(seed)
    start = TEST_NOW - timedelta(days=days + 1)
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
        (DEBOUNCED, 5, 1),
        (DEBOUNCED, 6, 3),
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
    assert Impact(one).fingerprint != Impact(other).fingerprint
    state = AccountState("A")
    Impact(one).mark(state, None)
    assert not Impact(other).is_marked(state)


def test_redefined_names_the_families_a_new_version_changed_added_or_removed():
    one = load_definitions(HYSTERESIS, VOCABULARY)
    changed = HYSTERESIS.replace("orders_90d >= 2", "orders_90d >= 3")  # activity
    changed = changed.replace(
        "  firmographic:",
        "  size:\n    exclusive: false\n    segments:\n"
        "      - {id: many, when: employees >= 100}\n  firmographic:",
    )
    changed = changed.replace("      - {id: decider, when: decider_engaged_30d}\n", "")
    other = Impact(load_definitions(changed, VOCABULARY))
    state = AccountState("A")
    assert other.redefined(state, {}) is None  # never evaluated: not known
    Impact(one).mark(state, None)
    assert other.redefined(state, {}) is None  # its definitions were not recorded
    previous = {Impact(one).fingerprint: Impact(one).family_fingerprints}
    assert other.redefined(state, previous) == {"activity", "size", "engagement"}
    assert Impact(one).redefined(state, previous) == frozenset()


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


def one_account(days: int) -> AccountState:
    """The first synthetic account's state after ``days`` of its history."""
    events = history(accounts=3, days=days, seed=6)
    state = AccountState(events[0].account_id)
    for event in events:
        if event.account_id == state.account_id:
            apply(state, event)
    return state


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_a_feature_reads_only_its_declared_inputs(name):
    state = one_account(days=60)
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


# ------------------------------------------------------------------ cluster families

BEHAVIOUR_FAMILY, NEEDS_FAMILY = "cluster", "needs_cluster"


def train(
    events: list, until: int, spec: FeatureSpec, version: int, seed: int, previous=None
) -> ClusterSnapshot:
    """A model of ``spec`` trained on the accounts' features after ``events[:until]``."""
    states: dict[str, AccountState] = {}
    for event in events[:until]:
        apply(states.setdefault(event.account_id, AccountState(event.account_id)), event)
    learner = ClusterLearner(spec, n_clusters=4, warmup=20, seed=seed)
    for state in states.values():
        learner.learn_one(raw_sample(FeatureView(state, state.now_day), spec))
    return learner.snapshot(version, previous=previous)


def model_timeline(events: list) -> list[tuple[int, Globals, bool]]:
    """``(first event index, globals, re-assigned)``: configured but untrained, then
    published models, one family replaced at a time, the margin lowered (a restart with
    other settings) and a rollback to an earlier model. After a published model the
    worker re-assigns every account (``BatchProcessor.reassign_clusters``) while events
    go on, so some events meet a new model first; here some never get such a pass."""
    n = len(events)
    b1 = train(events, n // 5, BEHAVIOUR, 1, seed=1)
    n1 = train(events, n // 5, NEEDS, 1, seed=1)
    b2 = train(events, n // 2, BEHAVIOUR, 2, seed=2, previous=b1)
    n2 = train(events, 3 * n // 5, NEEDS, 2, seed=2, previous=n1)

    def models(behaviour, needs, margin=0.3):
        clusters = {BEHAVIOUR_FAMILY: behaviour, NEEDS_FAMILY: needs}
        return Globals.from_thresholds(None, clusters, cluster_margin=margin)

    return [
        (0, models(None, None), False),
        (n // 10, models(b1, n1), True),
        (2 * n // 5, models(b2, n1), True),
        (n // 2, models(b2, n2), False),
        (3 * n // 5, models(b2, n2, margin=0.0), False),
        (4 * n // 5, models(b2, n1, margin=0.0), True),  # rolled back
    ]


def replay_with_models(
    definitions, events, impact: Impact | None, batch: int, sweep_days: int | None
):
    """Like ``replay``, but in batches as the worker runs them (marks at the end of a
    batch, so later events of an account in a batch meet an unmarked evaluation), with
    the models of ``model_timeline``; a re-assignment pass runs ``len(events) // 25``
    events after its model (re-assigning only the new model's family, as the worker
    does, which leaves the mark)."""
    schedule = Schedule(definitions)
    timeline = model_timeline(events)
    lag = len(events) // 25
    states: dict[str, AccountState] = {}
    changes = []
    skipped: dict[str, int] = {BEHAVIOUR_FAMILY: 0, NEEDS_FAMILY: 0}
    globals = timeline[0][1]
    passes: list[tuple[int, set[str]]] = []
    swept_day = None
    for start in range(0, len(events), batch):
        for first, models, reassigned in timeline:
            if start <= first < start + batch:
                new = {f for f, s in models.clusters.items() if s is not globals.clusters[f]}
                globals = models
                if reassigned:
                    passes.append((first + lag, new))
        for first, new in passes:
            if start <= first < start + batch:
                for state in states.values():
                    changes += evaluate(state, definitions, "reassign", globals, only=new)
        day = int(events[start].occurred_at.timestamp() // 86400)
        if sweep_days is not None and (swept_day is None or day >= swept_day + sweep_days):
            swept_day = day
            for state in states.values():
                due = schedule.next_due(state)
                if due is not None and due <= day * 86400:
                    changes += evaluate(state, definitions, f"time:{day}", globals, day * 86400)
                    if impact is not None:
                        impact.mark(state, schedule.next_due(state))
        touched = set()
        for event in events[start : start + batch]:
            state = states.setdefault(event.account_id, AccountState(event.account_id))
            if impact is not None:
                for family in impact.unaffected(state, event, globals) & set(skipped):
                    skipped[family] += 1
            changes += process_event(state, event, definitions, None, globals, impact) or []
            touched.add(event.account_id)
        if impact is not None:  # the end of the batch (``BatchProcessor._index``)
            for account in touched:
                impact.mark(states[account], schedule.next_due(states[account]))
    memberships = {account: state.memberships for account, state in states.items()}
    return changes, memberships, skipped


def with_profiles(events: list, every: int = 3) -> list:
    """``events`` plus, after every ``every``-th, a profile of its account some hours
    later (the same day or the next): events that touch no cluster spec's input."""
    out = []
    for i, event in enumerate(events):
        out.append(event)
        if i % every == 0:
            out.append(
                AccountProfile(
                    event_id=f"profile-{i}", account_id=event.account_id,
                    occurred_at=event.occurred_at + timedelta(hours=i % 17),
                    industry=("retail", "construction")[i % 2], employees=10 + i % 500,
                    country="DE",
                )
            )  # fmt: skip
    return out


@pytest.mark.parametrize(
    ("source", "seed", "batch", "sweep_days"),
    [
        (DEFAULT_DEFINITIONS, 11, 40, 1),
        (DEFAULT_DEFINITIONS, 14, 1, None),
        (HYSTERESIS, 12, 1, 3),
        (HYSTERESIS, 13, 200, 7),
    ],
)
def test_skipping_cluster_families_changes_nothing(source, seed, batch, sweep_days):
    definitions = load_definitions(source, VOCABULARY)
    events = with_profiles(history(accounts=20, days=450, seed=seed))

    reference, reference_memberships, _ = replay_with_models(
        definitions, events, None, batch, sweep_days
    )
    fast, fast_memberships, skipped = replay_with_models(
        definitions, events, Impact(definitions), batch, sweep_days
    )

    moves = [c for c in reference if c.family in skipped and c.cause == "reassign"]
    assert moves, "the new models must move some accounts for this to test anything"
    assert skipped[NEEDS_FAMILY] > 500 and skipped[BEHAVIOUR_FAMILY] > 100
    assert [c.model_dump() for c in fast] == [c.model_dump() for c in reference]
    assert fast_memberships == reference_memberships


def _needs_globals(margin: float = 0.1) -> Globals:
    events = history(accounts=30, days=120, seed=14)
    return Globals(
        clusters={NEEDS_FAMILY: train(events, len(events), NEEDS, 1, 1)}, cluster_margin=margin
    )


#: A day after 2000 (events before are refused) that starts the category bucket 667.
DAY0 = 667 * 30


def _opened(day: int, account: str = "A") -> CampaignInteraction:
    """An "opened" campaign event on ``DAY0 + day``: it touches no cluster spec's input."""
    return CampaignInteraction(
        event_id=f"o{day}", account_id=account, kind="opened", campaign_id="c",
        occurred_at=datetime.fromtimestamp((DAY0 + day) * 86400 + 3600, UTC),
    )  # fmt: skip


def test_a_cluster_family_is_skipped_only_with_the_snapshot_and_margin_it_was_assigned_with():
    definitions = load_definitions(DEFAULT_DEFINITIONS, VOCABULARY)
    impact, globals = Impact(definitions), _needs_globals()
    state = AccountState("A", clock=DAY0 * 86400)
    evaluate(state, definitions, "x", globals)
    assert impact.unaffected(state, _opened(0), globals) == {NEEDS_FAMILY}
    assert not impact.unaffected(state, _opened(0), _needs_globals(margin=0.2))
    events = history(accounts=30, days=120, seed=15)
    retrained = Globals(clusters={NEEDS_FAMILY: train(events, len(events), NEEDS, 2, 1)})
    assert not impact.unaffected(state, _opened(0), retrained)
    assert not impact.unaffected(state, _opened(0), Globals(clusters={NEEDS_FAMILY: None}))


def test_a_cluster_family_is_skipped_only_until_time_may_move_its_features():
    definitions = load_definitions(DEFAULT_DEFINITIONS, VOCABULARY)
    impact = Impact(definitions)
    events = history(accounts=30, days=120, seed=14)
    behaviour = train(events, len(events), BEHAVIOUR, 1, 1)
    globals = Globals(clusters={BEHAVIOUR_FAMILY: behaviour, **_needs_globals().clusters})
    # spend in bucket 667 leaves the trailing year on day DAY0 + 365
    state = AccountState(
        "A", clock=(DAY0 + 50) * 86400, last_order_day=DAY0 + 10,
        orders=[[DAY0 + 10, 50.0, 1]], categories={"667": {"tools": 50.0}},
    )  # fmt: skip
    evaluate(state, definitions, "x", globals)
    # a profile touches neither spec's inputs, a campaign event behaviour's response rate
    assert impact.unaffected(state, _profile(49), globals) == {BEHAVIOUR_FAMILY, NEEDS_FAMILY}
    assert impact.unaffected(state, _profile(50), globals) == {BEHAVIOUR_FAMILY, NEEDS_FAMILY}
    assert impact.unaffected(state, _opened(50), globals) == {NEEDS_FAMILY}
    # recency_days is one more the next day; the shares only move when the spend leaves
    assert impact.unaffected(state, _profile(51), globals) == {NEEDS_FAMILY}
    assert impact.unaffected(state, _profile(364), globals) == {NEEDS_FAMILY}
    assert impact.unaffected(state, _profile(365), globals) == set()


def _profile(day: int) -> AccountProfile:
    """A profile of account A on ``DAY0 + day``."""
    return AccountProfile(
        event_id=f"p{day}", account_id="A", industry="retail", employees=5, country="DE",
        occurred_at=datetime.fromtimestamp((DAY0 + day) * 86400 + 7200, UTC),
    )  # fmt: skip


def _order(day: int, category: str, amount: float) -> OrderPlaced:
    return OrderPlaced(
        event_id=f"order-{day}", account_id="A", order_id=f"o-{day}", total=amount,
        occurred_at=datetime.fromtimestamp((DAY0 + day) * 86400 + 3600, UTC),
        lines=[OrderLine(sku="s", category=category, quantity=1, unit_price=amount)],
    )  # fmt: skip


def test_spend_leaving_the_year_moves_the_needs_cluster_at_the_next_event():
    """The share of a category moves with no event in it, when its spend leaves the
    year: the first event after that (one the needs shares do not read) must reassign."""
    definitions = load_definitions(DEFAULT_DEFINITIONS, VOCABULARY)
    snapshot = ClusterSnapshot(
        version=1, spec=needs_spec(["tools", "office"]), means=(0.5, 0.5), stds=(0.4, 0.4),
        clusters=(Cluster("c1", (1.0, -1.0), 10), Cluster("c2", (-1.0, 1.0), 10)),
        next_id=3, samples=20,
    )  # fmt: skip
    globals = Globals(clusters={NEEDS_FAMILY: snapshot})
    events = [_order(5, "tools", 900.0), _order(200, "office", 300.0), _opened(370)]
    outcomes = []
    for impact in (None, Impact(definitions)):
        state = AccountState("A")
        changes = []
        for event in events:
            changes += process_event(state, event, definitions, None, globals, impact) or []
            if impact is not None:
                impact.mark(state, Schedule(definitions).next_due(state))
        assert state.memberships[NEEDS_FAMILY].keys() == {"c2"}  # office only now
        outcomes.append([c.model_dump() for c in changes if c.family == NEEDS_FAMILY])
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][-1]["cause"] == "o370"


def test_cluster_families_skip_only_on_a_record_an_evaluation_wrote():
    definitions = load_definitions(DEFAULT_DEFINITIONS, VOCABULARY)
    impact, globals = Impact(definitions), _needs_globals()
    state = AccountState("A", clock=DAY0 * 86400)
    impact.mark(state, None)  # an older worker's mark: no cluster record
    assert state.evaluated == [impact.fingerprint, None]
    assert NEEDS_FAMILY not in impact.unaffected(state, _opened(0), globals)
    evaluate(state, definitions, "x", globals)
    impact.mark(state, None)
    assert NEEDS_FAMILY in impact.unaffected(state, _opened(0), globals)
    assert apply(state, _opened(0))  # an applied event clears the record with the mark
    assert not impact.unaffected(state, _opened(1), globals)
    evaluate(state, definitions, "x", globals)
    assert impact.unaffected(state, _opened(1), globals) == {NEEDS_FAMILY}
    evaluate(state, definitions, "x", globals, only={"value"})  # a family left out
    assert not impact.unaffected(state, _opened(1), globals)


def test_an_evaluation_records_its_day_and_cluster_models_in_the_mark():
    definitions = load_definitions(DEFAULT_DEFINITIONS, VOCABULARY)
    impact, globals = Impact(definitions), _needs_globals()
    state = AccountState("A", clock=DAY0 * 86400, categories={"667": {"tools": 5.0}})
    evaluate(state, definitions, "x", globals)
    token = ClusterFamily(NEEDS_FAMILY, globals.clusters[NEEDS_FAMILY], 0.1).model_token
    assert state.evaluated == [None, None, DAY0, token]  # until the mark
    impact.mark(state, 123.0)
    assert state.evaluated == [impact.fingerprint, 123.0, DAY0, token]
    assert AccountState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    evaluate(state, definitions, "x", globals, at=(DAY0 + 1) * 86400)
    assert state.evaluated == [impact.fingerprint, 123.0, DAY0 + 1, token]


def test_a_record_of_another_day_than_the_accounts_vouches_for_nothing():
    definitions = load_definitions(DEFAULT_DEFINITIONS, VOCABULARY)
    impact, globals = Impact(definitions), _needs_globals()
    state = AccountState("A", clock=DAY0 * 86400)
    evaluate(state, definitions, "x", globals)
    assert impact.unaffected(state, _opened(3), globals) == {NEEDS_FAMILY}
    state.clock += 86400  # not as the worker moves it (that evaluates or clears the record)
    assert not impact.unaffected(state, _opened(3), globals)


def test_cluster_specs_declare_what_their_features_read():
    assert spec_inputs(NEEDS) == {"categories"}
    assert spec_inputs(BEHAVIOUR) == {"orders", "last_order_day", "points", "campaigns"}
    assert (
        spec_inputs(FeatureSpec("x", (*BEHAVIOUR.dimensions[:1], Dimension("value_a_min")))) is None
    )
    assert spec_inputs(FeatureSpec("x", (Dimension("no_such_feature"),))) is None


@pytest.mark.parametrize("spec", [BEHAVIOUR, NEEDS], ids=lambda spec: spec.name)
def test_a_cluster_spec_reads_only_its_declared_inputs(spec):
    state = one_account(days=90)
    recorder = _Recorder(state)
    raw_sample(FeatureView(recorder, state.now_day), spec)  # type: ignore[arg-type]
    assert recorder.read <= spec_inputs(spec)


def _states_over_time(seed: int) -> list[AccountState]:
    """Copies of a few accounts' states at many points of a year and a half of history,
    some with their clock moved on as a sweep does."""
    states: dict[str, AccountState] = {}
    taken = []
    for i, event in enumerate(history(accounts=6, days=560, seed=seed)):
        state = states.setdefault(event.account_id, AccountState(event.account_id))
        apply(state, event)
        if i % 97 == 0:
            taken.append(deepcopy(state))
            swept = deepcopy(state)
            swept.clock += (i % 400) * 86400
            taken.append(swept)
    # a member whose last points left the year: is_member ends when an event prunes them
    lapsed = AccountState("M", clock=(DAY0 + 400) * 86400.0, points=[[DAY0, 100, 100, 0, 0]])
    return [*taken, lapsed]


def _value_on(state: AccountState, day: int, name: str):
    """``name`` evaluated on ``day`` after an event that touches none of its inputs:
    the clock moved and expired rows pruned."""
    later = deepcopy(state)
    later.clock = max(later.clock, day * 86400.0)
    prune(later)
    return FeatureView(later, day)[name]


@pytest.mark.parametrize("seed", [21, 22])
def test_no_feature_moves_before_the_day_stable_until_gives(seed):
    names = [n for n in FEATURES if GLOBAL_INPUT not in FEATURE_INPUTS[n]]
    names += [f"share.{category}" for category in NEEDS_CATEGORIES]
    checked = 0
    for state in _states_over_time(seed):
        today = state.now_day
        for name in names:
            inputs = spec_inputs(FeatureSpec("x", (Dimension(name),)))
            assert inputs is not None
            until = stable_until(state, inputs)
            if until is not None and until <= today:
                continue  # vouches for no day, not even this one
            last = today + 500 if until is None else until - 1
            days = {today, last, *range(today, min(last, today + 40))}
            expected = FeatureView(deepcopy(state), today)[name]
            for day in sorted(days):
                assert _value_on(state, day, name) == expected, (name, today, day, until)
            checked += len(days)
    assert checked > 10_000


def test_an_event_that_prunes_rows_a_sweep_left_evaluates_the_families_reading_them():
    """A sweep moves the clock past the last points row's year without pruning it; the
    next event prunes it, and ``is_member`` (any points rows at all) turns false."""
    definitions = load_definitions(PROGRAM, VOCABULARY)
    impact, schedule = Impact(definitions), Schedule(definitions)
    outcomes = []
    for with_impact in (False, True):
        state = AccountState("A", clock=(DAY0 + 1) * 86400.0, points=[[DAY0, 100, 100, 0, 0]])
        evaluate(state, definitions, "x")
        evaluate(state, definitions, "sweep", at=(DAY0 + 366) * 86400.0)
        impact.mark(state, schedule.next_due(state))
        assert "program" not in impact.unaffected(state, _profile(367))
        changes = process_event(
            state, _profile(367), definitions, impact=impact if with_impact else None
        )
        outcomes.append([c.model_dump() for c in changes or []])
    assert outcomes[0] == outcomes[1]
    assert {(c["segment_id"], c["change"]) for c in outcomes[0]} >= {
        ("dormant_members", "exited"),
        ("never_participated", "entered"),
    }
