"""GDPR erasure end to end: exits are emitted and no trace of the account is left."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import redis

from tests.clock import TEST_NOW
from tests.integration.harness import (
    ROOT,
    Deployment,
    TopicReader,
    WorkerProcess,
    order_event,
    send,
)

T0 = TEST_NOW.replace(microsecond=0) - timedelta(days=3)


def traces(store: redis.Redis, account: str, match: str = "*") -> list[str]:
    """Every place in Redis (among the keys that ``match``) that still names the account:
    keys, members, fields, values."""
    found = []
    for key in store.scan_iter(match=match, count=1000):
        name = key.decode()
        if account in name:
            found.append(f"key {name}")
        kind = store.type(key).decode()
        if kind == "set" and store.sismember(key, account):
            found.append(f"member of {name}")
        elif kind == "zset" and store.zscore(key, account) is not None:
            found.append(f"scored in {name}")
        elif kind == "hash" and any(account.encode() in v for v in store.hvals(key)):
            found.append(f"value in {name}")
        elif kind == "string" and account.encode() in store.get(key):
            found.append(f"value of {name}")
    return found


def test_erasure_exits_every_segment_and_leaves_no_keys(kafka, redis_server, tmp_path):
    deployment = Deployment(
        kafka.bootstrap_servers, redis_server.url, Path(__file__).with_name("definitions.yaml")
    )
    deployment.create_topics()
    worker = WorkerProcess(deployment, tmp_path / "worker.log")
    reader = TopicReader(deployment.bootstrap_servers, deployment.topic("segment-changes"))
    store = redis.Redis.from_url(deployment.redis_url)
    try:
        send(
            deployment,
            "orders",
            order_event("er-1", "ERASEME", T0, 1500.0),
            order_event("kp-1", "KEEPME", T0, 1500.0),
        )
        entered = reader.read_until(lambda got: len(got) >= 6)
        erased_segments = sorted(
            (c["family"], c["segment_id"]) for c in entered if c["account_id"] == "ERASEME"
        )
        assert len(erased_segments) == 3
        assert traces(store, "ERASEME")

        done = subprocess.run(
            [sys.executable, "-m", "worker.cli", "erase", "ERASEME", "--request-id", "DSR-7"],
            cwd=ROOT, env={**os.environ, **deployment.env}, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        exits = reader.read(3)
        assert sorted((c["family"], c["segment_id"]) for c in exits) == erased_segments
        assert {(c["account_id"], c["change"], c["reason"]) for c in exits} == {
            ("ERASEME", "exited", "account erased (request DSR-7)")
        }
        deadline = time.monotonic() + 10
        while traces(store, "ERASEME") and time.monotonic() < deadline:
            time.sleep(0.2)  # the outbox is cleared right after delivery
        assert traces(store, "ERASEME") == []
        assert traces(store, "KEEPME")  # the other account is untouched
    finally:
        reader.close()
        store.close()
        assert worker.stop() == 0, worker.log_tail()
