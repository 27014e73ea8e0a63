"""Campaign triggers in a running worker (``segworker run`` with the router enabled):
live changes fire, imported history fires nothing, a first contact does not flicker,
and a crash between recording a trigger and sending it still gives one trigger id."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
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
from worker.config.settings import DEFAULT_DEFINITIONS, DEFAULT_TRIGGERS

DACH = """
version: "t-1"
triggers:
  - id: dach_welcome
    on: {family: region, segment: dach, change: entered}
    campaign: dach-welcome
    cooldown: 30d
"""


def profile_event(event_id: str, account: str, at: datetime, country: str) -> dict:
    return {
        "type": "account_profile",
        "event_id": event_id,
        "occurred_at": at.isoformat(),
        "account_id": account,
        "industry": "manufacturing",
        "employees": 120,
        "country": country,
    }


def triggers_env(path: Path, **more: str) -> dict[str, str]:
    return {"SEGWORKER_TRIGGERS_ENABLED": "true", "SEGWORKER_TRIGGERS_PATH": str(path), **more}


def test_a_live_first_contact_fires_once_and_does_not_flicker(kafka, redis_server, tmp_path):
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    (tmp_path / "triggers.yaml").write_text(DACH)
    worker = WorkerProcess(
        deployment, tmp_path / "worker.log", **triggers_env(tmp_path / "triggers.yaml")
    )
    changes = TopicReader(deployment.bootstrap_servers, deployment.topic("segment-changes"))
    fired = TopicReader(deployment.bootstrap_servers, deployment.topic("campaign-triggers"))
    try:
        now = datetime.now(UTC).replace(microsecond=0)  # wall clock: liveness is the subject
        # Produced together, on two topics; the order is a second older than the profile.
        send(
            deployment, "orders", order_event("live-o1", "NEWCO", now - timedelta(seconds=1), 90.0)
        )
        send(deployment, "account-profiles", profile_event("live-p1", "NEWCO", now, "DE"))
        got = changes.read_until(
            lambda found: any(c["segment_id"] == "dach" for c in found), settle=3.0
        )
        mine = [c for c in got if c["account_id"] == "NEWCO"]
        placeholders = [c for c in mine if c["segment_id"] in ("unprofiled", "unknown_region")]
        assert placeholders == [], placeholders
        (dach,) = [c for c in mine if c["segment_id"] == "dach"]
        assert (dach["origin"], dach["live"]) == ("event", True)
        (trigger,) = fired.read(1, settle=3.0)
        assert (trigger["trigger"], trigger["account_id"]) == ("dach_welcome", "NEWCO")
        assert trigger["change_id"] == dach["change_id"] and not trigger["holdout"]
    finally:
        changes.close()
        fired.close()
        assert worker.stop() == 0, worker.log_tail()


def _history_rows(accounts: int, days: int, end: date) -> list[list[str]]:
    spec = importlib.util.spec_from_file_location(
        "make_order_history", ROOT / "bench" / "make_order_history.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_order_history"] = module
    try:
        spec.loader.exec_module(module)
        return list(module.history_rows(accounts, days, seed=11, end=end))
    finally:
        sys.modules.pop("make_order_history", None)


def test_a_year_of_imported_history_fires_no_trigger(kafka, redis_server, tmp_path):
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    worker = WorkerProcess(deployment, tmp_path / "worker.log", **triggers_env(DEFAULT_TRIGGERS))
    fired = TopicReader(deployment.bootstrap_servers, deployment.topic("campaign-triggers"))
    changes = TopicReader(deployment.bootstrap_servers, deployment.topic("segment-changes"))
    export = tmp_path / "export.csv"
    rows = _history_rows(60, 365, (TEST_NOW - timedelta(days=1)).date())
    with export.open("w", newline="") as file:
        csv.writer(file).writerows(rows)
    accounts = {row[2] for row in rows[1:]}
    client = redis.Redis.from_url(redis_server.url)
    try:
        imported = subprocess.run(
            [sys.executable, "-m", "worker.cli", "import-orders", str(export)],
            cwd=ROOT, env={**os.environ, **deployment.env}, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        assert imported.returncode == 0, imported.stderr
        # The memberships are right: every account is in exactly one value segment.
        deadline = time.monotonic() + 120
        value = {}
        while time.monotonic() < deadline:
            value = {
                segment: {
                    m.decode()
                    for m in client.smembers(f"{deployment.name}:members:value:{segment}")
                }
                for segment in ("prospect", "inactive", "a", "b1", "b2", "c1", "c2")
            }
            if sum(len(members) for members in value.values()) == len(accounts):
                break
            time.sleep(1)
        placed = [account for members in value.values() for account in members]
        assert sorted(placed) == sorted(accounts)
        got = changes.read_until(lambda found: len(found) >= len(accounts), settle=5.0)
        assert got and all(c["origin"] == "import" and not c["live"] for c in got if
                           not c["cause"].startswith(("time:", "thresholds:")))  # fmt: skip
        assert not any(c["live"] for c in got)
        time.sleep(3)  # the router had every change: nothing may follow
        assert fired.read(1, timeout=5.0, settle=0.5) == []
    finally:
        client.close()
        fired.close()
        changes.close()
        assert worker.stop() == 0, worker.log_tail()


def test_a_crash_between_recording_and_sending_gives_one_trigger_id(kafka, redis_server, tmp_path):
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    (tmp_path / "triggers.yaml").write_text(DACH)
    env = triggers_env(tmp_path / "triggers.yaml", SEGWORKER_OUTBOX_RESEND_AFTER_SECONDS="2")
    client = redis.Redis.from_url(redis_server.url)
    outbox = f"{deployment.name}:trig:outbox"
    fired = TopicReader(deployment.bootstrap_servers, deployment.topic("campaign-triggers"))
    caught = None
    worker = WorkerProcess(deployment, tmp_path / "worker-0.log", **env)
    try:
        for attempt in range(10):
            account = f"KILL{attempt}"
            now = datetime.now(UTC).replace(microsecond=0)  # wall clock: a live change
            send(deployment, "account-profiles", profile_event(f"k-{attempt}", account, now, "AT"))
            deadline = time.monotonic() + 60
            # Freeze the broker the moment the trigger is recorded: its send cannot finish.
            while not client.hlen(outbox) and time.monotonic() < deadline:
                time.sleep(0.0005)
            kafka.pause()
            worker.kill()
            kafka.resume()
            pending = client.hvals(outbox)
            if pending:
                caught = account
                break
            worker = WorkerProcess(deployment, tmp_path / f"worker-{attempt + 1}.log", **env)
        assert caught is not None, "never caught a trigger between its record and its send"
        assert any(caught.encode() in raw for raw in pending)
        worker = WorkerProcess(deployment, tmp_path / "worker-after.log", **env)
        sent = fired.read_until(
            lambda found: any(t["account_id"] == caught for t in found), settle=5.0
        )
        ids = {t["trigger_id"] for t in sent if t["account_id"] == caught}
        assert len(ids) == 1, sent
        deadline = time.monotonic() + 30
        while client.hlen(outbox) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert client.hlen(outbox) == 0
    finally:
        client.close()
        fired.close()
        worker.stop()
