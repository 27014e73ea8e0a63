"""Per-event cost of the pure core (decode, load, apply + evaluate, index, encode), no I/O.

Runs the same code path as ``BatchProcessor.process`` minus Redis and Kafka, over
synthetic history in batches, with states round-tripped through their stored
encoding as the store does, and (unless ``--no-globals``) with ABC cut-offs and
cluster models trained on a first pass, as a worker in steady state has them.
Prints µs per event for each stage; ``--profile`` adds a cProfile listing of the
hottest functions. For the whole worker process, see ``throughput.py --profile``.

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

from worker.adapters.state_codec import decode_state, encode_state
from worker.config.settings import Settings
from worker.core import value
from worker.core.clustering import ClusterLearner
from worker.core.decoding import Record
from worker.core.definitions import load_definitions
from worker.core.families import raw_sample
from worker.core.features import NO_GLOBALS, VOCABULARY, AccountState, FeatureView, Globals
from worker.core.processing import process_event
from worker.devtools.generator import generate_events, make_accounts
from worker.runtime.metrics import Metrics
from worker.runtime.process import freeze_loaded_objects
from worker.runtime.processor import BatchProcessor


def records(accounts: int, days: int, limit: int, settings: Settings) -> list[Record]:
    rng = random.Random(42)
    start = datetime.now(UTC) - timedelta(days=days + 1)
    topics = settings.input_topic_names()
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


def steady_globals(processor: BatchProcessor, batches: list[list[Record]]) -> Globals:
    """ABC cut-offs and one trained model per clustering, from a first pass over the data:
    what a worker in steady state reads in every batch."""
    states: dict[str, AccountState] = {}
    for batch in batches:
        events, _ = processor._decode(batch)
        for event, _record in events:
            state = states.setdefault(event.account_id, AccountState(event.account_id))
            process_event(state, event, processor.families)
    views = [FeatureView(state, state.now_day) for state in states.values()]
    settings = processor.settings
    cutoffs = value.compute_thresholds(
        [view["revenue_365d"] for view in views], settings.value_a_share, settings.value_b_share
    )
    snapshots = {}
    for clustering in processor.clusterings:
        learner = ClusterLearner(clustering.spec, clustering.k, warmup=settings.cluster_warmup)
        for view in views:
            learner.learn_one(raw_sample(view, clustering.spec))
        if learner.ready:
            snapshots[clustering.family] = learner.snapshot(1, created_at=datetime.now(UTC))
    return Globals.from_thresholds(
        value.thresholds_to_dict(cutoffs), snapshots, settings.cluster_margin
    )


def run(
    processor: BatchProcessor, batches: list[list[Record]], globals: Globals = NO_GLOBALS
) -> dict[str, float]:
    stored: dict[str, bytes] = {}
    spent: dict[str, float] = defaultdict(float)
    for batch in batches:
        t0 = time.perf_counter()
        events, _ = processor._decode(batch)
        t1 = time.perf_counter()
        accounts = sorted({event.account_id for event, _ in events})
        states = {a: decode_state(a, stored.get(a)) for a in accounts}
        t2 = time.perf_counter()
        result = processor._apply(states, globals, events)
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
    parser.add_argument(
        "--no-globals",
        dest="globals",
        action="store_false",
        help="without ABC cut-offs and cluster models (as before the first ones exist)",
    )
    args = parser.parse_args()
    settings = Settings()
    definitions = load_definitions(settings.definitions_path, VOCABULARY)
    processor = BatchProcessor(settings, definitions, None, None, Metrics())  # type: ignore[arg-type]
    data = records(args.accounts, args.days, args.limit, settings)
    batches = [data[i : i + args.batch] for i in range(0, len(data), args.batch)]
    globals = steady_globals(processor, batches) if args.globals else NO_GLOBALS
    freeze_loaded_objects()  # as the worker does after start-up
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    spent = run(processor, batches, globals)
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    size = spent.pop("state bytes/account")
    title = f"pure core, {len(data):,} events, batches of {args.batch}"
    title += ", with cut-offs and cluster models" if args.globals else ", no globals"
    table = Table(title=title)
    table.add_column("stage")
    table.add_column("µs/event", justify="right")
    for stage, seconds in spent.items():
        table.add_row(stage, f"{seconds / len(data) * 1e6:.1f}")
    table.add_row("total", f"{sum(spent.values()) / len(data) * 1e6:.1f}")
    table.add_row("stored state, bytes/account", f"{size:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
