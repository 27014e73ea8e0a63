from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

import pytest

from worker.core.features import AccountState, FeatureView
from worker.core.profiles import (
    ALL_ACCOUNTS,
    ProfileBuilder,
    SegmentProfile,
    profile_segments,
    profiles_from_dicts,
    profiles_to_dicts,
)

NOW = 20_000  # the profiling day


def account(
    account_id: str,
    memberships: dict[str, list[str]],
    *,
    orders: Sequence[tuple[int, float, int]] = (),
    categories: dict[str, float] | None = None,
    roles: dict[str, int] | None = None,
    campaigns: tuple[int, int] | None = None,
    points: int = 0,
) -> AccountState:
    """A hand-built state; days are relative to NOW (``-10`` = ten days ago)."""
    state = AccountState(account_id)
    state.memberships = {f: {s: {"since": 0.0, "reason": "test"} for s in ss} for f, ss in
                         memberships.items()}  # fmt: skip
    state.orders = [[NOW + day, revenue, count] for day, revenue, count in orders]
    if orders:
        state.first_order_day = NOW + min(day for day, _, _ in orders)
        state.last_order_day = NOW + max(day for day, _, _ in orders)
        state.categories = {str((NOW + orders[-1][0]) // 30): dict(categories or {})}
    state.roles = {role: [NOW + day, None] for role, day in (roles or {}).items()}
    if campaigns is not None:
        sent, responded = campaigns
        state.campaigns = [[NOW - 20, sent, 0, 0, responded, 0]]
    if points:
        state.points = [[NOW - 20, points, 0, 0, 0]]
    return state


def sample_accounts() -> list[AccountState]:
    return [
        account(
            "A1",
            {"value": ["a"], "program": ["champions"]},
            orders=[(-10, 1000.0, 4)],
            categories={"tools": 750.0, "office": 250.0},
            roles={"buyer": -10, "decider": -200},
            campaigns=(10, 2),
            points=500,
        ),
        account(
            "A2",
            {"value": ["a"]},
            orders=[(-100, 3000.0, 2)],
            categories={"tools": 3000.0},
            roles={"buyer": -5, "decider": -1},
        ),
        account("C1", {"value": ["c"]}, orders=[(-300, 200.0, 1)], roles={"user": -30}),
        account("P1", {"value": ["prospect"]}),
    ]


def views(states: list[AccountState]) -> list[tuple[AccountState, FeatureView]]:
    return [(state, FeatureView(state, NOW)) for state in states]


def test_sizes_shares_and_means_are_exact() -> None:
    profiles = profile_segments(views(sample_accounts()), min_size=1)

    a = profiles["value", "a"]
    assert (a.size, a.share_of_accounts) == (2, 0.5)
    assert a.revenue_365d == 4000.0
    assert a.share_of_revenue == pytest.approx(4000 / 4200)
    assert a.means == {
        "revenue_365d": 2000.0,
        "orders_365d": 3.0,
        "recency_days": 55.0,  # (10 + 100) / 2
        "aov_365d": 875.0,  # (250 + 1500) / 2
        "points_earned_365d": 250.0,
        "response_rate_365d": 0.2,  # only A1 was sent campaigns
        "momentum_90d": 0.0,  # only A2 had revenue in the 90 days before the last 90
    }
    assert a.top_categories == (("tools", 0.875), ("office", 0.125))
    # A1's decider engaged 200 days ago: not within 90 days.
    assert a.roles == (("buyer", 2), ("decider", 1))

    prospect = profiles["value", "prospect"]
    assert (prospect.size, prospect.revenue_365d, prospect.share_of_revenue) == (1, 0.0, 0.0)
    assert prospect.means["recency_days"] is None  # never ordered: ignored, not 0
    assert prospect.means["revenue_365d"] == 0.0
    assert prospect.top_categories == () and prospect.roles == ()

    assert profiles["value", "c"].roles == (("user", 1),)
    champions = profiles["program", "champions"]
    assert (champions.size, champions.share_of_accounts) == (1, 0.25)
    assert champions.top_categories == (("tools", 0.75), ("office", 0.25))


def test_build_orders_families_by_name_then_largest_segment_first() -> None:
    profiles = profile_segments(views(sample_accounts()))
    assert list(profiles) == [
        ("program", "champions"),
        ("value", "a"),
        ("value", "c"),
        ("value", "prospect"),
    ]
    assert all(key == profile.key for key, profile in profiles.items())


def test_overall_profile_covers_every_account() -> None:
    builder = ProfileBuilder()
    builder.add_many(views(sample_accounts()))
    overall = builder.overall()
    assert overall.key == ALL_ACCOUNTS
    assert (overall.size, overall.share_of_accounts, overall.share_of_revenue) == (4, 1.0, 1.0)
    assert overall.revenue_365d == 4200.0
    assert overall.means["recency_days"] == pytest.approx((10 + 100 + 300) / 3)
    assert overall.small is False
    assert builder.accounts == 4


def bulk(n: int, segments: dict[str, int]) -> list[tuple[AccountState, FeatureView]]:
    states = []
    for segment, size in segments.items():
        for i in range(size):
            states.append(AccountState(f"{segment}-{i}", memberships={"f": {segment: {}}}))
    states.extend(AccountState(f"rest-{i}") for i in range(n - len(states)))
    return views(states)


def test_small_flag_uses_the_larger_of_count_and_share() -> None:
    # 1,000 accounts: 1 % is 10, more than the minimum of 5.
    profiles = profile_segments(bulk(1000, {"nine": 9, "ten": 10, "big": 500}))
    assert profiles["f", "nine"].small is True
    assert profiles["f", "ten"].small is False
    assert profiles["f", "big"].small is False
    # 100 accounts: 1 % is 1, so the minimum count of 5 decides.
    profiles = profile_segments(bulk(100, {"four": 4, "five": 5}))
    assert (profiles["f", "four"].small, profiles["f", "five"].small) == (True, False)


def test_small_flag_is_configurable() -> None:
    accounts = bulk(100, {"four": 4, "twenty": 20})
    profiles = profile_segments(accounts, min_size=2, min_share=0.25)
    assert (profiles["f", "four"].small, profiles["f", "twenty"].small) == (True, True)
    profiles = profile_segments(accounts, min_size=0, min_share=0.0)
    assert not any(p.small for p in profiles.values())
    with pytest.raises(ValueError):
        ProfileBuilder(min_share=2.0)


def test_expected_segments_appear_even_when_empty() -> None:
    profiles = profile_segments(
        views(sample_accounts()), expected={"value": ["a", "b1"], "cluster": ["c1"]}
    )
    assert profiles["value", "b1"].size == 0
    assert profiles["value", "b1"].small is True
    assert profiles["value", "b1"].means["revenue_365d"] is None
    assert profiles["cluster", "c1"].share_of_accounts == 0.0


def test_memberships_of_overrides_the_stored_memberships() -> None:
    def by_activity(state: AccountState) -> dict[str, list[str]]:
        return {"activity": ["buyer" if state.orders else "never"]}

    profiles = profile_segments(views(sample_accounts()), by_activity)
    assert {key: p.size for key, p in profiles.items()} == {
        ("activity", "buyer"): 3,
        ("activity", "never"): 1,
    }


def random_states(seed: int, n: int) -> list[AccountState]:
    rng = random.Random(seed)
    states = []
    for i in range(n):
        orders = [
            (-rng.randrange(0, 400), round(rng.uniform(-50, 5000), 2), rng.randrange(0, 5))
            for _ in range(rng.randrange(0, 3))
        ]
        orders.sort()
        states.append(
            account(
                f"R{i}",
                {
                    "value": [rng.choice(["a", "b1", "c2", "inactive"])],
                    "engagement": rng.sample(["x", "y", "z"], rng.randrange(0, 3)),
                },
                orders=orders,
                categories={c: rng.uniform(0, 900) for c in rng.sample(["a", "b", "c", "d"], 2)},
                roles={r: -rng.randrange(0, 150) for r in rng.sample(["user", "buyer"], 1)},
                campaigns=(rng.randrange(0, 4), rng.randrange(0, 2)),
                points=rng.randrange(0, 900),
            )
        )
    return states


def assert_close(actual: Any, expected: Any) -> None:
    """Equal up to floating-point summation order."""
    if isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-9)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key, value in expected.items():
            assert_close(actual[key], value)
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected)
        for mine, theirs in zip(actual, expected, strict=True):
            assert_close(mine, theirs)
    else:
        assert actual == expected


def test_accumulating_in_batches_equals_one_shot() -> None:
    states = random_states(seed=11, n=300)
    one_shot = profile_segments(views(states))

    builder = ProfileBuilder()
    for start in range(0, len(states), 64):  # the worker's batches out of Redis
        for state, view in views(states[start : start + 64]):
            builder.add(state, view)
    assert builder.build() == one_shot

    # Two builders over disjoint halves (e.g. two scanners), merged: the same numbers.
    first, second = ProfileBuilder(), ProfileBuilder()
    first.add_many(views(states[::2]))
    second.add_many(views(states[1::2]))
    first.merge(second)
    merged = first.build()
    assert list(merged) == list(one_shot)
    assert_close(profiles_to_dicts(merged), profiles_to_dicts(one_shot))


def test_build_does_not_consume_the_accumulator() -> None:
    states = random_states(seed=3, n=20)
    builder = ProfileBuilder()
    builder.add_many(views(states[:10]))
    early = builder.build()
    builder.add_many(views(states[10:]))
    assert builder.build() == profile_segments(views(states))
    assert sum(p.size for k, p in early.items() if k[0] == "value") == 10


def test_profiles_are_json_serialisable_and_round_trip() -> None:
    profiles = profile_segments(views(random_states(seed=5, n=50)))
    text = json.dumps(profiles_to_dicts(profiles), allow_nan=False)
    assert profiles_from_dicts(json.loads(text)) == profiles
    one = next(iter(profiles.values()))
    assert SegmentProfile.from_dict(one.to_dict()) == one
