"""A client from another ecosystem (librdkafka, through confluent-kafka) on both ends.

A producer team on librdkafka writes a profile, an order and a malformed record; a
campaign tool on librdkafka reads what the worker emits. Everything it reads must
validate against the published ``schemas/`` with an independent validator, carry the
account as its key (co-partitioned), and the malformed record must come back as a dead
letter with its reason rather than vanish.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
from confluent_kafka import Consumer, Producer

from tests.integration.harness import ROOT, Deployment, WorkerProcess, order_event
from worker.config.settings import DEFAULT_DEFINITIONS

TRIGGERS = """
version: "librdkafka-1"
triggers:
  - id: dach_welcome
    on: {family: region, segment: dach, change: entered}
    campaign: dach-welcome
    cooldown: 30d
    address_roles: [buyer, decider]
"""


def _schema(name: str) -> dict[str, Any]:
    return json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text())


def _produce(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> None:
    failures: list[str] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    for topic, key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
    assert producer.flush(30) == 0, "records left unsent"
    assert failures == []


def test_a_librdkafka_producer_and_campaign_tool_see_valid_events(kafka, redis_server, tmp_path):
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    triggers = tmp_path / "triggers.yaml"
    triggers.write_text(TRIGGERS)
    worker = WorkerProcess(
        deployment,
        tmp_path / "worker.log",
        SEGWORKER_TRIGGERS_ENABLED="true",
        SEGWORKER_TRIGGERS_PATH=str(triggers),
    )
    topics = {
        deployment.topic("segment-changes"): "segment_changed",
        deployment.topic("campaign-triggers"): "campaign_triggered",
        deployment.topic("dead-letters"): "dead_letter",
    }
    consumer = Consumer(
        {
            "bootstrap.servers": deployment.bootstrap_servers,
            "group.id": f"{deployment.name}-campaign-tool",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        now = datetime.now(UTC).replace(microsecond=0)  # wall clock: the trigger must be live
        click = {
            "type": "campaign_interaction",
            "event_id": "rd-c1",
            "occurred_at": (now - timedelta(seconds=2)).isoformat(),
            "account_id": "RDCO",
            "campaign_id": "spring-mailing",
            "contact_id": "RDCO-D7",
            "contact_role": "decider",
            "kind": "clicked",
        }
        order = order_event("rd-o1", "RDCO", now - timedelta(seconds=1), 120.0)
        profile = {
            "type": "account_profile",
            "event_id": "rd-p1",
            "occurred_at": now.isoformat(),
            "account_id": "RDCO",
            "industry": "logistics",
            "employees": 40,
            "country": "AT",
        }
        consumer.subscribe(list(topics))
        got: dict[str, list[Any]] = {topic: [] for topic in topics}

        def poll_until(done: Callable[[], bool], seconds: float = 90) -> None:
            deadline = time.monotonic() + seconds
            while not done() and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is not None:
                    assert message.error() is None, message.error()
                    got[message.topic()].append(message)

        # The decider's click first (no order across topics): the account's
        # first change says it was processed, so the trigger can address the decider;
        # the order's contact is the buyer.
        _produce(
            deployment.bootstrap_servers,
            [(deployment.topic("campaign-events"), b"RDCO", json.dumps(click).encode())],
        )
        poll_until(lambda: bool(got[deployment.topic("segment-changes")]))
        _produce(
            deployment.bootstrap_servers,
            [
                (deployment.topic("orders"), b"RDCO", json.dumps(order).encode()),
                (deployment.topic("account-profiles"), b"RDCO", json.dumps(profile).encode()),
                (deployment.topic("orders"), b"RDCO", b'{"type": "order_placed", "total": '),
            ],
        )
        poll_until(
            lambda: bool(
                got[deployment.topic("campaign-triggers")] and got[deployment.topic("dead-letters")]
            )
        )
        poll_until(lambda: False, seconds=3)  # anything extra that should not be there

        for topic, schema_name in topics.items():
            validator = jsonschema.Draft202012Validator(_schema(schema_name))
            for message in got[topic]:
                validator.validate(json.loads(message.value()))
        changes = [json.loads(m.value()) for m in got[deployment.topic("segment-changes")]]
        assert all(m.key() == b"RDCO" for m in got[deployment.topic("segment-changes")])
        assert {(c["family"], c["segment_id"]) for c in changes} >= {("region", "dach")}
        assert all(c["origin"] == "event" and c["live"] for c in changes)

        (trigger_message,) = got[deployment.topic("campaign-triggers")]
        assert trigger_message.key() == b"RDCO"
        trigger = json.loads(trigger_message.value())
        (dach,) = [c for c in changes if c["segment_id"] == "dach"]
        assert trigger["change_id"] == dach["change_id"]
        assert (trigger["trigger"], trigger["campaign"]) == ("dach_welcome", "dach-welcome")
        assert trigger["contacts"] == {"buyer": "RDCO-C1", "decider": "RDCO-D7"}
        assert not trigger["holdout"] and trigger["deliver_at"] == trigger["fired_at"]

        (letter_message,) = got[deployment.topic("dead-letters")]
        letter = json.loads(letter_message.value())
        assert (letter["error_kind"], letter["source_topic"]) == (
            "malformed_json",
            deployment.topic("orders"),
        ), letter
        assert letter["reason"], letter
    finally:
        consumer.close()
        assert worker.stop() == 0, worker.log_tail()
