"""The full worker on one Redis against a Redis Cluster of three primaries, in one run.

Pre-produces synthetic history once (``throughput.py``'s), then lets one worker process
consume all of it from empty state, four times, each in its own consumer group:

1. one Redis, one shard (the default layout): the baseline;
2. the embedded Redis Cluster (3 primaries, each with a replica; ``redis_cluster.py`` of
   the embedded stack), 16 shards, no waiting for the replicas;
3. the same, waiting for one replica before a batch counts (``WAIT``, the cluster default);
4. one Redis with 16 shards (what sharding alone costs).

For each: events/s from the first commit to the last, the worker's CPU per event over
the same span (``/proc``), the mean batch time (``segworker_batch_seconds``), and from
``INFO`` of every primary the Redis commands and Redis CPU per event, and the data
memory per account (``used_memory_dataset``: without replication buffers). Bounded by
``--limit`` events.

    .venv/bin/python bench/redis_cluster.py [--accounts 2000] [--limit 50000]

Uses the embedded broker; always starts its own Redis and Redis Cluster.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from common import deployment, primaries, redis_counters, worker_env
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table
from throughput import measure, preproduce

from worker.devtools.embedded import start_redis
from worker.devtools.embedded.redis_cluster import start_redis_cluster

console = Console(width=140)


def batch_seconds(port: str) -> Callable[[], dict[str, float]]:
    def read() -> dict[str, float]:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("segworker_batch_seconds_")
        }
        count = samples.get("segworker_batch_seconds_count", 0.0)
        mean = samples.get("segworker_batch_seconds_sum", 0.0) / count if count else 0.0
        return {"batch_ms": mean * 1000, "batches": count}

    return read


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--limit", type=int, default=50_000)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    started = time.monotonic()

    single = start_redis()
    cluster = start_redis_cluster()
    results: dict[str, dict[str, Any]] = {}
    try:
        with deployment("clbench") as settings:
            total = preproduce(settings, args.accounts, args.days, args.limit)
            console.print(f"pre-produced {total} events")
            runs = [
                ("one Redis, 1 shard", single.url, [single.url], {}),
                (
                    "cluster 3+3, 16 shards, no wait",
                    cluster.url,
                    cluster.urls,
                    {"SEGWORKER_REDIS_CLUSTER": "true", "SEGWORKER_REDIS_WAIT_REPLICAS": "0"},
                ),
                (
                    "cluster 3+3, 16 shards, WAIT 1",
                    cluster.url,
                    cluster.urls,
                    {"SEGWORKER_REDIS_CLUSTER": "true", "SEGWORKER_REDIS_WAIT_REPLICAS": "1"},
                ),
                (
                    "one Redis, 16 shards",
                    single.url,
                    [single.url],
                    {"SEGWORKER_REDIS_SHARDS": "16"},
                ),
            ]
            for index, (name, url, urls, env) in enumerate(runs):
                run_settings = settings.model_copy(
                    update={
                        "app_id": f"clbench-{index}",
                        "redis_key_prefix": f"clbench{index}",
                        "redis_url": url,
                    }
                )
                nodes = primaries(urls)
                before = redis_counters(nodes)
                worker = worker_env(run_settings, **env)
                result = measure(
                    f"cluster-bench-{index}",
                    [sys.executable, "-m", "worker.cli", "run"],
                    [worker],
                    run_settings.app_id,
                    settings,
                    total,
                    args.timeout,
                    on_done=batch_seconds(worker["SEGWORKER_WEB_PORT"]),
                )
                after = redis_counters(nodes)
                result.update({k: after[k] - before[k] for k in before})
                results[name] = result
                for node in nodes:
                    node.close()
    finally:
        cluster.stop()
        single.stop()

    table = Table(
        title=f"worker on one Redis and on a 3-primary Redis Cluster, {total:,} events, "
        f"{args.accounts:,} accounts ({datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()})"
    )
    columns = (
        "store", "events/s", "vs one Redis", "mean batch ms", "worker CPU µs/event",
        "Redis commands/event", "Redis CPU µs/event", "Redis bytes/account",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    baseline = results["one Redis, 1 shard"]["rate"]
    for name, result in results.items():
        table.add_row(
            name,
            f"{result['rate']:,.0f}",
            f"{result['rate'] / baseline:.0%}",
            f"{result['batch_ms']:.1f}",
            f"{result['cpu_seconds'] / result['events'] * 1e6:.0f}",
            f"{result['commands'] / result['events']:.2f}",
            f"{result['cpu'] / result['events'] * 1e6:.0f}",
            f"{result['memory'] / args.accounts:,.0f}",
        )
    console.print(table)
    seconds = time.monotonic() - started
    console.print(
        "Redis figures are summed over the primaries (replicas not counted); memory is the "
        f"growth of used_memory_dataset while the run wrote its accounts; run {seconds:.0f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
