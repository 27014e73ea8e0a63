"""Redis memory per account with a year of history, against the raw JSON state size.

Generates a year of synthetic history for a sample of accounts (``worker.devtools.generator``) and
folds every event into its account's state with the pure core (``process_event`` and the
default definitions), then settles the states with ABC cut-offs and trained cluster
models, as a worker in steady state holds them. The sample is replicated under new account
ids up to ``--accounts`` and written with the worker's key layout (state key, member sets,
due and revenue sorted sets; key names from ``RedisStateStore``). Prints Redis ``used_memory``
before and after, ``MEMORY USAGE`` per key type, bytes per account against the 1,000 B
target, and the size of the JSON state (the baseline: what the bytes are made of).

    .venv/bin/python bench/memory.py [--accounts 20000] [--sample 1000]
    .venv/bin/python bench/memory.py --accounts 100000          # the full figure

``--sample 0`` folds a history for every account (about 10 ms per account-year) instead of
replicating. Uses an embedded Redis unless REDIS_URL is set; on a shared Redis the
``used_memory`` difference also counts whatever else happens there.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict

import redis
from common import (
    PreparedState,
    add_stored_history_arguments,
    percentile,
    redis_only,
    replicated,
    run_title,
    stored_history,
    write_globals,
    write_states,
)
from rich.console import Console
from rich.table import Table

from worker.adapters.redis_store import RedisStateStore
from worker.config.settings import Settings
from worker.core.definitions import load_definitions
from worker.core.features import VOCABULARY

console = Console(width=120)
TARGET_BYTES = 1000  # the performance issue (2026-12-04); was 2,048
PREFIX = "membench"


def json_size(data: dict[str, object]) -> int:
    return len(json.dumps(data, separators=(",", ":")).encode())


def field_sizes(templates: list[PreparedState]) -> dict[str, float]:
    """Mean bytes of each top-level field of the state JSON, ``"name":value,`` included."""
    totals: dict[str, int] = defaultdict(int)
    for prepared in templates:
        for name, value in prepared.data.items():
            totals[name] += len(name) + 4 + len(json.dumps(value, separators=(",", ":")))
        memberships = prepared.data["memberships"]
        assert isinstance(memberships, dict)
        for family, segments in memberships.items():
            size = len(family) + 4 + len(json.dumps(segments, separators=(",", ":")))
            totals[f"  memberships.{family}"] += size
    return {name: total / len(templates) for name, total in totals.items()}


def memory_usage(client: redis.Redis, key: str) -> int:
    return int(client.memory_usage(key, samples=0) or 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_stored_history_arguments(parser)
    parser.add_argument("--key-samples", type=int, default=2000, help="state keys measured")
    args = parser.parse_args()
    started = time.monotonic()

    definitions = load_definitions(Settings().definitions_path, VOCABULARY)
    history, templates = stored_history(args, definitions)
    console.print(
        f"folded {history.events:,} events of {len(templates):,} accounts x {args.days} days "
        f"in {history.seconds:.1f}s; cluster models: {', '.join(history.snapshots) or 'none'}"
    )
    # Replication cycles through the templates, so their distribution is the accounts'.
    weights = [
        args.accounts // len(templates) + (i < args.accounts % len(templates))
        for i in range(len(templates))
    ]
    sizes = sorted(
        size
        for prepared, weight in zip(templates, weights, strict=True)
        for size in [json_size(prepared.data)] * weight
    )
    json_mean = sum(sizes) / len(sizes)

    with redis_only() as url:
        client = redis.Redis.from_url(url)
        server = client.info("server")
        client.memory_purge()
        before = client.info("memory")
        write_started = time.perf_counter()
        written = write_states(url, PREFIX, replicated(templates, args.accounts))
        write_seconds = time.perf_counter() - write_started
        client.memory_purge()
        after = client.info("memory")
        write_globals(url, PREFIX, history)

        keys = RedisStateStore(client, PREFIX, list(history.snapshots))  # type: ignore[arg-type]
        rng = random.Random(args.seed)
        picked = rng.sample(range(1, written + 1), min(args.key_samples, written))
        state_bytes = [memory_usage(client, keys.state_key(f"ACC-{n:06d}")) for n in picked]
        state_total = sum(state_bytes) / len(state_bytes) * written
        member_keys = list(client.scan_iter(match=f"{PREFIX}:members:*", count=1000))
        members_total = sum(memory_usage(client, key) for key in member_keys)
        due_total = memory_usage(client, keys.due_key)
        revenue_total = memory_usage(client, keys.revenue_key)
        shared = [keys.thresholds_key, keys.clock_key, *keys.cluster_keys.values()]
        shared_total = sum(memory_usage(client, key) for key in shared)
        client.close()

    used = int(after["used_memory"]) - int(before["used_memory"])
    dataset = int(after["used_memory_dataset"]) - int(before["used_memory_dataset"])
    keys_total = state_total + members_total + due_total + revenue_total

    table = Table(
        title=run_title(
            f"Redis memory, {written:,} accounts, {args.days} days of history "
            f"(redis {server['redis_version']}, {after['mem_allocator']})"
        )
    )
    for column in ("what", "bytes", "bytes/account", "x raw JSON"):
        table.add_column(column, justify="right")

    def row(name: str, total: float, style: str = "") -> None:
        per = total / written
        table.add_row(
            name, f"{total:,.0f}", f"{per:,.0f}", f"{per / json_mean:.2f}", style=style or None
        )

    row("raw JSON of the states (baseline)", json_mean * written, "dim")
    row("used_memory after - before", used, "bold")
    row("used_memory_dataset after - before", dataset)
    row(f"  state keys (MEMORY USAGE of {len(state_bytes):,}, scaled)", state_total)
    row(f"  member sets ({len(member_keys)} keys)", members_total)
    row("  due sorted set", due_total)
    row("  revenue sorted set", revenue_total)
    row("  sum of the keys", keys_total)
    console.print(table)
    console.print(f"not per account: cut-offs, clock and cluster models {shared_total:,} bytes")

    state_sorted = sorted(state_bytes)
    sizes_table = Table(title="per account state")
    for column in ("", "mean", "p50", "p95", "max"):
        sizes_table.add_column(column, justify="right")
    sizes_table.add_row(
        "JSON bytes",
        f"{json_mean:,.0f}",
        f"{percentile(sizes, 50):,.0f}",
        f"{percentile(sizes, 95):,.0f}",
        f"{sizes[-1]:,.0f}",
    )
    sizes_table.add_row(
        "MEMORY USAGE of the key",
        f"{sum(state_bytes) / len(state_bytes):,.0f}",
        f"{percentile(state_sorted, 50):,.0f}",
        f"{percentile(state_sorted, 95):,.0f}",
        f"{state_sorted[-1]:,.0f}",
    )
    console.print(sizes_table)

    fields = field_sizes(templates)
    fields_table = Table(title="what the JSON state is made of (mean bytes per account)")
    for column in ("field", "bytes", "share"):
        fields_table.add_column(column, justify="right")
    top = sorted((n for n in fields if not n.startswith(" ")), key=lambda n: -fields[n])
    for name in top:
        if fields[name] < 0.01 * json_mean:
            continue
        fields_table.add_row(name, f"{fields[name]:,.0f}", f"{fields[name] / json_mean:.0%}")
        if name == "memberships":  # by family: mostly the reason texts
            for family in sorted(
                (n for n in fields if n.startswith("  memberships.")), key=lambda n: -fields[n]
            ):
                share = fields[family] / json_mean
                fields_table.add_row(family, f"{fields[family]:,.0f}", f"{share:.0%}", style="dim")
    console.print(fields_table)

    per_account = used / written
    verdict = "met" if per_account <= TARGET_BYTES else "NOT met"
    console.print(
        f"bytes per account {per_account:,.0f} (used_memory) against the target "
        f"<= {TARGET_BYTES:,}: [bold]{verdict}[/bold]; raw JSON alone {json_mean:,.0f}; "
        f"written in {write_seconds:.1f}s; run {time.monotonic() - started:.0f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
