"""Redis state store: account states, segment member sets and the change outbox.

One round trip per shard loads a batch's states; one MULTI/EXEC per shard writes them
back together with the member-set updates and the outbox entries, so a crash leaves
either all of a shard's share of a batch or none (the rest is applied again on
redelivery: applying is idempotent). ``WATCH`` on the state keys fences a worker that
lost its partitions in a rebalance: if anybody else wrote one of its accounts in
between, that shard's share is recomputed from the fresh states instead of
overwriting them. Where each fact lives, and why in shards: ``worker.adapters.redis_keys``;
the facts shared by all accounts (cut-offs, models): ``worker.adapters.redis_shared``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis

from worker.adapters.redis_keys import KeyLayout, ShardKeys
from worker.adapters.redis_outbox import clear_entries, due_entries
from worker.adapters.redis_replication import confirm_replicated
from worker.adapters.redis_shared import LayoutMismatch, SharedFacts
from worker.adapters.redis_transactions import Aborted, Commands, session, text
from worker.adapters.state_codec import decode_state, encode_state
from worker.core.clustering import ClusterSnapshot
from worker.core.events import SegmentChanged
from worker.core.features import AccountState, Globals
from worker.ports import BatchResult, Mutation

__all__ = ["LayoutMismatch", "RedisStateStore"]


class RedisStateStore(SharedFacts):
    """The worker's state in Redis, a primary or a Redis Cluster (``worker.ports.StateStore``)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str = "seg",
        cluster_families: Sequence[str] = (),
        cluster_margin: float = 0.1,
        shards: int = 1,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self.redis = redis
        #: replicas that must have a batch's write before it counts as done
        #: (``worker.adapters.redis_replication``)
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.prefix = prefix
        self.keys = KeyLayout(prefix, shards, cluster_families)
        self.cluster_keys = self.keys.cluster
        self.cluster_margin = cluster_margin
        self._snapshots: dict[str, tuple[bytes, ClusterSnapshot]] = {}
        self.thresholds_key = self.keys.thresholds
        self._last_written = 0.0

    # Key names of the single-shard layout, for tools and tests that write it directly.
    def _only(self) -> ShardKeys:
        if self.keys.sharded:
            raise ValueError("a sharded layout has no single key of this: use .keys")
        return self.keys.each[0]

    @property
    def outbox_key(self) -> str:
        return self._only().outbox

    @property
    def outbox_written_key(self) -> str:
        return self._only().outbox_written

    @property
    def due_key(self) -> str:
        return self._only().due

    @property
    def revenue_key(self) -> str:
        return self._only().revenue

    @property
    def clock_key(self) -> str:
        return self._only().clock

    @property
    def flows_key(self) -> str:
        return self._only().flows

    def state_key(self, account_id: str) -> str:
        return self.keys.shard_keys(account_id).state(account_id)

    def members_key(self, family: str, segment_id: str) -> str:
        return self._only().members(family, segment_id)

    def definitions_key(self, definitions_fingerprint: str) -> str:
        return self.keys.definitions(definitions_fingerprint)

    async def ping(self) -> bool:
        """Whether Redis answers (raises when it does not)."""
        return bool(await self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose()

    async def _on_each_shard(self, command: Callable[[Any, ShardKeys], object]) -> list[Any]:
        """``command(pipe, keys)`` queued for every shard, sent in one round trip; the
        replies in shard order."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys in self.keys.each:
                command(pipe, keys)
            return list(await pipe.execute())

    async def load(self, account_id: str) -> AccountState | None:
        raw = await self.redis.get(self.state_key(account_id))
        return None if raw is None else decode_state(account_id, raw)

    async def load_many(self, account_ids: Sequence[str]) -> dict[str, AccountState]:
        """Stored states of ``account_ids`` (missing ones are left out): one MGET per shard,
        in one round trip."""
        groups = self.keys.by_shard(account_ids)
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard, accounts in groups.items():
                keys = self.keys.each[shard]
                _mget(pipe, [keys.state(account) for account in accounts])
            replies = await pipe.execute()
        return {
            account: decode_state(account, raw)
            for accounts, raws in zip(groups.values(), replies, strict=True)
            for account, raw in zip(accounts, raws, strict=True)
            if raw
        }

    async def update_batch(
        self,
        account_ids: Iterable[str],
        mutate: Mutation,
    ) -> BatchResult:
        """Load the states of ``account_ids``, let ``mutate`` change them, write atomically.

        ``mutate`` gets the states and the global facts (ABC cut-offs) read in the same
        round trip, and must be a pure function of them: on a write conflict, which
        includes a cut-off change in between, it is called again with fresh ones. With
        several shards it is called once per shard, with that shard's accounts only, and
        the shards' transactions run concurrently; the results are merged.
        """
        groups = self.keys.by_shard(account_ids)
        if len(groups) <= 1:
            for shard, accounts in groups.items():
                return await self._update_shard(self.keys.each[shard], accounts, mutate)
            return BatchResult()
        results = await asyncio.gather(
            *(
                self._update_shard(self.keys.each[shard], accounts, mutate)
                for shard, accounts in groups.items()
            )
        )
        return BatchResult.merged(results)

    async def _update_shard(
        self, keys: ShardKeys, accounts: list[str], mutate: Mutation
    ) -> BatchResult:
        state_keys = [keys.state(account) for account in accounts]
        watched = [*state_keys, *keys.watched_globals]
        while True:
            async with session(self.redis, keys.due) as shard:
                _, raws = await shard.call(("WATCH", *watched), ("MGET", *watched))
                states = {
                    a: decode_state(a, raw)
                    for a, raw in zip(accounts, raws[: len(state_keys)], strict=True)
                }
                unsent = [cid for a in accounts for cid in states[a].unsent]
                pending: list[SegmentChanged] = []
                if unsent:
                    (found,) = await shard.call(("HMGET", keys.outbox, *unsent))
                    # still in the outbox: not yet delivered by their writer
                    pending = [SegmentChanged.model_validate_json(r) for r in found if r]
                result = mutate(states, self._globals(raws[len(state_keys) :]))
                result.resend = pending
                writes = Commands()
                self._queue_writes(writes, keys, states, result)
                try:
                    await shard.commit(writes.recorded)
                except Aborted:
                    # Another worker wrote one of these accounts (a rebalance in
                    # progress): recompute from what it wrote.
                    continue
                # On the node that ran it (``confirm_replicated``).
                await confirm_replicated(
                    shard, keys.ticket, self.wait_replicas, self.wait_timeout_ms
                )
            break
        return result

    def _queue_writes(
        self, pipe: Any, keys: ShardKeys, states: dict[str, AccountState], result: BatchResult
    ) -> None:
        if result.erased:
            erased = sorted(result.erased)
            pipe.delete(*(keys.state(account) for account in erased))
            pipe.zrem(keys.due, *erased)
            pipe.zrem(keys.revenue, *erased)
        unsent: dict[str, list[str]] = {}
        for change in result.changes:
            unsent.setdefault(change.account_id, []).append(change.change_id)
        for account in result.changed_accounts:
            states[account].unsent = unsent.get(account, [])
        if result.changed_accounts:
            pipe.mset(
                {
                    keys.state(account): encode_state(states[account])
                    for account in sorted(result.changed_accounts)
                }
            )
        due = {account: at for account, at in result.due.items() if at is not None}
        if due:
            pipe.zadd(keys.due, due)
        if undue := [account for account, at in result.due.items() if at is None]:
            pipe.zrem(keys.due, *undue)
        earning = {account: r for account, r in result.revenue.items() if r > 0}
        if earning:
            pipe.zadd(keys.revenue, earning)
        if not_earning := [account for account, r in result.revenue.items() if r <= 0]:
            pipe.zrem(keys.revenue, *not_earning)
        if result.clock:
            pipe.zadd(keys.clock, {"stream": result.clock}, gt=True)
        if result.changes:
            self._queue_changes(pipe, keys, result.changes)

    def _queue_changes(self, pipe: Any, keys: ShardKeys, changes: Sequence[SegmentChanged]) -> None:
        """Member-set updates, outbox entries and flow counts of ``changes``, grouped into
        a few commands per batch instead of four per change."""
        # Strictly increasing scores: a re-send reads the outbox back in write order (equal
        # scores would come back sorted by change_id, reversing exits and entries).
        now = max(time.time(), self._last_written + 1e-6)
        self._last_written = now + len(changes) * 1e-6
        # The last change of an account in a segment decides its membership, as if the
        # SADDs and SREMs had run one by one (an entry and an exit in one batch).
        member_of: dict[str, dict[str, bool]] = {}
        outbox: dict[str, str] = {}
        written: dict[str, float] = {}
        flows: Counter[str] = Counter()
        for index, change in enumerate(changes):
            key = keys.members(change.family, change.segment_id)
            member_of.setdefault(key, {})[change.account_id] = change.change == "entered"
            outbox[change.change_id] = change.model_dump_json()
            written[change.change_id] = now + index * 1e-6
            flows[f"{change.family}/{change.segment_id}/{change.change}"] += 1
        for key, members in member_of.items():
            if entered := [account for account, member in members.items() if member]:
                pipe.sadd(key, *entered)
            if exited := [account for account, member in members.items() if not member]:
                pipe.srem(key, *exited)
        pipe.hset(keys.outbox, mapping=outbox)
        pipe.zadd(keys.outbox_written, written)
        for flow, count in flows.items():
            pipe.hincrby(keys.flows, flow, count)

    async def clear_outbox(self, changes: Sequence[SegmentChanged]) -> None:
        """Forget changes that Kafka has acknowledged (each from its account's shard)."""
        by_outbox: dict[tuple[str, str], list[str]] = {}
        for change in changes:
            keys = self.keys.shard_keys(change.account_id)
            by_outbox.setdefault((keys.outbox_written, keys.outbox), []).append(change.change_id)
        await clear_entries(self.redis, by_outbox)

    async def stale_outbox(
        self, older_than_seconds: float, limit: int = 1000
    ) -> list[SegmentChanged]:
        """Outbox entries written long ago and never cleared: their sender died. In the
        order they were written (across shards by the time written)."""
        outboxes = [(keys.outbox_written, keys.outbox) for keys in self.keys.each]
        raws = await due_entries(self.redis, outboxes, time.time() - older_than_seconds, limit)
        return [SegmentChanged.model_validate_json(raw) for raw in raws]

    async def stream_time(self) -> float | None:
        """The largest event time any worker has applied (epoch seconds)."""
        replies = await self._on_each_shard(lambda pipe, keys: pipe.zscore(keys.clock, "stream"))
        times = [t for t in replies if t is not None]
        return max(times) if times else None

    async def due_accounts(self, until: float, limit: int) -> list[str]:
        """Up to ``limit`` accounts due by ``until``, the most overdue first."""
        replies = await self._on_each_shard(
            lambda pipe, keys: pipe.zrangebyscore(
                keys.due, "-inf", until, start=0, num=limit, withscores=True
            )
        )
        due = heapq.merge(*replies, key=lambda pair: pair[1])
        return [text(account) for account, _ in itertools.islice(due, limit)]

    async def revenues(self) -> dict[str, float]:
        """Trailing-year revenue of every account with revenue (for the ABC cut-offs)."""
        replies = await self._on_each_shard(
            lambda pipe, keys: pipe.zrange(keys.revenue, 0, -1, withscores=True)
        )
        return {text(account): score for pairs in replies for account, score in pairs}

    async def accounts_with_revenue_between(self, low: float, high: float) -> list[str]:
        replies = await self._on_each_shard(
            lambda pipe, keys: pipe.zrangebyscore(keys.revenue, low, high)
        )
        return [text(account) for raw in replies for account in raw]

    async def load_globals(self) -> Globals:
        masters = [self.keys.thresholds, *self.keys.cluster.values()]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in masters:
                pipe.get(key)
            return self._globals(await pipe.execute())

    def _globals(self, raws: Sequence[bytes | None]) -> Globals:
        """Cut-offs and cluster models from their stored JSON (``raws`` in key order)."""
        thresholds, *models = raws
        return Globals.from_thresholds(
            None if thresholds is None else json.loads(thresholds),
            {
                family: None if raw is None else self._snapshot(family, raw)
                for family, raw in zip(self.cluster_keys, models, strict=True)
            },
            self.cluster_margin,
        )

    def _snapshot(self, family: str, raw: bytes) -> ClusterSnapshot:
        # Parsed once per published version, not once per batch.
        cached = self._snapshots.get(family)
        if cached is None or cached[0] != raw:
            cached = self._snapshots[family] = (raw, ClusterSnapshot.from_json(raw))
        return cached[1]

    async def take_flows(self) -> dict[tuple[str, str, str], int]:
        """Entries and exits counted since the last call, per (family, segment, change)."""
        totals: Counter[str] = Counter()
        for keys in self.keys.each:
            async with session(self.redis, keys.flows) as held:
                flat, _ = await held.commit([("HGETALL", keys.flows), ("DEL", keys.flows)])
            # HGETALL's raw reply: a map (RESP3) or field, count, field, count, ... (RESP2)
            pairs = (
                flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
            )
            totals.update({text(k): int(v) for k, v in pairs})
        return {tuple(k.split("/")): v for k, v in totals.items()}  # type: ignore[misc]

    async def account_ids(self, batch: int = 1000) -> AsyncIterator[list[str]]:
        """Every account with stored state, in batches (SCAN: no blocking of Redis; on a
        cluster, every primary)."""
        chunk: list[str] = []
        async for key in self.redis.scan_iter(match=self.keys.state_pattern, count=batch):
            chunk.append(self.keys.account_of(text(key)))
            if len(chunk) >= batch:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    async def members(self, family: str, segment_id: str) -> set[str]:
        replies = await self._on_each_shard(
            lambda pipe, keys: pipe.smembers(keys.members(family, segment_id))
        )
        return {text(member) for raw in replies for member in raw}

    async def members_page(
        self, family: str, segment_id: str, cursor: int, count: int
    ) -> tuple[int, list[str]]:
        """One page of a segment's members (SSCAN) and the cursor of the next; 0: done.

        The cursor spans the shards: ``shard + shards * (SSCAN cursor within it)``.
        """
        shards = self.keys.shards
        shard, inner = cursor % shards, cursor // shards
        while True:
            key = self.keys.each[shard].members(family, segment_id)
            reply, page = await self.redis.sscan(key, cursor=inner, count=count)
            members = sorted(text(m) for m in page)
            if inner := int(reply):
                return shard + shards * inner, members
            shard += 1
            if shard == shards:
                return 0, members
            if members:
                return shard, members  # the next page starts at the next shard
            # this shard had nothing more: on to the next one

    async def segment_sizes(self, segments: Sequence[tuple[str, str]]) -> list[int]:
        """The number of members of each ``(family, segment)``, one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for family, segment in segments:
                for keys in self.keys.each:
                    pipe.scard(keys.members(family, segment))
            sizes = [int(size) for size in await pipe.execute()]
        shards = self.keys.shards
        return [sum(sizes[i : i + shards]) for i in range(0, len(sizes), shards)]


# The cluster client's pipelines refuse MGET by name (its keys may span slots); ours never
# do (one shard, one hash tag), so it goes as a plain command, which the cluster client
# routes by its first key like any other.
def _mget(pipe: Any, keys: list[str]) -> Any:
    return pipe.execute_command("MGET", *keys)
