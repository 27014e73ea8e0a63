from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.clock import TEST_NOW
from worker.config.settings import Settings
from worker.core.clustering import (
    BEHAVIOUR,
    DEFAULT_CATEGORIES,
    NEEDS,
    Cluster,
    ClusterLearner,
    ClusterSnapshot,
    Dimension,
    FeatureSpec,
    NotReadyError,
    assign,
    centroid_shift,
    describe,
    largest_centroid_shift,
    match_ids,
    vectorize,
)
from worker.core.events import OrderLine, OrderPlaced, decode_input
from worker.core.families import raw_sample
from worker.core.features import FEATURES, AccountState, FeatureView, apply, day_of
from worker.devtools.generator import CATEGORIES, generate_events, make_accounts
from worker.runtime.learning import ClusterTrainer

# group -> (recency days, orders/yr, revenue/yr, points/yr, response rate); well separated
# in the standardised log space the learner works in.
GROUPS = {
    "key": (3, 150, 250_000, 25_000, 0.55),
    "regular": (12, 35, 30_000, 3_000, 0.30),
    "dormant": (280, 1, 400, 0, 0.02),
    "collector": (15, 15, 8_000, 15_000, 0.80),
}


def persona(rng: random.Random, group: str) -> dict[str, Any]:
    recency, orders, revenue, points, response = GROUPS[group]

    def around(median: float) -> float:
        return median * rng.lognormvariate(0.0, 0.3)

    return {
        "recency_days": round(around(recency)),
        "orders_365d": round(around(orders)),
        "revenue_365d": around(revenue),
        "points_earned_365d": around(points),
        "response_rate_365d": min(max(rng.gauss(response, 0.05), 0.0), 1.0),
    }


def stream(n: int, seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    rng = random.Random(seed)
    labels = rng.choices(list(GROUPS), weights=[1, 3, 2, 2], k=n)
    return [persona(rng, g) for g in labels], labels


def trained(n: int = 1500, seed: int = 7, **params: Any) -> ClusterLearner:
    learner = ClusterLearner(BEHAVIOUR, n_clusters=len(GROUPS), seed=seed, **params)
    for features in stream(n, seed)[0]:
        learner.learn_one(features)
    return learner


def ari(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Adjusted Rand index (Hubert & Arabie) of two labelings."""

    def pairs(count: int) -> float:
        return count * (count - 1) / 2

    index = sum(pairs(c) for c in Counter(zip(a, b, strict=True)).values())
    rows = sum(pairs(c) for c in Counter(a).values())
    cols = sum(pairs(c) for c in Counter(b).values())
    expected = rows * cols / pairs(len(a))
    best = (rows + cols) / 2
    return 1.0 if best == expected else (index - expected) / (best - expected)


def majority(ids: Sequence[str], labels: Sequence[str]) -> dict[str, str]:
    """true group -> the cluster id most of its samples get."""
    votes = Counter(zip(labels, ids, strict=True))
    return {g: max((n, cid) for (label, cid), n in votes.items() if label == g)[1] for g in GROUPS}


def one_d(*centroids: float, margin_std: float = 1.0) -> ClusterSnapshot:
    spec = FeatureSpec("line", (Dimension("x", lower=None),))
    clusters = tuple(Cluster(f"c{i + 1}", (c,), 1) for i, c in enumerate(centroids))
    return ClusterSnapshot(1, spec, (0.0,), (margin_std,), clusters, len(clusters) + 1, 10)


# --------------------------------------------------------------------------- vectors


def test_ari_helper() -> None:
    assert ari([0, 0, 1, 1], [5, 5, 7, 7]) == 1.0
    assert ari([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)


feature_value = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**9), 10**9),
    st.booleans(),
)


@pytest.mark.parametrize("spec", [BEHAVIOUR, NEEDS], ids=["behaviour", "needs"])
@given(data=st.data())
def test_vectorize_always_returns_the_full_finite_vector(spec: FeatureSpec, data: Any) -> None:
    names = [*spec.names, "unrelated_feature"]
    features = data.draw(st.dictionaries(st.sampled_from(names), feature_value))
    vector = vectorize(features, spec)
    assert list(vector) == list(spec.names)
    assert all(isinstance(v, float) and math.isfinite(v) for v in vector.values())


def test_vectorize_defaults_are_documented_values() -> None:
    empty = vectorize({}, BEHAVIOUR)
    assert empty["recency_days"] == pytest.approx(math.log1p(400))  # never ordered: 400 days
    assert empty["revenue_365d"] == empty["response_rate_365d"] == 0.0
    assert vectorize({"recency_days": None}, BEHAVIOUR) == empty
    assert vectorize({"revenue_365d": -120.0}, BEHAVIOUR)["revenue_365d"] == 0.0  # net returns
    assert vectorize({"response_rate_365d": 3.0}, BEHAVIOUR)["response_rate_365d"] == 1.0


def test_vectorize_reads_a_feature_view() -> None:
    state = AccountState("ACME")
    at = datetime(2026, 3, 1, tzinfo=UTC)
    lines = [OrderLine(sku="s", category="tools", quantity=2, unit_price=30.0)]
    apply(state, OrderPlaced(event_id="e", occurred_at=at, account_id="ACME", order_id="o",
                             total=60.0, lines=lines))  # fmt: skip
    view = FeatureView(state, day_of(at) + 10)
    behaviour = vectorize(view, BEHAVIOUR)
    assert behaviour["recency_days"] == pytest.approx(math.log1p(10))
    assert behaviour["orders_365d"] == pytest.approx(math.log1p(1))
    assert behaviour["response_rate_365d"] == 0.0  # None: no campaign sent
    needs = vectorize(view, NEEDS)
    assert needs["share.tools"] == 1.0
    assert sum(needs.values()) == 1.0


def test_specs_name_catalogue_features() -> None:
    assert set(BEHAVIOUR.names) <= set(FEATURES)
    assert set(DEFAULT_CATEGORIES) == set(CATEGORIES)  # needs: the demo generator's categories


# ---------------------------------------------------------------------------- learner


def test_learner_recovers_well_separated_groups() -> None:
    snapshot = trained().snapshot(version=1)
    samples, labels = stream(1000, seed=99)  # fresh samples from the same groups
    predicted = [snapshot.predict_one(x)[0] for x in samples]
    assert ari(labels, predicted) >= 0.9
    assert len(set(predicted)) == len(GROUPS)
    assert all(c.count > 0 for c in snapshot.clusters)


def test_snapshot_before_warmup_is_refused() -> None:
    learner = ClusterLearner(BEHAVIOUR, n_clusters=3, warmup=50)
    for features in stream(49, seed=1)[0]:
        learner.learn_one(features)
    assert not learner.ready
    with pytest.raises(NotReadyError):
        learner.snapshot(version=1)
    learner.learn_one(stream(1, seed=2)[0][0])
    assert learner.ready
    assert learner.snapshot(version=1).samples == 50


def test_seeding_waits_for_k_distinct_samples_with_a_bounded_population() -> None:
    learner = ClusterLearner(BEHAVIOUR, n_clusters=3, warmup=10, population=50)
    for i in range(1000):
        learner.learn_one({"orders_365d": i % 2})
    assert not learner.ready
    assert len(learner.population) == 50
    learner.learn_one({"orders_365d": 50})
    assert learner.ready
    assert sorted(c.count for c in learner.snapshot(version=1).clusters)[0] >= 1


def test_ids_stay_stable_while_training_continues() -> None:
    learner = ClusterLearner(BEHAVIOUR, n_clusters=len(GROUPS), seed=3)
    samples = stream(3000, seed=3)[0]
    probe, probe_labels = stream(400, seed=4)
    mappings: list[dict[str, str]] = []
    snapshots: list[ClusterSnapshot] = []
    for i, features in enumerate(samples, 1):
        learner.learn_one(features)
        if i % 300 == 0:
            snapshot = learner.snapshot(version=len(snapshots) + 1)
            snapshots.append(snapshot)
            mappings.append(majority([snapshot.predict_one(x)[0] for x in probe], probe_labels))
    assert all(m == mappings[0] for m in mappings)
    assert len(set(mappings[0].values())) == len(GROUPS)
    assert all(s.ids == snapshots[0].ids for s in snapshots)
    for old, new in itertools.pairwise(snapshots):
        assert max(centroid_shift(old, new).values()) < 0.5


def test_ids_carry_over_to_a_new_owners_learner() -> None:
    first = trained(seed=7).snapshot(version=1)
    # Another owner starts from scratch: other seed, other samples.
    other = trained(seed=11)
    second = other.snapshot(version=2, previous=first)
    probe, labels = stream(400, seed=5)
    before = majority([first.predict_one(x)[0] for x in probe], labels)
    after = majority([second.predict_one(x)[0] for x in probe], labels)
    assert before == after
    assert second.ids == first.ids and second.next_id == first.next_id
    # The learner remembers its ids: the next snapshot continues them.
    assert other.snapshot(version=3).ids == second.ids


def test_an_added_cluster_gets_the_next_fresh_id() -> None:
    first = trained(seed=7).snapshot(version=1)
    bigger = ClusterLearner(BEHAVIOUR, n_clusters=len(GROUPS) + 1, seed=11)
    for features in stream(1500, seed=12)[0]:
        bigger.learn_one(features)
    second = bigger.snapshot(version=2, previous=first)
    assert set(second.ids) == {*first.ids, f"c{first.next_id}"}
    assert second.next_id == first.next_id + 1


def test_fresh_ids_are_never_reused() -> None:
    previous = one_d(-5.0, 0.0, 5.0)
    previous = dataclasses.replace(
        previous,
        clusters=(Cluster("c1", (-5.0,), 1), Cluster("c4", (0.0,), 1), Cluster("c6", (5.0,), 1)),
        next_id=9,
    )
    ids, next_id = match_ids(previous, [[5.1], [-4.9], [20.0], [0.2]], [1.0], previous.spec, 1)
    assert ids == ["c6", "c1", "c9", "c4"]
    assert next_id == 10
    # A centroid that moved too far gets a fresh id instead of its old one.
    ids, next_id = match_ids(previous, [[-5.0], [0.0], [9.0]], [1.0], previous.spec, 1, 2.0)
    assert ids == ["c1", "c4", "c9"]
    # Another feature space: nothing matches, numbering still continues.
    assert match_ids(previous, [[0.0]], [1.0], NEEDS, 1) == (["c9"], 10)


def test_a_learner_restored_from_a_snapshot_continues_the_same_way() -> None:
    learner = trained(n=800, seed=21)
    snapshot = learner.snapshot(version=1)
    restored = ClusterLearner.from_snapshot(ClusterSnapshot.from_json(snapshot.to_json()))
    # A new owner loads the accounts' current features into the population first (a
    # sample without an account id is keyed by its number).
    for number, features in enumerate(stream(800, seed=21)[0], 1):
        restored.observe(number, features)
    for features in stream(500, seed=22)[0]:
        learner.learn_one(features)
        restored.learn_one(features)
    a, b = learner.snapshot(version=2), restored.snapshot(version=2)
    assert a.ids == b.ids
    assert a.next_id == b.next_id
    assert a.samples == b.samples == 1300
    for cid in a.ids:
        assert a.centroids[cid] == pytest.approx(b.centroids[cid], abs=1e-9)


# --------------------------------------------------------------------------- snapshot


def test_json_round_trip_predicts_identically() -> None:
    snapshot = trained().snapshot(version=5, created_at=datetime(2026, 3, 1, tzinfo=UTC))
    text = snapshot.to_json()
    json.loads(text)  # plain JSON, no NaN
    again = ClusterSnapshot.from_json(text)
    assert again == snapshot
    assert again.to_json() == text
    assert again.version == 5 and again.created_at == "2026-03-01T00:00:00+00:00"
    for features in stream(300, seed=8)[0] + [{}, {"orders_365d": None}]:
        assert again.predict_one(features) == snapshot.predict_one(features)


@pytest.mark.parametrize(
    "text",
    ['{"format": 99}', "[]", '{"format": 1, "version": 1}', '{"format": 1, "clusters": 3}'],
)
def test_from_json_refuses_what_is_not_a_snapshot(text: str) -> None:
    with pytest.raises(ValueError):
        ClusterSnapshot.from_json(text)


def test_predict_one_does_not_mutate_the_snapshot() -> None:
    snapshot = trained(n=600).snapshot(version=1)
    before = snapshot.to_json()
    for features in [{}, {"brand_new_feature": 3.0}, *stream(100, seed=9)[0]]:
        snapshot.predict_one(features)
        assign(features, snapshot, "c1", 0.1)
    assert snapshot.to_json() == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.version = 2  # type: ignore[misc]


def test_predict_one_returns_the_nearest_id_and_its_distance() -> None:
    snapshot = one_d(-1.0, 1.0, margin_std=2.0)
    assert snapshot.predict_one({"x": 4.0}) == ("c2", 1.0)  # z = 2
    assert snapshot.predict_one({"x": 0.0}) == ("c1", 1.0)  # a tie goes to the first id


# ------------------------------------------------------------------------- assignment


def test_margin_keeps_the_current_cluster_near_a_boundary() -> None:
    snapshot = one_d(-1.0, 1.0)
    rng = random.Random(1)
    jitter = [{"x": rng.uniform(-0.05, 0.05)} for _ in range(200)]

    def switches(margin: float) -> int:
        current, changes = "c1", 0
        for features in jitter:
            new = assign(features, snapshot, current, margin)
            changes += new != current
            current = new
        return changes

    assert switches(0.0) > 20  # without a margin it flaps
    assert switches(0.1) == 0
    assert assign({"x": 0.5}, snapshot, "c1", 0.1) == "c2"  # clearly closer: it moves
    assert assign({"x": 0.04}, snapshot, None, 0.1) == "c2"
    assert assign({"x": 0.04}, snapshot, "c9", 0.1) == "c2"  # an id that no longer exists


# --------------------------------------------------------------------- drift, profiles


def test_centroid_shift_ignores_a_moving_scaler() -> None:
    old = one_d(-1.0, 1.0)
    assert centroid_shift(old, old) == {"c1": 0.0, "c2": 0.0}
    # Same prepared centroids (z * std + mean), other scaler: no movement.
    rescaled = dataclasses.replace(
        old,
        means=(1.0,),
        stds=(2.0,),
        clusters=(Cluster("c1", (-1.0,), 1), Cluster("c2", (0.0,), 1)),
    )
    assert centroid_shift(old, rescaled) == {"c1": 0.0, "c2": 0.0}
    moved = dataclasses.replace(old, clusters=(Cluster("c2", (1.5,), 1), Cluster("c3", (9.0,), 1)))
    assert centroid_shift(old, moved) == {"c2": 0.5}


def test_largest_centroid_shift_is_the_farthest_move_of_a_kept_id() -> None:
    old = one_d(-1.0, 1.0, margin_std=2.0)
    assert largest_centroid_shift(old, old) == 0.0
    # In the new snapshot's std units: c1 moved 0.25, c2 0.75 (prepared units / 2).
    moved = dataclasses.replace(
        old, clusters=(Cluster("c1", (-0.75,), 1), Cluster("c2", (1.75,), 1))
    )
    assert largest_centroid_shift(old, moved) == pytest.approx(0.75)
    # Whatever is not a move of the same clusters is always material.
    assert largest_centroid_shift(None, old) == math.inf
    renamed = dataclasses.replace(
        old, clusters=(Cluster("c1", (-1.0,), 1), Cluster("c3", (1.0,), 1))
    )
    assert largest_centroid_shift(old, renamed) == math.inf
    assert largest_centroid_shift(old, one_d(-1.0, 1.0, 3.0)) == math.inf  # one more
    assert largest_centroid_shift(one_d(-1.0, 1.0, 3.0), old) == math.inf  # one fewer
    other_space = dataclasses.replace(old, spec=FeatureSpec("line", (Dimension("y"),)))
    assert largest_centroid_shift(old, other_space) == math.inf


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_the_default_publish_shift_ignores_jitter_but_not_drift(seed: int) -> None:
    bound = Settings().cluster_publish_min_shift
    learner = trained(seed=seed)
    published = learner.snapshot(version=1)
    for features in stream(1000, seed=seed + 100)[0]:  # the same population
        learner.learn_one(features)
    assert largest_centroid_shift(published, learner.snapshot(2, previous=published)) < bound
    for features in stream(1000, seed=seed + 200)[0]:  # accounts buy more, and more often
        scaled = {"revenue_365d": 3 * features["revenue_365d"],
                  "orders_365d": 2 * features["orders_365d"]}  # fmt: skip
        learner.learn_one({**features, **scaled})
    assert largest_centroid_shift(published, learner.snapshot(2, previous=published)) > bound


class FakeModelStore:
    """The model keys of ``StateStore``: compare-and-set on the version."""

    def __init__(self, states: Sequence[AccountState] = ()) -> None:
        self.models: dict[str, ClusterSnapshot] = {}
        self.publishes = 0
        self.states = {state.account_id: state for state in states}

    async def load_snapshot(self, family: str) -> ClusterSnapshot | None:
        return self.models.get(family)

    async def publish_snapshot(self, family: str, snapshot: ClusterSnapshot) -> bool:
        stored = self.models.get(family)
        if stored is not None and stored.version >= snapshot.version:
            return False
        self.models[family] = snapshot
        self.publishes += 1
        return True

    async def account_ids(self, batch: int = 1000) -> Any:
        accounts = list(self.states)
        for start in range(0, len(accounts), batch):
            yield accounts[start : start + batch]

    async def load_many(self, account_ids: Sequence[str]) -> dict[str, AccountState]:
        return {a: self.states[a] for a in account_ids if a in self.states}


def samples(features: Sequence[dict[str, Any]], first: int = 0) -> list[dict[str, Any]]:
    """Samples of accounts ``first``, ``first + 1``, ..."""
    return [
        {"family": "cluster", "account_id": f"A{first + i}", "features": f}
        for i, f in enumerate(features)
    ]


async def test_the_owner_publishes_only_a_model_that_moved_materially() -> None:
    settings = Settings(cluster_warmup=200, cluster_k_behaviour=len(GROUPS))
    store = FakeModelStore()
    trainer = ClusterTrainer(settings, store)  # type: ignore[arg-type]
    await trainer.learn(samples(stream(1500, seed=7)[0]))
    [(family, first)] = await trainer.publish()  # nothing published yet: always
    assert (family, first.version) == ("cluster", 1)
    assert await trainer.publish() == []  # nothing learned since
    await trainer.learn(samples(stream(500, seed=8)[0]))
    assert await trainer.publish() == []  # jitter only: held back
    assert store.models["cluster"] is first
    drifted = [{**f, "revenue_365d": 3 * f["revenue_365d"]} for f in stream(1500, seed=9)[0]]
    await trainer.learn(samples(drifted))
    [(_, second)] = await trainer.publish()
    assert second.version == 2 and second.ids == first.ids
    assert largest_centroid_shift(first, second) > settings.cluster_publish_min_shift
    assert store.publishes == 2


async def test_a_deposed_owner_holding_back_resumes_from_the_stored_model() -> None:
    settings = Settings(cluster_warmup=200, cluster_k_behaviour=len(GROUPS))
    store = FakeModelStore()
    trainer = ClusterTrainer(settings, store)  # type: ignore[arg-type]
    await trainer.learn(samples(stream(1500, seed=7)[0]))
    assert [f for f, _ in await trainer.publish()] == ["cluster"]
    # Another worker took the partition over and published v2 meanwhile.
    other = ClusterTrainer(settings, store)  # type: ignore[arg-type]
    drifted = [{**f, "orders_365d": 3 * f["orders_365d"]} for f in stream(1500, seed=9)[0]]
    await other.learn(samples(drifted))
    [(_, newer)] = await other.publish()
    assert newer.version == 2
    # The old owner learned a little (no material move): it finds v2 and drops its learner.
    await trainer.learn(samples(stream(100, seed=8)[0]))
    assert await trainer.publish() == []
    assert store.models["cluster"] is newer
    await trainer.learn(samples(stream(10, seed=10)[0]))  # resumes from v2
    assert (await trainer._learner("cluster")).samples == newer.samples + 10
    assert trainer._published["cluster"] == newer


async def test_a_new_owner_refits_on_every_stored_account_not_only_the_first_samples() -> None:
    rng = random.Random(5)
    states = []
    for number, group in enumerate(rng.choices(list(GROUPS), k=400)):
        state = AccountState(f"S{number}", clock=20_000 * 86400.0)
        recency, orders, revenue, _, _ = GROUPS[group]
        for day in range(0, 360, max(360 // orders, 1)):
            state.orders.append([20_000 - 360 + day, revenue / orders, 1])
        state.last_order_day = 20_000 - recency
        states.append(state)
    store = FakeModelStore(states)
    settings = Settings(cluster_warmup=50, cluster_k_behaviour=len(GROUPS))
    trainer = ClusterTrainer(settings, store)  # type: ignore[arg-type]
    # Only a few accounts of one group send samples: the rest are in the store.
    key = [f for f, g in zip(stream(400, 1)[0], stream(400, 1)[1], strict=True) if g == "key"]
    await trainer.learn(samples(key))
    learner = await trainer._learner("cluster")
    assert len(key) >= 50 and len(learner.population) == 400 + len(key)
    [(_, model)] = [p for p in await trainer.publish() if p[0] == "cluster"]
    assert sum(c.count for c in model.clusters) == 400 + len(key)  # fitted on all of them
    views = [FeatureView(state, state.now_day) for state in states]
    # regular, dormant and collector accounts (without points here: like regular ones)
    assert len({model.predict_one(view)[0] for view in views}) >= 2


@pytest.mark.parametrize("seed", [1, 4])
async def test_a_chronological_replay_gives_k_clusters_inside_the_data(seed: int) -> None:
    """What the model owner sees in a replay of history: young, empty accounts first,
    each account's sample at most weekly as it matures. Every cluster of the published
    model must hold accounts (by their features at the end), and every centroid must lie
    within the range of those features."""
    settings = Settings()
    store = FakeModelStore()
    trainer = ClusterTrainer(settings, store)  # type: ignore[arg-type]
    specs = {family: c.spec for family, c in trainer.clusterings.items()}
    rng = random.Random(seed)
    start = TEST_NOW - timedelta(days=401)
    states: dict[str, AccountState] = {}
    pending: list[dict[str, Any]] = []
    history = generate_events(make_accounts(150, rng), start, 400, rng)
    for number, (_, raw) in enumerate(history, 1):
        event = decode_input(json.dumps(raw))
        state = states.setdefault(event.account_id, AccountState(event.account_id))
        apply(state, event)
        if state.sampled_day is None or state.now_day - state.sampled_day >= 7:
            state.sampled_day = state.now_day  # as ``BatchProcessor._index`` samples
            view = FeatureView(state, state.now_day)
            pending += [
                {
                    "family": f,
                    "account_id": event.account_id,
                    "day": state.now_day,
                    "features": raw_sample(view, spec),
                }
                for f, spec in specs.items()
            ]
        if len(pending) >= 500:  # one message per worker batch
            await trainer.learn(pending)
            pending = []
        if number % 4000 == 0:  # the publish timer
            await trainer.publish()
    await trainer.learn(pending)
    await trainer.publish()
    end = max(state.now_day for state in states.values())
    views = [FeatureView(state, end) for state in states.values()]
    for family, spec in specs.items():
        model = store.models[family]
        members = Counter(model.predict_one(view)[0] for view in views)
        assert {cid: members[cid] for cid in model.ids if not members[cid]} == {}, family
        columns = [[d.value(view.get(d.name)) for view in views] for d in spec.dimensions]
        for cid, centroid in model.prepared_centroids().items():
            for d, x, column in zip(spec.dimensions, centroid, columns, strict=True):
                low, high = min(column), max(column)
                assert low - 1e-9 <= x <= high + 1e-9, f"{family} {cid} {d.name}={x}"


def test_describe_names_the_groups_in_plain_words() -> None:
    snapshot = trained().snapshot(version=1)
    texts = describe(snapshot)
    assert set(texts) == set(snapshot.ids)
    assert describe(ClusterSnapshot.from_json(snapshot.to_json())) == texts
    probe, labels = stream(400, seed=6)
    by_group = {g: texts[cid] for g, cid in
                majority([snapshot.predict_one(x)[0] for x in probe], labels).items()}  # fmt: skip
    assert "high-value" in by_group["key"] and "frequent buyers" in by_group["key"]
    assert by_group["dormant"].startswith("lapsed low-value occasional buyers")
    assert "rarely collect points" in by_group["dormant"]
    assert "strong campaign response" in by_group["collector"]
    assert "orders/yr" in by_group["key"]


def test_describe_an_average_cluster() -> None:
    texts = describe(one_d(0.1, 2.0, -0.7))
    assert texts == {"c1": "average accounts", "c2": "accounts, very high x (2 x)",
                     "c3": "accounts, low x (-0.7 x)"}  # fmt: skip
