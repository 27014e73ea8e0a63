from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.events import (
    AccountProfile,
    CampaignInteraction,
    LoyaltyPoints,
    OrderLine,
    OrderPlaced,
    OrderReturned,
)
from worker.core.features import (
    FEATURES,
    HORIZON_DAYS,
    AccountState,
    FeatureView,
    apply,
    category_shares,
    day_of,
)
from worker.core.features.windows import window_sums, window_totals

T0 = datetime(2025, 6, 1, 9, 30, tzinfo=UTC)


def order(n: int, at: datetime, total: float, category: str = "tools", account: str = "A1"):
    return OrderPlaced(
        event_id=f"o-{n}",
        occurred_at=at,
        account_id=account,
        order_id=f"ord-{n}",
        total=total,
        lines=[OrderLine(sku=f"sku-{n}", category=category, quantity=1, unit_price=total)],
        contact_id="c1",
    )


def view_at(state: AccountState, at: datetime) -> FeatureView:
    return FeatureView(state, day_of(at))


def test_windows_are_exact_at_day_granularity():
    state = AccountState("A1")
    apply(state, order(1, T0, 100.0))
    apply(state, order(2, T0 + timedelta(days=60), 50.0))
    # day 89 after the first order: still inside the 90-day window, leaves on day 90
    assert view_at(state, T0 + timedelta(days=89))["revenue_90d"] == 150.0
    assert view_at(state, T0 + timedelta(days=90))["revenue_90d"] == 50.0
    assert view_at(state, T0 + timedelta(days=90))["revenue_180d"] == 150.0
    assert view_at(state, T0 + timedelta(days=90))["orders_365d"] == 2
    assert view_at(state, T0 + timedelta(days=90))["recency_days"] == 30
    assert view_at(state, T0 + timedelta(days=90))["tenure_days"] == 90
    assert view_at(state, T0 + timedelta(days=90))["aov_365d"] == 75.0


def test_returns_reduce_revenue_and_category_spend():
    state = AccountState("A1")
    apply(state, order(1, T0, 200.0, "tools"))
    apply(state, order(2, T0, 200.0, "safety"))
    apply(
        state,
        OrderReturned(
            event_id="r-1",
            occurred_at=T0 + timedelta(days=1),
            account_id="A1",
            order_id="ord-1",
            amount=100.0,
            category="tools",
        ),
    )
    view = view_at(state, T0 + timedelta(days=1))
    assert view["revenue_30d"] == 300.0
    assert view["orders_30d"] == 2
    assert view["share.tools"] == round(100 / 300, 4)
    assert view["top_category"] == "safety"


def test_momentum_compares_last_90_days_with_the_90_before():
    state = AccountState("A1")
    apply(state, order(1, T0, 100.0))
    apply(state, order(2, T0 + timedelta(days=100), 300.0))
    view = view_at(state, T0 + timedelta(days=100))
    assert view["revenue_prev_90d"] == 100.0
    assert view["momentum_90d"] == 3.0
    assert view_at(AccountState("B"), T0)["momentum_90d"] is None


def test_points_campaigns_and_roles():
    state = AccountState("A1")
    apply(
        state,
        LoyaltyPoints(
            event_id="p1",
            occurred_at=T0,
            account_id="A1",
            kind="earned",
            points=500,
            reason="purchase",
            tier="silver",
        ),
    )
    apply(
        state,
        LoyaltyPoints(
            event_id="p2",
            occurred_at=T0,
            account_id="A1",
            kind="earned",
            points=100,
            reason="action",
        ),
    )
    apply(
        state,
        LoyaltyPoints(
            event_id="p3",
            occurred_at=T0,
            account_id="A1",
            kind="redeemed",
            points=200,
            reason="redemption",
        ),
    )
    for n, kind in enumerate(["sent", "sent", "sent", "sent", "opened", "responded"]):
        apply(
            state,
            CampaignInteraction(
                event_id=f"c{n}",
                occurred_at=T0,
                account_id="A1",
                campaign_id="spring",
                contact_id="k1",
                contact_role="decider",
                kind=kind,
            ),
        )
    view = view_at(state, T0 + timedelta(days=10))
    assert view["points_earned_90d"] == 600
    assert view["points_redeemed_90d"] == 200
    assert view["actions_90d"] == 1
    assert view["points_balance"] == 400
    assert view["tier"] == "silver"
    assert view["is_member"] is True
    assert view["campaigns_sent_365d"] == 4
    assert view["response_rate_365d"] == 0.25
    assert view["decider_engaged_30d"] is True
    assert view["decider_accepted_90d"] is True
    assert view["buyer_engaged_30d"] is False
    assert view_at(state, T0 + timedelta(days=30))["decider_engaged_30d"] is False


def test_latest_profile_by_event_time_wins():
    state = AccountState("A1")
    newer = AccountProfile(
        event_id="pr2",
        occurred_at=T0,
        account_id="A1",
        industry="construction",
        employees=40,
        country="FR",
    )
    older = AccountProfile(
        event_id="pr1",
        occurred_at=T0 - timedelta(days=3),
        account_id="A1",
        industry="retail",
        employees=4000,
        country="US",
    )
    apply(state, newer)
    apply(state, older)
    view = view_at(state, T0)
    assert (view["industry"], view["size_class"], view["region"]) == (
        "construction",
        "small",
        "EMEA",
    )


def test_old_activity_is_pruned_past_the_horizon():
    state = AccountState("A1")
    apply(state, order(1, T0, 100.0))
    apply(state, order(2, T0 + timedelta(days=HORIZON_DAYS + 5), 10.0))
    assert [row[0] for row in state.orders] == [day_of(T0 + timedelta(days=HORIZON_DAYS + 5))]
    assert category_shares(state, state.now_day) == {"tools": 1.0}


def test_redelivered_offsets_are_skipped():
    state = AccountState("A1")
    assert apply(state, order(1, T0, 100.0), ("orders:0", 5)) is True
    # a different event at an offset already applied is a redelivery of an older record
    assert apply(state, order(2, T0, 100.0), ("orders:0", 5)) is False
    assert apply(state, order(3, T0, 100.0), ("orders:1", 5)) is True
    assert view_at(state, T0)["revenue_30d"] == 200.0


def test_a_producer_duplicate_at_a_new_offset_is_skipped():
    state = AccountState("A1")
    assert apply(state, order(1, T0, 100.0), ("orders:0", 5)) is True
    assert apply(state, order(1, T0, 100.0), ("orders:0", 9)) is False
    assert view_at(state, T0)["revenue_30d"] == 100.0
    assert all(len(token) == 8 for token in state.recent_ids)  # digests, not whole ids


def test_states_that_remember_whole_event_ids_still_skip_them():
    state = AccountState("A1")
    apply(state, order(1, T0, 100.0))
    state.recent_ids = [order(1, T0, 100.0).event_id]  # as states stored before digests
    assert apply(state, order(1, T0, 100.0)) is False


def test_every_catalogue_feature_computes_on_an_empty_state():
    view = view_at(AccountState("empty"), T0)
    for name, feature in FEATURES.items():
        value = view[name]
        assert value is None or isinstance(value, bool | int | float | str), name
        if feature.kind == "bool":
            assert isinstance(value, bool), name


# --------------------------------------------------------------------- properties

when = st.integers(min_value=0, max_value=500).map(lambda d: T0 + timedelta(days=d, hours=3))
amount = st.floats(min_value=0.01, max_value=50_000, allow_nan=False).map(lambda x: round(x, 2))
category = st.sampled_from(["tools", "safety", "office"])
event_ids = st.integers(min_value=0, max_value=10**6).map(str)


@st.composite
def events(draw):
    kind = draw(st.sampled_from(["order", "return", "campaign", "points", "profile"]))
    common = {"event_id": draw(event_ids), "occurred_at": draw(when), "account_id": "A1"}
    if kind == "order":
        total = draw(amount)
        return OrderPlaced(
            **common,
            order_id="o",
            total=total,
            lines=[OrderLine(sku="s", category=draw(category), quantity=1, unit_price=total)],
        )
    if kind == "return":
        return OrderReturned(**common, order_id="o", amount=draw(amount), category=draw(category))
    if kind == "campaign":
        return CampaignInteraction(
            **common,
            campaign_id="c",
            kind=draw(st.sampled_from(["sent", "opened", "responded", "unsubscribed"])),
            contact_role=draw(st.sampled_from([None, "buyer", "decider"])),
        )
    if kind == "points":
        return LoyaltyPoints(
            **common,
            kind=draw(st.sampled_from(["earned", "redeemed", "expired"])),
            points=draw(st.integers(1, 10_000)),
            reason="purchase",
        )
    return AccountProfile(
        **common,
        industry=draw(st.sampled_from(["retail", "healthcare"])),
        employees=draw(st.integers(1, 5000)),
        country="DE",
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(events(), max_size=30), st.data())
def test_applying_an_event_twice_equals_applying_it_once(history, data):
    once, twice = AccountState("A1"), AccountState("A1")
    for offset, event in enumerate(history):
        apply(once, event, ("t:0", offset))
        apply(twice, event, ("t:0", offset))
        # a redelivery of the same record, or the same event id again
        apply(twice, event, ("t:0", offset))
        apply(twice, event)
    assert twice.to_dict() == once.to_dict()


@settings(max_examples=100, deadline=None)
@given(st.lists(events(), max_size=20), st.integers(min_value=0, max_value=800))
def test_reading_features_does_not_mutate_state(history, days_later):
    state = AccountState("A1")
    for offset, event in enumerate(history):
        apply(state, event, ("t:0", offset))
    before = copy.deepcopy(state.to_dict())
    view = view_at(state, T0 + timedelta(days=days_later))
    for name in FEATURES:
        view[name]
    view["share.tools"]
    assert state.to_dict() == before


def test_re_importing_a_long_history_applies_nothing_twice():
    """More events than recent_ids remembers: the import watermark catches the rest."""
    history = [
        OrderPlaced(
            event_id=f"imp-{n:032x}",
            occurred_at=T0 + timedelta(days=n // 2),
            account_id="A1",
            order_id=f"o{n}",
            total=10.0,
        )
        for n in range(100)
    ]
    state = AccountState("A1")
    assert all(apply(state, event, ("orders:0", offset)) for offset, event in enumerate(history))
    before = state.to_dict()
    # the same file again: new offsets, same ids and times
    again = [apply(state, event, ("orders:0", 100 + n)) for n, event in enumerate(history)]
    assert not any(again)
    assert {k: v for k, v in state.to_dict().items() if k != "applied"} == {
        k: v for k, v in before.items() if k != "applied"
    }


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-50, 500), st.floats(-1e6, 1e6)), max_size=40),
    st.integers(0, 450),
    st.lists(st.integers(1, 400), min_size=1, max_size=5, unique=True),
)
def test_one_pass_window_totals_equal_one_pass_per_window(rows, now_day, days):
    # Identical floats, not only close ones: the same rows are added in the same order.
    rows = sorted([[day, value] for day, value in rows], key=lambda row: row[0])
    days = tuple(sorted(days))
    totals = window_totals(rows, now_day, 1, days)
    assert totals == [window_sums(rows, now_day, 1, length) for length in days]


@settings(max_examples=100, deadline=None)
@given(st.lists(events(), max_size=25), st.integers(min_value=0, max_value=800), st.randoms())
def test_a_view_gives_the_catalogue_values_in_any_reading_order(history, days_later, rng):
    # The view reuses what it holds (windows of a column, ratios of cached windows, the
    # shares for top_category and share.*); the values must be what the catalogue computes.
    state = AccountState("A1")
    for offset, event in enumerate(history):
        apply(state, event, ("t:0", offset))
    day = day_of(T0 + timedelta(days=days_later))
    names = [*FEATURES, "share.tools", "share.office", "share.hvac", "share.unknown"]
    rng.shuffle(names)
    view = FeatureView(state, day)
    shares = category_shares(state, day)
    for name in names:
        if name.startswith("share."):
            expected = shares.get(name.removeprefix("share."), 0.0)
        else:
            expected = FEATURES[name].compute(state, day)
        assert view[name] == expected, name
        assert view.get(name) == expected, name


def test_the_shared_view_of_a_state_is_dropped_when_an_event_is_applied():
    """``FeatureView.of`` serves the evaluation and the indexing of one step; an event
    applied in between must not leave them reading the features before it."""
    state = AccountState("A1")
    apply(state, order(1, T0, 100.0))
    first = FeatureView.of(state)
    assert first["orders_30d"] == 1 and FeatureView.of(state) is first
    apply(state, order(2, T0 + timedelta(hours=1), 50.0))  # the same day
    second = FeatureView.of(state)
    assert second is not first and second["orders_30d"] == 2
    assert "_feature_view" not in state.to_dict()  # never stored
    assert state == copy.deepcopy(state)
