"""The facts a deployment shares, outside the shards: layout, cut-offs, models, profiles.

Each lives once (``worker.adapters.redis_keys``). The ABC cut-offs and the cluster
models are also what every batch reads under ``WATCH``, so each shard holds a copy:
the master is compared-and-set, then copied into the shards, and the copies are
waited for like a batch's write (``worker.adapters.redis_replication``), so that a
primary failing over right after a copy cannot leave a shard on the previous one.

New cut-offs move the tier of the accounts whose revenue lies between the old and the
new ones, and those accounts are then re-evaluated: a pass that can take a minute
behind a backlog, and that a killed worker or a failover can cut short. Where it
stands is stored, so that it resumes: ``thresholds_applied`` holds the cut-offs the
stored tiers agree with. Storing new cut-offs sets it to the previous ones in the same
transaction, unless an unfinished pass already did; the pass ends by advancing it to
the cut-offs it applied. While it differs from the stored cut-offs a pass is due
(``thresholds_to_apply``). Absent, the tiers agree with the stored cut-offs: so it is
after a pass, and for a deployment stored before the key existed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from redis.exceptions import WatchError

from worker.adapters.redis_keys import KeyLayout
from worker.adapters.redis_replication import wait_replicated
from worker.adapters.redis_transactions import text
from worker.core.clustering import ClusterSnapshot


class LayoutMismatch(RuntimeError):
    """The Redis holds state written with another shard count (or layout)."""


class SharedFacts:
    """The shared facts of ``worker.adapters.redis_store.RedisStateStore`` (a mixin: the
    store provides the client, the key layout and the replica wait)."""

    redis: Any
    prefix: str
    keys: KeyLayout
    wait_replicas: int
    wait_timeout_ms: int

    async def prepare(self) -> None:
        """Check that the stored keys use this layout, record it if new, and bring every
        shard's copies of the shared facts up to date (a writer may have died between
        storing a fact and copying it)."""
        stored = await self.redis.get(self.keys.layout)
        if stored is None:
            legacy = KeyLayout(self.prefix).each[0]
            if self.keys.sharded and await self.redis.exists(legacy.clock, legacy.due):
                raise LayoutMismatch(
                    f"Redis holds state under '{self.prefix}' in the single-shard layout; "
                    f"this worker is configured for {self.keys.shards} shards"
                )
            await self.redis.set(self.keys.layout, self.keys.shards, nx=True)
            stored = await self.redis.get(self.keys.layout)
        if int(stored) != self.keys.shards:
            raise LayoutMismatch(
                f"Redis holds state under '{self.prefix}' written with {int(stored)} shards; "
                f"this worker is configured for {self.keys.shards} (SEGWORKER_REDIS_SHARDS)"
            )
        for master in [self.keys.thresholds, *self.keys.cluster.values()]:
            await self._copy_to_shards(master)

    async def _copy_to_shards(self, master: str) -> None:
        """Copy the fact at ``master`` into every shard and wait for the replicas. The copy
        is repeated until every copy holds the master's value and the master did not
        change meanwhile, so of two racing writers the later value is the one left."""
        copies = self.keys.copies(master)
        if not copies:
            return
        value = await self.redis.get(master)
        while value is not None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in copies:
                    pipe.set(key, value)
                await pipe.execute()
            await self._wait_replicated(shard.ticket for shard in self.keys.each)
            # Read back: a copy on a primary that failed before replicating it is gone
            # although waited for (the wait may already have reached the promoted
            # replica, which has no replica to wait for).
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(master)
                for key in copies:
                    pipe.get(key)
                again, *copied = await pipe.execute()
            if again == value and all(copy == value for copy in copied):
                return
            value = again

    async def _wait_replicated(self, tickets: Iterable[str]) -> None:
        """Wait until the replicas have this client's writes to the primaries of the
        ``tickets``' slots (``worker.adapters.redis_replication``)."""
        if self.wait_replicas > 0:
            await asyncio.gather(
                *(
                    wait_replicated(self.redis, ticket, self.wait_replicas, self.wait_timeout_ms)
                    for ticket in tickets
                )
            )

    async def _compare_and_set(
        self,
        key: str,
        accepts: Callable[[bytes | None], bool],
        value: str,
        *,
        also: Mapping[str, str] | None = None,
    ) -> bool:
        """Set ``key`` to ``value`` if ``accepts`` its stored value (``None``: absent), and
        the keys in ``also`` (same slot) where they are absent, in one transaction;
        whether it did. Waited for on the replicas."""
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                if not accepts(await pipe.get(key)):
                    return False
                pipe.multi()
                pipe.set(key, value)
                for other, initial in (also or {}).items():
                    pipe.set(other, initial, nx=True)
                await pipe.execute()
            except WatchError:
                return False
        await self._wait_replicated([self.keys.ticket_of(key)])
        return True

    # ------------------------------------------------------------------ ABC cut-offs

    async def load_thresholds(self) -> dict[str, Any] | None:
        raw = await self.redis.get(self.keys.thresholds)
        return None if raw is None else json.loads(raw)

    async def replace_thresholds(
        self, expected: dict[str, Any] | None, new: dict[str, Any]
    ) -> bool:
        """Store ``new`` cut-offs if the stored ones are still ``expected``: of several
        workers that computed the same new cut-offs, one wins. The accounts they move
        are left to a pass (``thresholds_to_apply``), which starts from ``expected``
        unless an unfinished one already waits."""
        return await self._compare_and_set(
            self.keys.thresholds,
            _json_is(expected),
            json.dumps(new),
            also={self.keys.thresholds_applied: json.dumps(expected)},
        )

    async def thresholds_to_apply(self) -> tuple[dict[str, Any] | None, dict[str, Any]] | None:
        """``(applied, current)`` while the stored tiers lag the stored cut-offs:
        ``applied`` are the cut-offs they agree with (``None``: there were none),
        ``current`` the stored ones. ``None`` when no pass is due."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.thresholds_applied)
            pipe.get(self.keys.thresholds)
            applied, current = await pipe.execute()
        if applied is None or current is None or json.loads(applied) == json.loads(current):
            return None
        return json.loads(applied), json.loads(current)

    async def copy_thresholds(self) -> None:
        """Bring every shard's copy of the cut-offs to the stored ones, on the replicas
        too: before a pass, whose batches read the copies."""
        await self._copy_to_shards(self.keys.thresholds)

    async def record_thresholds_applied(
        self, applied: dict[str, Any] | None, current: dict[str, Any]
    ) -> bool:
        """Record that the stored tiers agree with ``current``, if the record still says
        ``applied`` (a pass that another one overtook records nothing)."""
        return await self._compare_and_set(
            self.keys.thresholds_applied, _json_is(applied), json.dumps(current)
        )

    # ------------------------------------------------------------------ cluster models

    async def load_snapshot(self, family: str) -> ClusterSnapshot | None:
        raw = await self.redis.get(self.keys.cluster[family])
        return None if raw is None else ClusterSnapshot.from_json(raw)

    async def publish_snapshot(self, family: str, snapshot: ClusterSnapshot) -> bool:
        """Store ``snapshot`` if it is newer than the stored one (a deposed owner loses)."""
        key = self.keys.cluster[family]

        def older(raw: bytes | None) -> bool:
            return raw is None or ClusterSnapshot.from_json(raw).version < snapshot.version

        if not await self._compare_and_set(key, older, snapshot.to_json()):
            return False
        await self._copy_to_shards(key)
        return True

    # ------------------------------------------------------------------ profiles, versions

    async def load_profiles(self) -> dict[str, Any]:
        """The last computed segment profiles, ``"family/segment"`` -> profile."""
        raw = await self.redis.get(self.keys.profiles)
        return {} if raw is None else json.loads(raw)

    async def save_profiles(self, profiles: dict[str, Any]) -> None:
        await self.redis.set(self.keys.profiles, json.dumps(profiles))

    async def save_family_fingerprints(
        self, definitions_fingerprint: str, families: Mapping[str, str]
    ) -> None:
        """What each family of a definitions version was (``worker.core.impact``); kept for good,
        a few hundred bytes per version."""
        await self.redis.set(self.keys.definitions(definitions_fingerprint), json.dumps(families))

    async def load_family_fingerprints(self) -> dict[str, dict[str, str]]:
        """Every definitions version's family fingerprints, by definitions fingerprint."""
        prefix = self.keys.definitions("")
        keys = [text(key) async for key in self.redis.scan_iter(match=f"{prefix}*", count=100)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            raws = await pipe.execute() if keys else []
        return {
            key[len(prefix) :]: json.loads(raw)
            for key, raw in zip(keys, raws, strict=True)
            if raw is not None
        }


def _json_is(expected: Any) -> Callable[[bytes | None], bool]:
    """Whether a stored JSON value (absent: ``None``) is ``expected``."""
    return lambda raw: (None if raw is None else json.loads(raw)) == expected
