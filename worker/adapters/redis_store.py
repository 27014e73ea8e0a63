"""Redis state store: account states, segment member sets and the change outbox.

One round trip loads a batch's states; one MULTI/EXEC writes them back together
with the member-set updates and the outbox entries, so a crash leaves either all of
a batch's effects or none. ``WATCH`` on the state keys fences a worker that lost
its partitions in a rebalance: if anybody else wrote one of its accounts in
between, the batch is recomputed from the fresh states instead of overwriting them.

Keys (``seg`` is the configurable prefix; braces are Redis Cluster hash tags)::

    seg:acct:{<account_id>}            account state (features + memberships): JSON,
                                       zstd-compressed with a dictionary (``encode_state``)
    seg:members:<family>:<segment>     SET of account ids
    seg:definitions:<fingerprint>      each family's fingerprint in that definitions version
    seg:outbox                         HASH change_id -> SegmentChanged JSON
    seg:outbox:written                 ZSET change_id -> time written (for re-sends)
    seg:due                            ZSET account -> when a time sweep must look again
    seg:value:revenue                  ZSET account -> trailing-year revenue (> 0 only)
    seg:value:thresholds               JSON of the current ABC cut-offs
    seg:clock                          ZSET "stream" -> largest event time seen (ZADD GT)
    seg:cluster:<family>               JSON of the latest cluster model (ClusterSnapshot)
    seg:profiles                       JSON of the last computed segment profiles
    seg:flows                          HASH family/segment/change -> count since last read
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from worker.adapters.state_codec import decode_state, encode_state
from worker.core.clustering import ClusterSnapshot
from worker.core.events import SegmentChanged
from worker.core.features import AccountState, Globals
from worker.ports import BatchResult, Mutation


class RedisStateStore:
    """The worker's state in one Redis primary (``worker.ports.StateStore``)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str = "seg",
        cluster_families: Sequence[str] = (),
        cluster_margin: float = 0.1,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.cluster_keys = {family: f"{prefix}:cluster:{family}" for family in cluster_families}
        self.cluster_margin = cluster_margin
        self._snapshots: dict[str, tuple[bytes, ClusterSnapshot]] = {}
        self.outbox_key = f"{prefix}:outbox"
        self.outbox_written_key = f"{prefix}:outbox:written"
        self.due_key = f"{prefix}:due"
        self.revenue_key = f"{prefix}:value:revenue"
        self.thresholds_key = f"{prefix}:value:thresholds"
        self.clock_key = f"{prefix}:clock"
        self.profiles_key = f"{prefix}:profiles"
        self.flows_key = f"{prefix}:flows"
        self.account_key_pattern = f"{prefix}:acct:*"
        self._last_written = 0.0

    def state_key(self, account_id: str) -> str:
        return f"{self.prefix}:acct:{{{account_id}}}"

    def members_key(self, family: str, segment_id: str) -> str:
        return f"{self.prefix}:members:{family}:{segment_id}"

    async def ping(self) -> bool:
        """Whether Redis answers (raises when it does not)."""
        return bool(await self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose()

    async def load(self, account_id: str) -> AccountState | None:
        raw = await self.redis.get(self.state_key(account_id))
        return None if raw is None else decode_state(account_id, raw)

    async def load_many(self, account_ids: Sequence[str]) -> dict[str, AccountState]:
        """Stored states of ``account_ids`` (missing ones are left out), one round trip."""
        raws = await self.redis.mget([self.state_key(a) for a in account_ids])
        return {a: decode_state(a, raw) for a, raw in zip(account_ids, raws, strict=True) if raw}

    async def update_batch(
        self,
        account_ids: Iterable[str],
        mutate: Mutation,
    ) -> BatchResult:
        """Load the states of ``account_ids``, let ``mutate`` change them, write atomically.

        ``mutate`` gets the states and the global facts (ABC cut-offs) read in the same
        round trip, and must be a pure function of them: on a write conflict, which
        includes a cut-off change in between, it is called again with fresh ones.
        """
        accounts = sorted(set(account_ids))
        keys = [self.state_key(account) for account in accounts]
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    shared = [self.thresholds_key, *self.cluster_keys.values()]
                    await pipe.watch(*keys, *shared)
                    raws = await pipe.mget([*keys, *shared])
                    states = {
                        a: decode_state(a, raw)
                        for a, raw in zip(accounts, raws[: len(keys)], strict=True)
                    }
                    unsent = [cid for a in accounts for cid in states[a].unsent]
                    pending = await self._still_in_outbox(pipe, unsent) if unsent else []
                    result = mutate(states, self._globals(raws[len(keys) :]))
                    result.resend = pending
                    pipe.multi()
                    self._queue_writes(pipe, states, result)
                    await pipe.execute()
                    return result
                except WatchError:
                    # Another worker wrote one of these accounts (a rebalance in
                    # progress): recompute from what it wrote.
                    continue

    async def _still_in_outbox(self, pipe: Any, change_ids: list[str]) -> list[SegmentChanged]:
        """Those of ``change_ids`` still in the outbox (not yet delivered), in that order."""
        raws = await pipe.hmget(self.outbox_key, change_ids)
        return [SegmentChanged.model_validate_json(raw) for raw in raws if raw is not None]

    def _queue_writes(
        self, pipe: Any, states: dict[str, AccountState], result: BatchResult
    ) -> None:
        if result.erased:
            erased = sorted(result.erased)
            pipe.delete(*(self.state_key(account) for account in erased))
            pipe.zrem(self.due_key, *erased)
            pipe.zrem(self.revenue_key, *erased)
        unsent: dict[str, list[str]] = {}
        for change in result.changes:
            unsent.setdefault(change.account_id, []).append(change.change_id)
        for account in result.changed_accounts:
            states[account].unsent = unsent.get(account, [])
        if result.changed_accounts:
            pipe.mset(
                {
                    self.state_key(account): encode_state(states[account])
                    for account in sorted(result.changed_accounts)
                }
            )
        due = {account: at for account, at in result.due.items() if at is not None}
        if due:
            pipe.zadd(self.due_key, due)
        if undue := [account for account, at in result.due.items() if at is None]:
            pipe.zrem(self.due_key, *undue)
        earning = {account: r for account, r in result.revenue.items() if r > 0}
        if earning:
            pipe.zadd(self.revenue_key, earning)
        if not_earning := [account for account, r in result.revenue.items() if r <= 0]:
            pipe.zrem(self.revenue_key, *not_earning)
        if result.clock:
            pipe.zadd(self.clock_key, {"stream": result.clock}, gt=True)
        if result.changes:
            self._queue_changes(pipe, result.changes)

    def _queue_changes(self, pipe: Any, changes: Sequence[SegmentChanged]) -> None:
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
            key = self.members_key(change.family, change.segment_id)
            member_of.setdefault(key, {})[change.account_id] = change.change == "entered"
            outbox[change.change_id] = change.model_dump_json()
            written[change.change_id] = now + index * 1e-6
            flows[f"{change.family}/{change.segment_id}/{change.change}"] += 1
        for key, members in member_of.items():
            if entered := [account for account, member in members.items() if member]:
                pipe.sadd(key, *entered)
            if exited := [account for account, member in members.items() if not member]:
                pipe.srem(key, *exited)
        pipe.hset(self.outbox_key, mapping=outbox)
        pipe.zadd(self.outbox_written_key, written)
        for flow, count in flows.items():
            pipe.hincrby(self.flows_key, flow, count)

    async def clear_outbox(self, change_ids: Sequence[str]) -> None:
        """Forget changes that Kafka has acknowledged."""
        if not change_ids:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.outbox_key, *change_ids)
            pipe.zrem(self.outbox_written_key, *change_ids)
            await pipe.execute()

    async def stale_outbox(
        self, older_than_seconds: float, limit: int = 1000
    ) -> list[SegmentChanged]:
        """Outbox entries written long ago and never cleared: their sender died."""
        cutoff = time.time() - older_than_seconds
        ids = await self.redis.zrangebyscore(
            self.outbox_written_key, "-inf", cutoff, start=0, num=limit
        )
        # ZRANGEBYSCORE gives them in the order they were written: resent in that order.
        if not ids:
            return []
        raws = await self.redis.hmget(self.outbox_key, ids)
        stale = [SegmentChanged.model_validate_json(raw) for raw in raws if raw is not None]
        orphans = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
        if orphans:
            await self.redis.zrem(self.outbox_written_key, *orphans)
        return stale

    async def stream_time(self) -> float | None:
        """The largest event time any worker has applied (epoch seconds)."""
        return await self.redis.zscore(self.clock_key, "stream")

    async def due_accounts(self, until: float, limit: int) -> list[str]:
        raw = await self.redis.zrangebyscore(self.due_key, "-inf", until, start=0, num=limit)
        return [_text(account) for account in raw]

    async def revenues(self) -> dict[str, float]:
        """Trailing-year revenue of every account with revenue (for the ABC cut-offs)."""
        pairs = await self.redis.zrange(self.revenue_key, 0, -1, withscores=True)
        return {_text(account): score for account, score in pairs}

    async def accounts_with_revenue_between(self, low: float, high: float) -> list[str]:
        raw = await self.redis.zrangebyscore(self.revenue_key, low, high)
        return [_text(account) for account in raw]

    async def load_globals(self) -> Globals:
        return self._globals(
            await self.redis.mget([self.thresholds_key, *self.cluster_keys.values()])
        )

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
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.flows_key)
            pipe.delete(self.flows_key)
            counts, _ = await pipe.execute()
        return {tuple(_text(k).split("/")): int(v) for k, v in counts.items()}  # type: ignore[misc]

    async def load_profiles(self) -> dict[str, Any]:
        """The last computed segment profiles, ``"family/segment"`` -> profile."""
        raw = await self.redis.get(self.profiles_key)
        return {} if raw is None else json.loads(raw)

    async def save_profiles(self, profiles: dict[str, Any]) -> None:
        await self.redis.set(self.profiles_key, json.dumps(profiles))

    async def load_snapshot(self, family: str) -> ClusterSnapshot | None:
        raw = await self.redis.get(self.cluster_keys[family])
        return None if raw is None else ClusterSnapshot.from_json(raw)

    async def publish_snapshot(self, family: str, snapshot: ClusterSnapshot) -> bool:
        """Store ``snapshot`` if it is newer than the stored one (a deposed owner loses)."""
        key = self.cluster_keys[family]
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                raw = await pipe.get(key)
                if raw is not None and ClusterSnapshot.from_json(raw).version >= snapshot.version:
                    return False
                pipe.multi()
                pipe.set(key, snapshot.to_json())
                await pipe.execute()
                return True
            except WatchError:
                return False

    def definitions_key(self, definitions_fingerprint: str) -> str:
        return f"{self.prefix}:definitions:{definitions_fingerprint}"

    async def save_family_fingerprints(
        self, definitions_fingerprint: str, families: Mapping[str, str]
    ) -> None:
        """What each family of a definitions version was (``worker.core.impact``); kept for good,
        a few hundred bytes per version."""
        await self.redis.set(self.definitions_key(definitions_fingerprint), json.dumps(families))

    async def load_family_fingerprints(self) -> dict[str, dict[str, str]]:
        """Every definitions version's family fingerprints, by definitions fingerprint."""
        prefix = self.definitions_key("")
        keys = [key async for key in self.redis.scan_iter(match=f"{prefix}*", count=100)]
        raws = await self.redis.mget(keys) if keys else []
        return {
            _text(key)[len(prefix) :]: json.loads(raw)
            for key, raw in zip(keys, raws, strict=True)
            if raw is not None
        }

    async def load_thresholds(self) -> dict[str, Any] | None:
        raw = await self.redis.get(self.thresholds_key)
        return None if raw is None else json.loads(raw)

    async def replace_thresholds(
        self, expected: dict[str, Any] | None, new: dict[str, Any]
    ) -> bool:
        """Store ``new`` cut-offs if the stored ones are still ``expected``.

        Exactly one of several workers that computed the same new cut-offs wins,
        and only the winner re-evaluates the affected accounts.
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(self.thresholds_key)
                raw = await pipe.get(self.thresholds_key)
                if (None if raw is None else json.loads(raw)) != expected:
                    return False
                pipe.multi()
                pipe.set(self.thresholds_key, json.dumps(new))
                await pipe.execute()
                return True
            except WatchError:
                return False

    async def account_ids(self, batch: int = 1000) -> AsyncIterator[list[str]]:
        """Every account with stored state, in batches (SCAN: no blocking of Redis)."""
        prefix = len(self.account_key_pattern) - 1
        chunk: list[str] = []
        async for key in self.redis.scan_iter(match=self.account_key_pattern, count=batch):
            chunk.append(_text(key)[prefix:].strip("{}"))
            if len(chunk) >= batch:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    async def members(self, family: str, segment_id: str) -> set[str]:
        raw = await self.redis.smembers(self.members_key(family, segment_id))
        return {_text(m) for m in raw}

    async def members_page(
        self, family: str, segment_id: str, cursor: int, count: int
    ) -> tuple[int, list[str]]:
        """One page of a segment's members (SSCAN) and the cursor of the next; 0: done."""
        next_cursor, page = await self.redis.sscan(
            self.members_key(family, segment_id), cursor=cursor, count=count
        )
        return int(next_cursor), sorted(_text(m) for m in page)

    async def segment_sizes(self, segments: Sequence[tuple[str, str]]) -> list[int]:
        """The number of members of each ``(family, segment)``, one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for family, segment in segments:
                pipe.scard(self.members_key(family, segment))
            return [int(size) for size in await pipe.execute()]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
