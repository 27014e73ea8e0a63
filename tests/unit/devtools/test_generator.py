"""The synthetic event generator: valid, deterministic, ordered, realistic enough to segment."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from tests.clock import TEST_NOW
from worker.adapters.kafka_clients import encode
from worker.core.events import decode_input
from worker.devtools.generator import (
    CATEGORIES,
    DEFAULT_TOPICS,
    ROLES,
    SyntheticAccount,
    TopicEvent,
    demo_events,
    generate_events,
    live_events,
    make_accounts,
)

START = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 365
N_ACCOUNTS = 300
TOPIC_OF_TYPE = {
    "order_placed": "orders",
    "order_returned": "orders",
    "campaign_interaction": "campaign-events",
    "loyalty_points": "loyalty-points",
    "account_profile": "account-profiles",
}


@pytest.fixture(scope="module")
def accounts() -> list[SyntheticAccount]:
    return make_accounts(N_ACCOUNTS, random.Random(11))


@pytest.fixture(scope="module")
def year(accounts: list[SyntheticAccount]) -> list[TopicEvent]:
    """A year of events for 300 accounts (about 30k events)."""
    return list(generate_events(accounts, START, DAYS, random.Random(12)))


def _time(event: dict) -> datetime:
    return datetime.fromisoformat(event["occurred_at"])


class _FakeClock:
    """``now_fn``/``sleep_fn`` pair: sleeping advances the clock instantly."""

    def __init__(self) -> None:
        self.now = TEST_NOW.replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# ----------------------------------------------------------------------------- accounts


def test_accounts_are_deterministic() -> None:
    assert make_accounts(50, random.Random(3)) == make_accounts(50, random.Random(3))
    assert make_accounts(50, random.Random(3)) != make_accounts(50, random.Random(4))


def test_account_shape(accounts: list[SyntheticAccount]) -> None:
    assert [a.account_id for a in accounts[:2]] == ["ACC-00001", "ACC-00002"]
    for account in accounts:
        assert re.fullmatch(r"ACC-\d{5}", account.account_id)
        assert 1 <= len(account.contacts) <= 6
        assert account.contacts[0].role == "buyer"
        for n, contact in enumerate(account.contacts, 1):
            assert contact.contact_id == f"{account.account_id}-C{n}"
        assert sum(w for _, w in account.category_weights) == pytest.approx(1, abs=1e-3)
        assert {c for c, _ in account.category_weights} <= set(CATEGORIES)
        assert 0 <= account.campaign_responsiveness <= 1
        assert account.employees >= 1
    assert len({a.industry for a in accounts}) >= 8
    assert len({a.country for a in accounts}) >= 8
    personas = Counter(a.persona for a in accounts)
    assert set(personas) == {"key_account", "regular", "occasional", "dormant", "new"}
    assert 0 < sum(a.loyalty_member for a in accounts) < len(accounts)  # some never join


def test_every_role_appears(accounts: list[SyntheticAccount], year: list[TopicEvent]) -> None:
    assert {c.role for a in accounts for c in a.contacts} == set(ROLES)
    campaign_roles = {e["contact_role"] for _, e in year if e["type"] == "campaign_interaction"}
    assert campaign_roles == set(ROLES)


# ------------------------------------------------------------------------------- events


def test_same_seed_same_events() -> None:
    def run(seed: int) -> list[TopicEvent]:
        rng = random.Random(seed)
        return list(generate_events(make_accounts(40, rng), START, 90, rng))

    first = run(5)
    assert first == run(5)
    assert first != run(6)


def test_every_event_validates(year: list[TopicEvent]) -> None:
    assert len(year) > 10_000
    for topic, event in year:
        decoded = decode_input(json.dumps(event))
        assert decoded.type == event["type"]
        assert topic == TOPIC_OF_TYPE[event["type"]]
        assert topic in DEFAULT_TOPICS
        assert event["occurred_at"].endswith("Z")
    assert set(Counter(e["type"] for _, e in year)) == set(TOPIC_OF_TYPE)


def test_time_order_and_range(year: list[TopicEvent]) -> None:
    times = [_time(e) for _, e in year]
    assert times == sorted(times)
    assert times[0] == START
    assert times[-1] < START + timedelta(days=DAYS)


def test_unique_event_ids(year: list[TopicEvent]) -> None:
    ids = [e["event_id"] for _, e in year]
    assert len(set(ids)) == len(ids)
    orders = [e["order_id"] for _, e in year if e["type"] == "order_placed"]
    assert len(set(orders)) == len(orders)


def test_profiles_come_first(accounts: list[SyntheticAccount], year: list[TopicEvent]) -> None:
    head = year[: len(accounts)]
    assert [e["account_id"] for _, e in head] == [a.account_id for a in accounts]
    assert {e["type"] for _, e in head} == {"account_profile"}


def test_revenue_is_pareto_like(accounts: list[SyntheticAccount], year: list[TopicEvent]) -> None:
    revenue: Counter[str] = Counter({a.account_id: 0.0 for a in accounts})
    for _, event in year:
        if event["type"] == "order_placed":
            revenue[event["account_id"]] += event["total"]
        elif event["type"] == "order_returned":
            revenue[event["account_id"]] -= event["amount"]
    ranked = sorted(revenue.values(), reverse=True)
    top_share = sum(ranked[: len(ranked) // 5]) / sum(ranked)
    assert 0.6 <= top_share <= 0.95


def test_orders_are_consistent(accounts: list[SyntheticAccount], year: list[TopicEvent]) -> None:
    roles = {c.contact_id: c.role for a in accounts for c in a.contacts}
    orders = {}
    for _, event in year:
        if event["type"] == "order_placed":
            summed = sum(line["quantity"] * line["unit_price"] for line in event["lines"])
            assert event["total"] == pytest.approx(summed, abs=0.01)
            assert roles[event["contact_id"]] in ("buyer", "user")
            assert event["contact_id"].startswith(event["account_id"] + "-")
            orders[event["order_id"]] = event
        elif event["type"] == "order_returned":
            order = orders[event["order_id"]]  # returns follow their order
            assert order["account_id"] == event["account_id"]
            assert 0 < event["amount"] <= order["total"]


def test_campaign_funnel_follows_sends(year: list[TopicEvent]) -> None:
    reached: set[tuple[str, str]] = set()
    unsubscribed: set[str] = set()
    kinds: Counter[str] = Counter()
    for _, event in year:
        if event["type"] != "campaign_interaction":
            continue
        key = (event["campaign_id"], event["contact_id"])
        kinds[event["kind"]] += 1
        if event["kind"] == "sent":
            assert event["contact_id"] not in unsubscribed
            reached.add(key)
        else:
            assert key in reached
        if event["kind"] == "unsubscribed":
            unsubscribed.add(event["contact_id"])
    assert set(kinds) == {"sent", "opened", "clicked", "responded", "converted", "unsubscribed"}
    assert kinds["sent"] > kinds["opened"] > kinds["clicked"] > kinds["responded"]


def test_loyalty_balances_never_negative(
    accounts: list[SyntheticAccount], year: list[TopicEvent]
) -> None:
    members = {a.account_id for a in accounts if a.loyalty_member}
    balance: defaultdict[str, int] = defaultdict(int)
    reasons: Counter[str] = Counter()
    tiers = set()
    for _, event in year:
        if event["type"] != "loyalty_points":
            continue
        assert event["account_id"] in members
        sign = 1 if event["kind"] == "earned" else -1
        balance[event["account_id"]] += sign * event["points"]
        assert balance[event["account_id"]] >= 0
        reasons[event["reason"]] += 1
        tiers.add(event["tier"])
    assert {"purchase", "action", "redemption", "bonus"} <= set(reasons)
    assert tiers == {"bronze", "silver", "gold", "platinum"}


def test_points_expire_after_a_year() -> None:
    rng = random.Random(21)
    events = generate_events(make_accounts(60, rng), START, 430, rng)
    expired = [e for _, e in events if e["type"] == "loyalty_points" and e["kind"] == "expired"]
    assert expired
    assert all(_time(e) >= START + timedelta(days=365) for e in expired)


def test_rejects_future_and_naive_start(accounts: list[SyntheticAccount]) -> None:
    with pytest.raises(ValueError, match="future"):
        # wall clock: the start must lie in the future of the day the test runs
        next(generate_events(accounts, datetime.now(UTC), 30, random.Random(1)))
    with pytest.raises(ValueError, match="timezone"):
        next(generate_events(accounts, datetime(2025, 1, 1), 30, random.Random(1)))


# --------------------------------------------------------------------------------- live


def test_live_events_are_stamped_with_wall_time() -> None:
    clock = _FakeClock()
    began = clock.now
    accounts = make_accounts(50, random.Random(1))
    stream = live_events(
        accounts, random.Random(2), speedup=86_400, now_fn=clock, sleep_fn=clock.sleep
    )
    events = list(itertools.islice(stream, 1500))
    times = [_time(e) for _, e in events]
    assert times == sorted(times)
    assert times[0] == began and times[-1] <= clock.now
    assert [e["type"] for _, e in events[:50]] == ["account_profile"] * 50
    for _, event in events:
        decode_input(json.dumps(event))
    # One simulated day per wall second: 1500 events of 50 accounts take minutes, not days.
    assert timedelta(seconds=10) < clock.now - began < timedelta(hours=1)


def test_demo_backfills_then_goes_live() -> None:
    clock = _FakeClock()
    began = clock.now
    stream = demo_events(
        make_accounts(40, random.Random(1)),
        random.Random(2),
        history_days=60,
        now_fn=clock,
        sleep_fn=clock.sleep,
    )
    events = list(itertools.islice(stream, 4000))
    times = [_time(e) for _, e in events]
    assert times == sorted(times)
    assert times[0] == began - timedelta(days=60)
    live = [t for t in times if t >= began]
    assert live and len(live) < len(times)  # both phases present
    assert times[-1] <= clock.now
    ids = [e["event_id"] for _, e in events]
    assert len(set(ids)) == len(ids)
    for _, event in events:
        decode_input(json.dumps(event))


def test_encode_is_compact_utf8() -> None:
    assert encode({"name": "Müller GmbH", "n": 1}) == '{"name":"Müller GmbH","n":1}'.encode()
