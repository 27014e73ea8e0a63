"""A kind of family the worker does not ship, registered by a setting, in a running worker:
its changes on the topic, its segments over HTTP, its section in the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta

from tests.clock import TEST_NOW
from tests.integration.harness import (
    ROOT,
    Deployment,
    TopicReader,
    WorkerProcess,
    order_event,
    send,
)
from worker.config.settings import DEFAULT_DEFINITIONS

KINDS = json.dumps(["tests.familykinds:spend_bands"])
T0 = TEST_NOW - timedelta(days=20)


def get(worker: WorkerProcess, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}{path}", timeout=5) as r:
        return json.loads(r.read())


def test_a_family_kind_of_ones_own_runs_through_the_worker(kafka, redis_server, tmp_path):
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    worker = WorkerProcess(deployment, tmp_path / "worker.log", SEGWORKER_FAMILY_KINDS=KINDS)
    changes = TopicReader(deployment.bootstrap_servers, deployment.topic("segment-changes"))
    try:
        send(
            deployment,
            "orders",
            order_event("k-1", "SMALL", T0, 300.0),
            order_event("k-2", "BIG", T0 + timedelta(hours=1), 25_000.0),
        )
        got = changes.read_until(lambda found: sum(c["family"] == "spend_band" for c in found) >= 2)
        bands = sorted(
            (c["account_id"], c["segment_id"], c["change"], c["reason"])
            for c in got
            if c["family"] == "spend_band"
        )
        assert bands == [
            ("BIG", "large", "entered", "revenue_365d >= 10000 (revenue_365d=25000)"),
            ("SMALL", "small", "entered", "revenue_365d < 1000 (revenue_365d=300)"),
        ]

        overview = {
            row["segment_id"]: row
            for row in get(worker, "/segments")["segments"]
            if row["family"] == "spend_band"
        }
        assert list(overview) == ["small", "mid", "large", "dormant"]
        assert overview["dormant"]["description"] == "No activity for 45 days"
        assert (overview["small"]["size"], overview["large"]["size"]) == (1, 1)
        account = get(worker, "/accounts/BIG/segments")
        memberships = {(m["family"], m["segment_id"]): m["reason"] for m in account["memberships"]}
        assert memberships[("spend_band", "large")] == "revenue_365d >= 10000 (revenue_365d=25000)"

        report = tmp_path / "report.html"
        written = subprocess.run(
            [sys.executable, "-m", "worker.cli", "report", "--output", str(report)],
            cwd=ROOT, env={**os.environ, **deployment.env, "SEGWORKER_FAMILY_KINDS": KINDS},
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert written.returncode == 0, written.stderr
        page = report.read_text()
        assert 'data-family="spend_band"' in page
        assert "10,000 revenue a year or more" in page  # its descriptions, in its section
    finally:
        changes.close()
        assert worker.stop() == 0, worker.log_tail()


def test_a_family_kind_that_cannot_be_loaded_stops_the_start(kafka, redis_server, tmp_path):
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    worker = WorkerProcess(
        deployment,
        tmp_path / "worker.log",
        SEGWORKER_FAMILY_KINDS=json.dumps(["tests.familykinds:no_such_kind"]),
    )
    deadline = time.monotonic() + 60
    while worker.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker.process.poll() not in (None, 0)
    worker.stop()
    assert "family kind 'tests.familykinds:no_such_kind' cannot be loaded" in (
        worker.log_path.read_text()
    )
