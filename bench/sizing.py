"""How the shared per-account work grows with the account count: the ABC cut-off refresh
and the time sweep, at 10,000, 100,000 and 1,000,000 accounts.

The cut-off refresh reads every earning account's revenue (``StateStore.revenues``: one
ZRANGE per shard) and ranks them (``value.compute_thresholds``); the sweep asks for the
accounts due (``StateStore.due_accounts``: one ZRANGEBYSCORE per shard, 500 at most).
Both run on the worker's own store code against a Redis whose revenue and due indexes
hold ``n`` accounts (written directly, in the worker's key layout), on one Redis (one
shard) and, with ``--cluster``, on the embedded 3-primary Redis Cluster (16 shards).
Prints the median of ``--repeat`` runs per size and the fitted growth exponent
(seconds ~ n^k between the smallest and the largest size), with the Redis memory the
two indexes take per account, and the Redis commands and Redis CPU a refresh and a
sweep query cost (``INFO`` of every primary, ``INFO`` itself left out).

Then, per account, what a re-evaluation of stored accounts costs: the work the time
sweep and a cut-off pass do for each account they visit (``--reevaluate`` accounts
written by the worker's processor, re-evaluated in its steps; Redis commands, Redis
CPU, worker time).

    .venv/bin/python bench/sizing.py [--sizes 10000,100000,1000000] [--cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis
from common import primaries, redis_counters
from redis.asyncio.cluster import RedisCluster
from rich.console import Console
from rich.table import Table

from worker.adapters.redis_store import RedisStateStore
from worker.config.settings import DEFAULT_DEFINITIONS, Settings
from worker.core import value
from worker.core.decoding import Record
from worker.core.definitions import load_definitions
from worker.core.features import VOCABULARY
from worker.devtools.embedded import start_redis
from worker.devtools.embedded.redis_cluster import start_redis_cluster
from worker.runtime.metrics import Metrics
from worker.runtime.processor import BatchProcessor

console = Console(width=130)
NOW = 1_800_000_000.0
#: The orders of the re-evaluation pass: a fixed day in the past (the worker refuses
#: events from the future).
PASS_DAY = datetime(2026, 6, 1, 8, tzinfo=UTC)


def fill(urls: list[str], cluster: bool, prefix: str, shards: int, accounts: int) -> float:
    """Revenue and due entries for ``accounts`` accounts; returns used_memory growth."""
    store = RedisStateStore(None, prefix, shards=shards)  # type: ignore[arg-type]  # key names
    client: Any = (
        redis.cluster.RedisCluster.from_url(urls[0]) if cluster else redis.Redis.from_url(urls[0])
    )
    nodes = [redis.Redis.from_url(url) for url in urls]
    nodes = [n for n in nodes if n.info("replication")["role"] == "master"]
    before = sum(n.info("memory")["used_memory"] for n in nodes)
    rng = random.Random(7)
    chunk = 5000
    for start in range(0, accounts, chunk):
        ids = [f"ACC-{n:08d}" for n in range(start, min(start + chunk, accounts))]
        groups = store.keys.by_shard(ids)
        with client.pipeline(transaction=False) as pipe:
            for shard, members in groups.items():
                keys = store.keys.each[shard]
                pipe.zadd(keys.revenue, {a: round(rng.lognormvariate(7, 1.5), 2) for a in members})
                # a sweep finds about 1 account in 200 due at any moment
                pipe.zadd(keys.due, {a: NOW + rng.uniform(-0.005, 1) * 86400 * 30 for a in members})
            pipe.execute()
    after = sum(n.info("memory")["used_memory"] for n in nodes)
    client.close()
    for node in nodes:
        node.close()
    return after - before


@contextlib.asynccontextmanager
async def opened(
    urls: list[str], cluster: bool, prefix: str, shards: int, wait_replicas: int = 0
) -> AsyncIterator[tuple[RedisStateStore, list[Any]]]:
    """The worker's store on ``urls`` and clients of the primaries (for ``INFO``)."""
    client: Any = RedisCluster.from_url(urls[0]) if cluster else aioredis.Redis.from_url(urls[0])
    nodes = primaries(urls)
    try:
        yield RedisStateStore(client, prefix, shards=shards, wait_replicas=wait_replicas), nodes
    finally:
        await client.aclose()
        for node in nodes:
            node.close()


async def timings(
    urls: list[str], cluster: bool, prefix: str, shards: int, repeat: int
) -> dict[str, float]:
    refresh, read, sweep = [], [], []
    async with opened(urls, cluster, prefix, shards) as (store, nodes):
        await store.revenues()  # connections open: their handshakes are not counted
        await store.due_accounts(NOW, 500)
        before = redis_counters(nodes)
        for _ in range(repeat):
            started = time.perf_counter()
            revenues = await store.revenues()
            loaded = time.perf_counter()
            value.compute_thresholds(revenues.values())
            refresh.append(time.perf_counter() - started)
            read.append(loaded - started)
        between = redis_counters(nodes)
        for _ in range(repeat):
            started = time.perf_counter()
            await store.due_accounts(NOW, 500)
            sweep.append(time.perf_counter() - started)
        after = redis_counters(nodes)
    return {
        "refresh": statistics.median(refresh),
        "read": statistics.median(read),
        "sweep": statistics.median(sweep),
        "refresh_commands": (between["commands"] - before["commands"]) / repeat,
        "refresh_redis_cpu": (between["cpu"] - before["cpu"]) / repeat,
        "sweep_commands": (after["commands"] - between["commands"]) / repeat,
    }


class Discard:
    """A sender that drops what it is given: the pass's Kafka side is not measured here."""

    async def send_changes(self, changes: Any) -> None:
        pass

    async def send_dead_letters(self, letters: Any) -> None:
        pass

    async def send_samples(self, samples: Any) -> None:
        pass


async def reevaluation(
    urls: list[str], cluster: bool, shards: int, accounts: int
) -> dict[str, float]:
    """Per account, what re-evaluating stored accounts costs (the work of the time sweep
    and of a cut-off pass for each account they visit): states written by the worker's
    own processor from one order each (default definitions), then one pass over all of
    them in steps of ``sweep_batch_size`` accounts."""
    # as the worker defaults: a cluster's batches wait for one replica (WAIT 1)
    async with opened(urls, cluster, f"reeval{shards}", shards, int(cluster)) as (store, nodes):
        await store.prepare()
        settings = Settings(kafka_bootstrap_servers="unused:9092", redis_url=urls[0])
        definitions = load_definitions(DEFAULT_DEFINITIONS, VOCABULARY)
        processor = BatchProcessor(settings, definitions, store, Discard(), Metrics())
        ids = [f"RE-{n:06d}" for n in range(accounts)]
        records = [
            Record(
                "orders",
                0,
                n,
                account.encode(),
                json.dumps(
                    {
                        "type": "order_placed",
                        "event_id": f"re-{n}",
                        "account_id": account,
                        "occurred_at": PASS_DAY.isoformat(),
                        "order_id": f"re-{n}",
                        "total": round(random.Random(n).lognormvariate(7, 1.5), 2),
                    }
                ).encode(),
            )
            for n, account in enumerate(ids)
        ]
        for start in range(0, len(records), 500):
            await processor.process(records[start : start + 500])
        before = redis_counters(nodes)
        started = time.perf_counter()
        await processor.reevaluate(ids, "bench", at=PASS_DAY.timestamp() + 86400)
        took = time.perf_counter() - started
        after = redis_counters(nodes)
    return {
        "commands": (after["commands"] - before["commands"]) / accounts,
        "redis_cpu_us": (after["cpu"] - before["cpu"]) / accounts * 1e6,
        "worker_us": took / accounts * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cluster", action="store_true", help="also on a 3-primary cluster")
    parser.add_argument(
        "--reevaluate", type=int, default=2000, help="accounts in the re-evaluation pass"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.monotonic()
    stores: list[tuple[str, Any, bool, int]] = [("one Redis, 1 shard", start_redis(), False, 1)]
    if args.cluster:
        stores.append(("cluster 3+3, 16 shards", start_redis_cluster(), True, 16))
    rows = []
    passes = {}
    try:
        for name, server, cluster, shards in stores:
            urls = server.urls if cluster else [server.url]
            passes[name] = asyncio.run(reevaluation(urls, cluster, shards, args.reevaluate))
            for size in sizes:
                prefix = f"size{size}"
                memory = fill(urls, cluster, prefix, shards, size)
                result = asyncio.run(timings(urls, cluster, prefix, shards, args.repeat))
                rows.append((name, size, memory / size, result))
    finally:
        for _, server, _, _ in stores:
            server.stop()

    table = Table(
        title=f"shared work per account count ({datetime.now(UTC):%Y-%m-%d}, "
        f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()})"
    )
    columns = (
        "store", "accounts", "cut-off refresh s", "of it reading revenues s",
        "sweep query ms (500 due)", "revenue + due index B/account",
        "refresh: Redis commands", "refresh: Redis CPU µs/account", "sweep query: commands",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for name, size, per_account, result in rows:
        table.add_row(
            name,
            f"{size:,}",
            f"{result['refresh']:.3f}",
            f"{result['read']:.3f}",
            f"{result['sweep'] * 1000:.2f}",
            f"{per_account:,.0f}",
            f"{result['refresh_commands']:.0f}",
            f"{result['refresh_redis_cpu'] / size * 1e6:.2f}",
            f"{result['sweep_commands']:.0f}",
        )
    console.print(table)
    per_pass = Table(
        title=f"re-evaluating {args.reevaluate:,} stored accounts (time sweep, cut-off pass), "
        "per account"
    )
    for column in ("store", "Redis commands", "Redis CPU µs", "worker µs (wall)"):
        per_pass.add_column(column, justify="right")
    for name, cost in passes.items():
        per_pass.add_row(
            name,
            f"{cost['commands']:.3f}",
            f"{cost['redis_cpu_us']:.1f}",
            f"{cost['worker_us']:.0f}",
        )
    console.print(per_pass)
    for name, *_ in stores:
        mine = [(size, result) for n, size, _, result in rows if n == name]
        (small, first), (large, last) = mine[0], mine[-1]
        for what in ("refresh", "sweep"):
            k = math.log(last[what] / first[what]) / math.log(large / small)
            console.print(f"{name}: {what} ~ n^{k:.2f} from {small:,} to {large:,} accounts")
    console.print(f"run {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
