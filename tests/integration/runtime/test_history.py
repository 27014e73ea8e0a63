"""The history import's write path (``HistoryWriter``) against a real Redis.

A fold prepared in the import's first pass is finished only if the stored state is still
the one it started from; an account the worker wrote in between is folded again from
what the worker wrote, so neither the import nor the live event is lost.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from tests.integration.runtime.test_processor import DEFINITIONS, T0, RecordingSender, order, record
from worker.adapters.redis_store import RedisStateStore
from worker.adapters.state_codec import encode_state
from worker.config.settings import Settings
from worker.core.backfill import AccountFold, memory_windows
from worker.core.events import OrderPlaced
from worker.core.features import AccountState, FeatureView
from worker.runtime.history import HistoryWriter
from worker.runtime.metrics import Metrics
from worker.runtime.processor import BatchProcessor

END = (T0 + timedelta(days=10)).timestamp()


@pytest.fixture
async def worker(redis_server, redis_client):
    """The processor of a worker (real Redis; Kafka recorded, as in test_processor.py)."""
    client = aioredis.Redis.from_url(redis_server.url)
    settings = Settings(kafka_bootstrap_servers="unused:9092", redis_url=redis_server.url)
    yield BatchProcessor(
        settings, DEFINITIONS, RedisStateStore(client), RecordingSender(), Metrics()
    )
    await client.aclose()


def imported(n: int, day: float, total: float) -> OrderPlaced:
    return OrderPlaced(
        event_id=f"imp-{n}",
        account_id="A",
        occurred_at=T0 + timedelta(days=day),
        order_id=f"so-{n}",
        total=total,
    )


def prepare(processor: BatchProcessor, state: AccountState, events) -> tuple[bytes, AccountFold]:
    """What the import's first pass hands to the second for one account."""
    before = encode_state(state)
    fold = AccountFold(
        state,
        processor.families,
        END,
        "imp-file",
        memory_windows(processor.families),
        processor.impact,
        processor.schedule,
    )
    fold.apply(events)
    return before, fold


async def revenue(processor: BatchProcessor) -> float:
    state = (await processor.store.load_many(["A"]))["A"]
    return float(FeatureView(state, state.now_day)["revenue_90d"])


async def test_an_account_the_worker_wrote_after_the_first_pass_is_folded_again(worker):
    history = {"A": [imported(1, 0, 1500.0), imported(2, 5, 20.0)]}
    prepared = {"A": prepare(worker, AccountState("A"), history["A"])}
    # the worker applies a live order of the account between the import's two passes
    await worker.process([record(0, order(9, "A", 6, 700.0))])

    result = await HistoryWriter(worker).write(history, END, "imp-file", prepared)

    assert await revenue(worker) == 2220.0  # the import and the live order, each once
    assert result.outcomes[("import", "applied")] == 2
    again = await HistoryWriter(worker).write(history, END, "imp-file")
    assert again.outcomes[("import", "duplicate")] == 2 and not again.changes
    assert await revenue(worker) == 2220.0


async def test_a_prepared_fold_is_finished_when_nobody_wrote_the_account(worker):
    history = {"A": [imported(1, 0, 1500.0), imported(2, 5, 20.0)]}
    before, fold = prepare(worker, AccountState("A"), history["A"])

    result = await HistoryWriter(worker).write(history, END, "imp-file", {"A": (before, fold)})

    stored = (await worker.store.load_many(["A"]))["A"]
    assert stored.orders == fold.state.orders and stored.memberships == fold.state.memberships
    assert await revenue(worker) == 1520.0
    assert {(c.segment_id, c.change, c.origin, c.live) for c in result.changes} == {
        ("big", "entered", "import", False),
        ("recent", "entered", "import", False),
    }
    assert worker.sender.changes == result.changes
