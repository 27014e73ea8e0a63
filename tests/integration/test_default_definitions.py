"""The shipped definitions, end to end: one account through every family."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.clock import TEST_NOW
from tests.integration.harness import Deployment, TopicReader, WorkerProcess, order_event, send
from worker.config.settings import DEFAULT_DEFINITIONS

T0 = TEST_NOW.replace(hour=9, minute=0, second=0, microsecond=0) - timedelta(days=10)


@pytest.fixture
def deployment(kafka, redis_server) -> Deployment:
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    return deployment


def memberships(changes: list[dict]) -> dict[str, set[str]]:
    """Replay the change stream into the memberships it describes."""
    held: dict[str, set[str]] = {}
    for change in changes:
        segments = held.setdefault(change["family"], set())
        if change["change"] == "entered":
            assert change["segment_id"] not in segments, change
            segments.add(change["segment_id"])
        else:
            assert change["segment_id"] in segments, change  # never exit without entry
            segments.remove(change["segment_id"])
    return {family: segments for family, segments in held.items() if segments}


def test_one_account_through_every_shipped_family(deployment, tmp_path):
    worker = WorkerProcess(
        deployment, tmp_path / "worker.log", SEGWORKER_VALUE_INTERVAL_SECONDS="1"
    )
    reader = TopicReader(deployment.bootstrap_servers, deployment.topic("segment-changes"))
    expected = {
        "apriori": {"manufacturing_large"},
        "region": {"dach"},
        "value": {"a"},
        "program": {"champions"},
        "engagement": {"decision_makers_engaged"},
        "needs": {"tools_buyers"},
    }
    try:
        send(
            deployment,
            "account-profiles",
            {
                "type": "account_profile",
                "event_id": "d-p1",
                "occurred_at": T0.isoformat(),
                "account_id": "DEF",
                "industry": "manufacturing",
                "employees": 1200,
                "country": "DE",
            },
        )
        first = reader.read_until(lambda got: len(got) >= 4)  # apriori, region, value, program
        send(deployment, "orders", order_event("d-o1", "DEF", T0 + timedelta(days=1), 3000.0))
        send(
            deployment,
            "loyalty-points",
            {
                "type": "loyalty_points",
                "event_id": "d-l1",
                "occurred_at": (T0 + timedelta(days=2)).isoformat(),
                "account_id": "DEF",
                "kind": "earned",
                "points": 2500,
                "reason": "action",
            },
        )
        send(
            deployment,
            "campaign-events",
            {
                "type": "campaign_interaction",
                "event_id": "d-c1",
                "occurred_at": (T0 + timedelta(days=3)).isoformat(),
                "account_id": "DEF",
                "campaign_id": "webinar",
                "contact_id": "DEF-C9",
                "contact_role": "decider",
                "kind": "opened",
            },
        )
        changes = first + reader.read_until(
            lambda got: memberships(first + got) == expected, timeout=90
        )
    finally:
        reader.close()
        code = worker.stop()
    assert code == 0, worker.log_tail()
    assert memberships(changes) == expected
    into_a = next(c for c in changes if c["family"] == "value" and c["segment_id"] == "a")
    # by the order itself or by the next cut-off refresh, whichever came first
    assert into_a["cause"] in ("d-o1", "d-l1", "d-c1") or into_a["cause"].startswith("thresholds:")
    assert into_a["reason"].startswith("revenue_365d >= value_a_min (revenue_365d=3000, ")
    assert 0 < into_a["features"]["value_a_min"] <= 3000
    tools = next(c for c in changes if c["segment_id"] == "tools_buyers")
    # The shipped needs segments debounce entries (enter_after: 2d): the entry says since when.
    since = (T0 + timedelta(days=1)).isoformat()
    assert tools["reason"] == (
        f'share("tools") >= 0.4 (share("tools")=1); qualified continuously since {since} '
        "(enter_after)"
    )
