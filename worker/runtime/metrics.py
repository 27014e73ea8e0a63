"""Prometheus metrics of one worker process.

Each ``Metrics`` owns its registry, so several workers (or tests) in one process
never collide on metric names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "segworker_events",
            "Input events by type and outcome (applied, duplicate, dead_letter)",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "segworker_dead_letters",
            "Records sent to the dead-letter topic, by error kind",
            ["error_kind"],
            registry=self.registry,
        )
        self.changes = Counter(
            "segworker_segment_changes",
            "SegmentChanged events emitted",
            ["family", "change"],
            registry=self.registry,
        )
        self.flaps = Counter(
            "segworker_segment_flaps",
            "Exits of memberships that lasted less than the flap window (stream time)",
            ["family", "segment"],
            registry=self.registry,
        )
        self.segment_size = Gauge(
            "segworker_segment_size",
            "Accounts in a segment",
            ["family", "segment"],
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "segworker_consumer_lag",
            "Records not yet read, per input partition this worker owns",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.drift_alarms = Counter(
            "segworker_drift_alarms",
            "Drift alarms: a segment's share, a feature distribution or a centroid moved",
            ["family", "segment", "kind"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "segworker_batch_seconds",
            "Time to process one batch, from decode to delivered changes",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.retries = Counter(
            "segworker_retries",
            "Batches retried after a transient Redis or Kafka failure",
            ["stage"],
            registry=self.registry,
        )
        self.triggers = Counter(
            "segworker_triggers",
            "Campaign trigger decisions by trigger, outcome (fired, delayed, holdout, "
            "suppressed) and the rule that decided (cooldown, cap, quiet_hours, ...)",
            ["trigger", "outcome", "rule"],
            registry=self.registry,
        )
        self.webhook_requests = Counter(
            "segworker_webhook_requests",
            "Webhook requests by destination and outcome (delivered, retry, refused, dead_letter)",
            ["destination", "outcome"],
            registry=self.registry,
        )
        self.outbox_resent = Counter(
            "segworker_outbox_resent",
            "Changes re-sent from the outbox after their first sender died",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
