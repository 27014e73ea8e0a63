"""The trigger router on a real broker and Redis, with its wall clock in the test's hand:
cooldown, cap, holdout share, quiet hours, suppressed segments, redelivery."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from tests.clock import TEST_NOW
from tests.integration.harness import Deployment, TopicReader
from worker.adapters.factory import state_store, trigger_store
from worker.adapters.kafka_senders import ProducerSender
from worker.config.settings import DEFAULT_DEFINITIONS
from worker.core.events import SegmentChanged
from worker.core.features import VOCABULARY, AccountState, Globals
from worker.core.membership import change_id
from worker.core.triggers.config import load_triggers
from worker.ports import BatchResult
from worker.runtime.metrics import Metrics
from worker.runtime.triggers import TriggerRouter

DAY = 86400.0
NOON = datetime(2026, 3, 2, 12, tzinfo=UTC).timestamp()  # the router's wall clock


def config(extra_limits: str = "", holdout: float = 0.0):
    return load_triggers(
        f"""
version: "r-1"
triggers:
  - id: welcome_a
    on: {{family: value, segment: a}}
    campaign: a-welcome
    cooldown: 30d
    unless_member_of: [engagement/unsubscribed]
  - id: news
    on: {{family: value}}
    campaign: value-news
limits:
  holdout: {holdout}
  per_account: {{max: 2, per: 7d}}
{extra_limits}
""",
        VOCABULARY,
    )


def change(account: str, n: int, segment: str = "a") -> SegmentChanged:
    cause = f"evt-{account}-{n}"
    return SegmentChanged(
        change_id=change_id(account, "value", segment, "entered", cause),
        account_id=account,
        family="value",
        segment_id=segment,
        change="entered",
        reason="revenue_365d >= value_a_min",
        occurred_at=TEST_NOW,
        definition_version="1",
        cause=cause,
        origin="event",
        live=True,
    )


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def parts(kafka, redis_server):
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    settings = deployment.settings
    segmentation, triggers = state_store(settings), trigger_store(settings)
    reader = TopicReader(deployment.bootstrap_servers, deployment.topic("campaign-triggers"))
    async with ProducerSender(settings) as sender:
        yield segmentation, triggers, sender, reader
    reader.close()
    await segmentation.close()
    await triggers.close()


def router(parts, triggers_config, clock) -> TriggerRouter:
    segmentation, triggers, sender, _ = parts
    return TriggerRouter(triggers_config, segmentation, triggers, sender, Metrics(), clock)


async def test_cooldown_cap_and_redelivery(parts) -> None:
    clock = Clock(NOON)
    routing = router(parts, config(), clock)
    first = await routing.route([change("ACME", 1)])
    assert [(d.trigger, d.outcome) for d in first] == [("welcome_a", "fired"), ("news", "fired")]
    assert await routing.route([change("ACME", 1)]) == []  # a redelivery decides nothing
    clock.now += DAY
    again = await routing.route([change("ACME", 2)])
    assert [(d.trigger, d.outcome, d.rule) for d in again] == [
        ("welcome_a", "suppressed", "cooldown"),
        ("news", "suppressed", "cap"),  # two fired within the week already
    ]
    clock.now += 31 * DAY
    later = await routing.route([change("ACME", 3)])
    assert [d.outcome for d in later] == ["fired", "fired"]
    sent = parts[3].read(4)
    assert sorted(t["trigger"] for t in sent) == ["news", "news", "welcome_a", "welcome_a"]
    assert len({t["trigger_id"] for t in sent}) == 4
    assert await parts[1].pending() == 0  # acknowledged, so gone from the outbox
    counts = await parts[1].daily_counts()  # the report's: per day, trigger, outcome, rule
    assert counts[("2026-03-02", "welcome_a", "fired", "")] == 1
    assert counts[("2026-03-03", "welcome_a", "suppressed", "cooldown")] == 1
    assert counts[("2026-03-03", "news", "suppressed", "cap")] == 1
    assert sum(counts.values()) == 6


async def test_a_trigger_decided_at_any_fraction_of_a_second_is_sent_at_once(parts) -> None:
    # 12:00:00.1234567 is no whole microsecond: as a datetime it rounds up, after the clock.
    routing = router(parts, config(), Clock(NOON + 0.123456789))
    decisions = await routing.route([change("FRACTION", 1)])
    assert [d.outcome for d in decisions] == ["fired", "fired"]
    assert len(parts[3].read(2)) == 2
    assert await parts[1].pending() == 0  # nothing left for the outbox timer


async def test_members_of_a_suppressed_segment_get_nothing(parts) -> None:
    segmentation = parts[0]

    def unsubscribe(states: dict[str, AccountState], shared: Globals) -> BatchResult:
        states["QUIET"].clock = NOON
        states["QUIET"].memberships = {"engagement": {"unsubscribed": {"since": NOON}}}
        return BatchResult(changed_accounts={"QUIET"})

    await segmentation.update_batch(["QUIET"], unsubscribe)
    decisions = await router(parts, config(), Clock(NOON)).route([change("QUIET", 1)])
    assert [(d.trigger, d.outcome, d.reason) for d in decisions] == [
        ("welcome_a", "suppressed", "member of engagement/unsubscribed"),
        ("news", "fired", ""),
    ]


async def test_quiet_hours_delay_until_they_end_and_then_deliver(parts) -> None:
    quiet = '  quiet_hours: {from: "11:00", to: "13:30", timezone: UTC}'
    clock = Clock(NOON)
    routing = router(parts, config(quiet), clock)
    (welcome, news) = await routing.route([change("NIGHT", 1)])
    assert (welcome.outcome, welcome.rule) == ("delayed", "quiet_hours")
    end = datetime(2026, 3, 2, 13, 30, tzinfo=UTC).timestamp()
    assert welcome.deliver_at == end and news.deliver_at == end
    assert await routing.send_due(stale_after=3600) == 0  # not yet
    assert await parts[1].pending() == 2
    clock.now = end + 1
    assert await routing.send_due(stale_after=3600) == 2
    sent = parts[3].read(2)
    assert {t["deliver_at"] for t in sent} == {"2026-03-02T13:30:00Z"}
    assert await parts[1].pending() == 0


async def test_the_holdout_is_a_tenth_of_ten_thousand_accounts(parts) -> None:
    routing = router(parts, config(holdout=0.1), Clock(NOON))
    accounts = [f"H-{n:05d}" for n in range(10_000)]
    held = 0
    for start in range(0, len(accounts), 500):
        batch = [change(account, 1) for account in accounts[start : start + 500]]
        decisions = await routing.route(batch)
        held += sum(d.outcome == "holdout" for d in decisions if d.trigger == "welcome_a")
    assert abs(held / len(accounts) - 0.1) <= 0.02
    sent = await asyncio.to_thread(parts[3].read, 20_000, 120.0)
    holdout = [t for t in sent if t["holdout"]]
    assert len(holdout) == 2 * held  # recorded on the topic, flagged, for both triggers
    assert {t["account_id"] for t in holdout} == {
        t["account_id"] for t in sent if t["holdout"] and t["trigger"] == "welcome_a"
    }
