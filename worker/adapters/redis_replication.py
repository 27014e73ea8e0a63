"""Waiting until a write has reached the replicas, before its input is acknowledged.

Redis replicates asynchronously: a primary that dies right after ``EXEC`` answered may
take the write with it, and the replica promoted in its place never had it. The worker
acknowledges its Kafka input once the batch's transaction succeeded, so such a write
would be lost for good: the offsets are committed past events whose effect vanished.
``WAIT n`` blocks until ``n`` replicas have everything the connection wrote, which is
what the worker waits for (``SEGWORKER_REDIS_WAIT_REPLICAS``) before it acknowledges.

``WAIT`` counts the writes of its own connection, and a transaction's connection goes
back to the pool once ``EXEC`` answered; so the wait writes a ticket (``INCR``) on a
connection to the same primary and waits for that on the same connection: the ticket
comes after the transaction in the primary's replication stream, so a replica that has
the ticket has the transaction too. If fewer replicas than asked acknowledge in time,
``NotReplicated`` is raised: a transient error, after which the batch is applied again
(a no-op where the write survived, since applying is idempotent) and waited for again,
so nothing is acknowledged before it is on the replicas.

A primary with fewer connected replicas than asked (``ROLE``, read with the wait) is
waited for only as far as it can be: after a failover the promoted replica has none
until the failed node comes back as its replica, and insisting would stop the worker
for that long. Its writes are then not replicated, which a warning says (once a
minute per primary): one more failure in that window loses them, as with Kafka's
``min.insync.replicas=1``. A replica that is connected but slow is waited for.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AskError, ClusterError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

#: What a Redis Cluster answers while a failover is under way (a primary down, a slot
#: moving to the promoted replica): transient, like a connection error.
CLUSTER_TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    ClusterError,
    AskError,
    TryAgainError,
    SlotNotCoveredError,  # no node known for a slot while the failover is under way
)


log = logging.getLogger(__name__)
#: How often the "fewer replicas than asked" warning is repeated per primary.
WARN_EVERY_SECONDS = 60.0
_warned: dict[str, float] = {}


class NotReplicated(RedisConnectionError):
    """Fewer replicas than required acknowledged a write in time (retried as transient)."""


async def wait_replicated(redis: Any, ticket: str, replicas: int, timeout_ms: int) -> int:
    """Write ``ticket`` and wait until ``replicas`` replicas of its primary have it.

    Returns how many did; raises ``NotReplicated`` when fewer did within ``timeout_ms``
    although the primary has that many connected.
    """
    if replicas <= 0:
        return 0
    if isinstance(redis, RedisCluster):
        primary, (_, acked, role) = await _wait_on_cluster_node(redis, ticket, replicas, timeout_ms)
    else:
        async with redis.pipeline(transaction=False) as pipe:  # one connection
            pipe.incr(ticket)
            pipe.execute_command("WAIT", replicas, timeout_ms)
            pipe.execute_command("ROLE")
            _, acked, role = await pipe.execute()
        primary = "the primary"
    acked = int(acked)
    if acked >= replicas:
        return acked
    connected = len(role[2]) if role and _text(role[0]) == "master" else replicas
    if connected < replicas:
        _warn_unreplicated(primary, connected, replicas)
        return acked
    raise NotReplicated(
        f"{acked} of {replicas} replicas acknowledged the write within {timeout_ms} ms"
    )


def _warn_unreplicated(primary: str, connected: int, replicas: int) -> None:
    now = time.monotonic()
    if now - _warned.get(primary, -WARN_EVERY_SECONDS) >= WARN_EVERY_SECONDS:
        _warned[primary] = now
        log.warning(
            "%s has %d connected replicas, fewer than the %d SEGWORKER_REDIS_WAIT_REPLICAS "
            "asks for: its writes go on unreplicated until one is back",
            primary,
            connected,
            replicas,
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _wait_on_cluster_node(
    cluster: RedisCluster, ticket: str, replicas: int, timeout_ms: int
) -> tuple[str, list[Any]]:
    await cluster.initialize()  # the slot map, learnt on first use
    node = cluster.get_node_from_key(ticket)
    connection = node.acquire_connection()
    try:
        commands = [("INCR", ticket), ("WAIT", replicas, timeout_ms), ("ROLE",)]
        await connection.send_packed_command(connection.pack_commands(commands))
        # the ticket first (or MOVED: raised, then retried with the new slot map)
        replies = [await connection.read_response() for _ in commands]
        return f"primary {node.host}:{node.port}", replies
    except (OSError, RedisConnectionError, *CLUSTER_TRANSIENT_ERRORS):
        # The primary is gone (a failover): learn the new slot map before the retry.
        await connection.disconnect()
        await cluster.nodes_manager.initialize()
        raise
    finally:
        node.release(connection)
