"""Kafka clients for the command-line tools (the worker itself uses Faust's)."""

from __future__ import annotations

from typing import Any

from worker.security import kafka_client_options
from worker.settings import Settings


def topic_reader(settings: Settings, topic: str, idle_ms: int) -> Any:
    """A consumer of ``topic`` from its start, outside any group; iteration ends after
    ``idle_ms`` without a message."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
        consumer_timeout_ms=idle_ms,
        **kafka_client_options(settings),
    )
