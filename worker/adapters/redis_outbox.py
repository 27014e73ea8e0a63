"""The outboxes of the state and trigger stores, in every shard: read due entries, clear.

An outbox of a shard is a HASH id -> JSON and a ZSET id -> time (written, or due); both
stores keep one per shard (``worker.adapters.redis_keys``). Reading merges the shards
by that time, so entries come back in the order they were written (or fall due); an
index entry whose JSON has gone (cleared in between) is an orphan and dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from worker.adapters.redis_transactions import session

#: (ZSET of ids by time, HASH of id -> JSON) of one shard's outbox
Outbox = tuple[str, str]


async def due_entries(
    redis: Any, outboxes: Iterable[Outbox], until: float, limit: int
) -> list[bytes]:
    """The JSON of up to ``limit`` entries whose time is at most ``until``, oldest first."""
    due: list[tuple[float, bytes]] = []
    for index, entries in outboxes:
        pairs = await redis.zrangebyscore(index, "-inf", until, start=0, num=limit, withscores=True)
        if not pairs:
            continue
        ids = [entry_id for entry_id, _ in pairs]
        raws = await redis.hmget(entries, ids)
        due += [
            (score, raw) for (_, score), raw in zip(pairs, raws, strict=True) if raw is not None
        ]
        orphans = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
        if orphans:
            await redis.zrem(index, *orphans)
    due.sort(key=lambda entry: entry[0])
    return [raw for _, raw in due[:limit]]


async def clear_entries(redis: Any, by_outbox: Mapping[Outbox, Sequence[str]]) -> None:
    """Forget these ids, each outbox in one transaction of its own shard."""
    for (index, entries), ids in by_outbox.items():
        if ids:
            async with session(redis, entries) as shard:
                await shard.commit([("HDEL", entries, *ids), ("ZREM", index, *ids)])
