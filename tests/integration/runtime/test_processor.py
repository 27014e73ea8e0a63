"""The batch edge against a real Redis: atomic writes, outbox, retries, metrics.

Kafka is replaced by a recording sender here because these tests are about what the
processor does around delivery (when it clears the outbox, what it retries); the
end-to-end tests in test_pipeline.py cover the real broker.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from tests.clock import TEST_NOW
from worker.adapters.redis_store import RedisStateStore
from worker.config.settings import Settings
from worker.core.decoding import Record
from worker.core.definitions import load_definitions
from worker.core.events import DeadLetter, SegmentChanged
from worker.core.features import VOCABULARY
from worker.ports import BatchResult
from worker.runtime.metrics import Metrics
from worker.runtime.processor import BatchProcessor

DEFINITIONS = load_definitions(
    """
version: "a-1"
families:
  buyers:
    exclusive: false
    segments:
      - id: recent
        when: recency_days <= 30
      - id: big
        when: revenue_90d >= 1000
""",
    VOCABULARY,
)
T0 = TEST_NOW.replace(microsecond=0) - timedelta(days=50)


class RecordingSender:
    """Collects what would go to Kafka; can be told to fail the next sends."""

    def __init__(self) -> None:
        self.changes: list[SegmentChanged] = []
        self.letters: list[DeadLetter] = []
        self.failures: list[BaseException] = []

    async def send_changes(self, changes: Sequence[SegmentChanged]) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.changes.extend(changes)

    async def send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)


def record(offset: int, event: dict, topic: str = "orders") -> Record:
    return Record(topic, 0, offset, event["account_id"].encode(), json.dumps(event).encode())


def order(n: int, account: str, day: float, total: float) -> dict:
    return {
        "type": "order_placed",
        "event_id": f"e{n}",
        "account_id": account,
        "occurred_at": (T0 + timedelta(days=day)).isoformat(),
        "order_id": f"o{n}",
        "total": total,
    }


@pytest.fixture
async def processor(redis_server, redis_client):
    client = aioredis.Redis.from_url(redis_server.url)
    settings = Settings(
        kafka_bootstrap_servers="unused:9092", redis_url=redis_server.url, retry_max_seconds=0.05
    )
    sender = RecordingSender()
    processor = BatchProcessor(settings, DEFINITIONS, RedisStateStore(client), sender, Metrics())
    yield processor
    await client.aclose()


def metric(processor: BatchProcessor, name: str, **labels: str) -> float:
    value = processor.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_a_batch_is_written_delivered_and_cleared(processor, redis_client):
    records = [record(0, order(1, "A", 0, 1500.0)), record(1, order(2, "B", 0, 10.0))]
    result = await processor.process(records)
    sent = processor.sender.changes
    assert sorted((c.account_id, c.segment_id) for c in sent) == [
        ("A", "big"),
        ("A", "recent"),
        ("B", "recent"),
    ]
    assert result.changes == sent
    assert redis_client.hlen("seg:outbox") == 0
    assert redis_client.smembers("seg:members:buyers:recent") == {b"A", b"B"}
    assert redis_client.zscore("seg:value:revenue", "A") == 1500.0
    assert redis_client.zscore("seg:clock", "stream") == (T0).timestamp()
    assert redis_client.zscore("seg:due", "A") is not None
    assert metric(processor, "segworker_events_total", type="order_placed", outcome="applied") == 2

    # the same records again (a redelivery after a crash): nothing changes, nothing is sent
    await processor.process(records)
    assert processor.sender.changes == sent
    assert (
        metric(processor, "segworker_events_total", type="order_placed", outcome="duplicate") == 2
    )


async def test_kafka_failures_are_retried_and_the_outbox_cleared_only_after(
    processor, redis_client
):
    processor.sender.failures = [ConnectionError("broker down"), TimeoutError("slow")]
    await processor.process([record(0, order(1, "A", 0, 1500.0))])
    assert len(processor.sender.changes) == 2
    assert redis_client.hlen("seg:outbox") == 0
    assert metric(processor, "segworker_retries_total", stage="kafka") == 2


async def test_changes_of_a_sender_that_died_are_resent_with_the_same_ids(processor, redis_client):
    class Crash(Exception):
        pass

    processor.sender.failures = [Crash("killed between write and send")]
    with pytest.raises(Crash):
        await processor.process([record(0, order(1, "A", 0, 1500.0))])
    assert redis_client.hlen("seg:outbox") == 2  # durable with the state
    written = {raw.decode() for raw in redis_client.hkeys("seg:outbox")}
    processor.settings = processor.settings.model_copy(update={"outbox_resend_after_seconds": 0.01})
    import asyncio

    await asyncio.sleep(0.05)
    assert await processor.resend_stale_outbox() == 2
    assert {c.change_id for c in processor.sender.changes} == written
    assert redis_client.hlen("seg:outbox") == 0


async def test_bad_records_become_dead_letters_and_are_counted(processor):
    await processor.process([Record("orders", 3, 9, b"A", b"not json")])
    assert [
        (d.error_kind, d.source_partition, d.source_offset) for d in processor.sender.letters
    ] == [("malformed_json", 3, 9)]
    assert metric(processor, "segworker_dead_letters_total", error_kind="malformed_json") == 1


async def test_a_short_lived_membership_counts_as_a_flap(processor):
    await processor.process([record(0, order(1, "A", 0, 1500.0))])
    returned = {
        "type": "order_returned",
        "event_id": "r1",
        "account_id": "A",
        "occurred_at": (T0 + timedelta(hours=3)).isoformat(),
        "order_id": "o1",
        "amount": 1000.0,
    }
    await processor.process([record(1, returned)])
    assert metric(processor, "segworker_segment_flaps_total", family="buyers", segment="big") == 1


async def test_the_sweep_exits_accounts_at_stream_time(processor):
    await processor.process([record(0, order(1, "A", 0, 10.0))])
    await processor.process([record(1, order(2, "B", 40, 10.0))])
    swept = 0
    while (count := await processor.sweep_due()) > 0:
        swept += count
    exits = [c for c in processor.sender.changes if c.change == "exited"]
    assert [(c.account_id, c.segment_id, c.cause) for c in exits] == [
        ("A", "recent", f"time:{(T0 + timedelta(days=40)).date().isoformat()}")
    ]


async def test_a_cutoff_change_during_a_batch_makes_it_recompute_with_the_new_one(
    processor, redis_client
):
    """Otherwise an account could be written with a tier from cut-offs already replaced."""
    store = processor.store
    seen = []

    def mutate(states, globals):
        seen.append(globals.value_a_min)
        if len(seen) == 1:  # a refresh on another connection stores new cut-offs meanwhile
            redis_client.set(
                store.thresholds_key, json.dumps({"a_min": 500.0, "b_min": 100.0, "version": "v2"})
            )
        states["X"].clock = 1.0
        return BatchResult(changed_accounts={"X"})

    await store.update_batch(["X"], mutate)
    assert seen == [None, 500.0]
    assert redis_client.exists(store.state_key("X"))


async def test_a_resent_outbox_keeps_the_order_changes_were_written_in(processor):
    """Equal scores would come back sorted by change id: exits before their entries."""

    class Crash(Exception):
        pass

    returned = {
        "type": "order_returned", "event_id": "r1", "account_id": "A",
        "occurred_at": (T0 + timedelta(days=1)).isoformat(), "order_id": "o1", "amount": 1000.0,
    }  # fmt: skip
    processor.sender.failures = [Crash("killed"), Crash("killed")]
    for offset, event in enumerate([order(1, "A", 0, 1500.0), returned]):
        with pytest.raises(Crash):
            await processor.process([record(offset, event)])
    written = [c.change_id for c in await processor.store.stale_outbox(0)]
    await processor.drain_outbox()
    sent = processor.sender.changes
    assert [c.change_id for c in sent] == written
    assert [(c.segment_id, c.change) for c in sent] == [
        ("recent", "entered"),
        ("big", "entered"),
        ("big", "exited"),
    ]


async def test_a_later_writer_delivers_an_earlier_writers_pending_changes_first(
    processor, redis_client
):
    """Two writers of one account (a sweep of the old owner during a rebalance, say): the
    later one must not put its changes on the topic before the earlier one's."""

    class Stalled(Exception):
        pass

    processor.sender.failures = [Stalled("committed, not yet delivered")]
    with pytest.raises(Stalled):
        await processor.process([record(0, order(1, "A", 0, 1500.0))])
    earlier = [c.change_id for c in await processor.store.stale_outbox(0)]
    assert len(earlier) == 2

    returned = {
        "type": "order_returned", "event_id": "r1", "account_id": "A",
        "occurred_at": (T0 + timedelta(days=1)).isoformat(), "order_id": "o1", "amount": 1000.0,
    }  # fmt: skip
    await processor.process([record(1, returned)])
    sent = processor.sender.changes
    assert [c.change_id for c in sent[:2]] == earlier  # the earlier writer's, first
    assert [(c.segment_id, c.change) for c in sent[2:]] == [("big", "exited")]
    assert redis_client.hlen("seg:outbox") == 0
    assert metric(processor, "segworker_outbox_resent_total") == 2

    # delivered: nothing is sent twice by the next writer
    await processor.process([record(2, order(3, "A", 2, 10.0))])
    assert len(processor.sender.changes) == len(sent)


async def test_a_batch_committed_while_the_previous_one_is_delivered_sends_nothing_twice(
    processor, redis_client
):
    """The agent commits the next batch before the previous one's delivery finished: those
    changes are in the outbox, but ours and on their way, so they are not resent."""
    first = await processor.commit([record(0, order(1, "A", 0, 1500.0))])
    returned = {
        "type": "order_returned", "event_id": "r1", "account_id": "A",
        "occurred_at": (T0 + timedelta(days=1)).isoformat(), "order_id": "o1", "amount": 1000.0,
    }  # fmt: skip
    second = await processor.commit([record(1, returned)])
    assert second.resend == []
    assert redis_client.hlen("seg:outbox") == 3  # both batches' changes, none delivered yet

    await processor.finish(first)
    await processor.finish(second)
    sent = processor.sender.changes
    assert [(c.segment_id, c.change) for c in sent] == [
        ("recent", "entered"),
        ("big", "entered"),
        ("big", "exited"),
    ]
    assert redis_client.hlen("seg:outbox") == 0
    assert metric(processor, "segworker_outbox_resent_total") == 0


async def test_a_pass_waits_for_the_agents_delivery_of_an_account_instead_of_resending(
    processor, redis_client
):
    """A time sweep re-evaluates an account while the agent is delivering its batch: the
    batch's changes are in the outbox, but ours and on their way. The pass waits for
    that delivery (keeping the account's order) and sends them no second time."""
    gate = asyncio.Event()
    real_send = processor.sender.send_changes

    async def gated(changes: Sequence[SegmentChanged]) -> None:
        await gate.wait()
        await real_send(changes)

    processor.sender.send_changes = gated
    first = await processor.commit([record(0, order(1, "A", 0, 1500.0))])
    delivering = asyncio.ensure_future(processor.finish(first))
    later = (T0 + timedelta(days=40)).timestamp()  # "recent" has lapsed by then
    sweep = asyncio.ensure_future(processor.reevaluate(["A"], "time:test", at=later))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not sweep.done()  # waiting for the agent's delivery, not sending over it
    gate.set()
    await asyncio.gather(delivering, sweep)
    sent = [(c.segment_id, c.change) for c in processor.sender.changes]
    assert sent == [("recent", "entered"), ("big", "entered"), ("recent", "exited")]
    assert redis_client.hlen("seg:outbox") == 0
    assert metric(processor, "segworker_outbox_resent_total") == 0


async def test_a_pass_resends_what_the_agent_failed_to_deliver(processor):
    class Stalled(Exception):
        pass

    gate = asyncio.Event()
    real_send = processor.sender.send_changes
    calls = 0

    async def failing_first(changes: Sequence[SegmentChanged]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()
            raise Stalled("broker gone")
        await real_send(changes)

    processor.sender.send_changes = failing_first
    first = await processor.commit([record(0, order(1, "A", 0, 1500.0))])
    delivering = asyncio.ensure_future(processor.finish(first))
    later = (T0 + timedelta(days=40)).timestamp()
    sweep = asyncio.ensure_future(processor.reevaluate(["A"], "time:test", at=later))
    await asyncio.sleep(0)
    gate.set()
    with pytest.raises(Stalled):
        await delivering
    await sweep
    sent = [(c.segment_id, c.change) for c in processor.sender.changes]
    assert sent == [("recent", "entered"), ("big", "entered"), ("recent", "exited")]
    assert metric(processor, "segworker_outbox_resent_total") == 2


async def test_changes_of_a_failed_delivery_are_resent_by_the_next_writer(processor):
    class Stalled(Exception):
        pass

    first = await processor.commit([record(0, order(1, "A", 0, 1500.0))])
    processor.sender.failures = [Stalled("broker gone")]
    with pytest.raises(Stalled):
        await processor.finish(first)
    third = await processor.commit([record(1, order(2, "A", 1, 10.0))])
    assert [c.change_id for c in third.resend] == [c.change_id for c in first.changes]


async def test_background_passes_pause_longer_while_batches_keep_the_loop_busy(processor):
    now = time.perf_counter()
    idle_pause = processor.background_pause(0.01, now)
    assert idle_pause == pytest.approx(0.01 * (1 / processor.settings.cluster_reassign_share - 1))
    await processor.process([record(n, order(n, f"A{n}", 0, 10.0)) for n in range(50)])
    assert processor.load.share(time.perf_counter()) > 0  # commits are what it measures
    processor.load.record(busy=processor.load.window * 0.8, now=time.perf_counter())
    assert processor.background_pause(0.01, time.perf_counter()) > 4 * idle_pause
