"""Kafka clients of the command-line tools (kafka-python); the worker itself uses Faust's.

``produce`` sends ``(logical topic, event dict)`` pairs keyed by account (``segworker
import-orders``, ``erase``, the generator), ``topic_reader`` reads a topic from its
start. kafka-python is imported through :func:`import_kafka_python`, which silences the
deprecation warning its import raises on Python 3.11 and 3.12.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

from worker.adapters.kafka_options import kafka_client_options
from worker.config.settings import Settings

#: ``(logical topic, event dict)``: what ``produce`` sends.
TopicEvent = tuple[str, dict[str, Any]]
_KAFKA_MODULES = ("kafka", "kafka.admin", "kafka.errors", "kafka.producer", "kafka.consumer")
#: importlib.resources' legacy API (read_text, open_text) warns on Python 3.11 and 3.12.
_LEGACY_RESOURCES_WARNING = r"\w+ is deprecated\. Use files\(\) instead"


def import_kafka_python() -> ModuleType:
    """Import kafka-python without its import-time ``DeprecationWarning``.

    kafka-python 3.x loads its protocol schemas with ``importlib.resources.read_text``,
    deprecated on Python 3.11 and 3.12, which fails test runs that turn warnings into errors.
    Importing through this function once makes later ``import kafka`` silent.

    Returns
    -------
    types.ModuleType
        The ``kafka`` package, with its admin, producer, consumer and protocol modules loaded.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=_LEGACY_RESOURCES_WARNING, category=DeprecationWarning
        )
        for name in _KAFKA_MODULES:
            importlib.import_module(name)
    return sys.modules["kafka"]


def _new_admin(bootstrap_servers: str, timeout: float) -> Any:
    kafka = import_kafka_python()
    KafkaAdminClient = kafka.KafkaAdminClient

    ms = max(int(timeout * 1000), 1000)
    return KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="segworker-embedded",
        bootstrap_timeout_ms=ms,
        request_timeout_ms=min(ms, 30_000),
    )


def topic_reader(settings: Settings, topic: str, idle_ms: int, *more_topics: str) -> Any:
    """A consumer of ``topic`` (and ``more_topics``) from its start, outside any group;
    iteration ends after ``idle_ms`` without a message."""
    return import_kafka_python().KafkaConsumer(
        topic,
        *more_topics,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
        consumer_timeout_ms=idle_ms,
        **kafka_client_options(settings),
    )


def encode(event: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as produced to Kafka.

    >>> encode({"a": 1, "b": "ü"})
    b'{"a":1,"b":"\\xc3\\xbc"}'
    """
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def produce(
    events: Iterable[TopicEvent],
    bootstrap_servers: str,
    *,
    topics: Mapping[str, str] | None = None,
    limit: int | None = None,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 1000,
    producer_config: Mapping[str, Any] | None = None,
    client_id: str = "segworker",
) -> int:
    """Produce ``(logical topic, event)`` pairs to Kafka; return how many were sent.

    Keys are the ``account_id`` (so an account's events share a partition), values compact
    JSON. The producer is flushed and closed at the end, also on errors and Ctrl-C; a failed
    delivery raises the Kafka error.

    Parameters
    ----------
    events
        An import's events, or the generator's (endless ones: pass ``limit`` or stop
        with Ctrl-C).
    bootstrap_servers
        ``host:port[,host:port...]``.
    topics
        Logical topic -> actual topic; a logical topic not in it is its own name.
    limit
        Stop after this many events.
    rate
        At most this many events per second (on average since the start).
    on_progress
        Called with the running count every ``progress_every`` events and once at the end.
    producer_config
        Overrides of the ``KafkaProducer`` settings.
    client_id
        How the producer names itself to the broker.
    """
    KafkaProducer = import_kafka_python().KafkaProducer
    mapping = topics or {}
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers.split(","),
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 64 * 1024,
        "client_id": client_id,
    }
    config.update(producer_config or {})
    producer = KafkaProducer(**config)
    failures: list[BaseException] = []
    count = 0
    started = time.monotonic()
    if limit is not None and limit <= 0:
        events = ()
    try:
        for topic, event in events:
            if failures:
                raise failures[0]
            actual = mapping.get(topic, topic)
            future = producer.send(actual, value=encode(event), key=event["account_id"].encode())
            future.add_errback(failures.append)
            count += 1
            if on_progress is not None and count % progress_every == 0:
                on_progress(count)
            if limit is not None and count >= limit:
                break
            if rate is not None:
                ahead = started + count / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
        if failures:
            raise failures[0]
    finally:
        producer.close(timeout=10)
    if on_progress is not None:
        on_progress(count)
    return count
