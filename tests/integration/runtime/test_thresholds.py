"""The ABC cut-off pass against a real Redis: stored, applied once, resumed when cut short.

New cut-offs are stored by one compare-and-set; the accounts whose tier they move are
then re-evaluated by a pass whose progress is stored. These tests cut that pass short
(as a killed worker or a failover would), run it in another worker than the one that
stored the cut-offs, and pace it through a Redis outage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.clock import TEST_NOW
from tests.integration.adapters.test_redis_shards import DEFINITIONS  # value + buyers
from tests.integration.runtime.test_processor import RecordingSender, record
from worker.adapters.redis_store import RedisStateStore
from worker.config.settings import Settings
from worker.core import value
from worker.runtime.metrics import Metrics
from worker.runtime.processor import BatchProcessor

T0 = TEST_NOW.replace(microsecond=0) - timedelta(days=60)
ACCOUNTS = [f"ACC-{n:03d}" for n in range(40)]


class Killed(Exception):
    """Stands for the worker dying in the middle of a pass."""


def orders(batch: int, amount: Any) -> list[Any]:
    return [
        record(
            batch * 1000 + n,
            {
                "type": "order_placed",
                "event_id": f"e{batch}-{n}",
                "account_id": account,
                "occurred_at": (T0 + timedelta(days=batch, minutes=n)).isoformat(),
                "order_id": f"o{batch}-{n}",
                "total": float(amount(n)),
            },
        )
        for n, account in enumerate(ACCOUNTS)
    ]


def worker(store: RedisStateStore) -> BatchProcessor:
    """A processor of its own, as another worker process (or the same one restarted) has."""
    settings = Settings(
        kafka_bootstrap_servers="unused:9092",
        redis_url="redis://unused",
        retry_max_seconds=0.05,
        cluster_reassign_batch_size=4,
    )
    return BatchProcessor(settings, DEFINITIONS, store, RecordingSender(), Metrics())


async def stale_tiers(store: RedisStateStore) -> dict[str, tuple[str | None, str]]:
    """Accounts whose value segment is not the tier the stored cut-offs give them:
    account -> (held, due)."""
    stored = await store.load_thresholds()
    assert stored is not None
    cutoffs = value.thresholds_from_dict(stored)
    held = {a: s for s in "abc" for a in await store.members("value", s)}
    return {
        account: (held.get(account), cutoffs.tier(revenue).lower())
        for account, revenue in (await store.revenues()).items()
        if held.get(account) != cutoffs.tier(revenue).lower()
    }


@pytest.fixture(params=[1, 4], ids=["one-shard", "four-shards"])
async def store(request, redis_server, redis_client) -> AsyncIterator[RedisStateStore]:
    client = aioredis.Redis.from_url(redis_server.url)
    store = RedisStateStore(client, "cut", shards=request.param)
    await store.prepare()
    processor = worker(store)
    # cut-offs from even amounts, applied: every account holds its tier
    await processor.process(orders(0, lambda n: (n + 1) * 10))
    await processor.refresh_thresholds(paced=False)
    assert await stale_tiers(store) == {}
    # a few accounts buy a lot more: the cut-offs rise, many tiers move
    await processor.process(orders(1, lambda n: 5000 if n % 7 == 0 else 0))
    yield store
    await client.aclose()


async def copies_of_cutoffs(store: RedisStateStore) -> set[bytes | None]:
    keys = store.keys.copies(store.keys.thresholds) or [store.keys.thresholds]
    return {await store.redis.get(key) for key in keys}


async def test_a_pass_cut_short_is_resumed_by_the_next_refresh(store, monkeypatch) -> None:
    dying = worker(store)
    steps = 0
    real = dying.reevaluate

    async def reevaluate(*args: Any, **kwargs: Any) -> Any:
        nonlocal steps
        steps += 1
        if steps == 2:
            raise Killed("after the first step of the pass")
        return await real(*args, **kwargs)

    monkeypatch.setattr(dying, "reevaluate", reevaluate)
    before = await store.load_thresholds()
    with pytest.raises(Killed):
        await dying.refresh_thresholds(paced=False)
    stored = await store.load_thresholds()
    # the cut-offs are stored and in every shard; the tiers of the unvisited accounts lag
    assert stored is not None and before is not None and not value.same_cutoffs(stored, before)
    assert len(await copies_of_cutoffs(store)) == 1
    lagging = await stale_tiers(store)
    assert len(lagging) > 4, "the pass should have stopped with accounts left to move"
    pending = await store.thresholds_to_apply()
    assert pending is not None and pending[1] == stored

    # the next refresh (here: the worker restarted) finds nothing new to store, and
    # finishes the pass from where the tiers stand
    restarted = worker(store)
    moved = await restarted.refresh_thresholds(paced=False)
    assert moved >= len(lagging)
    assert await stale_tiers(store) == {}
    assert await store.thresholds_to_apply() is None
    assert await restarted.refresh_thresholds(paced=False) == 0
    sent = {(c.account_id, c.segment_id, c.change) for c in restarted.sender.changes}
    assert {(a, due, "entered") for a, (_, due) in lagging.items()} <= sent


async def test_the_worker_that_runs_passes_applies_cut_offs_another_one_stored(store) -> None:
    storing, running = worker(store), worker(store)
    assert await storing.refresh_thresholds(apply=False) == 0
    assert await stale_tiers(store) != {}
    assert await store.thresholds_to_apply() is not None
    # nothing new to store, but the stored cut-offs wait to be applied
    assert await running.refresh_thresholds(paced=False) > 0
    assert await stale_tiers(store) == {}
    assert await store.thresholds_to_apply() is None


async def test_a_pass_overtaken_by_newer_cut_offs_leaves_them_to_the_next_one(store) -> None:
    first = worker(store)
    await first.refresh_thresholds(apply=False)
    pending = await store.thresholds_to_apply()
    assert pending is not None
    # newer cut-offs are stored while the first pass would run: it starts from the tiers
    # of the first cut-offs (the record is kept), and a pass applies the newest
    await first.process(orders(2, lambda n: 90000 if n == 3 else 0))
    await first.refresh_thresholds(apply=False)
    newer = await store.thresholds_to_apply()
    assert newer is not None and newer[0] == pending[0] and newer[1] != pending[1]
    await worker(store).apply_thresholds(paced=False)
    assert await stale_tiers(store) == {}
    # a pass that read the earlier record and ends late records nothing
    assert not await store.record_thresholds_applied(pending[0], pending[1])
    assert await store.thresholds_to_apply() is None


async def test_cut_offs_stored_before_passes_were_recorded_wait_for_no_pass(
    redis_server, redis_client
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        store = RedisStateStore(client, "old")
        redis_client.set("old:value:thresholds", b'{"a_min": 500.0, "b_min": 100.0}')
        assert await store.thresholds_to_apply() is None
    finally:
        await client.aclose()


async def test_a_pass_is_paced_by_its_work_not_by_a_redis_outage(store, monkeypatch) -> None:
    processor = worker(store)
    await processor.refresh_thresholds(apply=False)
    outage = [ConnectionError("redis gone")] * 3  # waits of 0.1 + 0.05 + 0.05 s
    real = store.update_batch

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if outage:
            raise outage.pop()
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, "update_batch", flaky)
    steps: list[float] = []

    def pause(step_seconds: float, now: float) -> float:
        steps.append(step_seconds)
        return 0.0

    monkeypatch.setattr(processor, "background_pause", pause)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await processor.apply_thresholds(paced=True)
    took = loop.time() - began
    retries = processor.metrics.registry.get_sample_value(
        "segworker_retries_total", {"stage": "redis"}
    )
    assert retries == 3
    # the first step sat out at least 0.2 s of waits; none of it counts as its work
    assert steps and steps[0] <= took - 0.2
    assert await stale_tiers(store) == {}
