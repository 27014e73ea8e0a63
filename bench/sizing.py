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
two indexes take per account.

    .venv/bin/python bench/sizing.py [--sizes 10000,100000,1000000] [--cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from rich.console import Console
from rich.table import Table

from worker.adapters.redis_store import RedisStateStore
from worker.core import value
from worker.devtools.embedded import start_redis
from worker.devtools.embedded.redis_cluster import start_redis_cluster

console = Console(width=130)
NOW = 1_800_000_000.0


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


async def timings(
    url: str, cluster: bool, prefix: str, shards: int, repeat: int
) -> dict[str, float]:
    client: Any = RedisCluster.from_url(url) if cluster else aioredis.Redis.from_url(url)
    store = RedisStateStore(client, prefix, shards=shards)
    refresh, read, sweep = [], [], []
    try:
        for _ in range(repeat):
            started = time.perf_counter()
            revenues = await store.revenues()
            loaded = time.perf_counter()
            value.compute_thresholds(revenues.values())
            refresh.append(time.perf_counter() - started)
            read.append(loaded - started)
            started = time.perf_counter()
            await store.due_accounts(NOW, 500)
            sweep.append(time.perf_counter() - started)
    finally:
        await client.aclose()
    return {
        "refresh": statistics.median(refresh),
        "read": statistics.median(read),
        "sweep": statistics.median(sweep),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cluster", action="store_true", help="also on a 3-primary cluster")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.monotonic()
    stores: list[tuple[str, Any, bool, int]] = [("one Redis, 1 shard", start_redis(), False, 1)]
    if args.cluster:
        stores.append(("cluster 3+3, 16 shards", start_redis_cluster(), True, 16))
    rows = []
    try:
        for name, server, cluster, shards in stores:
            urls = server.urls if cluster else [server.url]
            for size in sizes:
                prefix = f"size{size}"
                memory = fill(urls, cluster, prefix, shards, size)
                result = asyncio.run(timings(urls[0], cluster, prefix, shards, args.repeat))
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
        )
    console.print(table)
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
