"""WATCH/MULTI/EXEC on one connection to the primary that holds a shard, without a pipeline.

A batch's share of one shard is an optimistic transaction: watch the states, read them,
compute, then write everything in ``MULTI/EXEC``, which Redis refuses if a watched key
changed meanwhile (another worker wrote the account: compute again from what it wrote).
redis-py's transactional pipeline does this for a single Redis, but its Redis Cluster
variant runs every command of a transaction on a thread of its own, which blocks the
event loop meanwhile: measured (``bench/redis_cluster.py``, 2026-12-04) it made a worker
on a 3-primary cluster 3.4 times slower than on one Redis, most of it thread starts.

So the transaction is spoken directly on one connection: to the primary of the shard's
slot on a cluster (``ClusterNode.acquire_connection``), from the pool on a single Redis;
``WATCH`` goes in one round trip with the first reads, the writes are recorded by
``Commands`` (redis-py's own command methods, so their arguments are built as a
pipeline builds them) and sent with ``MULTI`` and ``EXEC`` in a second one.

Errors: a connection that fails mid-way is dropped (its state is unknown) and the error
raised for the caller's retry, after a cluster client re-learns the slot map (a failover
moved the shard); ``MOVED``/``ASK`` are raised the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import DataAccessCommands
from redis.exceptions import (
    AskError,
    ClusterError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

Command = tuple[Any, ...]


class Commands(DataAccessCommands):
    """Records the commands its redis-py methods would send (``sadd``, ``zadd``, ...)."""

    def __init__(self) -> None:
        self.recorded: list[Command] = []

    def execute_command(self, *args: Any, **options: Any) -> None:
        self.recorded.append(args)


class Aborted(Exception):
    """``EXEC`` was refused: a watched key changed (the transaction did not run)."""


class Session:
    """One connection to the shard's primary (holding a ``WATCH``, once one is sent)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.watching = False

    @property
    def primary(self) -> str:
        """The primary's address, for messages."""
        return f"{self.connection.host}:{self.connection.port}"

    async def call(self, *commands: Command) -> list[Any]:
        """Send ``commands`` in one round trip; their replies (errors raised)."""
        connection = self.connection
        self.watching = self.watching or any(c[0] == "WATCH" for c in commands)
        await connection.send_packed_command(connection.pack_commands(commands))
        replies = [await connection.read_response() for _ in commands]
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    async def commit(self, commands: Sequence[Command]) -> list[Any]:
        """``MULTI``, ``commands``, ``EXEC``: their replies; ``Aborted`` if a watched key
        changed since ``WATCH`` (nothing was written)."""
        replies = await self.call(("MULTI",), *commands, ("EXEC",))
        self.watching = False  # EXEC ends the WATCH, run or refused
        executed = replies[-1]
        if executed is None:
            raise Aborted
        for reply in executed:
            if isinstance(reply, ResponseError):
                raise reply
        return list(executed)


@contextlib.asynccontextmanager
async def session(redis: Any, route_key: str) -> AsyncIterator[Session]:
    """A ``Session`` on the primary that holds ``route_key``'s slot (any Redis)."""
    if isinstance(redis, RedisCluster):
        # Learns the slot map on first use (a client that sent nothing yet has none),
        # and runs a refresh an earlier error asked for; at once otherwise.
        await redis.initialize()
        node = redis.get_node_from_key(route_key)
        connection = node.acquire_connection()
        release = node.release
    else:
        pool = redis.connection_pool
        connection = await pool.get_connection()
        release = pool.release
    try:
        held = Session(connection)
        yield held
        if held.watching:
            # A session that only read still holds its WATCH, which must not outlive
            # it on a pooled connection.
            await connection.send_command("UNWATCH")
            await connection.read_response()
    except BaseException as error:
        # The connection's state (a WATCH, half-read replies) is unknown: drop it.
        await connection.disconnect()
        if isinstance(redis, RedisCluster) and isinstance(error, CLUSTER_MOVED_ERRORS):
            await redis.nodes_manager.initialize()  # a failover moved the slot
        raise
    finally:
        result = release(connection)
        if result is not None:
            await result


def text(reply: bytes | str) -> str:
    """A key or member as Redis replied it (bytes, or text on a decoding client)."""
    return reply.decode() if isinstance(reply, bytes) else reply


#: What a Redis Cluster answers while a failover is under way (a primary down, a slot
#: moving to the promoted replica): transient, like a connection error.
CLUSTER_TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    ClusterError,
    AskError,
    TryAgainError,
    SlotNotCoveredError,  # no node known for a slot while the failover is under way
)
#: Errors after which a cluster client must re-learn which node holds which slot.
CLUSTER_MOVED_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    RedisConnectionError,
    *CLUSTER_TRANSIENT_ERRORS,
)
