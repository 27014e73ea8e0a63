"""Per-event cost of the pure core (decode, load, apply + evaluate, index, encode), no I/O.

Runs the same code path as ``BatchProcessor.process`` minus Redis and Kafka, over
synthetic history in batches, with states round-tripped through their stored
encoding as the store does. Prints µs per event for each stage; ``--profile``
adds a cProfile listing of the hottest functions.

    .venv/bin/python bench/profile_core.py [--accounts 2000] [--days 365] [--limit 50000]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.table import Table

from worker.agents import BatchProcessor
from worker.decoding import Record
from worker.features import NO_GLOBALS, VOCABULARY
from worker.generator import generate_events, make_accounts
from worker.metrics import Metrics
from worker.rules import load_definitions
from worker.settings import Settings
from worker.store import decode_state, encode_state


def records(accounts: int, days: int, limit: int, settings: Settings) -> list[Record]:
    rng = random.Random(42)
    start = datetime.now(UTC) - timedelta(days=days + 1)
    topics = {
        "orders": settings.topic_orders,
        "campaign-events": settings.topic_campaign_events,
        "loyalty-points": settings.topic_loyalty_points,
        "account-profiles": settings.topic_account_profiles,
    }
    out: list[Record] = []
    offsets: dict[str, int] = defaultdict(int)
    for topic, event in generate_events(make_accounts(accounts, rng), start, days, rng):
        name = topics[topic]
        out.append(
            Record(name, 0, offsets[name], event["account_id"].encode(), json.dumps(event).encode())
        )
        offsets[name] += 1
        if len(out) >= limit:
            break
    return out


def run(processor: BatchProcessor, batches: list[list[Record]]) -> dict[str, float]:
    stored: dict[str, bytes] = {}
    spent: dict[str, float] = defaultdict(float)
    for batch in batches:
        t0 = time.perf_counter()
        events, _ = processor._decode(batch)
        t1 = time.perf_counter()
        accounts = sorted({event.account_id for event, _ in events})
        states = {a: decode_state(a, stored.get(a)) for a in accounts}
        t2 = time.perf_counter()
        result = processor._apply(states, NO_GLOBALS, events)
        t3 = time.perf_counter()
        for account in result.changed_accounts:
            stored[account] = encode_state(states[account])
        for change in result.changes:
            change.model_dump_json()
        t4 = time.perf_counter()
        spent["decode"] += t1 - t0
        spent["load"] += t2 - t1
        spent["apply+evaluate+index"] += t3 - t2
        spent["encode"] += t4 - t3
    spent["state bytes/account"] = sum(map(len, stored.values())) / max(len(stored), 1)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--limit", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    settings = Settings()
    definitions = load_definitions(settings.definitions_path, VOCABULARY)
    processor = BatchProcessor(settings, definitions, None, None, Metrics())  # type: ignore[arg-type]
    data = records(args.accounts, args.days, args.limit, settings)
    batches = [data[i : i + args.batch] for i in range(0, len(data), args.batch)]
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    spent = run(processor, batches)
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    size = spent.pop("state bytes/account")
    table = Table(title=f"pure core, {len(data):,} events, batches of {args.batch}")
    table.add_column("stage")
    table.add_column("µs/event", justify="right")
    for stage, seconds in spent.items():
        table.add_row(stage, f"{seconds / len(data) * 1e6:.1f}")
    table.add_row("total", f"{sum(spent.values()) / len(data) * 1e6:.1f}")
    table.add_row("stored state, bytes/account", f"{size:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
