"""Time-driven changes, hysteresis, the value family and recompute, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from tests.clock import TEST_NOW
from tests.integration.harness import (
    ROOT,
    Deployment,
    WorkerProcess,
    order_event,
    send,
)
from worker.core.value import offline_abc

HERE = Path(__file__).parent
T0 = TEST_NOW.replace(hour=8, minute=0, second=0, microsecond=0) - timedelta(days=80)
FAST_TIMERS = {
    "SEGWORKER_SWEEP_INTERVAL_SECONDS": "0.3",
    "SEGWORKER_VALUE_INTERVAL_SECONDS": "1",
}


@pytest.fixture
def deployment(kafka, redis_server) -> Deployment:
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, HERE / "families.yaml")
    deployment.create_topics()
    return deployment


@pytest.fixture
def worker(deployment, tmp_path):
    process = WorkerProcess(deployment, tmp_path / "worker.log", **FAST_TIMERS)
    yield process
    code = process.stop()
    assert code == 0, f"worker exited with {code}:\n{process.log_tail()}"


def only(changes: list[dict], family: str) -> list[tuple[str, str, str, str]]:
    return [
        (c["account_id"], c["segment_id"], c["change"], c["cause"])
        for c in changes
        if c["family"] == family
    ]


def test_accounts_leave_time_windows_without_a_new_event(deployment, worker, changes):
    send(deployment, "orders", order_event("s-o1", "SLEEPY", T0, 100.0))
    entered = changes.read_until(lambda got: len(only(got, "activity")) >= 2)
    assert sorted(only(entered, "activity")) == [
        ("SLEEPY", "recent", "entered", "s-o1"),
        ("SLEEPY", "recent_graceful", "entered", "s-o1"),
    ]
    # Another account's order 40 days later moves stream time; SLEEPY gets no event.
    send(deployment, "orders", order_event("o-o1", "OTHER", T0 + timedelta(days=40), 100.0))
    day40 = f"time:{(T0 + timedelta(days=40)).date().isoformat()}"
    later = changes.read_until(
        lambda got: ("SLEEPY", "recent", "exited", day40) in only(got, "activity")
    )
    sleepy = [c for c in only(later, "activity") if c[0] == "SLEEPY"]
    # recent_graceful is held by its 5-day exit grace
    assert sleepy == [("SLEEPY", "recent", "exited", day40)]
    exit_ = next(c for c in later if c["account_id"] == "SLEEPY" and c["family"] == "activity")
    assert exit_["reason"] == "no longer matches: recency_days <= 30 (recency_days=40)"
    assert exit_["occurred_at"].startswith((T0 + timedelta(days=40)).date().isoformat())

    send(deployment, "orders", order_event("o-o2", "OTHER", T0 + timedelta(days=46), 100.0))
    day46 = f"time:{(T0 + timedelta(days=46)).date().isoformat()}"
    last = changes.read_until(
        lambda got: ("SLEEPY", "recent_graceful", "exited", day46) in only(got, "activity")
    )
    assert [c for c in only(last, "activity") if c[0] == "SLEEPY"] == [
        ("SLEEPY", "recent_graceful", "exited", day46)
    ]


def _tiers(store: redis.Redis, deployment: Deployment) -> dict[str, str]:
    tiers = {}
    for segment, tier in (("a", "A"), ("b1", "B"), ("b2", "B"), ("c1", "C"), ("c2", "C")):
        for account in store.smembers(f"{deployment.name}:members:value:{segment}"):
            tiers[account.decode()] = tier
    return tiers


def _wait_for(predicate, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def test_abc_tiers_follow_the_global_cutoffs_exactly(deployment, worker, changes):
    revenue = {
        f"V{n}": amount
        for n, amount in enumerate([5000, 3000, 1000, 500, 200, 100, 80, 50, 40, 30])
    }
    send(
        deployment,
        "orders",
        *(
            order_event(f"v-{account}", account, T0 + timedelta(days=70), amount)
            for account, amount in revenue.items()
        ),
    )
    store = redis.Redis.from_url(deployment.redis_url)
    expected = offline_abc(revenue)
    assert expected == {
        "V0": "A",
        "V1": "A",
        "V2": "B",
        "V3": "B",
        **{f"V{n}": "C" for n in range(4, 10)},
    }
    _wait_for(lambda: _tiers(store, deployment) == expected)

    # One account grows past everybody: the cut-offs move and re-tier the others.
    send(deployment, "orders", order_event("v-big", "V9", T0 + timedelta(days=71), 20000))
    revenue["V9"] += 20000
    moved = offline_abc(revenue)
    assert moved["V9"] == "A" and moved["V1"] == "B" and moved["V3"] == "C"
    _wait_for(lambda: _tiers(store, deployment) == moved)
    got = changes.read_until(
        lambda got: any(
            c["account_id"] == "V1" and c["segment_id"] == "b2" and c["change"] == "entered"
            for c in got
        )
    )
    v1 = [c for c in got if c["account_id"] == "V1" and c["family"] == "value"]
    entry = next(c for c in v1 if c["segment_id"] == "b2" and c["change"] == "entered")
    assert entry["cause"].startswith("thresholds:")
    assert entry["previous_segment_id"] == "a"
    assert "revenue_365d=3000" in entry["reason"]
    store.close()


def _cli(deployment: Deployment, *args: str) -> str:
    env = {
        **os.environ,
        **deployment.env,
        "SEGWORKER_DEFINITIONS_PATH": str(HERE / "families_v2.yaml"),
        "COLUMNS": "200",  # so the tables are not wrapped
    }
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_recompute_dry_run_predicts_exactly_what_the_real_run_emits(deployment, worker, changes):
    send(
        deployment,
        "orders",
        order_event("r-o1", "RECENT", T0 + timedelta(days=60), 2500.0),
        order_event("r-o2", "OLDISH", T0 + timedelta(days=45), 100.0),
    )
    changes.read_until(lambda got: sum(c["family"] == "activity" for c in got) >= 4)
    worker.stop()  # recompute runs offline from stored state

    dry = _cli(deployment, "recompute", "--dry-run")
    assert "2 accounts, 2 memberships would change" in dry
    assert "activity/big_orders" in dry and "activity/recent" in dry
    quiet = changes.read(0, timeout=2, settle=1)
    assert quiet == []  # a dry run emits nothing

    real = _cli(deployment, "recompute", "--processes", "2")  # split by account
    assert "2 accounts, 2 memberships changed" in real
    emitted = changes.read(2)
    assert sorted((c["account_id"], c["segment_id"], c["change"], c["cause"]) for c in emitted) == [
        ("OLDISH", "recent", "exited", "recompute:fam-2"),
        ("RECENT", "big_orders", "entered", "recompute:fam-2"),
    ]
    assert _cli(deployment, "recompute").count("0 memberships changed") == 1  # idempotent

    explained = _cli(deployment, "explain", "RECENT")
    assert "big_orders" in explained and "aov_365d >= 2000" in explained
