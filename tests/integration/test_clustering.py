"""Online clustering across real worker processes: one model, shared ids, stable owners."""

from __future__ import annotations

import json
import random
import time
import urllib.request
from datetime import datetime, timedelta

import pytest
import redis

from tests.clock import TEST_NOW
from tests.integration.harness import Deployment, WorkerProcess
from worker.adapters.kafka_clients import produce
from worker.adapters.state_codec import decode_state
from worker.config.settings import DEFAULT_DEFINITIONS
from worker.core.clustering import ClusterSnapshot, assign
from worker.core.features import FeatureView, Globals
from worker.devtools.generator import generate_events, make_accounts

FAST_LEARNING = {
    "SEGWORKER_CLUSTER_WARMUP": "100",
    "SEGWORKER_CLUSTER_SNAPSHOT_SECONDS": "2",
    "SEGWORKER_CLUSTER_SAMPLE_DAYS": "3",
    "SEGWORKER_VALUE_INTERVAL_SECONDS": "5",
}


@pytest.fixture
def deployment(kafka, redis_server) -> Deployment:
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    return deployment


def produce_history(deployment: Deployment, seed: int, start: datetime, days: int) -> int:
    rng = random.Random(seed)
    accounts = make_accounts(150, random.Random(1))
    topics = {
        t: deployment.topic(t)
        for t in ("orders", "campaign-events", "loyalty-points", "account-profiles")
    }
    events = generate_events(accounts, start, days, rng, id_prefix=f"s{seed}")
    return produce(events, deployment.bootstrap_servers, topics=topics)


def snapshot(store: redis.Redis, deployment: Deployment) -> ClusterSnapshot | None:
    raw = store.get(f"{deployment.name}:cluster:cluster")
    return None if raw is None else ClusterSnapshot.from_json(raw)


def wait_for(predicate, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached in {timeout}s")


def cluster_of_every_account(store: redis.Redis, deployment: Deployment) -> dict[str, str]:
    held = {}
    for key in store.scan_iter(match=f"{deployment.name}:acct:*", count=500):
        account = key.decode().split(":acct:")[1].strip("{}")
        state = decode_state(account, store.get(key))
        held[account] = next(iter(state.memberships.get("cluster", {})), None)
    return held


def events_applied(worker: WorkerProcess) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("segworker_events_total{") and 'outcome="applied"' in line
    )


def test_two_workers_share_one_model_and_a_restarted_owner_keeps_the_ids(deployment, tmp_path):
    store = redis.Redis.from_url(deployment.redis_url)
    start = TEST_NOW - timedelta(days=200)
    workers = [
        WorkerProcess(deployment, tmp_path / f"worker{n}.log", **FAST_LEARNING) for n in (1, 2)
    ]
    try:
        produced = produce_history(deployment, seed=1, start=start, days=150)
        assert produced > 5000
        first = wait_for(lambda: snapshot(store, deployment), what="a published model")
        # both workers did part of the work: the partitions were split between them
        wait_for(lambda: all(events_applied(w) > 0 for w in workers), what="both workers busy")

        def settled() -> dict[str, str] | None:
            model = snapshot(store, deployment)
            held = cluster_of_every_account(store, deployment)
            time.sleep(3)  # longer than a snapshot interval: nothing new was published
            if snapshot(store, deployment) != model or None in held.values():
                return None
            return held if held == cluster_of_every_account(store, deployment) else None

        held = wait_for(settled, timeout=180, what="stable cluster assignments")
        model = snapshot(store, deployment)
        assert model is not None and model.version >= first.version
        assert len(held) == 150
        assert set(held.values()) <= set(model.ids)
        assert len(set(held.values())) >= 3  # the accounts really are spread over clusters
        # Whichever worker assigned an account, it followed the same model and rule:
        # the stored cluster is what the shared snapshot gives it (margin included).
        thresholds = store.get(f"{deployment.name}:value:thresholds")
        globals = Globals.from_thresholds(None if thresholds is None else json.loads(thresholds))
        for account, cluster_id in held.items():
            state = decode_state(account, store.get(f"{deployment.name}:acct:{{{account}}}"))
            view = FeatureView(state, state.now_day, globals)
            assert assign(view, model, cluster_id, 0.1) == cluster_id, account
        ids_before = model.ids
    finally:
        for worker in workers:
            assert worker.stop() == 0, worker.log_tail()

    # A new owner resumes from the published model: training goes on with the same ids.
    # Every model it learns is published (no minimum shift), so the continuation shows.
    restarted = WorkerProcess(
        deployment,
        tmp_path / "worker3.log",
        **FAST_LEARNING,
        SEGWORKER_CLUSTER_PUBLISH_MIN_SHIFT="0",
    )
    try:
        produce_history(deployment, seed=2, start=start + timedelta(days=150), days=40)
        newer = wait_for(
            lambda: (m := snapshot(store, deployment)) and m.version > model.version and m,
            what="a model from the new owner",
        )
        assert newer.ids == ids_before
        assert newer.samples > model.samples  # continued, not started over
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
        store.close()
