"""The trigger router's Redis state against a real redis-server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from tests.clock import TEST_NOW
from worker.adapters.redis_triggers import RedisTriggerStore
from worker.core.events import CampaignTriggered
from worker.core.triggers.policy import TriggerState


@pytest.fixture
async def clients(redis_server):
    """Two async clients of the session Redis on an empty database, closed afterwards."""
    opened = [aioredis.Redis.from_url(redis_server.url) for _ in range(2)]
    await opened[0].flushall()
    yield opened
    for client in opened:
        await client.aclose()


def triggered(trigger_id: str, account: str, deliver_at: datetime) -> CampaignTriggered:
    return CampaignTriggered(
        trigger_id=trigger_id,
        trigger="welcome_a",
        campaign="welcome",
        account_id=account,
        change_id=f"change-{trigger_id}",
        family="value",
        segment_id="a",
        change="entered",
        change_reason="revenue_365d >= value_a_min",
        occurred_at=TEST_NOW,
        fired_at=TEST_NOW,
        deliver_at=deliver_at,
        triggers_version="t-1",
    )


@pytest.mark.parametrize("shards", [1, 4])
async def test_states_and_triggers_are_written_together_and_cleared(clients, shards) -> None:
    store = RedisTriggerStore(clients[0], prefix=f"t{shards}", shards=shards)
    later = TEST_NOW + timedelta(hours=8)
    assert store.keys.shard_of("A") != store.keys.shard_of("B") or shards == 1

    def mutate(states: dict[str, TriggerState]) -> list[CampaignTriggered]:
        # called once per shard, with that shard's accounts
        if "A" in states:
            states["A"].last_fired["welcome_a"] = TEST_NOW.timestamp()
        every = [triggered("t1", "A", TEST_NOW), triggered("t2", "B", later)]
        return [t for t in every if t.account_id in states]

    written = await store.update(["A", "B"], mutate)
    assert sorted(t.trigger_id for t in written) == ["t1", "t2"]
    assert (await store.load("A")).last_fired == {"welcome_a": TEST_NOW.timestamp()}
    assert await store.pending() == 2
    due_now = await store.due(TEST_NOW.timestamp())
    assert [t.trigger_id for t in due_now] == ["t1"]  # t2 waits for the end of quiet hours
    assert [t.trigger_id for t in await store.due(later.timestamp())] == ["t1", "t2"]
    await store.clear([t for t in written if t.trigger_id == "t1"])
    assert [t.trigger_id for t in await store.due(later.timestamp())] == ["t2"]


async def test_a_conflicting_writer_makes_the_decision_run_again(clients, redis_server) -> None:
    other = redis.Redis.from_url(redis_server.url)  # another router, writing meanwhile
    store = RedisTriggerStore(clients[0], prefix="t")
    seen: list[dict[str, float]] = []

    def decide(states: dict[str, TriggerState]) -> list[CampaignTriggered]:
        seen.append(dict(states["A"].last_fired))
        if len(seen) == 1:  # between this batch's WATCH and its EXEC
            other.set(store.state_key("A"), '{"account_id": "A", "last_fired": {"y": 1.0}}')
        states["A"].last_fired["x"] = float(len(seen))
        return [triggered(f"t{len(seen)}", "A", TEST_NOW)]

    await store.update(["A"], decide)
    assert seen == [{}, {"y": 1.0}]  # the second run saw the other writer's state
    assert (await store.load("A")).last_fired == {"y": 1.0, "x": 2.0}
    assert [t.trigger_id for t in await store.due(TEST_NOW.timestamp())] == ["t2"]
    other.close()


async def test_the_rate_limit_holds_across_processes(clients) -> None:
    stores = [RedisTriggerStore(client, prefix="t") for client in clients]
    start = datetime(2026, 3, 2, tzinfo=UTC).timestamp()
    allowed = 0
    # 200 attempts spread over two simulated seconds, alternating between two clients.
    for step in range(200):
        now = start + step * 0.01
        if await stores[step % 2].take_token("crm", per_second=10.0, now=now) == 0:
            allowed += 1
    assert 20 <= allowed <= 21  # 10 per second over two seconds, plus the first one
    now = start + 2.0
    assert await stores[0].take_token("crm", per_second=10.0, now=now) == 0
    wait = await stores[1].take_token("crm", per_second=10.0, now=now)
    assert wait == pytest.approx(0.1, abs=1e-6)  # the next slot, whichever process asks


async def test_the_trigger_store_on_a_redis_cluster_from_a_fresh_client(redis_cluster) -> None:
    # A cluster client that has sent nothing yet knows no slots: the first write must
    # learn them itself (the trigger router's store is its own client).
    client = RedisCluster.from_url(redis_cluster.url)
    store = RedisTriggerStore(client, prefix="tc", shards=16, wait_replicas=1)
    accounts = [f"ACC-{n}" for n in range(40)]
    try:

        def mutate(states: dict[str, TriggerState]) -> list[CampaignTriggered]:
            for state in states.values():
                state.last_fired["welcome"] = TEST_NOW.timestamp()
            return [triggered(f"t-{a}", a, TEST_NOW) for a in sorted(states)]

        written = await store.update(accounts, mutate)
        assert sorted(t.account_id for t in written) == sorted(accounts)
        assert len({store.keys.shard_of(a) for a in accounts}) > 8
        assert await store.pending() == 40
        due = await store.due(TEST_NOW.timestamp(), limit=100)
        assert sorted(t.trigger_id for t in due) == sorted(f"t-{a}" for a in accounts)
        await store.clear(written)
        assert await store.pending() == 0
        assert (await store.load("ACC-7")).last_fired == {"welcome": TEST_NOW.timestamp()}
    finally:
        await client.aclose()
