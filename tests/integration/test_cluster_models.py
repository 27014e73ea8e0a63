"""The cluster models as users get them: ``segworker run`` fed a replay of history.

The replay starts with young, empty accounts; the models must still end with k clusters
that each hold accounts and centroids inside the range of the accounts' features, and
cluster memberships must follow time like rule memberships do.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.clock import TEST_NOW
from tests.integration.harness import ROOT, Deployment, WorkerProcess, order_event, send
from worker.adapters.kafka_clients import produce
from worker.adapters.redis_store import RedisStateStore
from worker.adapters.state_codec import decode_state
from worker.config.settings import DEFAULT_DEFINITIONS, Settings
from worker.core.clustering import ClusterSnapshot, assign
from worker.core.features import FeatureView, Globals
from worker.devtools.generator import generate_events, make_accounts

FAMILIES = ("cluster", "needs_cluster")
SNAPSHOT_SECONDS = Settings().cluster_snapshot_seconds
LEARNING = {
    "SEGWORKER_CLUSTER_WARMUP": "100",
    "SEGWORKER_CLUSTER_SNAPSHOT_SECONDS": "2",
    "SEGWORKER_VALUE_INTERVAL_SECONDS": "2",
}


@pytest.fixture
def deployment(kafka, redis_server) -> Deployment:
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    return deployment


class Live:
    """What a test reads of a running deployment: Redis under its prefix, the worker's
    HTTP views."""

    def __init__(self, deployment: Deployment, worker: WorkerProcess) -> None:
        self.deployment = deployment
        self.worker = worker
        self.redis = redis.Redis.from_url(deployment.redis_url)
        self.keys = RedisStateStore(None, deployment.name)  # type: ignore[arg-type]  # key names

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.worker.web_port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def model(self, family: str) -> ClusterSnapshot | None:
        raw = self.redis.get(f"{self.deployment.name}:cluster:{family}")
        return None if raw is None else ClusterSnapshot.from_json(raw)

    def stream_time(self) -> float:
        return float(self.redis.zscore(self.keys.clock_key, "stream") or 0.0)

    def applied(self) -> float:
        """Events the worker applied so far (0 until its web server is up)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.worker.web_port}/metrics", timeout=5
            ) as response:
                text = response.read().decode()
        except OSError:
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("segworker_events_total{") and 'outcome="applied"' in line
        )

    def states(self) -> dict[str, Any]:
        states = {}
        for key in self.redis.scan_iter(match=self.keys.keys.state_pattern, count=500):
            account = key.decode().split(":acct:")[1].strip("{}")
            states[account] = decode_state(account, self.redis.get(key))
        return states

    def cluster_sizes(self) -> dict[tuple[str, str], int]:
        return {
            (row["family"], row["segment_id"]): row["size"]
            for row in self.get("/segments")["segments"]
            if row["family"] in FAMILIES
        }

    def quiet(self) -> tuple[Any, ...]:
        """What moves while the worker still works: models, cluster sizes, the outbox,
        accounts due by now."""
        now = self.stream_time()
        return (
            tuple(self.redis.get(f"{self.deployment.name}:cluster:{f}") for f in FAMILIES),
            self.cluster_sizes(),
            self.redis.hlen(self.keys.outbox_key),
            self.redis.zcount(self.keys.due_key, "-inf", now),
        )

    def settle(self, applied: int, timeout: float = 300.0, calm: float = 8.0) -> None:
        """Until ``applied`` events are applied, both models are published, nothing is
        due, and nothing moved for ``calm`` seconds (several publish intervals)."""
        deadline = time.monotonic() + timeout
        while self.applied() < applied or any(self.model(f) is None for f in FAMILIES):
            assert time.monotonic() < deadline, self.worker.log_tail()
            time.sleep(0.5)
        last, since = self.quiet(), time.monotonic()
        while time.monotonic() - since < calm or last[3]:
            assert time.monotonic() < deadline, f"not settled: {last}\n{self.worker.log_tail()}"
            time.sleep(1)
            now = self.quiet()
            if now != last:
                last, since = now, time.monotonic()

    def close(self) -> None:
        self.redis.close()


def produce_history(deployment: Deployment, accounts: int, end: datetime, days: int) -> int:
    rng = random.Random(5)
    topics = {
        t: deployment.topic(t)
        for t in ("orders", "campaign-events", "loyalty-points", "account-profiles")
    }
    events = generate_events(make_accounts(accounts, rng), end - timedelta(days=days), days, rng)
    return produce(events, deployment.bootstrap_servers, topics=topics)


def test_a_replay_ends_with_k_useful_clusters_that_follow_time(deployment, tmp_path):
    # A backlog of 400 days, then the worker with the default model settings: the owner
    # learns the whole replay before its first snapshot (30 s).
    produced = produce_history(deployment, 300, TEST_NOW - timedelta(days=30), 400)
    worker = WorkerProcess(deployment, tmp_path / "worker.log")
    live = Live(deployment, worker)
    try:
        live.settle(produced, calm=SNAPSHOT_SECONDS + 5)

        # Every cluster holds accounts, and every centroid lies in the range of the
        # accounts' features (prepared units) as of the stream time.
        sizes = live.cluster_sizes()
        assert len(sizes) == 10
        assert {key: size for key, size in sizes.items() if size == 0} == {}
        day = int(live.stream_time() // 86400)
        views = [FeatureView(state, day) for state in live.states().values()]
        assert len(views) == 300
        for family in FAMILIES:
            model = live.model(family)
            assert model is not None
            dimensions = model.spec.dimensions
            columns = [[d.value(view.get(d.name)) for view in views] for d in dimensions]
            for cid, centroid in model.prepared_centroids().items():
                for d, x, column in zip(dimensions, centroid, columns, strict=True):
                    assert min(column) - 1e-9 <= x <= max(column) + 1e-9, (family, cid, d.name)

        # Time passes (one account's order 25 days later moves the stream time): the
        # accounts without events must hold the clusters the model gives them now.
        later = datetime.fromtimestamp(live.stream_time(), UTC) + timedelta(days=25)
        send(deployment, "orders", order_event("clock-1", "CLOCK", later, 50.0))
        live.settle(produced + 1, calm=SNAPSHOT_SECONDS + 5)
        day = int(live.stream_time() // 86400)
        stale = {}
        for account, state in live.states().items():
            view = FeatureView(state, day, Globals())
            for family in FAMILIES:
                model = live.model(family)
                assert model is not None
                held = next(iter(state.memberships.get(family, {})), None)
                if held is None or assign(view, model, held, 0.1) != held:
                    stale[(account, family)] = (held, view["recency_days"])
        assert stale == {}
    finally:
        live.close()
        assert worker.stop() == 0, worker.log_tail()


def whales_definitions(directory: Path) -> Path:
    """The default definitions with one more value segment, before ``a``."""
    text = DEFAULT_DEFINITIONS.read_text()
    anchor = "      - id: a\n        when: revenue_365d >= value_a_min\n"
    assert anchor in text
    path = directory / "whales.yaml"
    path.write_text(
        text.replace(anchor, "      - id: whales\n        when: revenue_365d >= 1000\n" + anchor)
    )
    return path


def segments_listed(text: str) -> set[str]:
    """The ``family/segment`` names in the rows of the tables in ``text``."""
    found = set()
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃ ").split("│")]
        if cells and "/" in cells[0]:
            found.add(cells[0])
    return found


def test_recompute_dry_run_tells_the_definitions_change_from_what_was_pending(deployment, tmp_path):
    # No time sweep during the test: whatever time makes due stays pending.
    worker = WorkerProcess(
        deployment, tmp_path / "worker.log", **LEARNING, SEGWORKER_SWEEP_INTERVAL_SECONDS="3600"
    )
    live = Live(deployment, worker)
    try:
        produced = produce_history(deployment, 120, TEST_NOW - timedelta(days=60), 240)
        deadline = time.monotonic() + 180
        while live.applied() < produced or any(live.model(f) is None for f in FAMILIES):
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.5)
        time.sleep(6)  # the re-assignment after the models
        later = datetime.fromtimestamp(live.stream_time(), UTC) + timedelta(days=40)
        send(deployment, "orders", order_event("clock-1", "CLOCK", later, 50.0))
        while live.applied() < produced + 1:
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.5)
    finally:
        live.close()
        assert worker.stop() == 0, worker.log_tail()

    env = {
        **os.environ,
        **deployment.env,
        "COLUMNS": "200",  # so the tables are not wrapped
    }
    command = [sys.executable, "-m", "worker.cli", "recompute", "--dry-run"]
    command += ["--definitions", str(whales_definitions(tmp_path))]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    caused, marker, pending = done.stdout.partition("pending without it")
    assert marker, done.stdout
    assert "caused by the definitions change" in caused, done.stdout
    assert segments_listed(caused) and {s.split("/")[0] for s in segments_listed(caused)} == {
        "value"
    }, done.stdout
    assert "value/whales" in segments_listed(caused)
    # Time moved 40 days without a sweep: some memberships were due anyway; they are
    # reported apart, whatever family they are in.
    assert segments_listed(pending), done.stdout
