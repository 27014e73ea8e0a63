"""Waiting until a write has reached the replicas, before its input is acknowledged.

Redis replicates asynchronously: a primary that dies right after ``EXEC`` answered may
take the write with it, and the replica promoted in its place never had it. The worker
acknowledges its Kafka input once the batch's transaction succeeded, so such a write
would be lost for good: the offsets are committed past events whose effect vanished.
``WAIT n`` blocks until ``n`` replicas have everything the connection wrote, which is
what the worker waits for (``SEGWORKER_REDIS_WAIT_REPLICAS``) before it acknowledges.

``WAIT`` counts the writes of its own connection. A transaction waits on its own
connection, right after ``EXEC`` (``confirm_replicated``): waiting on a fresh connection
to "the slot's primary" raced with a failover in the fault suite, when the client
already knew the promoted replica, which had no replica of its own to wait for, so a
write the dead primary took with it counted as done and an account's changes went out
twice under two ids. The wait first writes a ticket (``INCR``): a retried transaction
that changed nothing still waits for the earlier write it found, since the ticket
comes after it in the primary's replication stream. The shared facts, written through
a pipeline, wait on a session to their slot's primary (``wait_replicated``); their
copies into the shards read themselves back afterwards (``worker.adapters.redis_shared``),
and a compare-and-set lost that way is made again by the next refresh or publication.

If fewer replicas than asked acknowledge in time, ``NotReplicated`` is raised: a
transient error, after which the batch is applied again (a no-op where the write
survived, since applying is idempotent) and waited for again, so nothing is
acknowledged before it is on the replicas.

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

from redis.exceptions import ConnectionError as RedisConnectionError

from worker.adapters.redis_transactions import Session, session

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
    async with session(redis, ticket) as primary:
        return await confirm_replicated(primary, ticket, replicas, timeout_ms)


async def confirm_replicated(primary: Session, ticket: str, replicas: int, timeout_ms: int) -> int:
    """``wait_replicated`` on the session that made the writes (``ticket`` in their slot).

    Also after a transaction that changed nothing: a retry after a failed wait finds its
    earlier write in place and must see it replicated before it counts."""
    if replicas <= 0:
        return 0
    _, acked, role = await primary.call(("INCR", ticket), ("WAIT", replicas, timeout_ms), ("ROLE",))
    acked = int(acked)
    if acked >= replicas:
        return acked
    connected = len(role[2]) if role and role[0] in (b"master", "master") else replicas
    if connected < replicas:
        _warn_unreplicated(f"primary {primary.primary}", connected, replicas)
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
