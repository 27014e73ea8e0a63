"""What the benchmarks share: an isolated deployment on embedded or given servers."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.adapters.kafka_clients import import_kafka_python  # noqa: E402
from worker.adapters.kafka_topics import create_topics  # noqa: E402
from worker.adapters.redis_store import RedisStateStore  # noqa: E402
from worker.adapters.state_codec import encode_state_data  # noqa: E402
from worker.cli import connected_settings  # noqa: E402
from worker.config.settings import Settings  # noqa: E402
from worker.core.clustering import ClusterSnapshot  # noqa: E402
from worker.core.definitions import Definitions  # noqa: E402
from worker.core.features import AccountState, FeatureView  # noqa: E402
from worker.core.impact import Impact  # noqa: E402
from worker.core.schedule import Schedule  # noqa: E402
from worker.devtools.embedded import free_port  # noqa: E402

TOPIC_SETTINGS = (
    "orders",
    "campaign_events",
    "loyalty_points",
    "account_profiles",
    "segment_changes",
    "dead_letters",
    "cluster_samples",
    "segment_drift",
    "campaign_triggers",
    "trigger_dead_letters",
)


@contextlib.contextmanager
def deployment(name: str, **overrides: object) -> Iterator[Settings]:
    """Settings with topics prefixed by ``name``, on embedded servers unless configured."""
    with connected_settings(Settings()) as connected:
        topics = {f"topic_{t}": f"{name}-{t.replace('_', '-')}" for t in TOPIC_SETTINGS}
        settings = connected.model_copy(
            update={"app_id": f"{name}-worker", "redis_key_prefix": name, **topics, **overrides}
        )
        assert settings.kafka_bootstrap_servers
        create_topics(settings.kafka_bootstrap_servers, settings.topic_partitions())
        yield settings


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes ``segworker run`` use ``settings``."""
    assert settings.kafka_bootstrap_servers and settings.redis_url
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "REDIS_URL": settings.redis_url,
        "SEGWORKER_APP_ID": settings.app_id,
        "SEGWORKER_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "SEGWORKER_LOG_LEVEL": "warning",
        "SEGWORKER_WEB_PORT": str(free_port()),
        **{f"SEGWORKER_TOPIC_{t.upper()}": getattr(settings, f"topic_{t}") for t in TOPIC_SETTINGS},
    }
    env.update(extra)
    return env


class GroupProgress:
    """Events a consumer group has committed on the input topics."""

    def __init__(self, settings: Settings, group: str) -> None:
        kafka = import_kafka_python()
        self.admin = kafka.KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        self.group = group
        self.topics = settings.input_topics

    def committed(self) -> int:
        offsets = self.admin.list_group_offsets(self.group)[self.group]
        return sum(
            meta.offset
            for tp, meta in offsets.items()
            if tp.topic in self.topics and meta.offset > 0
        )

    def wait_for(self, total: int, timeout: float) -> float:
        """Block until ``total`` events are committed; return the monotonic time it happened."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.committed() >= total:
                return time.monotonic()
            time.sleep(0.2)
        raise TimeoutError(f"{self.group}: {self.committed()}/{total} after {timeout}s")

    def close(self) -> None:
        self.admin.close()


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a live process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ------------------------------------------------------------------ helpers of the newer benches
# (latency.py, memory.py, recompute.py, soak.py)


def rss_mib(pid: int) -> float:
    """Current resident memory of a live process (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by this process and its children (broker, Redis, worker) over a phase."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.before = self.snapshot()

    @staticmethod
    def snapshot() -> dict[str, float]:
        me = os.getpid()
        result = {f"bench (this process) {me}": cpu_seconds(me)}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rpartition(")")[2].split()
            if int(fields[1]) == me:
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                result[f"{name} {entry.name}"] = cpu_seconds(int(entry.name))
        return result

    def shares(self) -> dict[str, float]:
        """Share of one core each process used since the meter was made."""
        seconds = time.perf_counter() - self.started
        after = self.snapshot()
        return {
            name: (used - self.before.get(name, 0.0)) / seconds
            for name, used in after.items()
            if name in self.before
        }

    def line(self, labels: dict[int, str] | None = None) -> str:
        """``name share, ...`` by decreasing share; ``labels`` names processes by pid."""
        labels = labels or {}
        shares = sorted(self.shares().items(), key=lambda item: -item[1])
        return ", ".join(
            f"{labels.get(int(name.rsplit(' ', 1)[1]), name.rsplit(' ', 1)[0])} {share:.0%}"
            for name, share in shares
        )


def run_title(what: str) -> str:
    """``what`` with the date, the core count and the Python version."""
    import platform
    from datetime import UTC

    return (
        f"{what} ({datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()})"
    )


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an ascending list; nan when empty."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


class WorkerProcess:
    """A real ``segworker run`` child process on ``settings``; its log goes to a temp file."""

    def __init__(
        self,
        settings: Settings,
        name: str = "worker",
        command: Sequence[str] | None = None,
        **extra_env: str,
    ) -> None:
        import subprocess
        import tempfile

        self.env = worker_env(settings, PYTHONUNBUFFERED="1", **extra_env)
        self.web_port = int(self.env["SEGWORKER_WEB_PORT"])
        self.log_path = Path(tempfile.mkdtemp(prefix="segworker-bench-")) / f"{name}.log"
        command = list(command or [sys.executable, "-m", "worker.cli", "run"])
        if profile := os.environ.get("BENCH_PROFILE"):
            # py-spy (pip install py-spy) records the worker; summarise with bench/stacks.py
            spy = str(Path(sys.executable).with_name("py-spy"))
            command = [spy, "record", "--format", "raw", "-r", "100", "-o", profile, "--", *command]
        with self.log_path.open("wb") as output:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.pid = self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the worker exited with {self.process.returncode}; {self.log_path}")

    def metrics(self) -> dict[str, float]:
        """The worker's Prometheus samples, ``'name{labels}'`` -> value."""
        import urllib.request

        url = f"http://127.0.0.1:{self.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the worker's ``/ready`` answers 200 (web server up, Redis reachable)."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                url = f"http://127.0.0.1:{self.web_port}/ready"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready after {timeout}s; see {self.log_path}")
            time.sleep(0.5)

    def stop(self, timeout: float = 20) -> None:
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # a clean stop; py-spy writes its profile
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


# --- account states with the worker's key layout, without running the worker


@dataclass
class PreparedState:
    """An account state ready to be written: its JSON and the worker's index entries."""

    account_id: str
    data: dict[str, object]  # AccountState.to_dict()
    due: float | None
    revenue: float

    def renamed(self, account_id: str) -> PreparedState:
        return PreparedState(
            account_id, {**self.data, "account_id": account_id}, self.due, self.revenue
        )


def prepare(state: AccountState, schedule: Schedule) -> PreparedState:
    """The state with its sweep due time and trailing-year revenue, as the worker indexes
    a changed account (``BatchProcessor._index``)."""
    revenue = FeatureView(state, state.now_day)["revenue_365d"]
    due = schedule.next_due(state)
    Impact(schedule.families).mark(state, due)  # fully evaluated, as _index records it
    return PreparedState(state.account_id, state.to_dict(), due, revenue)


def write_states(
    redis_url: str, prefix: str, states: Iterable[PreparedState], chunk: int = 500
) -> int:
    """Write states like the worker's batch transaction does: the state key, the member
    sets of its memberships, the due and revenue sorted sets and the stream clock.
    Key names come from ``RedisStateStore``. Returns how many states were written."""

    import redis

    client = redis.Redis.from_url(redis_url)
    keys = RedisStateStore(None, prefix)  # type: ignore[arg-type]  # only its key names are used
    written = 0
    clock = 0.0
    pipe = client.pipeline(transaction=False)
    try:
        for prepared in states:
            account = prepared.account_id
            data = prepared.data
            pipe.set(keys.state_key(account), encode_state_data(data))
            for family, segments in data["memberships"].items():  # type: ignore[attr-defined]
                for segment in segments:
                    pipe.sadd(keys.members_key(family, segment), account)
            if prepared.due is not None:
                pipe.zadd(keys.due_key, {account: prepared.due})
            if prepared.revenue > 0:
                pipe.zadd(keys.revenue_key, {account: prepared.revenue})
            clock = max(clock, float(data["clock"]))  # type: ignore[arg-type]
            written += 1
            if written % chunk == 0:
                pipe.execute()
        if clock:
            pipe.zadd(keys.clock_key, {"stream": clock}, gt=True)
        pipe.execute()
    finally:
        client.close()
    return written


@dataclass
class History:
    """Account states folded from a year of generated history with the pure core, then
    settled with ABC cut-offs and trained cluster models, as a worker would hold them."""

    states: list[AccountState]
    events: int
    thresholds: dict[str, object]
    snapshots: dict[str, ClusterSnapshot]
    seconds: float
    definitions: Definitions


def fold_history(
    accounts: int,
    days: int = 365,
    seed: int = 42,
    definitions: Definitions | None = None,
    until: datetime | None = None,
) -> History:
    """Generate ``days`` of history for ``accounts`` up to ``until`` (default: a day ago)
    and fold it into states.

    Every event goes through ``process_event`` with the definitions (the default ones
    unless given), as the worker would apply it; the weekly cluster-sample day is tracked
    as ``BatchProcessor._index`` does. Then the ABC cut-offs of the folded revenues and one
    trained model per clustering are installed and every account is evaluated once more,
    so the value tiers and cluster memberships are those of a worker in steady state.
    """
    import random
    import time
    import zlib
    from datetime import UTC, timedelta

    from worker.adapters.kafka_clients import encode
    from worker.core import value
    from worker.core.clustering import ClusterLearner
    from worker.core.definitions import load_definitions
    from worker.core.events import decode_input
    from worker.core.families import raw_sample
    from worker.core.features import VOCABULARY, Globals
    from worker.core.processing import evaluate, process_event
    from worker.devtools.generator import generate_events, make_accounts
    from worker.runtime.learning import clusterings

    started = time.perf_counter()
    settings = Settings()
    definitions = definitions or load_definitions(settings.definitions_path, VOCABULARY)
    rng = random.Random(seed)
    start = (until or datetime.now(UTC) - timedelta(days=1)) - timedelta(days=days)
    states: dict[str, AccountState] = {}
    offsets: dict[str, int] = {}
    count = 0
    for topic, raw in generate_events(make_accounts(accounts, rng), start, days, rng):
        event = decode_input(encode(raw))
        state = states.get(event.account_id)
        if state is None:
            state = states[event.account_id] = AccountState(event.account_id)
        # The record's position, as the worker passes it (keyed by account: one partition).
        source = f"{topic}:{zlib.crc32(event.account_id.encode()) % settings.partitions}"
        offsets[source] = offset = offsets.get(source, -1) + 1
        if process_event(state, event, definitions, (source, offset)) is None:
            continue
        count += 1
        last = state.sampled_day
        if last is None or state.now_day - last >= settings.cluster_sample_days:
            state.sampled_day = state.now_day
    revenues = [FeatureView(s, s.now_day)["revenue_365d"] for s in states.values()]
    cutoffs = value.compute_thresholds(revenues, settings.value_a_share, settings.value_b_share)
    thresholds = value.thresholds_to_dict(cutoffs)
    snapshots: dict[str, ClusterSnapshot] = {}
    for clustering in clusterings(settings):
        learner = ClusterLearner(clustering.spec, clustering.k, warmup=settings.cluster_warmup)
        for state in states.values():
            learner.learn_one(raw_sample(FeatureView(state, state.now_day), clustering.spec))
        if learner.ready:
            snapshots[clustering.family] = learner.snapshot(1, created_at=datetime.now(UTC))
    globals = Globals.from_thresholds(thresholds, snapshots, settings.cluster_margin)
    # The worker's time sweep evaluates every account that is due at stream time (the
    # largest event time of all); the others keep their own clock.
    schedule = Schedule(definitions)
    now = max(state.clock for state in states.values())
    for state in states.values():
        due = schedule.next_due(state)
        at = now if due is not None and due <= now else None
        evaluate(state, definitions, "bench:settle", globals, at=at)
    return History(
        list(states.values()),
        count,
        thresholds,
        snapshots,
        time.perf_counter() - started,
        definitions,
    )


def add_stored_history_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the benches that store many accounts with a year of history."""
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument(
        "--sample", type=int, default=1000, help="accounts simulated (0: all of them)"
    )
    parser.add_argument("--days", type=int, default=365, help="history per account")
    parser.add_argument("--seed", type=int, default=42)


def stored_history(
    args: argparse.Namespace, definitions: Definitions, until: datetime | None = None
) -> tuple[History, list[PreparedState]]:
    """Fold ``--sample`` accounts' history (see ``add_stored_history_arguments``) up to
    ``until`` and prepare each state as a template to replicate up to ``--accounts``."""
    sample = args.accounts if args.sample <= 0 else min(args.sample, args.accounts)
    history = fold_history(sample, args.days, args.seed, definitions, until)
    schedule = Schedule(definitions)
    return history, [prepare(state, schedule) for state in history.states]


def replicated(
    templates: Sequence[PreparedState], accounts: int, id_format: str = "ACC-{:06d}"
) -> Iterator[PreparedState]:
    """``accounts`` states: the templates over and over under new account ids."""
    for number in range(accounts):
        yield templates[number % len(templates)].renamed(id_format.format(number + 1))


def write_globals(redis_url: str, prefix: str, history: History) -> None:
    """The ABC cut-offs and the cluster models of ``history``, under the worker's keys."""
    import json

    import redis

    from worker.runtime.learning import clusterings

    client = redis.Redis.from_url(redis_url)
    families = [c.family for c in clusterings(Settings())]
    keys = RedisStateStore(None, prefix, families)  # type: ignore[arg-type]
    try:
        client.set(keys.thresholds_key, json.dumps(history.thresholds))
        impact = Impact(history.definitions)
        client.set(keys.definitions_key(impact.fingerprint), json.dumps(impact.family_fingerprints))
        for family, snapshot in history.snapshots.items():
            client.set(keys.cluster_keys[family], snapshot.to_json())
    finally:
        client.close()


@contextlib.contextmanager
def redis_only() -> Iterator[str]:
    """A Redis URL: ``REDIS_URL`` when set, else an embedded ``redis-server`` (stopped after)."""
    configured = Settings().redis_url
    if configured:
        yield configured
        return
    from worker.devtools.embedded import start_redis

    server = start_redis()
    try:
        yield server.url
    finally:
        server.stop()


def primaries(urls: list[str]) -> list[Any]:
    """Clients of the nodes among ``urls`` that are primaries (a cluster's, or one Redis)."""
    import redis

    found = []
    for url in urls:
        client = redis.Redis.from_url(url)
        if client.info("replication")["role"] == "master":
            found.append(client)
        else:
            client.close()
    return found


def redis_counters(nodes: list[Any]) -> dict[str, float]:
    """Commands served (``INFO`` itself left out), CPU seconds and data memory, summed
    over ``nodes``."""
    commands = cpu = memory = 0.0
    for node in nodes:
        stats = node.info("commandstats")
        commands += sum(
            float(entry["calls"]) for name, entry in stats.items() if name != "cmdstat_info"
        )
        info = node.info("cpu")
        cpu += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        memory += float(node.info("memory")["used_memory_dataset"])
    return {"commands": commands, "cpu": cpu, "memory": memory}
