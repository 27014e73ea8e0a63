"""Real worker processes and real Kafka clients for the integration tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
import redis.cluster
from kafka import KafkaConsumer, KafkaProducer

from worker.adapters.kafka_topics import create_topics
from worker.adapters.redis_keys import KeyLayout
from worker.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Deployment:
    """One isolated worker configuration: its own topics, Redis prefix and group."""

    bootstrap_servers: str
    redis_url: str
    definitions_path: Path
    name: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")
    partitions: int = 4
    #: ``redis_url`` names a node of a Redis Cluster (the worker's default 16 shards)
    cluster: bool = False

    @property
    def env(self) -> dict[str, str]:
        n = self.name
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "REDIS_URL": self.redis_url,
            "SEGWORKER_APP_ID": f"segworker-{n}",
            "SEGWORKER_TOPIC_ORDERS": f"{n}-orders",
            "SEGWORKER_TOPIC_CAMPAIGN_EVENTS": f"{n}-campaign-events",
            "SEGWORKER_TOPIC_LOYALTY_POINTS": f"{n}-loyalty-points",
            "SEGWORKER_TOPIC_ACCOUNT_PROFILES": f"{n}-account-profiles",
            "SEGWORKER_TOPIC_SEGMENT_CHANGES": f"{n}-segment-changes",
            "SEGWORKER_TOPIC_DEAD_LETTERS": f"{n}-dead-letters",
            "SEGWORKER_TOPIC_CLUSTER_SAMPLES": f"{n}-cluster-samples",
            "SEGWORKER_TOPIC_SEGMENT_DRIFT": f"{n}-segment-drift",
            "SEGWORKER_TOPIC_CAMPAIGN_TRIGGERS": f"{n}-campaign-triggers",
            "SEGWORKER_TOPIC_TRIGGER_DEAD_LETTERS": f"{n}-campaign-trigger-dead-letters",
            "SEGWORKER_PARTITIONS": str(self.partitions),
            "SEGWORKER_REDIS_KEY_PREFIX": n,
            "SEGWORKER_DEFINITIONS_PATH": str(self.definitions_path),
            "SEGWORKER_REDIS_CLUSTER": "true" if self.cluster else "false",
        }

    @property
    def settings(self) -> Settings:
        env = self.env
        return Settings(
            kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
            redis_url=env["REDIS_URL"],
            **{
                key.removeprefix("SEGWORKER_").lower(): value
                for key, value in env.items()
                if key.startswith("SEGWORKER_")
            },
        )

    def create_topics(self) -> None:
        create_topics(self.bootstrap_servers, self.settings.topic_partitions())

    def topic(self, logical: str) -> str:
        return f"{self.name}-{logical}"


class WorkerProcess:
    """``segworker run`` in a child process, as an operator would start it."""

    def __init__(self, deployment: Deployment, log_path: Path, **extra_env: str) -> None:
        env = {**os.environ, **deployment.env, **extra_env}
        env.setdefault("SEGWORKER_WEB_PORT", str(free_port()))
        env["PYTHONUNBUFFERED"] = "1"
        self.web_port = int(env["SEGWORKER_WEB_PORT"])
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "run"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self._log.close()


def produce(bootstrap_servers: str, messages: Iterable[tuple[str, bytes | None, bytes]]) -> None:
    """Send ``(topic, key, value)`` in order and wait for every acknowledgement."""
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=0)
    try:
        for topic, key, value in messages:
            producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close(timeout=10)


def event_bytes(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event).encode()


class TopicReader:
    """Reads one topic from the start, incrementally across the steps of a test."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers,
            auto_offset_reset="earliest",
            group_id=None,
            enable_auto_commit=False,
            consumer_timeout_ms=300,
        )

    def read(self, expected: int, timeout: float = 60.0, settle: float = 1.5) -> list[dict]:
        """Messages until ``expected`` arrived, plus ``settle`` quiet seconds to catch extras."""
        received: list[dict] = []
        deadline = time.monotonic() + timeout
        quiet_until: float | None = None
        while time.monotonic() < deadline:
            received.extend(json.loads(m.value) for m in self.consumer)
            if len(received) >= expected:
                quiet_until = quiet_until or time.monotonic() + settle
                if time.monotonic() >= quiet_until:
                    break
        return received

    def read_until(
        self, done: Callable[[list[dict]], bool], timeout: float = 60.0, settle: float = 1.5
    ) -> list[dict]:
        """Messages until ``done(received)`` holds, plus ``settle`` quiet seconds."""
        received: list[dict] = []
        deadline = time.monotonic() + timeout
        quiet_until: float | None = None
        while time.monotonic() < deadline:
            received.extend(json.loads(m.value) for m in self.consumer)
            if done(received):
                quiet_until = quiet_until or time.monotonic() + settle
                if time.monotonic() >= quiet_until:
                    break
        return received

    def close(self) -> None:
        self.consumer.close()


def send(deployment: Deployment, topic: str, *events: Mapping[str, Any]) -> None:
    """Produce events to a deployment's logical topic, keyed by their account."""
    produce(
        deployment.bootstrap_servers,
        [(deployment.topic(topic), e["account_id"].encode(), event_bytes(e)) for e in events],
    )


def order_event(
    event_id: str, account: str, at: datetime, total: float, category: str = "tools"
) -> dict[str, Any]:
    return {
        "type": "order_placed",
        "event_id": event_id,
        "occurred_at": at.isoformat(),
        "account_id": account,
        "order_id": f"ord-{event_id}",
        "total": total,
        "contact_id": f"{account}-C1",
        "lines": [{"sku": "SKU-1", "category": category, "quantity": 1, "unit_price": total}],
    }


class StoredState:
    """What a deployment keeps in Redis, read as the worker lays it out: any shard count,
    on one Redis or a Redis Cluster (``worker.adapters.redis_keys``)."""

    def __init__(self, deployment: Deployment) -> None:
        settings = deployment.settings
        self.layout = KeyLayout(deployment.name, settings.state_shards)
        url = deployment.redis_url
        self.redis: Any = (
            redis.cluster.RedisCluster.from_url(url, socket_timeout=5)
            if settings.redis_cluster
            else redis.Redis.from_url(url, socket_timeout=5)
        )

    def stream_time(self) -> float | None:
        times = [self.redis.zscore(keys.clock, "stream") for keys in self.layout.each]
        return max((t for t in times if t is not None), default=None)

    def outbox(self) -> int:
        return sum(int(self.redis.hlen(keys.outbox)) for keys in self.layout.each)

    def due(self, until: float) -> int:
        return sum(int(self.redis.zcount(keys.due, "-inf", until)) for keys in self.layout.each)

    def state(self, account: str) -> bytes | None:
        raw: bytes | None = self.redis.get(self.layout.shard_keys(account).state(account))
        return raw

    def accounts(self) -> set[str]:
        """Every account with a stored state (SCAN of every primary)."""
        return {
            self.layout.account_of(key.decode())
            for key in self.redis.scan_iter(match=self.layout.state_pattern, count=1000)
        }

    def members(self, family: str, segment: str) -> set[str]:
        return {
            account.decode()
            for keys in self.layout.each
            for account in self.redis.smembers(keys.members(family, segment))
        }

    def thresholds(self) -> dict[str, Any] | None:
        raw = self.redis.get(self.layout.thresholds)
        return None if raw is None else dict(json.loads(raw))

    def revenues(self) -> dict[str, float]:
        return {
            account.decode(): score
            for keys in self.layout.each
            for account, score in self.redis.zrange(keys.revenue, 0, -1, withscores=True)
        }

    def close(self) -> None:
        self.redis.close()
