"""Fixtures for integration tests: a real Kafka-protocol broker (Tansu) and a real Redis.

Both servers are spawned once per test session by :mod:`worker.devtools.embedded` on free loopback
ports and stopped at the end. Every test collected under this directory is marked
``integration``. Nothing here skips: a missing binary fails the tests with the reason.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from worker.adapters.kafka_clients import import_kafka_python
from worker.adapters.kafka_topics import create_topics
from worker.devtools import embedded
from worker.devtools.embedded import EmbeddedError, EmbeddedKafka, EmbeddedRedis

# kafka-python 3.x warns (DeprecationWarning) while importing on Python 3.11/3.12; with
# ``filterwarnings = error`` that would break any test importing it, so import it quietly once.
import_kafka_python()

_HERE = Path(__file__).resolve().parent

TopicFactory = Callable[..., str]
_T = TypeVar("_T")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test collected under ``tests/integration`` with ``integration``."""
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


def _start(what: str, start: Callable[[], _T]) -> _T:
    try:
        return start()
    except EmbeddedError as exc:  # includes ServerBinaryNotFound: fail, never skip
        pytest.fail(f"cannot start the embedded {what}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def kafka() -> Iterator[EmbeddedKafka]:
    """A Tansu broker for the whole session (in-memory: topics vanish when it stops)."""
    broker = _start("Kafka broker (Tansu)", embedded.start_kafka)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A ``redis-server`` for the whole session, without persistence."""
    server = _start("Redis server", embedded.start_redis)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client of the session Redis (bytes replies), on an empty database."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=False)
    try:
        client.flushall()
        yield client
    finally:
        client.close()


@pytest.fixture
def topic_factory(kafka: EmbeddedKafka, request: pytest.FixtureRequest) -> TopicFactory:
    """Create uniquely named topics for the current test.

    Returns
    -------
    callable
        ``make(partitions=1, prefix=None) -> str`` creates a topic (waiting for its leaders) and
        returns its name, e.g. ``"test_round_trip-3f2a9c1e"``.
    """
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:80].strip("-") or "topic"

    def make(partitions: int = 1, prefix: str | None = None) -> str:
        name = f"{prefix or base}-{uuid.uuid4().hex[:8]}"
        create_topics(kafka.bootstrap_servers, {name: partitions})
        return name

    return make


@pytest.fixture
def changes(deployment: Any) -> Iterator[Any]:
    """Reader of the test deployment's segment-changes topic (needs a ``deployment``)."""
    from tests.integration.harness import TopicReader

    reader = TopicReader(deployment.bootstrap_servers, deployment.topic("segment-changes"))
    yield reader
    reader.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Any]:
    """A Redis Cluster of three primaries with a replica each, for the whole session."""
    from worker.devtools.embedded.redis_cluster import start_redis_cluster

    cluster = _start("Redis Cluster", start_redis_cluster)
    try:
        yield cluster
    finally:
        cluster.stop()
