"""Tests of the value family: ABC thresholds, the offline reference, the segments, CLV."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.config.settings import DEFAULT_DEFINITIONS
from worker.core.definitions import load_definitions
from worker.core.features import VOCABULARY
from worker.core.rules import evaluate_family
from worker.core.value import (
    NO_REVENUE_CUTOFF,
    Thresholds,
    affected_revenue_range,
    clv_estimate,
    compute_thresholds,
    offline_abc,
    same_cutoffs,
    thresholds_from_dict,
    thresholds_to_dict,
)

# -- strategies --------------------------------------------------------------------------

# Few distinct values make ties, zeros and negatives common; free floats cover the rest.
tied_revenue = st.sampled_from([-250.0, -1.0, 0.0, 0.01, 1.0, 5.0, 5.0, 20.0, 100.0, 1e4])
free_revenue = st.floats(min_value=-1e6, max_value=1e7, allow_nan=False, allow_infinity=False)
revenue = st.one_of(tied_revenue, free_revenue)


@st.composite
def revenue_dicts(draw: st.DrawFn) -> dict[str, float]:
    kind = draw(st.sampled_from(["mixed", "tied", "all_equal", "single"]))
    if kind == "single":
        values = [draw(revenue)]
    elif kind == "all_equal":
        values = [draw(revenue)] * draw(st.integers(1, 30))
    elif kind == "tied":
        values = draw(st.lists(tied_revenue, max_size=60))
    else:
        values = draw(st.lists(revenue, max_size=60))
    return {f"acct-{i}": value for i, value in enumerate(values)}


@st.composite
def shares(draw: st.DrawFn) -> tuple[float, float]:
    a_share = draw(st.sampled_from([0.8, 0.5, 1.0]) | st.floats(0.01, 1.0))
    b_share = draw(
        st.sampled_from([min(0.15, 1.0 - a_share), 0.0, 1.0 - a_share])
        | st.floats(0.0, 1.0 - a_share)
    )
    return a_share, b_share


def thresholds(a_min: float, b_min: float, **kwargs: Any) -> Thresholds:
    return Thresholds(a_min=a_min, b_min=b_min, total_revenue=1e6, accounts=100, **kwargs)


# -- compute_thresholds against the offline reference -------------------------------------


@settings(max_examples=400)
@given(revenue_dicts(), shares())
def test_threshold_tiers_equal_offline_abc(
    revenues: dict[str, float], cut: tuple[float, float]
) -> None:
    a_share, b_share = cut
    reference = offline_abc(revenues, a_share, b_share)
    computed = compute_thresholds(revenues.values(), a_share, b_share)

    assert set(reference) == {account for account, value in revenues.items() if value > 0}
    assert {account: computed.tier(revenues[account]) for account in reference} == reference
    assert computed.accounts == len(reference)


@settings(max_examples=300)
@given(revenue_dicts(), shares())
def test_a_tier_is_the_smallest_set_reaching_a_share(
    revenues: dict[str, float], cut: tuple[float, float]
) -> None:
    a_share, b_share = cut
    t = compute_thresholds(revenues.values(), a_share, b_share)
    positive = [value for value in revenues.values() if value > 0]
    if not positive:
        assert t.a_min == t.b_min == NO_REVENUE_CUTOFF
        return
    total = math.fsum(positive)
    slack = 1e-9 * total  # the definition cumulates in float; fsum is exact
    a_revenue = math.fsum(value for value in positive if value >= t.a_min)
    smallest_group = math.fsum(value for value in positive if value == t.a_min)

    assert a_revenue >= a_share * total - slack
    # Minimal modulo ties: without the accounts tied at the smallest A revenue, A is short
    # (or empty: the top accounts are always A, even when a_share * total underflows).
    rest = a_revenue - smallest_group
    assert rest == 0.0 or rest < a_share * total + slack
    # A and B together reach a_share + b_share the same way.
    ab_revenue = math.fsum(value for value in positive if value >= t.b_min)
    assert ab_revenue >= min(a_share + b_share, 1.0) * total - slack


@given(st.lists(revenue, max_size=40), st.randoms(use_true_random=False))
def test_thresholds_do_not_depend_on_order(values: list[float], rng: random.Random) -> None:
    shuffled = list(values)
    rng.shuffle(shuffled)
    assert compute_thresholds(shuffled) == compute_thresholds(values)


def test_worked_example_and_tie_rule() -> None:
    t = compute_thresholds([50.0, 30.0, 10.0, 6.0, 4.0, 0.0, -3.0])
    assert (t.a_min, t.b_min, t.total_revenue, t.accounts) == (30.0, 6.0, 100.0, 5)
    # 50 alone is 50 %, so 30 crosses the 80 % line and belongs to A.
    assert [t.tier(v) for v in (50.0, 30.0, 10.0, 6.0, 4.0)] == ["A", "A", "B", "B", "C"]
    # Rank 3 would be B by rank, but it ties with rank 2 (an A): both are A, B is empty.
    tied = compute_thresholds([60.0, 20.0, 20.0])
    assert (tied.a_min, tied.b_min) == (20.0, 20.0)
    assert offline_abc({"x": 60.0, "y": 20.0, "z": 20.0}) == {"x": "A", "y": "A", "z": "A"}


def test_single_account_and_all_equal_are_all_a() -> None:
    assert compute_thresholds([7.0]).tier(7.0) == "A"
    t = compute_thresholds([3.0] * 50)
    assert (t.a_min, t.b_min) == (3.0, 3.0)
    assert set(offline_abc({str(i): 3.0 for i in range(50)}).values()) == {"A"}


def test_no_revenue_falls_back_to_everybody_positive_is_a() -> None:
    t = compute_thresholds([0.0, -5.0])
    assert not t.ranked
    assert (t.a_min, t.b_min, t.total_revenue, t.accounts) == (NO_REVENUE_CUTOFF,) * 2 + (0.0, 0)
    assert [t.tier(v) for v in (1e-300, 0.01, 0.0, -1.0)] == ["A", "A", "C", "C"]
    assert compute_thresholds([]) == t


def test_top_account_is_a_even_when_the_cut_underflows() -> None:
    # 0.5 * 5e-324 rounds to 0.0, so no running sum is below the A cut: rank 0 is A anyway.
    t = compute_thresholds([5e-324], 0.5, 0.15)
    assert t.tier(5e-324) == "A"
    assert offline_abc({"x": 5e-324}, 0.5, 0.15) == {"x": "A"}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_revenue_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        compute_thresholds([10.0, bad])


@pytest.mark.parametrize(("a_share", "b_share"), [(0.0, 0.1), (1.1, 0.0), (0.8, 0.3), (0.8, -0.1)])
def test_invalid_shares_are_rejected(a_share: float, b_share: float) -> None:
    with pytest.raises(ValueError, match="share"):
        compute_thresholds([1.0], a_share, b_share)
    with pytest.raises(ValueError, match="share"):
        offline_abc({"x": 1.0}, a_share, b_share)


def test_compute_thresholds_agrees_with_the_reference_at_100k_accounts() -> None:
    rng = random.Random(7)
    values = [round(rng.lognormvariate(8, 1.5), 2) for _ in range(100_000)]
    values[::10] = [-1.0] * len(values[::10])
    t = compute_thresholds(values)
    assert t.accounts == 90_000
    reference = offline_abc({str(i): v for i, v in enumerate(values)})
    assert all(t.tier(values[int(account)]) == tier for account, tier in reference.items())


# -- Thresholds ---------------------------------------------------------------------------


def test_thresholds_version_is_deterministic_and_tracks_the_figures() -> None:
    a = compute_thresholds([85.0, 12.0, 3.0])
    assert a.version == compute_thresholds([3.0, 12.0, 85.0]).version
    assert len(a.version) == 12
    assert a.version != compute_thresholds([85.0, 12.0, 4.0]).version
    assert a.version != compute_thresholds([85.0, 12.0, 3.0], 0.7, 0.2).version
    stamped = dataclasses.replace(a, computed_at="2026-03-01T00:00:00+00:00")
    assert stamped.version == a.version


def test_thresholds_round_trip_through_json() -> None:
    t = dataclasses.replace(compute_thresholds([85.0, 12.0, 3.0]), computed_at="2026-03-01")
    restored = Thresholds.from_dict(json.loads(json.dumps(t.to_dict())) | {"extra": 1})
    assert restored == t


def test_dict_helpers_for_the_store() -> None:
    t = compute_thresholds([85.0, 12.0, 3.0])
    stored = json.loads(json.dumps(thresholds_to_dict(t)))
    assert thresholds_from_dict(stored) == t
    assert same_cutoffs(stored, t)
    assert same_cutoffs(stored, compute_thresholds([85.0, 12.0, 3.0, 0.0]))
    assert not same_cutoffs(stored, compute_thresholds([85.0, 12.0, 3.0, 40.0]))
    # The no-revenue fallback survives JSON too.
    empty = compute_thresholds([])
    assert thresholds_from_dict(json.loads(json.dumps(thresholds_to_dict(empty)))) == empty


@pytest.mark.parametrize(("a_min", "b_min"), [(5.0, 6.0), (5.0, 0.0), (math.inf, 1.0)])
def test_inconsistent_thresholds_are_rejected(a_min: float, b_min: float) -> None:
    with pytest.raises(ValueError, match="b_min"):
        thresholds(a_min, b_min)


def test_thresholds_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        thresholds(10.0, 5.0).a_min = 1.0  # type: ignore[misc]


# -- affected_revenue_range ---------------------------------------------------------------


def _inside(value: float, intervals: list[tuple[float, float]]) -> bool:
    return any(low <= value <= high for low, high in intervals)


@settings(max_examples=300)
@given(revenue_dicts(), revenue_dicts(), shares(), shares(), st.data())
def test_accounts_outside_the_affected_ranges_keep_their_tier(
    old_revenues: dict[str, float],
    new_revenues: dict[str, float],
    old_cut: tuple[float, float],
    new_cut: tuple[float, float],
    data: st.DataObject,
) -> None:
    old = compute_thresholds(old_revenues.values(), *old_cut)
    new = compute_thresholds(new_revenues.values(), *new_cut)
    intervals = affected_revenue_range(old, new)

    edges = [old.a_min, old.b_min, new.a_min, new.b_min]
    near_edges = [math.nextafter(edge, direction) for edge in edges for direction in (0, math.inf)]
    probes = [*old_revenues.values(), *new_revenues.values(), *edges, *near_edges]
    probes.append(data.draw(free_revenue))
    for value in probes:
        if not _inside(value, intervals):
            assert old.tier(value) == new.tier(value), (value, intervals)
    assert intervals == sorted(intervals)
    assert all(low <= high for low, high in intervals)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(intervals))


def test_affected_revenue_range_cases() -> None:
    old = thresholds(1000.0, 200.0)
    assert affected_revenue_range(None, old) == [(-math.inf, math.inf)]
    assert affected_revenue_range(old, old) == []
    assert affected_revenue_range(old, thresholds(900.0, 250.0)) == [
        (200.0, 250.0),
        (900.0, 1000.0),
    ]
    # Overlapping intervals are merged: both cut-offs moved past each other.
    assert affected_revenue_range(old, thresholds(5000.0, 1500.0)) == [(200.0, 5000.0)]


# -- the value family in the default definitions -------------------------------------------

VALUE = load_definitions(DEFAULT_DEFINITIONS, VOCABULARY).family("value")
CUTS = thresholds(48210.5, 9100.0)


def value_segment(
    cuts: Thresholds,
    revenue: float = 0.0,
    momentum: float | None = None,
    recency: int | None = 10,
) -> str:
    features = {
        "revenue_365d": revenue,
        "value_a_min": cuts.a_min,
        "value_b_min": cuts.b_min,
        "momentum_90d": momentum,
        "recency_days": recency,
    }
    (match,) = evaluate_family(VALUE, features)
    return match.segment_id


def test_value_segments() -> None:
    assert VALUE.exclusive
    ids = [segment.id for segment in VALUE.segments]
    assert ids == ["prospect", "inactive", "a", "b1", "b2", "c1", "c2"]


@pytest.mark.parametrize(
    ("revenue", "momentum", "recency", "segment"),
    [
        (0.0, None, None, "prospect"),
        (1e6, 2.0, None, "prospect"),
        (1e6, 2.0, 365, "inactive"),
        (1e6, 2.0, 364, "a"),
        (48210.5, None, 10, "a"),
        (48210.49, 1.0, 10, "b1"),
        (9100.0, 1.5, 10, "b1"),
        (9100.0, 0.99, 10, "b2"),
        (9100.0, None, 10, "b2"),
        (9099.99, 1.0, 10, "c1"),
        (500.0, 0.2, 10, "c2"),
        (500.0, None, 10, "c2"),
        (0.0, None, 0, "c2"),
        (-120.0, 3.0, 30, "c1"),
    ],
)
def test_value_family_branches(
    revenue: float, momentum: float | None, recency: int | None, segment: str
) -> None:
    assert value_segment(CUTS, revenue, momentum, recency) == segment


def test_value_family_without_ranked_revenue() -> None:
    # The no-revenue fallback cut-offs make every account with revenue an A.
    empty = compute_thresholds([])
    assert value_segment(empty, 0.01, None, 5) == "a"
    assert value_segment(empty, 0.0, 1.5, 5) == "c1"


@given(
    free_revenue,
    st.one_of(st.none(), st.floats(0, 10, allow_nan=False)),
    st.one_of(st.none(), st.integers(0, 2000)),
    revenue_dicts(),
)
def test_value_family_agrees_with_the_tier(
    revenue: float,
    momentum: float | None,
    recency: int | None,
    revenues: dict[str, float],
) -> None:
    t = compute_thresholds(revenues.values())
    segment = value_segment(t, revenue, momentum, recency)
    if recency is None:
        assert segment == "prospect"
    elif recency >= 365:
        assert segment == "inactive"
    else:
        assert segment[0] == t.tier(revenue).lower()
        if segment != "a":
            growing = momentum is not None and momentum >= 1.0
            assert segment[1] == ("1" if growing else "2")


# -- clv_estimate -------------------------------------------------------------------------


def test_clv_steady_buyer() -> None:
    # m = 10 000 * 0.3 = 3 000; r = 0.9; d = 0.1; three years.
    expected = sum(3000 * 0.9**t / 1.1**t for t in (1, 2, 3))
    assert clv_estimate(10_000.0, 6, 800, 30) == round(expected, 2) == 6105.94


@pytest.mark.parametrize(
    ("recency", "orders", "retention"),
    [(90, 4, 0.9), (91, 4, 0.7), (180, 4, 0.7), (181, 4, 0.4), (365, 4, 0.4), (366, 4, 0.1)],
)
def test_clv_retention_steps_with_recency(recency: int, orders: int, retention: float) -> None:
    expected = sum(1000 * 0.3 * retention**t / 1.1**t for t in (1, 2, 3))
    assert clv_estimate(1000.0, orders, 800, recency) == round(expected, 2)


def test_clv_one_off_buyer_and_young_account() -> None:
    # 900 over 60 days of tenure is annualised from 90 days: 3 650 a year, margin 1 095;
    # a single order caps retention at 0.5.
    expected = sum(1095 * 0.5**t / 1.1**t for t in (1, 2, 3))
    assert clv_estimate(900.0, 1, 60, 60) == round(expected, 2) == 826.8
    # Tenure of a year or more (or unknown) is not annualised.
    assert clv_estimate(900.0, 2, 364, 60) == clv_estimate(900.0, 2, None, 60)
    assert clv_estimate(900.0, 2, 364, 60) == clv_estimate(900.0, 2, 2000, 60)


def test_clv_parameters() -> None:
    assert clv_estimate(10_000.0, 6, 800, 30, horizon_years=0) == 0.0
    assert clv_estimate(10_000.0, 6, 800, 30, margin=0.5, discount_rate=0.0, horizon_years=1) == (
        4500.0
    )
    assert clv_estimate(-500.0, 3, 800, 30) == 0.0
    assert clv_estimate(0.0, 0, None, None) is None
    with pytest.raises(ValueError, match="margin"):
        clv_estimate(100.0, 2, 800, 30, margin=1.5)


@given(
    free_revenue,
    st.integers(0, 50),
    st.one_of(st.none(), st.integers(0, 3000)),
    st.integers(0, 3000),
)
def test_clv_is_bounded_by_undiscounted_margin(
    revenue: float, orders: int, tenure: int | None, recency: int
) -> None:
    clv = clv_estimate(revenue, orders, tenure, recency)
    assert clv is not None
    annual_margin = max(revenue, 0.0) * 365 / 90 * 0.3
    assert 0.0 <= clv <= 3 * annual_margin + 0.01
