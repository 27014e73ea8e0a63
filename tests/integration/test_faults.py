"""Reliability: nothing is lost, nothing is invented, under faults.

Every scenario runs real ``segworker run`` processes against a real broker and a real Redis
while a producer thread streams a deterministic synthetic history (fixed seeds) at a bounded
rate, and injects one kind of fault mid-stream:

1. the worker is SIGKILLed three times at seeded-random points and restarted;
2. Redis (AOF, ``appendfsync always``) is SIGKILLed and restarted from its AOF on the same port;
3. the broker is frozen (SIGSTOP) for five seconds, then continued;
4. a second worker joins mid-stream and the first one leaves (two rebalances).

When the input is consumed and the worker has settled, two checks count mismatches:

(a) the stored state of every account equals an offline recomputation from the input (the
    account's events folded with ``process_event``, evaluated at the stored stream time):
    every catalogue feature and every family's memberships;
(b) the ``segment-changes`` topic delivers every change at least once, copies of one
    ``change_id`` are identical, and replaying the de-duplicated changes per account in
    topic order never enters a held segment, exits one not held or holds two segments of an
    exclusive family, and ends exactly at the stored memberships (and at the member sets).

Each scenario prints one report line (events in, changes out, duplicates, mismatches).
The definitions (``faults.yaml``) have no hysteresis and no value family, so the final
memberships depend on the input only, not on when the time sweeps happened to run.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import Deployment, StoredState, WorkerProcess
from worker.adapters.kafka_clients import encode
from worker.adapters.state_codec import decode_state
from worker.core import value
from worker.core.definitions import Definitions, load_definitions
from worker.core.events import decode_input
from worker.core.features import (
    FEATURES,
    VOCABULARY,
    AccountState,
    FeatureView,
    Globals,
    day_of,
)
from worker.core.processing import evaluate, process_event
from worker.devtools.embedded import EmbeddedKafka, EmbeddedRedis, start_kafka, start_redis
from worker.devtools.embedded.redis_cluster import start_redis_cluster
from worker.devtools.generator import TopicEvent, generate_events, make_accounts

DEFINITIONS_PATH = Path(__file__).with_name("faults.yaml")
#: The same with the value family (ABC cut-offs), for the runs on a Redis Cluster.
VALUE_DEFINITIONS_PATH = Path(__file__).with_name("faults_value.yaml")
#: A fixed start: the same seed gives byte-identical streams on every run.
START = datetime(2025, 1, 6, tzinfo=UTC)
ACCOUNTS = 100
#: Input events per second produced while the faults happen.
RATE = 400.0
WORKER_ENV = {
    # No cluster model is ever published, so there is no (timing dependent) cluster family.
    "SEGWORKER_CLUSTER_WARMUP": "100000000",
    "SEGWORKER_SWEEP_INTERVAL_SECONDS": "0.5",
}
SETTLE_TIMEOUT = 90.0
POLL = 0.02


# -------------------------------------------------------------------------------- input


def synthetic_stream(seed: int, days: float) -> list[TopicEvent]:
    """``days`` of history for ``ACCOUNTS`` accounts, deterministic given ``seed``."""
    rng = random.Random(seed)
    accounts = make_accounts(ACCOUNTS, rng)
    return list(generate_events(accounts, START, days, rng, id_prefix=f"f{seed}"))


def event_time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["occurred_at"]).timestamp()


class StreamProducer:
    """Produces a stream from a thread, keyed by account: a head at once, then, once
    released (the worker is up), the rest at a bounded rate, so the faults hit a live stream.

    ``ends`` holds, once the thread is done, the end offset of every input partition
    written (the last acknowledged offset + 1), which is what the worker must commit.
    """

    def __init__(
        self, deployment: Deployment, events: list[TopicEvent], rate: float, head: int = 100
    ) -> None:
        self.deployment = deployment
        self.events = events
        self.rate = rate
        self.head = head
        self.sent = 0
        self.ends: dict[TopicPartition, int] = {}
        self.error: BaseException | None = None
        self._released = threading.Event()
        self._aborted = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-stream", daemon=True)

    def start(self) -> StreamProducer:
        self._thread.start()
        return self

    def release(self) -> None:
        """Produce the rest of the stream (at ``rate``)."""
        self._released.set()

    def abort(self) -> None:
        """Stop producing (a failed test), and wait for the thread."""
        if self._thread.ident is None:  # never started
            return
        self._aborted.set()
        self._released.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            producer = KafkaProducer(
                bootstrap_servers=self.deployment.bootstrap_servers,
                acks="all",
                linger_ms=5,
                client_id="fault-stream",
            )
            try:
                futures = []
                started = 0.0
                for count, (topic, event) in enumerate(self.events, 1):
                    if self._aborted.is_set():
                        return
                    if count == self.head + 1:
                        producer.flush(timeout=60)
                        if not self._released.wait(timeout=120):
                            raise TimeoutError("the stream was never released")
                        started = time.monotonic() - self.head / self.rate
                    futures.append(
                        producer.send(
                            self.deployment.topic(topic),
                            key=event["account_id"].encode(),
                            value=encode(event),
                        )
                    )
                    self.sent = count
                    ahead = started + count / self.rate - time.monotonic()
                    if started and ahead > 0:
                        time.sleep(ahead)
                producer.flush(timeout=120)
                for future in futures:
                    meta = future.get(timeout=60)
                    tp = TopicPartition(meta.topic, meta.partition)
                    self.ends[tp] = max(self.ends.get(tp, 0), meta.offset + 1)
            finally:
                producer.close(timeout=10)
        except BaseException as error:  # reported by join()
            self.error = error

    def join(self, timeout: float = 120.0) -> None:
        self._released.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the producer did not finish in time"
        if self.error is not None:
            raise self.error


# ------------------------------------------------------------------------------ a scenario


def wait_for(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(POLL)


def metric(worker: WorkerProcess, name: str, **labels: str) -> float:
    """Sum of a metric's samples (matching ``labels``) on a worker's /metrics; 0 if down."""
    url = f"http://127.0.0.1:{worker.web_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def processed(worker: WorkerProcess) -> int:
    """Input events a worker process has handled (applied or skipped as already applied)."""
    return int(metric(worker, "segworker_events_total"))


@dataclass
class Scenario:
    """One deployment, its stream, its worker processes, and what the test observed."""

    name: str
    deployment: Deployment
    events: list[TopicEvent]
    logs: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reported: bool = False
    #: more worker settings (a value family's cut-off refresh, say)
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.deployment.create_topics()
        self.stored = StoredState(self.deployment)
        self.times = [event_time(event) for _, event in self.events]
        self.producer = StreamProducer(self.deployment, self.events, RATE)
        #: the workers that must be running (not yet killed or stopped by the test)
        self.live: list[WorkerProcess] = []

    @property
    def prefix(self) -> str:
        return self.deployment.name

    @property
    def definitions(self) -> Definitions:
        return load_definitions(self.deployment.definitions_path, VOCABULARY)

    @property
    def group(self) -> str:
        return self.deployment.env["SEGWORKER_APP_ID"]

    def start_worker(self) -> WorkerProcess:
        log = self.logs / f"{self.name}-worker-{len(self.workers)}.log"
        worker = WorkerProcess(self.deployment, log, **WORKER_ENV, **self.extra_env)
        self.workers.append(worker)
        self.live.append(worker)
        return worker

    def kill(self, worker: WorkerProcess) -> None:
        self.live.remove(worker)
        worker.kill()

    def stop(self, worker: WorkerProcess) -> None:
        self.live.remove(worker)
        code = worker.stop()
        assert code == 0, f"{worker.log_path.name} exited with {code}:\n{worker.log_tail()}"

    def assert_alive(self) -> None:
        """Fail at once when a worker died by itself (a fault must not take it down)."""
        for worker in self.live:
            code = worker.process.poll()
            if code is not None:
                raise AssertionError(
                    f"{self.name}: {worker.log_path.name} exited by itself with {code}:\n"
                    f"{worker.log_tail(80)}"
                )

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        def alive_and(predicate: Callable[[], bool] = predicate) -> bool:
            self.assert_alive()
            return predicate()

        wait_for(f"{self.name}: {what}", alive_and, timeout)

    def wait_processed(self, worker: WorkerProcess, events: int, timeout: float = 60.0) -> None:
        """Until ``worker`` itself processed ``events`` input events (from its /metrics)."""
        self.wait_for(
            f"{worker.log_path.name} to process {events} events",
            lambda: processed(worker) >= events,
            timeout,
        )

    def start_stream(self, worker: WorkerProcess) -> None:
        """Produce the head of the stream, wait until ``worker`` processed it, release the rest."""
        self.producer.start()
        self.wait_processed(worker, self.producer.head)
        self.producer.release()

    def wait_outbox_written(self, timeout: float = 10.0) -> int:
        """Spin until the outbox holds changes (written, not yet acknowledged); their count."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = self.stored.outbox()
            if pending:
                return int(pending)
        self.assert_alive()
        return 0

    def idle(self, seconds: float) -> None:
        """Let ``seconds`` pass, failing at once if a worker dies meanwhile."""
        deadline = time.monotonic() + seconds
        self.wait_for("nothing", lambda: time.monotonic() >= deadline, seconds + 5)

    def close(self) -> None:
        self.producer.abort()
        for worker in self.workers:
            worker.kill()  # no-op for an exited process; closes its log
        self.stored.close()


@pytest.fixture
def scenario_factory(
    kafka, redis_server, tmp_path, capsys, request
) -> Iterator[Callable[..., Scenario]]:
    made: list[Scenario] = []

    def make(
        name: str,
        seed: int,
        days: float,
        *,
        broker: EmbeddedKafka | None = None,
        store: EmbeddedRedis | None = None,
        cluster: Any = False,
    ) -> Scenario:
        """``cluster``: True, on the session's Redis Cluster (3 primaries, each with a
        replica; 16 shards), or on the cluster given; with the value family, whose
        cut-offs merge the shards' revenues."""
        if cluster:
            given = cluster if cluster is not True else request.getfixturevalue("redis_cluster")
            url = given.url
            deployment = Deployment(
                (broker or kafka).bootstrap_servers, url, VALUE_DEFINITIONS_PATH, cluster=True
            )
            extra = {"SEGWORKER_VALUE_INTERVAL_SECONDS": "1"}
        else:
            deployment = Deployment(
                (broker or kafka).bootstrap_servers, (store or redis_server).url, DEFINITIONS_PATH
            )
            extra = {}
        scenario = Scenario(
            name, deployment, synthetic_stream(seed, days), tmp_path, extra_env=extra
        )
        made.append(scenario)
        return scenario

    yield make
    for scenario in made:
        scenario.close()
        if not scenario.reported:  # failed before its checks: say so in the CI log too
            with capsys.disabled():
                print(
                    f"\n[faults] {scenario.name}: FAILED before the checks (see the error); "
                    + "; ".join(scenario.notes)
                )


# ------------------------------------------------------------------------------ settling


def committed_offsets(admin: KafkaAdminClient, group: str) -> dict[TopicPartition, int]:
    offsets = admin.list_group_offsets(group)[group]
    return {tp: meta.offset for tp, meta in offsets.items()}


def wait_settled(scenario: Scenario, timeout: float = SETTLE_TIMEOUT) -> None:
    """Until the input is committed, the outbox is empty and no account is due (3 polls)."""
    ends = scenario.producer.ends
    admin = KafkaAdminClient(bootstrap_servers=scenario.deployment.bootstrap_servers)
    stored = scenario.stored
    status = "nothing checked yet"
    try:
        deadline = time.monotonic() + timeout
        calm = 0
        while time.monotonic() < deadline:
            scenario.assert_alive()
            committed = committed_offsets(admin, scenario.group)
            behind = {
                f"{tp.topic}[{tp.partition}]": (committed.get(tp, 0), end)
                for tp, end in ends.items()
                if committed.get(tp, 0) < end
            }
            clock = stored.stream_time()
            outbox = stored.outbox()
            due = stored.due(clock) if clock is not None else -1
            cutoffs = cutoffs_settled(scenario)
            status = f"behind={behind} outbox={outbox} due={due} cut-offs settled={cutoffs}"
            calm = calm + 1 if not behind and outbox == 0 and due == 0 and cutoffs else 0
            if calm >= 3:
                return
            time.sleep(0.5)
    finally:
        admin.close()
    tails = "\n".join(f"--- {w.log_path.name}\n{w.log_tail(40)}" for w in scenario.workers)
    raise AssertionError(f"{scenario.name}: not settled after {timeout}s: {status}\n{tails}")


# -------------------------------------------------------------------------------- checks


@dataclass
class Delivered:
    partition: int
    offset: int
    change: dict[str, Any]


def read_topic(bootstrap_servers: str, topic: str, partitions: int) -> list[Delivered]:
    """Every record of ``topic``, in partition and offset order (up to the high watermark)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Delivered] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=300).items():
                records += [
                    Delivered(tp.partition, m.offset, json.loads(m.value)) for m in messages
                ]
            marks = [consumer.highwater(tp) for tp in tps]
            if all(
                m is not None and consumer.position(tp) >= m
                for tp, m in zip(tps, marks, strict=True)
            ):
                break
        else:
            raise AssertionError(f"could not read {topic} to its end")
    finally:
        consumer.close()
    return sorted(records, key=lambda d: (d.partition, d.offset))


def memberships_of(state: AccountState) -> dict[str, set[str]]:
    return {family: set(segments) for family, segments in state.memberships.items() if segments}


def offline_states(
    events: list[TopicEvent], definitions: Definitions, at: float
) -> dict[str, AccountState]:
    """Every account's state from its input events alone, evaluated at ``at``."""
    states: dict[str, AccountState] = {}
    for _, raw in events:
        event = decode_input(encode(raw))
        state = states.setdefault(event.account_id, AccountState(event.account_id))
        process_event(state, event, definitions)
    # the ABC cut-offs of the value family: over every account's trailing-year revenue
    day = day_of(datetime.fromtimestamp(at, UTC))
    revenues = [FeatureView(state, day)["revenue_365d"] for state in states.values()]
    cutoffs = value.thresholds_to_dict(value.compute_thresholds(revenues))
    for state in states.values():
        evaluate(state, definitions, "offline", Globals.from_thresholds(cutoffs), at=at)
    return states


def cutoffs_settled(scenario: Scenario) -> bool:
    """With a value family: the stored cut-offs are those of the revenues stored now, and
    every earning account holds the tier they give. The second part is the end of the
    re-evaluation a cut-off change starts, which is paced behind the events (after a
    failover's backlog it took 50 s): the cut-offs alone are stored before it."""
    if all(family.id != "value" for family in scenario.definitions.families):
        return True
    stored = scenario.stored.thresholds()
    revenues = scenario.stored.revenues()
    computed = value.thresholds_to_dict(value.compute_thresholds(revenues.values()))
    if (
        stored is None
        or stored.get("accounts") != computed["accounts"]
        or not value.same_cutoffs(stored, computed)
    ):
        return False
    cutoffs = value.thresholds_from_dict(stored)
    held = {
        account: segment
        for segment in ("a", "b", "c")
        for account in scenario.stored.members("value", segment)
    }
    return all(held.get(a) == cutoffs.tier(r).lower() for a, r in revenues.items())


@dataclass
class Report:
    events_in: int = 0
    changes_out: int = 0
    unique_changes: int = 0
    duplicates: int = 0
    #: the duplicates by the origin of the change (event, time, cutoffs, ...)
    duplicate_origins: Counter[str] = field(default_factory=Counter)
    state_mismatches: int = 0
    change_mismatches: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def mismatches(self) -> int:
        return self.state_mismatches + self.change_mismatches

    def mismatch(self, kind: str, text: str) -> None:
        if kind == "state":
            self.state_mismatches += 1
        else:
            self.change_mismatches += 1
        if len(self.examples) < 15:
            self.examples.append(f"{kind}: {text}")


def check(scenario: Scenario) -> Report:
    """(a) stored state == offline recomputation; (b) the change stream replays to it."""
    definitions = load_definitions(scenario.deployment.definitions_path, VOCABULARY)
    stored_state, report = scenario.stored, Report(events_in=len(scenario.events))

    # (a) the stored state against the input
    stream_time = stored_state.stream_time()
    last_event = max(scenario.times)
    if stream_time != last_event:
        report.mismatch("state", f"stream time {stream_time} != last event time {last_event}")
    at = stream_time or last_event
    day = day_of(datetime.fromtimestamp(at, UTC))
    expected = offline_states(scenario.events, definitions, at)
    for account in sorted(stored_state.accounts() - set(expected)):
        report.mismatch("state", f"stored state of an account without input: {account}")
    stored: dict[str, AccountState] = {}
    for account, offline in sorted(expected.items()):
        raw = stored_state.state(account)
        if raw is None:
            report.mismatch("state", f"{account}: no stored state")
        state = stored[account] = decode_state(account, raw)
        mine, theirs = FeatureView(state, day), FeatureView(offline, day)
        for name in FEATURES:
            if mine[name] != theirs[name]:
                report.mismatch(
                    "state", f"{account}.{name}: stored {mine[name]!r}, offline {theirs[name]!r}"
                )
        got, want = memberships_of(state), memberships_of(offline)
        for family in sorted(set(got) | set(want)):
            if got.get(family, set()) != want.get(family, set()):
                report.mismatch(
                    "state",
                    f"{account} {family}: stored {sorted(got.get(family, []))}"
                    f", offline {sorted(want.get(family, []))}",
                )

    # (b) the delivered changes against the stored state
    deployment = scenario.deployment
    partitions = deployment.partitions
    delivered = read_topic(
        deployment.bootstrap_servers, deployment.topic("segment-changes"), partitions
    )
    letters = read_topic(deployment.bootstrap_servers, deployment.topic("dead-letters"), partitions)
    for letter in letters:
        report.mismatch("changes", f"dead letter for valid input: {letter.change}")
    report.changes_out = len(delivered)
    first: dict[str, Delivered] = {}
    copies: Counter[str] = Counter()
    for record in delivered:
        change_id = record.change["change_id"]
        copies[change_id] += 1
        if change_id not in first:
            first[change_id] = record
        elif record.change != first[change_id].change:
            report.mismatch(
                "changes",
                f"two contents for change {change_id}: "
                f"{first[change_id].change} vs {record.change}",
            )
    report.unique_changes = len(first)
    report.duplicates = sum(n - 1 for n in copies.values())
    for change_id, n in copies.items():
        if n > 1:
            report.duplicate_origins[first[change_id].change.get("origin", "event")] += n - 1
    held: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    exclusive = {family.id for family in definitions.families if family.exclusive}
    partition_of: dict[str, int] = {}
    for record in sorted(first.values(), key=lambda d: (d.partition, d.offset)):
        change = record.change
        account, family, segment = change["account_id"], change["family"], change["segment_id"]
        if partition_of.setdefault(account, record.partition) != record.partition:
            report.mismatch("changes", f"{account}: changes on two partitions")
        segments = held[account][family]
        if change["change"] == "entered":
            if segment in segments:
                report.mismatch(
                    "changes",
                    f"{account} entered {family}/{segment} again "
                    f"({change['cause']}, offset {record.offset})",
                )
            segments.add(segment)
            if family in exclusive and len(segments) > 1:
                report.mismatch(
                    "changes",
                    f"{account} in {sorted(segments)} of exclusive {family} at once "
                    f"({change['cause']}, offset {record.offset})",
                )
        else:
            if segment not in segments:
                report.mismatch(
                    "changes",
                    f"{account} exited {family}/{segment} not held "
                    f"({change['cause']}, offset {record.offset})",
                )
            segments.discard(segment)
    for account in sorted(set(held) | set(stored)):
        replayed = {f: s for f, s in held.get(account, {}).items() if s}
        final = memberships_of(stored[account]) if account in stored else {}
        for family in sorted(set(replayed) | set(final)):
            if replayed.get(family, set()) != final.get(family, set()):
                report.mismatch(
                    "changes",
                    f"{account} {family}: replayed "
                    f"{sorted(replayed.get(family, []))}, stored "
                    f"{sorted(final.get(family, []))}",
                )
    # the member sets agree with the stored memberships
    members: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for family in definitions.families:
        for segment in family.segments:
            for account in stored_state.members(family.id, segment.id):
                members[account][family.id].add(segment.id)
    for account in sorted(set(members) | set(stored)):
        final = memberships_of(stored[account]) if account in stored else {}
        in_sets = {f: s for f, s in members.get(account, {}).items() if s}
        if in_sets != final:
            report.mismatch("state", f"{account}: member sets {in_sets} != memberships {final}")
    return report


def finish(scenario: Scenario, capsys: pytest.CaptureFixture[str], started: float) -> None:
    """Wait for the end of the stream and for the worker(s) to settle, check, stop, report."""
    scenario.producer.join()
    wait_settled(scenario)
    report = check(scenario)
    for worker in list(scenario.live):
        scenario.notes.append(f"{worker.log_path.stem} handled {processed(worker)} events")
        scenario.stop(worker)  # a clean stop after all that: exit code 0
    line = (
        f"[faults] {scenario.name}: events in {report.events_in}, "
        f"changes out {report.changes_out} ({report.unique_changes} unique), "
        f"duplicates {report.duplicates}"
        + (
            " (" + ", ".join(f"{o} {n}" for o, n in report.duplicate_origins.most_common()) + ")"
            if report.duplicates
            else ""
        )
        + f", mismatches {report.mismatches} "
        f"(state {report.state_mismatches}, changes {report.change_mismatches}); "
        + "; ".join(scenario.notes)
        + f"; {time.monotonic() - started:.0f}s"
    )
    scenario.reported = True
    with capsys.disabled():
        print("\n" + line)
        for example in report.examples:
            print(f"[faults]   {example}")
    assert report.mismatches == 0, line + "\n" + "\n".join(report.examples)


# ----------------------------------------------------------------------------- scenarios


@pytest.mark.timeout(200)
@pytest.mark.parametrize("store", ["redis", "cluster"])
def test_worker_killed_three_times_at_random_points(scenario_factory, capsys, store):
    started = time.monotonic()
    cluster = store == "cluster"
    scenario = scenario_factory(f"kill-9-{store}", seed=101, days=200, cluster=cluster)
    rng = random.Random(4242)
    # Each incarnation is killed after a seeded number of events: the first one while the
    # stream is live (small batches), a seeded moment later, so anywhere in a batch's
    # load-write-send-ack cycle; the others while catching up a backlog (full batches), at
    # the moment a batch's changes are in the outbox but not yet acknowledged by the broker.
    budgets = [rng.randint(2000, 2600), rng.randint(100, 900), rng.randint(100, 900)]
    worker = scenario.start_worker()
    scenario.start_stream(worker)
    for number, budget in enumerate(budgets):
        scenario.wait_processed(worker, budget)
        if number == 0:
            time.sleep(rng.uniform(0.0, 0.05))
            when = "at a random moment"
        else:
            pending = scenario.wait_outbox_written()
            when = f"with {pending} changes in the outbox"
        scenario.kill(worker)
        scenario.notes.append(
            f"killed after {budget} events {when} (sent {scenario.producer.sent})"
        )
        worker = scenario.start_worker()
    finish(scenario, capsys, started)


@pytest.mark.timeout(150)
def test_redis_killed_and_restarted_from_its_aof(scenario_factory, capsys, tmp_path):
    started = time.monotonic()
    servers = [start_redis(workdir=tmp_path / "redis", appendonly=True)]
    try:
        scenario = scenario_factory("redis-restart", seed=202, days=150, store=servers[0])
        worker = scenario.start_worker()
        scenario.start_stream(worker)
        scenario.wait_processed(worker, len(scenario.events) * 2 // 5)
        scenario.notes.append(f"Redis SIGKILLed at sent #{scenario.producer.sent}")
        servers[0].kill()
        down = time.monotonic()
        scenario.idle(3.0)
        servers.append(
            start_redis(workdir=servers[0].workdir, appendonly=True, port=servers[0].port)
        )
        scenario.notes.append(f"back from its AOF {time.monotonic() - down:.1f}s later")
        finish(scenario, capsys, started)  # the same worker process recovered
    finally:
        for server in servers:
            server.stop()


@pytest.mark.timeout(150)
def test_broker_frozen_for_five_seconds(scenario_factory, capsys):
    started = time.monotonic()
    broker = start_kafka()
    try:
        scenario = scenario_factory("broker-pause", seed=303, days=150, broker=broker)
        worker = scenario.start_worker()
        scenario.start_stream(worker)
        scenario.wait_processed(worker, len(scenario.events) * 2 // 5)
        at = scenario.producer.sent
        broker.pause()
        try:
            scenario.idle(5.0)
        finally:
            broker.resume()
        scenario.notes.append(f"broker SIGSTOPped for 5s at sent #{at}")
        finish(scenario, capsys, started)
    finally:
        broker.stop()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("store", ["redis", "cluster"])
def test_second_worker_joins_and_first_leaves(scenario_factory, capsys, store):
    started = time.monotonic()
    cluster = store == "cluster"
    scenario = scenario_factory(f"rebalance-{store}", seed=404, days=260, cluster=cluster)
    first = scenario.start_worker()
    scenario.start_stream(first)
    second = scenario.start_worker()
    scenario.wait_processed(second, 1)
    scenario.notes.append(f"second worker took over partitions at sent #{scenario.producer.sent}")
    time.sleep(1.0)
    handled = processed(first)
    scenario.stop(first)
    scenario.notes.append(f"first stopped at sent #{scenario.producer.sent} after {handled} events")
    finish(scenario, capsys, started)


@pytest.mark.timeout(200)
def test_a_redis_primary_fails_over_mid_stream(scenario_factory, capsys):
    """A primary of the cluster is SIGKILLed while the worker writes; its replica takes
    over. WAIT 1 (the cluster default) made every acknowledged batch reach the replica,
    so nothing the worker acknowledged is lost; the batches that met the dead primary
    are retried (asserted) until the slot map shows the promoted replica."""
    started = time.monotonic()
    cluster = start_redis_cluster()  # its own: one of its primaries dies
    try:
        scenario = scenario_factory("failover", seed=505, days=200, cluster=cluster)
        worker = scenario.start_worker()
        scenario.start_stream(worker)
        scenario.wait_processed(worker, len(scenario.events) * 2 // 5)
        retries = metric(worker, "segworker_retries_total", stage="redis")
        shard = scenario.stored.layout.each[0]
        primary = cluster.primary_of_slot(scenario.stored.redis.keyslot(shard.due))
        cluster.kill(primary)
        scenario.notes.append(
            f"primary :{primary.port} SIGKILLed at sent #{scenario.producer.sent}"
        )
        cluster.wait_healthy()
        nodes = cluster.nodes()
        dead = next(node for node in nodes if node.port == primary.port)
        assert "fail" in dead.flags, nodes
        promoted = [n for n in nodes if n.is_primary and n.port != primary.port]
        assert len(promoted) == 3, nodes  # the dead primary's replica took its slots
        scenario.notes.append("its replica promoted (CLUSTER NODES)")
        scenario.wait_for(
            "a batch to meet the dead primary and be retried",
            lambda: metric(worker, "segworker_retries_total", stage="redis") > retries,
        )
        finish(scenario, capsys, started)
    finally:
        cluster.stop()
