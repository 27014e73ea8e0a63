"""The state store in shards: on one Redis and on a real Redis Cluster (3 primaries, each
with a replica), a batch processor writes what it writes with one shard on one Redis.

Each layout gets the same orders of 60 accounts in batches that span every shard; then
the states, memberships, sizes, paged member listing, revenues, due times, flows, the
ABC cut-offs (computed from the revenues merged over the shards and copied into each)
and the account scan must equal the single-shard run's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from tests.clock import TEST_NOW
from tests.integration.runtime.test_processor import RecordingSender, record
from worker.adapters.redis_keys import KeyLayout
from worker.adapters.redis_store import LayoutMismatch, RedisStateStore
from worker.config.settings import Settings
from worker.core.definitions import load_definitions
from worker.core.features import VOCABULARY
from worker.runtime.metrics import Metrics
from worker.runtime.processor import BatchProcessor

DEFINITIONS = load_definitions(
    """
version: "shards-1"
families:
  value:
    exclusive: true
    segments:
      - id: a
        when: revenue_365d >= value_a_min
      - id: b
        when: revenue_365d >= value_b_min
      - id: c
        when: true
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
T0 = TEST_NOW.replace(microsecond=0) - timedelta(days=60)
ACCOUNTS = [f"ACC-{n:03d}" for n in range(60)]


def orders() -> list[list[Any]]:
    """Four batches of records: every account orders in each, amounts spread widely."""
    batches, offset = [], 0
    for batch in range(4):
        records = []
        for n, account in enumerate(ACCOUNTS):
            event = {
                "type": "order_placed",
                "event_id": f"e{batch}-{n}",
                "account_id": account,
                "occurred_at": (T0 + timedelta(days=batch * 10, minutes=n)).isoformat(),
                "order_id": f"o{batch}-{n}",
                "total": float((n * 37 % 60 + 1) ** 2),
            }
            records.append(record(offset, event))
            offset += 1
        batches.append(records)
    return batches


async def run(client: Any, shards: int, store: RedisStateStore | None = None) -> dict[str, Any]:
    """Process the batches, refresh the cut-offs, and read back everything a user sees."""
    store = store or RedisStateStore(client, f"sh{shards}", shards=shards)
    await store.prepare()
    settings = Settings(
        kafka_bootstrap_servers="unused:9092", redis_url="redis://unused", retry_max_seconds=0.2
    )
    processor = BatchProcessor(settings, DEFINITIONS, store, RecordingSender(), Metrics())
    for batch in orders():
        await processor.process(batch)
    await processor.refresh_thresholds(paced=False)
    states = await store.load_many(ACCOUNTS)
    segments = [("value", s) for s in "abc"] + [("buyers", "recent"), ("buyers", "big")]
    pages: list[str] = []
    cursor = 0
    while True:
        cursor, page = await store.members_page("value", "c", cursor, 5)
        pages += page
        if cursor == 0:
            break
    scanned = [a async for chunk in store.account_ids(batch=7) for a in chunk]
    return {
        "states": {a: (s.orders, s.memberships.keys(), s.memberships) for a, s in states.items()},
        "members": {seg: await store.members(*seg) for seg in segments},
        "sizes": await store.segment_sizes(segments),
        "paged": sorted(pages),
        "paged_once": len(pages) == len(set(pages)),
        "revenues": await store.revenues(),
        "due": await store.due_accounts(float("inf"), 1000),
        "flows": await store.take_flows(),
        "thresholds": await store.load_thresholds(),
        "stream_time": await store.stream_time(),
        "scanned": sorted(scanned),
        "sent": sorted(
            (c.account_id, c.family, c.segment_id, c.change) for c in processor.sender.changes
        ),
        "stale": await store.stale_outbox(0),
        "store": store,
    }


@pytest.fixture
async def single(redis_server, redis_client) -> AsyncIterator[dict[str, Any]]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield await run(client, 1)
    await client.aclose()


def strip(outcome: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in outcome.items() if k not in ("store", "due", "states")}


async def assert_same(sharded: dict[str, Any], single: dict[str, Any]) -> None:
    assert strip(sharded) == strip(single)
    assert sharded["states"] == single["states"]
    # due times: the same accounts, each shard's list merged by time
    assert sorted(sharded["due"]) == sorted(single["due"])
    assert single["thresholds"]["a_min"] is not None
    assert {m for seg, ms in single["members"].items() if seg[0] == "value" for m in ms} == set(
        ACCOUNTS
    )
    assert sharded["stale"] == []


async def test_four_shards_on_one_redis_hold_what_one_shard_holds(
    redis_server, redis_client, single
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        sharded = await run(client, 4)
        await assert_same(sharded, single)
        # every per-account key is in its shard; each shard has a copy of the cut-offs
        layout = KeyLayout("sh4", 4)
        for account in ACCOUNTS:
            assert redis_client.exists(layout.shard_keys(account).state(account))
        master = redis_client.get(layout.thresholds)
        assert [redis_client.get(k) for k in layout.copies(layout.thresholds)] == [master] * 4
        # a worker configured for another shard count refuses the stored state
        with pytest.raises(LayoutMismatch, match="written with 4 shards"):
            await RedisStateStore(client, "sh4", shards=8).prepare()
        # and so does a deployment stored before the layout was recorded
        redis_client.delete("sh1:layout")
        with pytest.raises(LayoutMismatch, match="single-shard layout"):
            await RedisStateStore(client, "sh1", shards=8).prepare()
    finally:
        await client.aclose()


async def test_sixteen_shards_on_a_redis_cluster_hold_what_one_shard_holds(
    redis_cluster, single
) -> None:
    client = RedisCluster.from_url(redis_cluster.url)
    try:
        for node in redis_cluster.urls:  # an empty cluster for this test
            with redis.Redis.from_url(node) as direct:
                if direct.info("replication")["role"] == "master":
                    direct.flushall()
        sharded = await run(client, 16)
        await assert_same(sharded, single)
        # the shards are spread over all three primaries
        layout = KeyLayout("sh16", 16)
        primaries = {
            redis_cluster.primary_of_slot(client.keyslot(layout.each[k].due)).port
            for k in range(16)
        }
        assert len(primaries) == 3
        thresholds = json.loads(await client.get(layout.thresholds))
        assert thresholds == sharded["thresholds"]
    finally:
        await client.aclose()


class KillingStore(RedisStateStore):
    """Kills the primary of a shard while that shard's share of a batch is in flight:
    after its states were read under WATCH, before its EXEC."""

    def __init__(self, cluster: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cluster = cluster
        self.batches = 0
        self.killed: list[tuple[int, int]] = []  # (batch, port)

    async def update_batch(self, account_ids: Any, mutate: Any) -> Any:
        self.batches += 1
        batch = self.batches

        def killing(states: dict[str, Any], globals: Any) -> Any:
            if batch == 2 and not self.killed:
                account = min(states)
                slot = self.redis.keyslot(self.keys.shard_keys(account).state(account))
                primary = self.cluster.primary_of_slot(slot)
                self.cluster.kill(primary)
                self.killed.append((batch, primary.port))
            return mutate(states, globals)

        return await super().update_batch(account_ids, killing)


async def test_a_primary_killed_while_a_batch_is_in_flight_loses_nothing(single) -> None:
    from worker.devtools.embedded.redis_cluster import start_redis_cluster

    cluster = start_redis_cluster()
    try:
        client = RedisCluster.from_url(cluster.url)
        store = KillingStore(cluster, client, "sh16", shards=16, wait_replicas=1)
        outcome = await run(client, 16, store)
        await client.aclose()
        assert len(store.killed) == 1 and store.killed[0][0] == 2  # in batch 2, in flight
        nodes = {node.port: node for node in cluster.nodes()}
        dead = nodes[store.killed[0][1]]
        assert "fail" in dead.flags
        promoted = [n for n in nodes.values() if n.is_primary and n.port != dead.port]
        assert len(promoted) == 3  # its replica took over
        await assert_same(outcome, single)
    finally:
        cluster.stop()
