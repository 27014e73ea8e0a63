"""The one place that builds the adapters from the settings.

The runtime and the operator commands ask here for a state store and a change
sender and talk to them through ``worker.ports``; which Redis (or which other
store) and which Kafka client stand behind them is decided only here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiokafka.errors import KafkaError
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.adapters.kafka_senders import ProducerSender
from worker.adapters.redis_store import RedisStateStore
from worker.adapters.redis_transactions import CLUSTER_TRANSIENT_ERRORS
from worker.adapters.redis_triggers import RedisTriggerStore
from worker.adapters.webhook import WebhookClient
from worker.config.clusterings import clusterings
from worker.config.settings import Settings
from worker.ports import StateStore, TriggerStore, WebhookPoster

#: Errors after which an operation is retried (with back-off) rather than failing the
#: worker: a store or a broker that is briefly unreachable.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
    *CLUSTER_TRANSIENT_ERRORS,
)
#: What a command reports as "cannot reach Redis or Kafka" (Kafka's own errors too).
UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, KafkaError)


def redis_client(settings: Settings) -> aioredis.Redis:
    """A client of ``settings.redis_url``: a primary's, or a Redis Cluster's."""
    if not settings.redis_url:
        raise ValueError("a state store needs redis_url")
    if settings.redis_cluster:
        # The cluster client routes each key to its slot's primary and follows
        # MOVED/ASK redirections and failovers; the type differs, the commands do not.
        return RedisCluster.from_url(settings.redis_url)
    return aioredis.Redis.from_url(settings.redis_url, health_check_interval=10)


def state_store(settings: Settings) -> StateStore:
    """The state store of ``settings.redis_url`` (which must be set)."""
    return RedisStateStore(
        redis_client(settings),
        settings.redis_key_prefix,
        [c.family for c in clusterings(settings)],
        settings.cluster_margin,
        settings.state_shards,
        settings.state_wait_replicas,
        settings.redis_wait_timeout_ms,
    )


def trigger_store(settings: Settings) -> TriggerStore:
    """The campaign trigger router's store, in the same Redis as the state."""
    return RedisTriggerStore(
        redis_client(settings),
        settings.redis_key_prefix,
        settings.state_shards,
        settings.state_wait_replicas,
        settings.redis_wait_timeout_ms,
    )


def webhook_client() -> WebhookPoster:
    """The HTTP client of the webhook destinations."""
    return WebhookClient()


@contextlib.asynccontextmanager
async def open_state_store(settings: Settings) -> AsyncIterator[StateStore]:
    """A state store for one command, closed afterwards."""
    store = state_store(settings)
    try:
        await store.prepare()
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def change_sender(settings: Settings) -> AsyncIterator[ProducerSender]:
    """A producer for one command: sends changes (and training samples), acks from all."""
    async with ProducerSender(settings) as sender:
        yield sender
