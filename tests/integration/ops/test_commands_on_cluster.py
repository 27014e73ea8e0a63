"""The operator commands on a Redis Cluster say what they say on one Redis.

The same ERP export is imported with ``segworker import-orders`` into a deployment on
one Redis (one shard) and into one on the session's 3-primary Redis Cluster (16 shards,
``SEGWORKER_REDIS_CLUSTER=true``); then ``explain``, ``recompute --dry-run`` and
``report`` run on both as an operator runs them. The stored states, the member sets,
what ``explain`` says, what a recompute would change and the report's figures must be
the same, so every read that merges the shards merges them right. ``erase`` then takes
an account out of every shard's facts, applied by a running worker.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import redis

from tests.integration.harness import Deployment, StoredState, WorkerProcess
from tests.integration.ops.test_import_direct import ACCOUNTS, write_export
from tests.integration.ops.test_import_orders import segworker
from tests.integration.test_erasure import traces
from worker.adapters.state_codec import decode_state
from worker.config.settings import DEFAULT_DEFINITIONS
from worker.core.definitions import load_definitions
from worker.core.features import VOCABULARY

EXPLAINED = ACCOUNTS[:6]
ERASED = ACCOUNTS[7]


def ok(deployment: Deployment, *args: str) -> str:
    done = segworker(deployment, *args)
    assert done.returncode == 0, f"segworker {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def without_timings(text: str) -> str:
    """Command output with its durations and rates masked (they differ run to run)."""
    return re.sub(r"\d[\d,.]*\s*(s|ms|events/s|rows/s|accounts/s)\b", "<t>", text)


def run_commands(deployment: Deployment, report: Path) -> dict[str, Any]:
    imported = ok(deployment, "import-orders", "--processes", "2", str(report.parent / "x.csv"))
    stored = StoredState(deployment)
    definitions = load_definitions(DEFAULT_DEFINITIONS, VOCABULARY)
    segments = [(f.id, s.id) for f in definitions.families for s in f.segments]
    outcome = {
        "import": without_timings(imported),
        "states": {
            a: decode_state(a, raw).to_dict()
            for a in ACCOUNTS
            if (raw := stored.state(a)) is not None
        },
        "members": {segment: stored.members(*segment) for segment in segments},
        "explain": {a: ok(deployment, "explain", a) for a in EXPLAINED},
        "recompute": without_timings(ok(deployment, "recompute", "--dry-run")),
    }
    ok(deployment, "report", "--output", str(report))
    outcome["report"] = report.read_text(encoding="utf-8")
    return outcome


def test_import_explain_recompute_and_report_on_a_cluster_match_one_redis(
    kafka, redis_server, redis_cluster, tmp_path: Path
) -> None:
    write_export(tmp_path / "x.csv")
    single = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    sharded = Deployment(
        kafka.bootstrap_servers, redis_cluster.url, DEFAULT_DEFINITIONS, cluster=True
    )
    on_one = run_commands(single, tmp_path / "one.html")
    on_cluster = run_commands(sharded, tmp_path / "cluster.html")

    assert f"into the state of {len(ACCOUNTS)} accounts" in on_cluster["import"]
    assert on_cluster["import"] == on_one["import"]
    assert len(on_one["states"]) == len(ACCOUNTS)
    assert on_cluster["states"] == on_one["states"]
    assert on_cluster["members"] == on_one["members"]
    assert sum(len(m) for (f, _), m in on_one["members"].items() if f == "value") == len(ACCOUNTS)
    assert on_cluster["explain"] == on_one["explain"]
    assert all("value" in text for text in on_one["explain"].values())
    assert on_cluster["recompute"] == on_one["recompute"]
    assert f"{len(ACCOUNTS)} accounts" in on_one["recompute"]
    # the report names its deployment nowhere: the two pages are the same page
    assert on_cluster["report"] == on_one["report"]

    # The state is spread over all 16 shards, each on one of the three primaries.
    layout = StoredState(sharded).layout
    assert {layout.shard_of(a) for a in ACCOUNTS} == set(range(16))

    # An erasure: the worker emits the exits and deletes every trace in every shard.
    assert any(ERASED in m for m in on_cluster["members"].values())
    ok(sharded, "erase", ERASED)
    worker = WorkerProcess(sharded, tmp_path / "worker.log")
    nodes = [redis.Redis.from_url(url) for url in redis_cluster.urls]
    primaries = [node for node in nodes if node.info("replication")["role"] == "master"]
    try:

        def left() -> list[str]:
            return [
                f"{node.connection_pool.connection_kwargs['port']}: {trace}"
                for node in primaries
                for trace in traces(node, ERASED, match=f"{sharded.name}:*")
            ]

        deadline = time.monotonic() + 90
        while left() and time.monotonic() < deadline:
            assert worker.process.poll() is None, worker.log_tail()
            time.sleep(1)
        assert left() == [], worker.log_tail()
        gone = segworker(sharded, "explain", ERASED)
        assert (gone.returncode, gone.stdout.strip()) == (
            1,
            f"no state stored for account '{ERASED}'",
        )
        # the other accounts keep theirs
        assert StoredState(sharded).state(ACCOUNTS[8]) is not None
    finally:
        assert worker.stop() == 0, worker.log_tail()
        for node in nodes:
            node.close()
