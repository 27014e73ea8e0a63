"""Where the worker's state lives in Redis: the key of every fact, by shard.

A batch writes its accounts' states, their member-set entries, due times, revenues,
outbox entries and flow counts in one ``MULTI/EXEC``. Redis Cluster runs a transaction
only over keys of one hash slot, so the accounts are spread over ``shards`` groups
(``crc32(account id) % shards``) and every per-account fact lives in its account's
shard, under the shard's hash tag: a batch becomes one transaction per shard it
touches, and the shards spread over the cluster's primaries. The shard count, not
the input partition count, bounds how many primaries share the writes.

What the batches read under ``WATCH`` besides the states (the ABC cut-offs, the
cluster models) is copied into every shard, so each shard's transaction watches its own
copy; the copy outside the shards is the one that is compared-and-set.

With one shard (the default, a single primary or Sentinel) the keys are exactly the
layout used before shards existed, so a stored deployment reads on::

    seg:acct:{<account_id>}          account state (``worker.adapters.state_codec``)
    seg:members:<family>:<segment>   SET of account ids
    seg:outbox                       HASH change_id -> SegmentChanged JSON
    seg:outbox:written               ZSET change_id -> time written (for re-sends)
    seg:due                          ZSET account -> when a time sweep must look again
    seg:value:revenue                ZSET account -> trailing-year revenue (> 0 only)
    seg:clock                        ZSET "stream" -> largest event time seen (ZADD GT)
    seg:flows                        HASH family/segment/change -> count since last read
    seg:value:thresholds             JSON of the current ABC cut-offs
    seg:applied:{seg:value:thresholds}  JSON of the cut-offs the stored tiers were last
                                     brought in line with (absent: the current ones)
    seg:cluster:<family>             JSON of the latest cluster model (ClusterSnapshot)
    seg:profiles                     JSON of the last computed segment profiles
    seg:definitions:<fingerprint>    each family's fingerprint in that definitions version
    seg:layout                       the shard count the keys were written with
    seg:trig:{<account_id>}          the trigger router's state of the account
    seg:trig:outbox                  HASH trigger_id -> CampaignTriggered JSON, not yet sent
    seg:trig:outbox:due              ZSET trigger_id -> when it may be sent
    seg:trig:rate:<destination>      a webhook rate limiter (one key, outside the shards)
    seg:trig:daily                   HASH of decisions per day (outside the shards)

With ``n`` shards, shard ``k`` has the same per-shard keys under ``seg:{seg/k}:...``
(``{seg/k}`` is the hash tag; ``seg:{seg/3}:acct:ACME``, ``seg:{seg/3}:due``,
``seg:{seg/3}:trig:acct:ACME``, ``seg:{seg/3}:trig:outbox``, ...) plus its copies
``seg:{seg/k}:value:thresholds`` and ``seg:{seg/k}:cluster:<family>``.

>>> layout = KeyLayout("seg", shards=1)
>>> layout.shard_keys("ACME").state("ACME"), layout.shard_keys("ACME").due
('seg:acct:{ACME}', 'seg:due')
>>> sharded = KeyLayout("seg", shards=16)
>>> keys = sharded.shard_keys("ACME")
>>> keys.state("ACME"), keys.due, keys.thresholds
('seg:{seg/10}:acct:ACME', 'seg:{seg/10}:due', 'seg:{seg/10}:value:thresholds')
>>> sharded.shard_of("ACME")
10
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: Redis Cluster's hash slots: more shards than this could not each have their own slot.
MAX_SHARDS = 16384


@dataclass(frozen=True)
class ShardKeys:
    """The keys of one shard: all that one transaction of a batch reads and writes."""

    prefix: str
    #: ``""`` in the single-shard layout, else ``"{<prefix>/<index>}"``
    tag: str
    cluster_families: tuple[str, ...] = ()
    base: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", f"{self.prefix}:{self.tag}" if self.tag else self.prefix)

    def state(self, account_id: str) -> str:
        if self.tag:
            return f"{self.base}:acct:{account_id}"
        return f"{self.prefix}:acct:{{{account_id}}}"

    def members(self, family: str, segment_id: str) -> str:
        return f"{self.base}:members:{family}:{segment_id}"

    @property
    def outbox(self) -> str:
        return f"{self.base}:outbox"

    @property
    def outbox_written(self) -> str:
        return f"{self.base}:outbox:written"

    @property
    def due(self) -> str:
        return f"{self.base}:due"

    @property
    def revenue(self) -> str:
        return f"{self.base}:value:revenue"

    @property
    def clock(self) -> str:
        return f"{self.base}:clock"

    @property
    def flows(self) -> str:
        return f"{self.base}:flows"

    @property
    def thresholds(self) -> str:
        """The cut-offs a batch of this shard reads and watches (single shard: the only copy)."""
        return f"{self.base}:value:thresholds"

    def cluster(self, family: str) -> str:
        """The cluster model a batch of this shard reads and watches."""
        return f"{self.base}:cluster:{family}"

    def trigger_state(self, account_id: str) -> str:
        """The trigger router's state of an account (``worker.adapters.redis_triggers``)."""
        if self.tag:
            return f"{self.base}:trig:acct:{account_id}"
        return f"{self.prefix}:trig:{{{account_id}}}"

    @property
    def trigger_outbox(self) -> str:
        return f"{self.base}:trig:outbox"

    @property
    def trigger_due(self) -> str:
        return f"{self.base}:trig:outbox:due"

    @property
    def ticket(self) -> str:
        """Counter written after a transaction to wait for its replication (``WAIT``)."""
        return f"{self.base}:replicated"

    @property
    def watched_globals(self) -> list[str]:
        """The shared facts a batch reads with its states, in ``Globals`` order."""
        return [self.thresholds, *(self.cluster(f) for f in self.cluster_families)]


class KeyLayout:
    """The keys of a deployment (``prefix``) whose accounts are spread over ``shards``."""

    def __init__(self, prefix: str = "seg", shards: int = 1, cluster_families: Sequence[str] = ()):
        if not 1 <= shards <= MAX_SHARDS:
            raise ValueError(f"shards must be between 1 and {MAX_SHARDS}, not {shards}")
        self.prefix = prefix
        self.shards = shards
        families = tuple(cluster_families)
        if shards == 1:
            self.each = [ShardKeys(prefix, "", families)]
        else:
            self.each = [ShardKeys(prefix, f"{{{prefix}/{k}}}", families) for k in range(shards)]
        #: the copies outside the shards: compared-and-set, then copied into each shard
        self.thresholds = f"{prefix}:value:thresholds"
        #: the cut-offs the stored accounts' tiers were last re-evaluated to, while newer
        #: ones wait for that (``worker.adapters.redis_shared``); in the slot of
        #: ``thresholds``, so that both change in one transaction
        self.thresholds_applied = f"{prefix}:applied:{{{self.thresholds}}}"
        self.cluster = {family: f"{prefix}:cluster:{family}" for family in families}
        self.profiles = f"{prefix}:profiles"
        self.layout = f"{prefix}:layout"

    @property
    def sharded(self) -> bool:
        return self.shards > 1

    def shard_of(self, account_id: str) -> int:
        """The shard of an account: CRC-32 of its id, so every worker and tool agrees."""
        if self.shards == 1:
            return 0
        return zlib.crc32(account_id.encode("utf-8", "surrogatepass")) % self.shards

    def shard_keys(self, account_id: str) -> ShardKeys:
        return self.each[self.shard_of(account_id)]

    def by_shard(self, account_ids: Iterable[str]) -> dict[int, list[str]]:
        """``account_ids`` grouped by shard (each group sorted, duplicates dropped)."""
        groups: dict[int, set[str]] = {}
        for account in account_ids:
            groups.setdefault(self.shard_of(account), set()).add(account)
        return {shard: sorted(accounts) for shard, accounts in sorted(groups.items())}

    @property
    def state_pattern(self) -> str:
        """``SCAN MATCH`` pattern of the state keys of every shard."""
        if self.sharded:
            return f"{self.prefix}:{{{self.prefix}/*}}:acct:*"
        return f"{self.prefix}:acct:*"

    def account_of(self, key: str) -> str:
        """The account id in a state key (as ``state_pattern`` finds them).

        >>> KeyLayout("seg").account_of("seg:acct:{ACME}")
        'ACME'
        >>> KeyLayout("seg", 4).account_of("seg:{seg/2}:acct:A:B")
        'A:B'
        """
        if not self.sharded:
            return key[len(self.prefix) + len(":acct:{") : -1]
        return key[key.index("}:acct:", len(self.prefix)) + len("}:acct:") :]

    def copies(self, master: str) -> list[str]:
        """Every shard's copy of a shared fact stored at ``master`` (the cut-offs or a
        cluster model); none with one shard, where the batches read the master itself.

        >>> KeyLayout("seg", 2, ["cluster"]).copies("seg:cluster:cluster")
        ['seg:{seg/0}:cluster:cluster', 'seg:{seg/1}:cluster:cluster']
        """
        if not self.sharded:
            return []
        if master == self.thresholds:
            return [shard.thresholds for shard in self.each]
        family = next(f for f, key in self.cluster.items() if key == master)
        return [shard.cluster(family) for shard in self.each]

    def ticket_of(self, key: str) -> str:
        """The replication ticket (``ShardKeys.ticket``) in the hash slot of a key outside
        the shards, such as ``thresholds``.

        >>> KeyLayout("seg").ticket_of("seg:value:thresholds")
        'seg:replicated:{seg:value:thresholds}'
        >>> KeyLayout("seg").ticket_of("seg:applied:{seg:value:thresholds}")
        'seg:replicated:{seg:value:thresholds}'
        """
        # Redis Cluster hashes the first non-empty {...} of a key, else the whole key.
        start = key.find("{")
        end = key.find("}", start + 1) if start >= 0 else -1
        tag = key[start + 1 : end] if end > start + 1 else key
        return f"{self.prefix}:replicated:{{{tag}}}"

    def definitions(self, fingerprint: str) -> str:
        return f"{self.prefix}:definitions:{fingerprint}"
