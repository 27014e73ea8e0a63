"""Soak: a real ``segworker run`` under a steady event rate; does its memory stay flat?

Produces synthetic B2B history (``worker.devtools.generator``, ``--accounts`` accounts, as many days
as the run needs) at a steady rate (default 300 events/s for 120 s) into an isolated
deployment, and samples every 5 s the worker's resident memory (VmRSS), Redis
``used_memory`` and the worker's committed progress. Baseline in the same run: the
trivial Faust agent (``trivial_app.py``: batch and ack only) reads the same topics at the
same time, so growth of Faust and its clients shows in both, growth of ours only in the
worker. Prints start, end and max RSS and the slope (MiB/min, least squares) over the
whole run and after the warm-up, Redis used_memory start/end, and the outbox at the end.

    .venv/bin/python bench/soak.py [--rate 300] [--seconds 120] [--accounts 2000]
    .venv/bin/python bench/soak.py --seconds 600                  # the 10-minute figure
    .venv/bin/python bench/soak.py --rate 100 --seconds 600 --trace-allocations  # where

``--trace-allocations`` starts the worker through a wrapper that runs ``tracemalloc``
(several times slower, so use a lower ``--rate`` that it still keeps up with; RSS then
includes tracemalloc's bookkeeping), takes a heap snapshot at the end of the warm-up and
one at the end, and prints the source lines whose live memory grew most.

Event time runs about one simulated day per ``accounts * 0.25 / rate`` seconds, so the
worker's time sweeps, ABC cut-off refreshes and cluster retraining all run during the
soak. The accounts start with ``--history-days`` (365) of history folded offline into
their stored states: starting empty, the states (and the worker's working set with them)
would grow all through the run and hide what the worker itself keeps. Uses the embedded
broker and Redis unless KAFKA_BOOTSTRAP_SERVERS / REDIS_URL are set.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from common import (
    ROOT,
    CpuMeter,
    GroupProgress,
    WorkerProcess,
    deployment,
    prepare,
    rss_mib,
    run_title,
    write_states,
)
from rich.console import Console
from rich.table import Table

from worker.adapters.kafka_clients import produce
from worker.adapters.redis_store import RedisStateStore
from worker.config.settings import Settings
from worker.core.definitions import load_definitions
from worker.core.events import decode_input
from worker.core.features import VOCABULARY, AccountState
from worker.core.processing import process_event
from worker.core.schedule import Schedule
from worker.devtools.generator import TopicEvent, generate_events, make_accounts

console = Console(width=120)
#: Events per account and simulated day the generator makes (about 100 a year).
EVENTS_PER_ACCOUNT_DAY = 0.25
#: Slope after the warm-up above which memory does not count as flat.
FLAT_MIB_PER_MINUTE = 1.0
#: ``segworker run`` under tracemalloc; writes a heap snapshot to ``argv[1]/N.snapshot``
#: whenever ``argv[1]/N.request`` appears (Faust owns the signals).
TRACED_WORKER = """
import pathlib
import sys
import threading
import time
import tracemalloc

tracemalloc.start(4)
directory = pathlib.Path(sys.argv[1])


def serve():
    while True:
        for request in sorted(directory.glob("*.request")):
            snapshot = tracemalloc.take_snapshot()
            snapshot.dump(str(request.with_suffix(".snapshot")))
            request.unlink()
        time.sleep(0.2)


threading.Thread(target=serve, daemon=True).start()
from worker.cli import main

sys.exit(main(["run"]))
"""


@dataclass
class Sample:
    at: float  # seconds since production started
    worker_mib: float
    trivial_mib: float
    redis_bytes: int
    produced: int
    committed: int


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, MiB)`` points, in MiB per minute."""
    if len(points) < 2:
        return float("nan")
    mean_t = sum(t for t, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (y - mean_y) for t, y in points)
    return cov / var * 60 if var else float("nan")


def request_snapshot(directory: Path, name: str, timeout: float = 120) -> Path:
    """Ask the traced worker for a heap snapshot and wait until it is written."""
    (directory / f"{name}.request").touch()
    path = directory / f"{name}.snapshot"
    deadline = time.monotonic() + timeout
    while not path.exists() or (directory / f"{name}.request").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no heap snapshot {path} after {timeout}s")
        time.sleep(0.2)
    return path


def growth_table(first: Path, last: Path, top: int = 15) -> Table:
    """Source lines whose live allocations grew most between two snapshots."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<*")]
    old = tracemalloc.Snapshot.load(str(first)).filter_traces(ignore)
    new = tracemalloc.Snapshot.load(str(last)).filter_traces(ignore)
    table = Table(title=f"worker allocations that grew most after the warm-up (top {top})")
    for column in ("KiB", "blocks", "where"):
        table.add_column(column, justify="right" if column != "where" else "left")
    for stat in new.compare_to(old, "lineno")[:top]:
        frame = stat.traceback[0]
        where = f"{frame.filename.replace(str(ROOT) + '/', '')}:{frame.lineno}"
        table.add_row(f"{stat.size_diff / 1024:+,.0f}", f"{stat.count_diff:+,}", where)
    return table


def prefill(
    settings: Settings, events: Iterator[TopicEvent], until: datetime
) -> tuple[Iterator[TopicEvent], int]:
    """Fold the events before ``until`` into states written to Redis with the worker's
    layout; return the rest of the stream and how many were folded."""
    definitions = load_definitions(settings.definitions_path, VOCABULARY)
    states: dict[str, AccountState] = {}
    folded = 0
    for topic_event in events:
        event = decode_input(json.dumps(topic_event[1]).encode())
        if event.occurred_at >= until:
            rest = itertools.chain([topic_event], events)
            break
        state = states.setdefault(event.account_id, AccountState(event.account_id))
        process_event(state, event, definitions)
        folded += 1
    else:
        rest = iter(())
    schedule = Schedule(definitions)
    assert settings.redis_url
    write_states(
        settings.redis_url,
        settings.redis_key_prefix,
        (prepare(state, schedule) for state in states.values()),
    )
    return rest, folded


class Producer(threading.Thread):
    """Produces the generated stream at the steady rate in the background."""

    def __init__(self, settings: Settings, args: argparse.Namespace, total: int) -> None:
        super().__init__(daemon=True)
        days = math.ceil(total / (args.accounts * EVENTS_PER_ACCOUNT_DAY)) + 2
        self.days = min(days, 3650)
        rng = random.Random(args.seed)
        history = args.history_days
        start = datetime.now(UTC) - timedelta(days=self.days + history + 1)
        events = generate_events(make_accounts(args.accounts, rng), start, self.days + history, rng)
        self.history_events = 0
        if history:
            # The first days are folded into stored states offline (as the worker would
            # have), so the soak starts with accounts of steady size, not empty ones.
            live_from = start + timedelta(days=history)
            events, self.history_events = prefill(settings, events, live_from)
        self.events = events
        self.settings = settings
        self.rate = args.rate
        self.total = total
        self.count = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        settings = self.settings
        assert settings.kafka_bootstrap_servers
        topics = settings.input_topic_names()

        def progress(count: int) -> None:
            self.count = count

        try:
            produce(
                self.events,
                settings.kafka_bootstrap_servers,
                topics=topics,
                limit=self.total,
                rate=self.rate,
                on_progress=progress,
                progress_every=100,
            )
        except BaseException as error:  # reported by the main thread
            self.error = error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=300, help="events per second")
    parser.add_argument("--seconds", type=float, default=120, help="how long to produce")
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=5, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=30, help="seconds left out of the slope")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--trace-allocations", action="store_true", help="tracemalloc in the worker"
    )
    parser.add_argument(
        "--history-days",
        type=int,
        default=365,
        help="days of history folded into the stored states before the soak (0: start empty, "
        "and memory grows with the states)",
    )
    args = parser.parse_args()
    started = time.monotonic()
    total = int(args.rate * args.seconds)

    with deployment("soakbench") as settings:
        assert settings.redis_url
        client = redis.Redis.from_url(settings.redis_url)
        keys = RedisStateStore(client, settings.redis_key_prefix)  # type: ignore[arg-type]
        trivial_group = "soakbench-trivial"
        traces = command = None
        if args.trace_allocations:
            traces = Path(tempfile.mkdtemp(prefix="segworker-soak-traces-"))
            command = [sys.executable, "-c", TRACED_WORKER, str(traces)]
        snapshots: list[Path] = []
        producer = Producer(settings, args, total)  # folds and stores the history first
        with (
            WorkerProcess(settings, "soak", command) as worker,
            WorkerProcess(
                settings,
                "trivial",
                [sys.executable, "bench/trivial_app.py"],
                BENCH_TRIVIAL_APP_ID=trivial_group,
            ) as trivial,
        ):
            worker.wait_ready()
            progress = GroupProgress(settings, settings.app_id)
            trivial_progress = GroupProgress(settings, trivial_group)
            samples: list[Sample] = []
            meter = CpuMeter()
            producing = time.monotonic()
            producer.start()
            try:
                while True:
                    worker.check_alive()
                    trivial.check_alive()
                    samples.append(
                        Sample(
                            time.monotonic() - producing,
                            rss_mib(worker.pid),
                            rss_mib(trivial.pid),
                            int(client.info("memory")["used_memory"]),
                            producer.count,
                            progress.committed(),
                        )
                    )
                    if not producer.is_alive():
                        break
                    if traces and not snapshots and samples[-1].at >= args.warmup:
                        snapshots.append(request_snapshot(traces, "warm"))
                    time.sleep(args.interval - (time.monotonic() - producing) % args.interval)
                cpu = meter.line({worker.pid: "worker", trivial.pid: "trivial agent"})
                if producer.error is not None:
                    raise producer.error
                produced = producer.count
                try:
                    caught_up = progress.wait_for(produced, 60) - producing
                except TimeoutError:
                    caught_up = float("nan")
                trivial_done = trivial_progress.committed()
                final = Sample(
                    time.monotonic() - producing,
                    rss_mib(worker.pid),
                    rss_mib(trivial.pid),
                    int(client.info("memory")["used_memory"]),
                    produced,
                    progress.committed(),
                )
                if traces and snapshots:
                    snapshots.append(request_snapshot(traces, "end"))
                outbox = client.hlen(keys.outbox_key), client.zcard(keys.outbox_written_key)
                accounts = sum(1 for _ in client.scan_iter(keys.keys.state_pattern, count=1000))
            finally:
                progress.close()
                trivial_progress.close()
        client.close()

    every = max(1, math.ceil(len(samples) / 25))
    table = Table(
        title=run_title(
            f"soak, {produced:,} events at {args.rate:,.0f}/s, {args.accounts:,} accounts, "
            f"{producer.days} days of event time after {args.history_days} days of history "
            f"({producer.history_events:,} events) folded into the stored states"
        )
    )
    columns = ("s", "produced", "worker done", "worker RSS MiB", "trivial RSS MiB", "Redis MiB")
    for column in columns:
        table.add_column(column, justify="right")
    for sample in [*samples[::every], final]:
        table.add_row(
            f"{sample.at:.0f}",
            f"{sample.produced:,}",
            f"{sample.committed:,}",
            f"{sample.worker_mib:.1f}",
            f"{sample.trivial_mib:.1f}",
            f"{sample.redis_bytes / 2**20:.1f}",
        )
    console.print(table)

    steady = [s for s in samples if s.at >= args.warmup]
    summary = Table(title="resident memory (MiB)")
    for column in (
        "process",
        "start",
        "end",
        "max",
        "slope MiB/min",
        f"slope after {args.warmup:.0f} s",
    ):
        summary.add_column(column, justify="right")
    processes = (("worker", "worker_mib"), ("trivial Faust agent (baseline)", "trivial_mib"))
    for name, field in processes:
        values = [getattr(s, field) for s in samples]
        summary.add_row(
            name,
            f"{values[0]:.1f}",
            f"{getattr(final, field):.1f}",
            f"{max(*values, getattr(final, field)):.1f}",
            f"{slope([(s.at, getattr(s, field)) for s in samples]):+.2f}",
            f"{slope([(s.at, getattr(s, field)) for s in steady]):+.2f}",
        )
    console.print(summary)
    if len(snapshots) == 2:
        console.print(growth_table(*snapshots))
    console.print(
        f"Redis used_memory {samples[0].redis_bytes / 2**20:.1f} -> "
        f"{final.redis_bytes / 2**20:.1f} MiB ({accounts:,} account states); outbox at the "
        f"end {outbox[0]} entries, {outbox[1]} written-times"
    )
    caught = (
        f"caught up {caught_up:.0f}s after production started"
        if math.isfinite(caught_up)
        else "did NOT catch up within 60 s of the end"
    )
    console.print(f"worker {caught}; trivial agent committed {trivial_done:,} of {produced:,}")
    console.print(f"CPU while producing (share of one core; 2 cores in all): {cpu}")
    worker_slope = slope([(s.at, s.worker_mib) for s in steady])
    verdict = (
        "too few samples after the warm-up"
        if not math.isfinite(worker_slope)
        else "flat"
        if worker_slope <= FLAT_MIB_PER_MINUTE
        else "GROWING"
    )
    console.print(
        f"worker memory after the warm-up: [bold]{verdict}[/bold] "
        f"({worker_slope:+.2f} MiB/min; flat means <= {FLAT_MIB_PER_MINUTE} MiB/min); "
        f"run {time.monotonic() - started:.0f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
