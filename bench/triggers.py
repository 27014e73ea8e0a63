"""Campaign triggers: a ``SegmentChanged`` produced -> its ``CampaignTriggered`` consumed.

A real ``segworker run`` with the trigger router on (``SEGWORKER_TRIGGERS_ENABLED``)
reads ``segment-changes``; this bench produces live changes there, as the worker's own
segmentation would, and reads ``campaign-triggers`` (aiokafka, fetch max wait 10 ms,
one process, one monotonic clock). Every change is an ``entered`` of a value segment by
one of ``--accounts`` stored accounts (20,000, each with a year of history folded
offline with the pure core, as ``latency.py`` stores them), and the bench's
``triggers.yaml`` fires for each of them: a ``when`` condition over the account's
features and two address roles, so every change costs the router what a firing trigger
costs (the account's state read from Redis, the decision, the trigger state and outbox
written in one transaction, the send, the outbox cleared). No quiet hours, no holdout,
no cooldown: a delayed or withheld trigger could not be timed. A change whose trigger
is never seen counts as infinitely late.

Phases, in one run:

1. baseline, broker alone: the same changes produced at ``--rate`` (1,000/s) for
   ``--baseline-seconds`` to a topic of their own and read back; then a burst of
   ``--burst`` of them as fast as the producer goes (the broker's throughput);
2. the worker: warm-up, then ``--seconds`` at ``--rate`` (change-to-trigger latency: two
   broker round trips, the router's batch wait and the batch); then the same burst
   (the router's throughput: first change sent to last trigger read).

    .venv/bin/python bench/triggers.py [--rate 1000] [--seconds 60] [--burst 20000]
        [--accounts 20000] [--sample 500]

Uses the embedded broker and Redis unless KAFKA_BOOTSTRAP_SERVERS / REDIS_URL are set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from common import (
    CpuMeter,
    WorkerProcess,
    add_stored_history_arguments,
    deployment,
    peak_rss_mib,
    run_title,
)
from latency import (
    FETCH_MAX_WAIT_MS,
    Latencies,
    Outgoing,
    Reader,
    fill_latency_table,
    new_producer,
    send_steady,
    store_history,
    timeline,
)
from rich.console import Console
from rich.table import Table

from worker.adapters.kafka_topics import create_topics
from worker.config.settings import Settings
from worker.core.events import SegmentChanged
from worker.core.membership import change_id

console = Console(width=120)
ID_FORMAT = "TRG-{:06d}"
TRIGGERS_YAML = """\
version: "bench-1"
triggers:
  - id: bench_value_entered
    description: Every entry into a value segment of an account with a non-negative revenue
    on: {family: value, change: entered}
    when: revenue_365d >= 0
    campaign: bench-offer
    address_roles: [decider, buyer]
"""


class Changes:
    """Live ``entered`` changes of value segments of the stored accounts, stamped now;
    each one's ``change_id`` is what its trigger names."""

    def __init__(self, prefix: str, topic: str, accounts: int, segments: list[str]) -> None:
        self.prefix = prefix
        self.topic = topic
        self.accounts = accounts
        self.segments = segments
        self.rng = random.Random(prefix)

    def __call__(self, number: int) -> Outgoing:
        account = ID_FORMAT.format(self.rng.randrange(self.accounts) + 1)
        segment = self.rng.choice(self.segments)
        cause = f"{self.prefix}-{number}"
        identifier = change_id(account, "value", segment, "entered", cause)
        change = SegmentChanged(
            change_id=identifier,
            account_id=account,
            family="value",
            segment_id=segment,
            change="entered",
            reason="revenue_365d >= value_b_min",
            occurred_at=datetime.now(UTC),
            definition_version="bench",
            cause=cause,
            origin="event",
            live=True,
        )
        return Outgoing(self.topic, account.encode(), change.model_dump_json().encode(), identifier)


def change_id_of(value: bytes) -> str:
    return str(json.loads(value)["change_id"])


@dataclass
class Phase:
    """A measured phase: the latencies and how fast it went."""

    latencies: Latencies
    first: float
    last: float

    def row(self) -> dict[str, float]:
        summary = self.latencies.summary()
        sent = len(self.latencies.sent)
        seconds = self.last - self.first
        return {**summary, "rate": sent / seconds if seconds > 0 else float("nan")}

    def throughput(self) -> float:
        """Messages per second from the first send to the last one read (all of them)."""
        lat = self.latencies
        if len(lat.seen) < len(lat.sent) or not lat.sent:
            return float("nan")
        end = max(lat.sent[i] + lat.seen[i] for i in lat.seen)
        return len(lat.sent) / (end - self.first)


async def run_phase(
    bootstrap: str,
    read_topic: str,
    partitions: int,
    make: Callable[[int], Outgoing],
    numbers: range,
    rate: float,
    drain: float,
) -> Phase:
    """Produce ``make(n)`` at ``rate`` while reading ``read_topic``; wait until all seen."""
    latencies = Latencies()
    reader = Reader(bootstrap, read_topic, partitions, FETCH_MAX_WAIT_MS, change_id_of, latencies)
    producer = new_producer(bootstrap)
    await producer.start()
    await reader.start()
    try:
        first, last = await send_steady(producer, make, numbers, rate, latencies)
        await latencies.wait_all_seen(drain)
    finally:
        await reader.stop()
        await producer.stop()
    return Phase(latencies, first, last)


async def wait_first_trigger(settings: Settings, changes: Changes, worker: WorkerProcess) -> None:
    """Until the worker has joined its group and a change comes back as a trigger."""
    assert settings.kafka_bootstrap_servers
    deadline = time.monotonic() + 120
    number = 1
    while True:
        worker.check_alive()
        phase = await run_phase(
            settings.kafka_bootstrap_servers,
            settings.topic_campaign_triggers,
            settings.partitions,
            changes,
            range(number, number + 1),
            1,
            drain=3,
        )
        if phase.latencies.seen:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no trigger after 120s; see {worker.log_path}")
        number += 1


def store_accounts(settings: Settings, args: argparse.Namespace) -> list[str]:
    """``--accounts`` accounts with a year of history in Redis; the value segments."""
    definitions, _ = store_history(settings, args, ID_FORMAT, "accounts")
    return [segment.id for segment in definitions.family("value").segments]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000, help="changes per second")
    parser.add_argument("--seconds", type=float, default=60, help="measured phase at --rate")
    parser.add_argument("--baseline-seconds", type=float, default=15)
    parser.add_argument("--warmup-seconds", type=float, default=10)
    parser.add_argument("--burst", type=int, default=20_000, help="changes sent at once")
    parser.add_argument("--drain", type=float, default=60, help="max wait for the last ones")
    add_stored_history_arguments(parser)
    parser.set_defaults(sample=500)
    args = parser.parse_args()
    started = time.monotonic()
    config = Path(tempfile.mkdtemp(prefix="trigbench-")) / "triggers.yaml"
    config.write_text(TRIGGERS_YAML)
    rows: dict[str, dict[str, float]] = {}
    throughput: dict[str, float] = {}
    with deployment("trigbench") as settings:
        bootstrap = settings.kafka_bootstrap_servers
        assert bootstrap
        segments = store_accounts(settings, args)
        parts = settings.partitions
        at_rate = range(1, int(args.rate * args.seconds) + 1)
        burst = range(1, args.burst + 1)

        def phase(read: str, name: str, to: str, numbers: range, rate: float) -> Phase:
            """Changes ``name``-n produced to ``to`` at ``rate``, read back from ``read``."""
            changes = Changes(name, to, args.accounts, segments)
            return asyncio.run(
                run_phase(bootstrap, read, parts, changes, numbers, rate, args.drain)
            )

        baseline_topic = f"{settings.app_id}-baseline"
        create_topics(bootstrap, {baseline_topic: parts})
        base = phase(
            baseline_topic,
            "base",
            baseline_topic,
            range(1, int(args.rate * args.baseline_seconds) + 1),
            args.rate,
        )
        rows["baseline: broker round trip of the changes alone"] = base.row()
        base_burst = phase(baseline_topic, "base-burst", baseline_topic, burst, 1e9)
        throughput["baseline: broker alone, produce -> read"] = base_burst.throughput()

        changes_topic = settings.topic_segment_changes
        with WorkerProcess(
            settings,
            "triggers",
            SEGWORKER_TRIGGERS_ENABLED="true",
            SEGWORKER_TRIGGERS_PATH=str(config),
        ) as worker:
            worker.wait_ready()
            triggers_topic = settings.topic_campaign_triggers
            asyncio.run(
                wait_first_trigger(
                    settings, Changes("ready", changes_topic, args.accounts, segments), worker
                )
            )
            phase(
                triggers_topic,
                "warm",
                changes_topic,
                range(1, int(args.rate * args.warmup_seconds) + 1),
                args.rate,
            )
            meter = CpuMeter()
            live = phase(triggers_topic, "live", changes_topic, at_rate, args.rate)
            cpu = meter.line({worker.pid: "worker"})
            rows["trigger router: SegmentChanged -> CampaignTriggered"] = live.row()
            routed = phase(triggers_topic, "burst", changes_topic, burst, 1e9)
            throughput["trigger router: change produced -> trigger read"] = routed.throughput()
            worker.check_alive()
            metrics = worker.metrics()
            rss = peak_rss_mib(worker.pid)

    table = Table(
        title=run_title(
            f"change-to-trigger latency at {args.rate:,.0f} changes/s, {args.seconds:.0f} s "
            f"(baseline {args.baseline_seconds:.0f} s), {args.accounts:,} stored accounts"
        )
    )
    fill_latency_table(table, rows, "changes")
    console.print(table)
    burst_table = Table(title=f"throughput: a burst of {args.burst:,} changes")
    burst_table.add_column("path")
    burst_table.add_column("changes/s", justify="right")
    for name, rate in throughput.items():
        burst_table.add_row(name, f"{rate:,.0f}")
    console.print(burst_table)
    console.print(timeline(live.latencies, live.first, 10, "change-to-trigger latency"))
    console.print(timeline(base.latencies, base.first, 5, "baseline: broker round trip"))
    decided: Counter[str] = Counter()
    for name, value in metrics.items():
        if name.startswith("segworker_triggers_total{"):
            outcome = name.split('outcome="', 1)[1].split('"', 1)[0]
            decided[outcome] += int(value)
    split = live.latencies.split() if live.latencies.inward else {}
    if split:
        console.print(
            f"of which (at the router's send of the trigger): in p50 {split['in_p50']:,.0f} ms, "
            f"p99 {split['in_p99']:,.0f} ms (first hop, batch wait, decision, Redis "
            f"transaction); out p50 {split['out_p50']:,.0f} ms, p99 {split['out_p99']:,.0f} ms"
        )
    console.print(
        f"router decisions by outcome: {dict(decided)}; worker peak RSS {rss:.0f} MiB; "
        f"CPU at the rate (share of one core): {cpu}"
    )
    p99 = rows["trigger router: SegmentChanged -> CampaignTriggered"]["p99"]
    console.print(
        f"change-to-trigger p99 {p99:,.0f} ms at {args.rate:,.0f} changes/s; "
        f"run {time.monotonic() - started:.0f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
