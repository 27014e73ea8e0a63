"""End to end: a real worker process between a real broker and a real Redis.

Events go in step by step; after each step the test reads ``segment-changes`` and
asserts exactly the changes that step must cause, no more. Stepping matters because
Kafka orders an account's events only within one topic: across topics (orders vs.
points) the worker may see them in either order, and so may a real deployment.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.clock import TEST_NOW
from tests.integration.harness import (
    Deployment,
    TopicReader,
    WorkerProcess,
    event_bytes,
    produce,
    send,
)
from worker.adapters.state_codec import decode_state_data

DEFINITIONS = Path(__file__).with_name("definitions.yaml")
T0 = TEST_NOW.replace(hour=9, minute=0, second=0, microsecond=0) - timedelta(days=20)


def iso(days: float) -> str:
    return (T0 + timedelta(days=days)).isoformat()


def expected_id(account: str, family: str, segment: str, change: str, cause: str) -> str:
    """The documented change-id formula, re-implemented independently of the worker."""
    key = "\x1f".join((account, family, segment, change, cause))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def summary(changes: list[dict[str, Any]]) -> list[tuple]:
    return [
        (c["account_id"], c["family"], c["segment_id"], c["change"], c["previous_segment_id"])
        for c in changes
    ]


@pytest.fixture
def deployment(kafka, redis_server) -> Deployment:
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFINITIONS)
    deployment.create_topics()
    return deployment


@pytest.fixture
def worker(deployment, tmp_path):
    process = WorkerProcess(deployment, tmp_path / "worker.log")
    yield process
    code = process.stop()
    assert code == 0, f"worker exited with {code}:\n{process.log_tail()}"


def profile(event_id, account, days, industry, employees, country="DE"):
    return {
        "type": "account_profile",
        "event_id": event_id,
        "occurred_at": iso(days),
        "account_id": account,
        "industry": industry,
        "employees": employees,
        "country": country,
    }


def order(event_id, account, days, total, category="tools"):
    return {
        "type": "order_placed",
        "event_id": event_id,
        "occurred_at": iso(days),
        "account_id": account,
        "order_id": f"ord-{event_id}",
        "total": total,
        "contact_id": f"{account}-C1",
        "lines": [{"sku": "SKU-1", "category": category, "quantity": 1, "unit_price": total}],
    }


def points(event_id, account, days, earned):
    return {
        "type": "loyalty_points",
        "event_id": event_id,
        "occurred_at": iso(days),
        "account_id": account,
        "kind": "earned",
        "points": earned,
        "reason": "purchase",
    }


def campaign(event_id, account, days, kind):
    return {
        "type": "campaign_interaction",
        "event_id": event_id,
        "occurred_at": iso(days),
        "account_id": account,
        "campaign_id": "spring-2026",
        "contact_id": f"{account}-C2",
        "contact_role": "decider",
        "kind": kind,
    }


def test_events_in_exact_segment_changes_out(deployment, worker, changes):
    steps = [
        (
            "account-profiles",
            profile("acme-p1", "ACME", 0, "manufacturing", 1200),
            [
                ("ACME", "program", "never_participated", "entered", None, "true"),
                (
                    "ACME",
                    "apriori",
                    "large_manufacturers",
                    "entered",
                    None,
                    'industry == "manufacturing" and size_class in ["large", "enterprise"] '
                    '(industry="manufacturing", size_class="enterprise")',
                ),
            ],
        ),
        ("orders", order("acme-o1", "ACME", 1, 600.0), []),
        (
            "orders",
            order("acme-o2", "ACME", 2, 500.0),
            [
                (
                    "ACME",
                    "buyers",
                    "big_spenders",
                    "entered",
                    None,
                    "revenue_90d >= 1000 (revenue_90d=1100)",
                ),
            ],
        ),
        (
            "loyalty-points",
            points("acme-l1", "ACME", 3, 1200),
            [
                (
                    "ACME",
                    "program",
                    "never_participated",
                    "exited",
                    None,
                    # its catch-all condition still holds: an earlier segment took it
                    "moved to active_members, which comes first and now matches "
                    "(points_earned_90d=1200)",
                ),
                (
                    "ACME",
                    "program",
                    "active_members",
                    "entered",
                    "never_participated",
                    "points_earned_90d > 0 (points_earned_90d=1200)",
                ),
            ],
        ),
        ("campaign-events", campaign("acme-c1", "ACME", 4, "sent"), []),
        (
            "campaign-events",
            campaign("acme-c2", "ACME", 4, "responded"),
            [
                (
                    "ACME",
                    "program",
                    "active_members",
                    "exited",
                    None,
                    "moved to champions, which comes first and now matches "
                    "(points_earned_90d=1200, response_rate_365d=1)",
                ),
                (
                    "ACME",
                    "program",
                    "champions",
                    "entered",
                    "active_members",
                    "points_earned_90d >= 1000 and response_rate_365d >= 0.5 "
                    "(points_earned_90d=1200, response_rate_365d=1)",
                ),
            ],
        ),
        (
            "orders",
            order("bolt-o1", "BOLT", 5, 2000.0, "safety"),
            [
                ("BOLT", "program", "never_participated", "entered", None, "true"),
                (
                    "BOLT",
                    "buyers",
                    "big_spenders",
                    "entered",
                    None,
                    "revenue_90d >= 1000 (revenue_90d=2000)",
                ),
                ("BOLT", "apriori", "other", "entered", None, "true"),
            ],
        ),
        (
            "orders",
            {
                "type": "order_returned",
                "event_id": "bolt-r1",
                "occurred_at": iso(6),
                "account_id": "BOLT",
                "order_id": "ord-bolt-o1",
                "amount": 1500.0,
            },
            [
                (
                    "BOLT",
                    "buyers",
                    "big_spenders",
                    "exited",
                    None,
                    "no longer matches: revenue_90d >= 1000 (revenue_90d=500)",
                ),
            ],
        ),
        # the same order again (a producer retry): nothing may change
        ("orders", order("acme-o2", "ACME", 2, 500.0), []),
    ]
    for topic, event, expected in steps:
        send(deployment, topic, event)
        got = changes.read(len(expected))
        assert [(*s, c["reason"]) for s, c in zip(summary(got), got, strict=True)] == [
            tuple(e) for e in expected
        ], f"after {event['event_id']}"
        for change in got:
            assert change["change_id"] == expected_id(
                change["account_id"],
                change["family"],
                change["segment_id"],
                change["change"],
                event["event_id"],
            )
            assert change["cause"] == event["event_id"]
            assert change["occurred_at"] == event["occurred_at"].replace("+00:00", "Z")
            assert change["definition_version"] == "it-1"

    store = redis.Redis.from_url(deployment.redis_url)

    def members(family: str, segment: str) -> set[bytes]:
        return store.smembers(f"{deployment.name}:members:{family}:{segment}")

    assert members("program", "champions") == {b"ACME"}
    assert members("program", "never_participated") == {b"BOLT"}
    assert members("buyers", "big_spenders") == {b"ACME"}
    assert store.hlen(f"{deployment.name}:outbox") == 0
    state = decode_state_data(store.get(f"{deployment.name}:acct:{{ACME}}"))
    assert sorted(state["memberships"]) == ["apriori", "buyers", "program"]
    store.close()


def test_bad_input_goes_to_the_dead_letter_topic_and_the_worker_goes_on(
    deployment, worker, changes
):
    garbage = b'{"type": "order_placed", "event_id": '
    wrong_key = order("k-o1", "KEYED", 0, 10.0)
    negative = {**order("neg-o1", "NEG", 0, 10.0)}
    negative["lines"] = [{"sku": "S", "category": "tools", "quantity": -3, "unit_price": 1.0}]
    produce(
        deployment.bootstrap_servers,
        [
            (deployment.topic("orders"), b"X", garbage),
            (deployment.topic("orders"), b"OTHER", event_bytes(wrong_key)),
            (deployment.topic("orders"), b"NEG", event_bytes(negative)),
            (
                deployment.topic("loyalty-points"),
                b"ACME",
                event_bytes(order("t-o1", "ACME", 0, 5.0)),
            ),
            (deployment.topic("orders"), b"ACME", event_bytes({"type": "refund", "event_id": "x"})),
        ],
    )
    letters = TopicReader(deployment.bootstrap_servers, deployment.topic("dead-letters"))
    try:
        dead = letters.read(5)
    finally:
        letters.close()
    by_kind = {letter["error_kind"]: letter for letter in dead}
    assert sorted(by_kind) == [
        "invalid_event",
        "malformed_json",
        "unknown_type",
        "wrong_key",
        "wrong_topic",
    ]
    assert base64.b64decode(by_kind["malformed_json"]["raw"]) == garbage
    assert by_kind["malformed_json"]["source_topic"] == deployment.topic("orders")
    assert "lines.0.quantity" in by_kind["invalid_event"]["reason"]
    assert "not the account_id 'KEYED'" in by_kind["wrong_key"]["reason"]
    assert "does not belong on topic" in by_kind["wrong_topic"]["reason"]

    # the worker is still alive and processing
    send(deployment, "orders", order("ok-o1", "GOOD", 1, 50.0))
    got = changes.read(2)
    assert {(c["account_id"], c["segment_id"]) for c in got} == {
        ("GOOD", "never_participated"),
        ("GOOD", "other"),
    }


def test_a_batch_goes_once_nothing_more_is_coming_not_at_the_end_of_its_window(
    deployment, changes, tmp_path
):
    # A 10 s window (the largest allowed): a batch that waited it out would deliver the
    # second account's changes about 10 s late; a settled batch goes within milliseconds.
    worker = WorkerProcess(deployment, tmp_path / "worker.log", SEGWORKER_BATCH_WITHIN_SECONDS="10")
    try:
        send(deployment, "account-profiles", profile("w-p1", "WARM", 0, "retail", 5))
        assert len(changes.read(2, timeout=90, settle=0.5)) == 2, worker.log_tail()
        send(deployment, "account-profiles", profile("s-p1", "SETTLED", 0, "retail", 5))
        second = changes.read(2, timeout=5, settle=0.1)
        assert {c["account_id"] for c in second} == {"SETTLED"}
        assert len(second) == 2
    finally:
        assert worker.stop() == 0, worker.log_tail()
