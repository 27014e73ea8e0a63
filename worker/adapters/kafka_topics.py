"""Creating the worker's topics (``SEGWORKER_CREATE_TOPICS``; the embedded stack, tests).

In production the operator provisions the topics with their replication factor; for
development and the embedded broker the worker creates what is missing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from worker.adapters.kafka_clients import import_kafka_python


class TopicError(RuntimeError):
    """A topic could not be created or did not become ready."""


def new_admin(bootstrap_servers: str, timeout: float) -> Any:
    kafka = import_kafka_python()
    ms = max(int(timeout * 1000), 1000)
    return kafka.KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="segworker-admin",
        bootstrap_timeout_ms=ms,
        request_timeout_ms=min(ms, 30_000),
    )


def create_topics(bootstrap_servers: str, topics: Mapping[str, int], timeout: float = 30) -> None:
    """Create topics (idempotently) and wait until every partition has a leader.

    Parameters
    ----------
    bootstrap_servers : str
        ``"host:port"`` of the broker.
    topics : Mapping[str, int]
        Topic name to number of partitions. A topic that already exists with that number of
        partitions is fine.
    timeout : float
        Seconds to wait for creation and for the metadata to show all partitions with leaders.

    Raises
    ------
    TopicError
        If a topic cannot be created, already exists with another number of partitions, or is
        not ready in time.

    Notes
    -----
    Tansu auto-creates a topic with 4 partitions when a producer or a subscribing consumer
    asks for its metadata first; create every topic before clients touch it.
    """
    if not topics:
        return
    bad = {name: n for name, n in topics.items() if n < 1}
    if bad:
        raise ValueError(f"partition counts must be >= 1: {bad}")
    import_kafka_python()
    from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

    deadline = time.monotonic() + timeout
    try:
        admin = new_admin(bootstrap_servers, timeout)
    except KafkaError as exc:
        raise TopicError(f"cannot reach broker at {bootstrap_servers}: {exc!r}") from exc
    try:
        request = {
            name: {"num_partitions": partitions, "replication_factor": 1}
            for name, partitions in topics.items()
        }
        result = admin.create_topics(request, timeout_ms=int(timeout * 1000), raise_errors=False)
        existed: set[str] = set()
        for entry in result.get("topics", []):
            code = entry.get("error_code", 0)
            if not code:
                continue
            error = for_code(code)
            if error is TopicAlreadyExistsError:
                existed.add(entry["name"])
                continue
            raise TopicError(
                f"creating topic {entry.get('name')!r} failed: {error.__name__} "
                f"{entry.get('error_message') or ''}".rstrip()
            )
        while True:
            described = {t["name"]: t for t in admin.describe_topics(list(topics))}
            pending = {}
            for name, partitions in topics.items():
                info = described.get(name)
                have = len((info or {}).get("partitions") or [])
                if name in existed and have and have != partitions:
                    raise TopicError(
                        f"topic {name!r} already exists with {have} partitions, not {partitions}"
                    )
                reason = _topic_not_ready(info, partitions)
                if reason:
                    pending[name] = reason
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TopicError(f"topics not ready after {timeout}s: {pending}")
            time.sleep(0.05)
    except KafkaError as exc:
        raise TopicError(f"creating topics {sorted(topics)} failed: {exc!r}") from exc
    finally:
        admin.close()


def _topic_not_ready(info: Mapping[str, Any] | None, wanted: int) -> str | None:
    if info is None:
        return "missing from metadata"
    if info.get("error_code", 0):
        return f"error_code={info['error_code']}"
    partitions = info.get("partitions") or []
    if len(partitions) < wanted:
        return f"{len(partitions)}/{wanted} partitions"
    leaderless = [p["partition_index"] for p in partitions if p.get("leader_id", -1) < 0]
    if leaderless:
        return f"no leader for partitions {leaderless}"
    return None
