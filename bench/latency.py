"""End-to-end latency: an input event produced -> its ``SegmentChanged`` consumed.

A real ``segworker run`` gets a steady stream (default 1,000 events/s for 60 s), some
of whose events are timed: first orders of prospect accounts (a profile, no order yet,
written to Redis with the worker's key layout). Each moves its account out of
``value/prospect``, so it causes a change whose ``cause`` is the order's ``event_id``: a
consumer of ``segment-changes`` takes the first change of each timed order and measures
consume time - produce time (one process, one monotonic clock). A timed order never seen
counts as infinitely late.

Scenarios (``--scenario``):

- ``established`` (default), the steady state the target is about: ``--accounts``
  accounts (20,000) hold a year of history, folded offline with the pure core as in
  ``soak.py`` together with the ABC cut-offs and cluster models they settle with; the
  stream is their everyday traffic from the generator (orders and returns, campaign
  interactions, loyalty points: most of it changes no membership), stamped now, with a
  timed first order in every ``1/--probe-share`` events (1 in 10).
- ``first-orders``, a stress case: every event is a prospect's first order, 3-4 changes
  per event (an onboarding wave), 3,000-4,500 changes/s at the target rate.

Baseline, in the same run and before the worker starts: the broker round trip alone,
the same kind of message produced at the same rate to another topic and read by the
same consumer as the changes (aiokafka, fetch max wait 10 ms) and, at the same time, by
one with the worker's fetch max wait (``consumer_fetch_max_wait_ms``; faust-streaming
alone would use 1500). An event's way through the worker is two such round trips plus the
worker's batch. The producer is aiokafka with acks=all and no linger. The baseline is
printed per 10 s like the worker: the embedded broker's round trip grows as it fills
(``--baseline-seconds 60``: p50 of the worker-like reader 14 ms in the first 10 s, 61 ms
in the last; p99 66 and 218 ms), and the worker's phase starts on the broker the
baseline filled. The default 15 s keeps the worker's phase comparable between runs.

``--profile-age-days`` is how long ago the prospects' profiles arrived: older than the
cluster-sample period (7 days) and every first order also sends two cluster training
samples, as most orders of a real account base do, so the models are retrained during
the run and republished whenever they moved materially (each publish re-assigns every
account, paced); 0 measures the worker without that. ``--worker-fetch-max-wait-ms`` sets
the worker's ``consumer_fetch_max_wait_ms`` (and the baseline's worker-like reader) for a
what-if; by default both use the setting (``SEGWORKER_CONSUMER_FETCH_MAX_WAIT_MS`` or its
default). ``--processes 2`` runs two workers in one consumer group, each owning half of
the partitions (scaling out; the throughput bench measures the same for throughput).

    .venv/bin/python bench/latency.py [--scenario established|first-orders] [--rate 1000]
        [--seconds 60] [--accounts 20000] [--probe-share 0.1] [--profile-age-days 30]
        [--worker-fetch-max-wait-ms 10] [--processes 1]

Uses the embedded broker and Redis unless KAFKA_BOOTSTRAP_SERVERS / REDIS_URL are set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from common import (
    CpuMeter,
    PreparedState,
    WorkerProcess,
    add_stored_history_arguments,
    deployment,
    peak_rss_mib,
    percentile,
    prepare,
    replicated,
    run_title,
    stored_history,
    write_globals,
    write_states,
)
from rich.console import Console
from rich.table import Table

from worker.adapters.kafka_topics import create_topics
from worker.config.settings import Settings
from worker.core.definitions import Definitions, load_definitions
from worker.core.events import AccountProfile
from worker.core.features import VOCABULARY, AccountState
from worker.core.processing import process_event
from worker.core.schedule import Schedule
from worker.devtools.generator import catalogue, generate_events, make_accounts
from worker.devtools.generator.catalogue import COUNTRIES, INDUSTRIES

console = Console(width=120)
TARGET_P99_MS = 250.0
TARGET_RATE = 1000.0
#: The consumers of this bench: a fetch returns at the latest after this long.
FETCH_MAX_WAIT_MS = 10
ID_FORMAT = "LAT-{:06d}"
ESTABLISHED_ID_FORMAT = "EST-{:06d}"
#: Days of everyday traffic generated for the ``established`` scenario (then repeated).
EVERYDAY_DAYS = 90


# ------------------------------------------------------------------------------- events


def prospect_templates(count: int, profile_at: datetime, rng: random.Random) -> list[PreparedState]:
    """Accounts that received a profile at ``profile_at`` and nothing else, as the worker
    holds them (value/prospect, program/never_participated, ...)."""
    definitions = load_definitions(Settings().definitions_path, VOCABULARY)
    schedule = Schedule(definitions)
    templates = []
    for n in range(count):
        account_id = f"TPL-{n:04d}"
        profile = AccountProfile(
            event_id=f"latbench-profile-{n}",
            occurred_at=profile_at,
            account_id=account_id,
            name=f"Latency Bench {n} GmbH",
            industry=rng.choices(list(INDUSTRIES), weights=list(INDUSTRIES.values()))[0],
            employees=max(1, round(rng.lognormvariate(3.7, 1.5))),
            country=rng.choices(list(COUNTRIES), weights=list(COUNTRIES.values()))[0],
        )
        state = AccountState(account_id)
        process_event(state, profile, definitions)
        state.sampled_day = state.now_day  # the profile sent the account's first sample
        templates.append(prepare(state, schedule))
    return templates


@dataclass(frozen=True)
class Outgoing:
    """One message to produce; ``measured``: the event id whose first change is timed."""

    topic: str
    key: bytes
    value: bytes
    measured: str | None


class Orders:
    """One-line orders, each the first order of the next pool account, stamped now."""

    def __init__(
        self, prefix: str, rng: random.Random, topic: str, accounts: Iterator[int]
    ) -> None:
        self.prefix = prefix
        self.rng = rng
        self.topic = topic
        self.accounts = accounts
        self.items = [(c, sku, price) for c, items in catalogue().items() for sku, price in items]

    def __call__(self, number: int) -> Outgoing:
        category, sku, price = self.rng.choice(self.items)
        quantity = max(1, min(1000, round(self.rng.lognormvariate(4.5, 1.0) / price) or 1))
        account = ID_FORMAT.format(next(self.accounts))
        event_id = f"{self.prefix}-{number}"
        event = {
            "type": "order_placed",
            "event_id": event_id,
            "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "account_id": account,
            "contact_id": f"{account}-C1",
            "order_id": f"{event_id}-SO",
            "currency": "EUR",
            "total": round(quantity * price, 2),
            "lines": [
                {"sku": sku, "category": category, "quantity": quantity, "unit_price": price}
            ],
            "channel": "web",
        }
        value = json.dumps(event, separators=(",", ":")).encode()
        return Outgoing(self.topic, account.encode(), value, event_id)


class Established:
    """The generator's everyday traffic (orders, returns, campaign interactions, loyalty
    points) of accounts with a year of history, stamped now and spread over the stored
    replicas of the simulated accounts; not timed, most of it changes no membership."""

    def __init__(
        self,
        prefix: str,
        rng: random.Random,
        settings: Settings,
        templates: Sequence[str],
        accounts: int,
        seed: int,
    ) -> None:
        self.prefix = prefix
        self.rng = rng
        self.topics = {
            "orders": settings.topic_orders,
            "campaign-events": settings.topic_campaign_events,
            "loyalty-points": settings.topic_loyalty_points,
        }
        # The same seed as the folded history: the same simulated accounts, behaving alike.
        simulated = make_accounts(len(templates), random.Random(seed))
        start = datetime.now(UTC) - timedelta(days=EVERYDAY_DAYS)
        self.events = [
            (topic, event)
            for topic, event in generate_events(simulated, start, EVERYDAY_DAYS, rng)
            if topic in self.topics
        ]
        self.template_index = {account_id: i for i, account_id in enumerate(templates)}
        self.copies = max(1, accounts // len(templates))
        self.sample = len(templates)

    def __call__(self, number: int) -> Outgoing:
        topic, event = self.events[number % len(self.events)]
        old = str(event["account_id"])
        copy = self.rng.randrange(self.copies)
        new = ESTABLISHED_ID_FORMAT.format(copy * self.sample + self.template_index[old] + 1)
        stamped = {
            **event,
            "event_id": f"{self.prefix}-{number}",
            "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        # Ids have a fixed width, so no account id is a prefix of another.
        text = json.dumps(stamped, separators=(",", ":")).replace(old, new)
        return Outgoing(self.topics[topic], new.encode(), text.encode(), None)


class Mixed:
    """Everyday traffic with a first order of a prospect (timed) every ``1/share`` events."""

    def __init__(self, everyday: Established, probes: Orders, share: float) -> None:
        self.everyday = everyday
        self.probes = probes
        self.every = max(1, round(1 / share))

    def __call__(self, number: int) -> Outgoing:
        if number % self.every == 0:
            return self.probes(number)
        return self.everyday(number)


# ---------------------------------------------------------------------------- measuring


@dataclass
class Latencies:
    """Send times by event id and, once seen, each event's latency (seconds).

    ``inward`` splits a seen latency at the change's record timestamp, which the worker's
    producer sets when it sends the change: from the event's send to then (the first hop,
    the wait for a batch and the batch) and the rest is the way out (the broker's
    acknowledgement, the second hop). The timestamp is wall-clock time, so send times are
    moved to it by ``wall_offset`` (one machine, a run of minutes).
    """

    sent: dict[str, float] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    inward: dict[str, float] = field(default_factory=dict)
    #: ``time.time() - time.perf_counter()``: a send time on the wall clock
    wall_offset: float = field(default_factory=lambda: time.time() - time.perf_counter())

    def observe(self, event_id: str, now: float, record_timestamp_ms: int | None = None) -> None:
        sent = self.sent.get(event_id)
        if sent is not None and event_id not in self.seen:
            self.seen[event_id] = now - sent
            if record_timestamp_ms is not None:
                self.inward[event_id] = record_timestamp_ms / 1000 - (sent + self.wall_offset)

    def clear(self) -> None:
        for times in (self.sent, self.seen, self.inward):
            times.clear()

    def split(self) -> dict[str, float]:
        """p50/p99 (ms) of the way in (to the worker's send) and out (from it to the read)."""
        inward = sorted(self.inward.values())
        outward = sorted(self.seen[event_id] - value for event_id, value in self.inward.items())
        return {
            "in_p50": percentile(inward, 50) * 1000,
            "in_p99": percentile(inward, 99) * 1000,
            "out_p50": percentile(outward, 50) * 1000,
            "out_p99": percentile(outward, 99) * 1000,
        }

    def summary(self) -> dict[str, float]:
        # An event never seen counts as infinitely late, so a lost event cannot hide.
        values = sorted(self.seen.values()) + [float("inf")] * (len(self.sent) - len(self.seen))
        return {
            "events": len(self.sent),
            "seen": len(self.seen),
            "p50": percentile(values, 50) * 1000,
            "p95": percentile(values, 95) * 1000,
            "p99": percentile(values, 99) * 1000,
            "max": values[-1] * 1000 if values else float("nan"),
        }

    async def wait_all_seen(self, timeout: float, idle: float = 10.0) -> None:
        """Until every sent event was seen, nothing new for ``idle`` s, or ``timeout``."""
        deadline = time.monotonic() + timeout
        last_count, last_change = -1, time.monotonic()
        while len(self.seen) < len(self.sent) and time.monotonic() < deadline:
            if len(self.seen) != last_count:
                last_count, last_change = len(self.seen), time.monotonic()
            elif time.monotonic() - last_change > idle:
                return
            await asyncio.sleep(0.1)


def event_id_of(value: bytes) -> str:
    return str(json.loads(value)["event_id"])


def cause_of(value: bytes) -> str:
    """``cause`` of a SegmentChanged: its last field, found without parsing the JSON."""
    start = value.rfind(b'"cause":"')
    if start < 0:
        return str(json.loads(value)["cause"])
    start += len(b'"cause":"')
    return value[start : value.index(b'"', start)].decode()


class Reader:
    """Reads a topic from its current end and hands each record's id (``id_of``) and
    consume time to ``latencies``; aiokafka, like the worker."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        fetch_max_wait_ms: int,
        id_of: Callable[[bytes], str],
        latencies: Latencies,
    ) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=fetch_max_wait_ms,
            client_id="latbench-reader",
        )
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.id_of = id_of
        self.latencies = latencies
        self.records = 0
        #: records by what caused them: "event", "time", "cluster", "thresholds", ...
        self.causes: Counter[str] = Counter()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_end(*self.tps)
        for tp in self.tps:
            await self.consumer.position(tp)  # resolve "end" now, before anything is sent
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batches.values():
                self.records += len(records)
                for record in records:
                    record_id = self.id_of(record.value)
                    self.latencies.observe(record_id, now, record.timestamp)
                    prefix, colon, _ = record_id.partition(":")
                    self.causes[prefix if colon else "event"] += 1

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.consumer.stop()


async def send_steady(
    producer: AIOKafkaProducer,
    make: Callable[[int], Outgoing],
    numbers: range,
    rate: float,
    latencies: Latencies,
) -> tuple[float, float]:
    """Send ``make(n)`` for every n at ``rate``/s (catching up when late), timing the
    measured ones; returns the first and the last send time. Returns once the broker
    acknowledged everything."""
    pending: list[asyncio.Future[object]] = []
    first = last = time.perf_counter()
    for index, number in enumerate(numbers):
        wait = first + index / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        message = make(number)
        last = time.perf_counter()
        if message.measured is not None:
            latencies.sent[message.measured] = last
        pending.append(await producer.send(message.topic, message.value, key=message.key))
        if len(pending) >= 1000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    return first, last


def new_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0, client_id="latbench"
    )


# ------------------------------------------------------------------------------- phases


async def baseline(
    settings: Settings, rate: float, seconds: float
) -> tuple[dict[str, dict[str, float]], Latencies, float]:
    """Broker round trip of order-like messages on a topic of their own, no worker; also
    the round trips as the worker reads and when the first was sent."""
    assert settings.kafka_bootstrap_servers
    bootstrap = settings.kafka_bootstrap_servers
    topic = f"{settings.app_id}-baseline"
    create_topics(bootstrap, {topic: settings.partitions})
    fast = Latencies()
    worker_like = Latencies(sent=fast.sent)
    worker_wait = settings.consumer_fetch_max_wait_ms
    readers = [
        Reader(bootstrap, topic, settings.partitions, FETCH_MAX_WAIT_MS, event_id_of, fast),
        Reader(bootstrap, topic, settings.partitions, worker_wait, event_id_of, worker_like),
    ]
    producer = new_producer(bootstrap)
    await producer.start()
    try:
        for reader in readers:
            await reader.start()
        numbers = range(1, int(rate * seconds) + 1)
        orders = Orders("baseline", random.Random(1), topic, itertools.count(1))
        first, last = await send_steady(producer, orders, numbers, rate, fast)
        await fast.wait_all_seen(30, idle=5)
        await worker_like.wait_all_seen(30, idle=5)
    finally:
        for reader in readers:
            await reader.stop()
        await producer.stop()
    achieved = len(fast.sent) / (last - first) if last > first else float("nan")
    rows = {
        f"broker round trip, fetch max wait {FETCH_MAX_WAIT_MS} ms (as this bench reads)": {
            **fast.summary(),
            "rate": achieved,
        },
        f"broker round trip, fetch max wait {worker_wait} ms (as the worker reads)": {
            **worker_like.summary(),
            "rate": achieved,
        },
    }
    return rows, worker_like, first


@dataclass
class WorkerRun:
    summary: dict[str, float]
    latencies: Latencies
    start: float
    cpu: str
    info: dict[str, Any]


class Traffic:
    """What a scenario sends: ``traffic(prefix, seed)`` makes the messages of one phase.

    Every phase takes its prospects from one pool, so no account gets two first orders.
    """

    def __init__(
        self, settings: Settings, everyday: Established | None, probe_share: float
    ) -> None:
        self.settings = settings
        self.everyday = everyday
        self.probe_share = probe_share
        self.prospects = itertools.count(1)

    def first_orders(self, prefix: str, seed: int) -> Orders:
        return Orders(prefix, random.Random(seed), self.settings.topic_orders, self.prospects)

    def __call__(self, prefix: str, seed: int) -> Callable[[int], Outgoing]:
        if self.everyday is None:
            return self.first_orders(prefix, seed)
        return Mixed(self.everyday, self.first_orders(prefix, seed), self.probe_share)


async def measure_worker(
    settings: Settings,
    args: argparse.Namespace,
    workers: Sequence[WorkerProcess],
    traffic: Traffic,
) -> WorkerRun:
    """Wait until the workers answer, warm them up at the rate, then measure."""
    assert settings.kafka_bootstrap_servers
    bootstrap = settings.kafka_bootstrap_servers
    latencies = Latencies()
    reader = Reader(
        bootstrap,
        settings.topic_segment_changes,
        settings.partitions,
        FETCH_MAX_WAIT_MS,
        cause_of,
        latencies,
    )
    producer = new_producer(bootstrap)
    await producer.start()
    await reader.start()
    try:
        ready = traffic.first_orders("ready", 4)
        number, deadline = 1, time.monotonic() + 120
        while not latencies.seen:  # the workers joined their group and answer
            for worker in workers:
                worker.check_alive()
            if time.monotonic() > deadline:
                logs = ", ".join(str(worker.log_path) for worker in workers)
                raise TimeoutError(f"no segment change after 120s; see {logs}")
            await send_steady(producer, ready, range(number, number + 1), 1, latencies)
            number += 1
            await asyncio.sleep(0.2)
        warm_until = number + int(args.rate * args.warmup_seconds)
        await send_steady(
            producer, traffic("warm", 3), range(number, warm_until), args.rate, Latencies()
        )
        latencies.clear()
        meter = CpuMeter()
        numbers = range(warm_until, warm_until + int(args.rate * args.seconds))
        first, last = await send_steady(producer, traffic("lat", 2), numbers, args.rate, latencies)
        cpu = meter.line(
            {
                worker.pid: "worker" if len(workers) == 1 else f"worker {number}"
                for number, worker in enumerate(workers, 1)
            }
        )
        await latencies.wait_all_seen(args.drain)
    finally:
        await reader.stop()
        await producer.stop()
    achieved = len(numbers) / (last - first) if last > first else float("nan")
    metrics: Counter[str] = Counter()
    for worker in workers:
        worker.check_alive()
        metrics.update(worker.metrics())
    info = {
        "rss": max(peak_rss_mib(worker.pid) for worker in workers),
        "records": reader.records,
        "causes": ", ".join(f"{cause} {n:,}" for cause, n in reader.causes.most_common()),
        "batches": metrics["segworker_batch_seconds_count"],
        "batch_seconds": metrics["segworker_batch_seconds_sum"],
        "applied": sum(v for k, v in metrics.items() if k.startswith("segworker_events_total")),
    }
    return WorkerRun({**latencies.summary(), "rate": achieved}, latencies, first, cpu, info)


# -------------------------------------------------------------------------------- report


def store_history(
    settings: Settings, args: argparse.Namespace, id_format: str, what: str
) -> tuple[Definitions, list[PreparedState]]:
    """Store ``--accounts`` accounts with a year of history (and the cut-offs and cluster
    models they settled with); return the definitions and the simulated accounts."""
    assert settings.redis_url
    definitions = load_definitions(settings.definitions_path, VOCABULARY)
    # History up to now: the accounts' first live events then find them as a running
    # worker would, not a day behind (a day's worth of catch-up changes and sweeps).
    history, templates = stored_history(args, definitions, until=datetime.now(UTC))
    write_globals(settings.redis_url, settings.redis_key_prefix, history)
    written = write_states(
        settings.redis_url,
        settings.redis_key_prefix,
        replicated(templates, args.accounts, id_format),
    )
    console.print(
        f"{written:,} {what} in Redis ({len(templates):,} simulated, "
        f"{history.events:,} events of history folded in {history.seconds:.0f}s)"
    )
    return definitions, templates


def store_established(settings: Settings, args: argparse.Namespace) -> Established:
    """Store the accounts (:func:`store_history`); return their everyday traffic."""
    _, templates = store_history(settings, args, ESTABLISHED_ID_FORMAT, "established accounts")
    return Established(
        "everyday",
        random.Random(args.seed + 1),
        settings,
        [t.account_id for t in templates],
        args.accounts,
        args.seed,
    )


def scenario_title(args: argparse.Namespace) -> str:
    if args.scenario == "established":
        return (
            f"{args.accounts:,} established accounts' everyday traffic, 1 in "
            f"{round(1 / args.probe_share)} events a prospect's first order (timed)"
        )
    return f"every event a prospect's first order, profiles {args.profile_age_days:g} days old"


def fill_latency_table(table: Table, rows: dict[str, dict[str, float]], noun: str) -> None:
    """One row per path: how many ``noun`` were sent, their rate, percentiles, not seen."""
    for column in ("path", noun, f"{noun}/s", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right")
    table.add_column("not seen", justify="right")
    for name, row in rows.items():
        table.add_row(
            name,
            f"{row['events']:,.0f}",
            f"{row['rate']:,.0f}",
            f"{row['p50']:,.1f}",
            f"{row['p95']:,.1f}",
            f"{row['p99']:,.1f}",
            f"{row['max']:,.1f}",
            f"{row['events'] - row['seen']:,.0f}",
        )


def timeline(latencies: Latencies, start: float, window: float, what: str) -> Table:
    table = Table(title=f"{what} per {window:.0f} s of the run (by send time)")
    for column in ("from s", "events", "p50 ms", "p99 ms", "max ms", "not seen"):
        table.add_column(column, justify="right")
    buckets: dict[int, list[str]] = {}
    for event_id, sent in latencies.sent.items():
        buckets.setdefault(int((sent - start) // window), []).append(event_id)
    for index in sorted(buckets):
        ids = buckets[index]
        values = sorted(latencies.seen[i] * 1000 for i in ids if i in latencies.seen)
        missing = len(ids) - len(values)
        values += [float("inf")] * missing
        table.add_row(
            f"{index * window:.0f}",
            str(len(ids)),
            f"{percentile(values, 50):,.0f}",
            f"{percentile(values, 99):,.0f}",
            f"{values[-1]:,.0f}",
            str(missing),
        )
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="events per second")
    parser.add_argument("--seconds", type=float, default=60, help="measured phase")
    parser.add_argument(
        "--baseline-seconds",
        type=float,
        default=15,
        help="broker-only phase, before the worker's: the embedded broker's round trip "
        "grows as it fills, so a longer one shows that and slows the worker's phase too",
    )
    parser.add_argument("--warmup-seconds", type=float, default=10, help="at the rate, unmeasured")
    parser.add_argument(
        "--scenario",
        choices=("established", "first-orders"),
        default="established",
        help="established: everyday traffic of --accounts accounts with a year of history, "
        "with a timed first order of a prospect in every 1/--probe-share events; "
        "first-orders: every event a prospect's first order (3-4 changes each)",
    )
    parser.add_argument(
        "--probe-share",
        type=float,
        default=0.1,
        help="established: share of the events that are timed first orders",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes in the consumer group (the partitions are split between them)",
    )
    add_stored_history_arguments(parser)
    parser.add_argument("--drain", type=float, default=60, help="max wait for the last changes")
    parser.add_argument(
        "--profile-age-days",
        type=float,
        default=30,
        help="age of the pool's profiles; >= 7 makes each order send cluster samples",
    )
    parser.add_argument(
        "--worker-fetch-max-wait-ms",
        type=int,
        default=None,
        help="what-if: the worker's consumer_fetch_max_wait_ms (default: the setting's)",
    )
    args = parser.parse_args()
    started = time.monotonic()
    established = args.scenario == "established"
    probe_share = args.probe_share if established else 1.0

    pool = int(args.rate * probe_share * (args.seconds + args.warmup_seconds)) + 2000
    profile_at = datetime.now(UTC) - timedelta(days=args.profile_age_days)
    templates = prospect_templates(500, profile_at, random.Random(5))
    overrides = {}
    if args.worker_fetch_max_wait_ms is not None:
        overrides["consumer_fetch_max_wait_ms"] = args.worker_fetch_max_wait_ms
    with deployment("latbench", **overrides) as settings:
        wait = settings.consumer_fetch_max_wait_ms
        processes = "" if args.processes == 1 else f", {args.processes} processes"
        worker_name = (
            f"full worker (fetch max wait {wait} ms{processes}): order -> first SegmentChanged"
        )
        assert settings.redis_url
        written = write_states(
            settings.redis_url,
            settings.redis_key_prefix,
            replicated(templates, pool + 1, ID_FORMAT),
        )
        console.print(f"{written:,} prospect accounts in Redis")
        everyday = None
        if established:
            everyday = store_established(settings, args)
        baseline_seconds = args.baseline_seconds
        rows, broker_alone, broker_start = asyncio.run(
            baseline(settings, args.rate, baseline_seconds)
        )
        with contextlib.ExitStack() as stack:
            workers = [
                stack.enter_context(
                    WorkerProcess(
                        settings, f"latency-{n}", SEGWORKER_CONSUMER_FETCH_MAX_WAIT_MS=str(wait)
                    )
                )
                for n in range(1, args.processes + 1)
            ]
            traffic = Traffic(settings, everyday, probe_share)
            run = asyncio.run(measure_worker(settings, args, workers, traffic))
        rows[worker_name] = result = run.summary
        info = run.info

    table = Table(
        title=run_title(
            f"end-to-end latency at {args.rate:,.0f} events/s, {args.seconds:.0f} s "
            f"(baseline {baseline_seconds:.0f} s), {scenario_title(args)}"
        )
    )
    fill_latency_table(table, rows, "events")
    console.print(table)
    console.print(timeline(run.latencies, run.start, 10, "worker latency"))
    console.print(
        timeline(broker_alone, broker_start, 10, "baseline: broker round trip as the worker reads")
    )
    if run.latencies.inward:
        split = run.latencies.split()
        console.print(
            f"of which (at the worker's send of the change): in p50 {split['in_p50']:,.0f} ms, "
            f"p99 {split['in_p99']:,.0f} ms (first hop, batch wait, batch); out p50 "
            f"{split['out_p50']:,.0f} ms, p99 {split['out_p99']:,.0f} ms (delivery, second hop)"
        )
    batches = info["batches"] or float("nan")
    largest = " (the larger process)" if args.processes > 1 else ""
    console.print(
        f"worker: {info['applied']:,.0f} events applied in {info['batches']:,.0f} batches "
        f"(mean {info['applied'] / batches:,.0f} events, "
        f"{info['batch_seconds'] / batches * 1000:,.0f} ms per batch), "
        f"peak RSS {info['rss']:.0f} MiB{largest}; {info['records']:,} changes read (by cause: "
        f"{info['causes']})"
    )
    console.print(f"CPU while producing (share of one core; 2 cores in all): {run.cpu}")
    met = result["p99"] <= TARGET_P99_MS and result["rate"] >= 0.98 * TARGET_RATE
    console.print(
        f"target p99 <= {TARGET_P99_MS:.0f} ms at {TARGET_RATE:,.0f} events/s: "
        f"[bold]{'met' if met else 'NOT met'}[/bold] (p99 {result['p99']:,.0f} ms at "
        f"{result['rate']:,.0f} events/s{processes}); run {time.monotonic() - started:.0f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
