"""``segworker import-orders`` folding an export into the state store, against streaming it.

Both with the user's commands on the embedded broker and Redis: the same export streamed
through a running worker (``--via-kafka``) and folded straight into the state (the
default) reach the same features, value tiers and rule-family memberships; and an import
running while the worker applies live orders of the same accounts loses and
double-counts nothing.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import redis

from tests.clock import TEST_NOW
from tests.integration.harness import Deployment, WorkerProcess, order_event, send
from tests.integration.ops.test_import_orders import segworker
from tests.unit.core.test_backfill import FAMILIES, streamed
from worker.adapters.kafka_topics import create_topics
from worker.adapters.redis_store import RedisStateStore
from worker.config.settings import DEFAULT_DEFINITIONS
from worker.core.events import decode_input
from worker.core.features import HORIZON_DAYS, AccountState, day_of
from worker.core.value import Thresholds
from worker.ops.importer import plan_import

ACCOUNTS = [f"K-{n:03d}" for n in range(60)]
CATEGORIES = ("Tools", "Fasteners", "Safety & PPE", "Electrical")
#: The import's rule families (the orders-only export cannot move the others).
RULE_FAMILIES = ("apriori", "region", "program", "needs", "engagement")


def write_export(path: Path, days: int = 420, seed: int = 5) -> None:
    """An ERP export: grouped by account, orders of one to three rows, free goods, returns."""
    rng = random.Random(seed)
    lines = ["order_id,date,account_id,category,amount,currency"]
    for account in ACCOUNTS:
        every = rng.choice((3, 7, 20, 60))
        day = rng.randrange(every)
        while day < days:
            date = (TEST_NOW - timedelta(days=days - day)).date().isoformat()
            order = f"SO-{account}-{day}"
            for category in rng.sample(CATEGORIES, rng.randint(1, 3)):
                amount = 0 if rng.random() < 0.05 else round(rng.paretovariate(1.5) * 40, 2)
                lines.append(f"{order},{date},{account},{category},{amount},EUR")
            if rng.random() < 0.04:
                lines.append(f"{order},{date},{account},Tools,-10.00,EUR")
            day += rng.randint(1, 2 * every)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def states(deployment: Deployment) -> dict[str, AccountState]:
    async def load() -> dict[str, AccountState]:
        store = RedisStateStore(redis.asyncio.Redis.from_url(deployment.redis_url), deployment.name)
        try:
            return await store.load_many(ACCOUNTS)
        finally:
            await store.close()

    return asyncio.run(load())


def settled(deployment: Deployment) -> bool:
    """Nothing due before stream time, the outbox empty, and the stored ABC cut-offs
    rank every earning account and give each its held tier."""
    client = redis.Redis.from_url(deployment.redis_url)
    prefix = deployment.name
    try:
        now = client.zscore(f"{prefix}:clock", "stream") or 0
        if client.zcount(f"{prefix}:due", "-inf", now) or client.hlen(f"{prefix}:outbox"):
            return False
        raw = client.get(f"{prefix}:value:thresholds")
        ranked = client.zrange(f"{prefix}:value:revenue", 0, -1, withscores=True)
        if raw is None or json.loads(raw).get("accounts") != len(ranked):
            return False
        cutoffs = Thresholds.from_dict(json.loads(raw))
        tiers = {
            account.decode(): segment.decode().split(":")[-1]
            for segment in client.keys(f"{prefix}:members:value:*")
            for account in client.smembers(segment)
        }
        return all(
            tiers.get(a.decode(), "").rstrip("12") == cutoffs.tier(r).lower() for a, r in ranked
        )
    finally:
        client.close()


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def features(state: AccountState) -> tuple:
    return (state.orders, state.categories, state.last_order_day, state.first_order_day)


def rule_memberships(state: AccountState) -> dict[str, set[str]]:
    return {f: set(s) for f, s in state.memberships.items() if f in RULE_FAMILIES}


def test_folding_an_export_reaches_what_streaming_it_reaches(kafka, redis_server, tmp_path):
    export = tmp_path / "orders.csv"
    write_export(export)
    streamed = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    folded = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    for deployment in (streamed, folded):
        deployment.create_topics()
    fast = {"SEGWORKER_VALUE_INTERVAL_SECONDS": "1"}
    worker = WorkerProcess(streamed, tmp_path / "worker.log", **fast)
    try:
        produced = segworker(streamed, "import-orders", "--via-kafka", str(export))
        assert produced.returncode == 0, produced.stderr
        wait_until(lambda: len(states(streamed)) == len(ACCOUNTS), 120, "the streamed accounts")
        wait_until(lambda: settled(streamed), 180, "the streaming worker to settle")
    finally:
        assert worker.stop() == 0, worker.log_tail()

    imported = segworker(folded, "import-orders", "--processes", "2", str(export))
    assert imported.returncode == 0, imported.stderr
    assert f"into the state of {len(ACCOUNTS)} accounts" in imported.stdout, imported.stdout
    assert settled(folded)

    by_stream, by_fold = states(streamed), states(folded)
    assert {a: features(s) for a, s in by_fold.items()} == {
        a: features(s) for a, s in by_stream.items()
    }
    tiers = {a: set(s.memberships.get("value", ())) for a, s in by_fold.items()}
    assert tiers == {a: set(s.memberships.get("value", ())) for a, s in by_stream.items()}
    # The rule families: the fold is what the worker would hold had its time sweep
    # visited every account at each due time (it runs every second at whatever stream
    # time the catch-up has reached, so a streamed account may start a hold days late).
    ideal = replayed(export)
    assert {a: rule_memberships(s) for a, s in by_fold.items()} == {
        a: rule_memberships(s) for a, s in ideal.items()
    }
    late = [a for a in ACCOUNTS if rule_memberships(by_stream[a]) != rule_memberships(ideal[a])]
    assert len(late) <= len(ACCOUNTS) // 10, late


def replayed(export: Path) -> dict[str, AccountState]:
    """Every account's state from the export with the worker's own step, event by event,
    and the time sweep at each moment it is due (``tests.unit.core.test_backfill``)."""
    with export.open(encoding="utf-8") as file:
        events = [decode_input(json.dumps(e)) for e in plan_import(file).events()]
    end = max(e.occurred_at.timestamp() for e in events)
    by_account: dict[str, list] = {}
    for event in events:
        by_account.setdefault(event.account_id, []).append(event)
    return {a: streamed(history, FAMILIES, end)[0] for a, history in by_account.items()}


def test_an_import_beside_a_running_worker_loses_and_double_counts_nothing(
    kafka, redis_server, tmp_path
):
    export = tmp_path / "orders.csv"
    write_export(export, days=300, seed=9)
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    worker = WorkerProcess(deployment, tmp_path / "worker.log")
    live: list[dict] = []
    importing = threading.Event()

    def live_orders() -> None:
        # Today's orders of the imported accounts, produced before, during and after
        # the import: the worker applies them while the import writes the same states.
        n = 0
        while importing.is_set() or n < 40:
            account = ACCOUNTS[n % len(ACCOUNTS)]
            event = order_event(f"live-{n}", account, TEST_NOW - timedelta(minutes=n), 7.0)
            send(deployment, "orders", event)
            live.append(event)
            n += 1
            time.sleep(0.02)

    try:
        importing.set()
        producer = threading.Thread(target=live_orders)
        producer.start()
        imported = segworker(deployment, "import-orders", "--processes", "2", str(export))
        importing.clear()
        producer.join(60)
        assert imported.returncode == 0, imported.stderr

        def applied() -> dict[str, float]:
            return {a: sum(row[2] for row in s.orders) for a, s in states(deployment).items()}

        # Every account's order count: its imported orders (in the trailing year) plus
        # its live orders, each once.
        history = expected_order_counts(export)
        for event in live:
            history[event["account_id"]] = history.get(event["account_id"], 0) + 1
        wait_until(lambda: applied() == history, 90, "every order applied once")
        again = segworker(deployment, "import-orders", str(export))
        assert again.returncode == 0, again.stderr
        assert "into the state of 0 accounts" in again.stdout, again.stdout
        assert applied() == history
    finally:
        importing.clear()
        assert worker.stop() == 0, worker.log_tail()


def expected_order_counts(export: Path) -> dict[str, int]:
    """Orders per account within the trailing year of the export's last date, offline."""
    with export.open(encoding="utf-8") as file:
        events = list(plan_import(file).events())
    last = max(day_of_iso(e["occurred_at"]) for e in events)
    live_day = day_of(TEST_NOW)
    today = max(last, live_day)
    counts: dict[str, int] = {}
    for event in events:
        if (
            event["type"] == "order_placed"
            and day_of_iso(event["occurred_at"]) > today - HORIZON_DAYS
        ):
            counts[event["account_id"]] = counts.get(event["account_id"], 0) + 1
    return counts


def day_of_iso(text: str) -> int:
    return day_of(datetime.fromisoformat(text.replace("Z", "+00:00")))


def test_an_import_before_the_first_run_creates_the_topics_the_worker_needs(
    kafka, redis_server, tmp_path
):
    # Found running the commands as a user would, on a fresh embedded stack: the import
    # produced to topics nobody had created, the broker created them with its own
    # partition count (4), and `segworker run` then refused the one-partition ones.
    export = tmp_path / "orders.csv"
    write_export(export, days=60)
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    imported = segworker(deployment, "import-orders", str(export))  # no create_topics()
    assert imported.returncode == 0, imported.stderr
    # every topic exists with the worker's partition counts (raises on a mismatch)
    create_topics(kafka.bootstrap_servers, deployment.settings.topic_partitions())
