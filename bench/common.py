"""What the benchmarks share: an isolated deployment on embedded or given servers."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.cli import connected_settings  # noqa: E402
from worker.embedded import create_topics, free_port, import_kafka_python  # noqa: E402
from worker.settings import Settings  # noqa: E402

TOPIC_SETTINGS = (
    "orders",
    "campaign_events",
    "loyalty_points",
    "account_profiles",
    "segment_changes",
    "dead_letters",
    "cluster_samples",
    "segment_drift",
)


@contextlib.contextmanager
def deployment(name: str, **overrides: object) -> Iterator[Settings]:
    """Settings with topics prefixed by ``name``, on embedded servers unless configured."""
    with connected_settings(Settings()) as connected:
        topics = {f"topic_{t}": f"{name}-{t.replace('_', '-')}" for t in TOPIC_SETTINGS}
        settings = connected.model_copy(
            update={"app_id": f"{name}-worker", "redis_key_prefix": name, **topics, **overrides}
        )
        assert settings.kafka_bootstrap_servers
        create_topics(settings.kafka_bootstrap_servers, settings.topic_partitions())
        yield settings


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes ``segworker run`` use ``settings``."""
    assert settings.kafka_bootstrap_servers and settings.redis_url
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "REDIS_URL": settings.redis_url,
        "SEGWORKER_APP_ID": settings.app_id,
        "SEGWORKER_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "SEGWORKER_LOG_LEVEL": "warning",
        "SEGWORKER_WEB_PORT": str(free_port()),
        **{f"SEGWORKER_TOPIC_{t.upper()}": getattr(settings, f"topic_{t}") for t in TOPIC_SETTINGS},
    }
    env.update(extra)
    return env


class GroupProgress:
    """Events a consumer group has committed on the input topics."""

    def __init__(self, settings: Settings, group: str) -> None:
        kafka = import_kafka_python()
        self.admin = kafka.KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        self.group = group
        self.topics = settings.input_topics

    def committed(self) -> int:
        offsets = self.admin.list_group_offsets(self.group)[self.group]
        return sum(
            meta.offset
            for tp, meta in offsets.items()
            if tp.topic in self.topics and meta.offset > 0
        )

    def wait_for(self, total: int, timeout: float) -> float:
        """Block until ``total`` events are committed; return the monotonic time it happened."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.committed() >= total:
                return time.monotonic()
            time.sleep(0.2)
        raise TimeoutError(f"{self.group}: {self.committed()}/{total} after {timeout}s")

    def close(self) -> None:
        self.admin.close()


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a live process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
