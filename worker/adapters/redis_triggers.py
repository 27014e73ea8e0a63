"""The trigger router's state in Redis: per-account trigger state and the trigger outbox.

Keys: ``worker.adapters.redis_keys`` (the trigger state and outbox of an account live in
its shard, beside its segmentation state; the rate limiters and the daily counts are
single keys outside the shards).

``update`` writes the states of a batch of changes together with their triggers' outbox
entries in one MULTI/EXEC per shard, with a WATCH on the states (a router that lost its
partitions in a rebalance recomputes instead of overwriting): a cooldown is never
recorded without its trigger, nor the other way round. ``clear`` forgets what Kafka
acknowledged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from worker.adapters.redis_keys import KeyLayout, ShardKeys
from worker.adapters.redis_outbox import clear_entries, due_entries
from worker.adapters.redis_replication import confirm_replicated
from worker.adapters.redis_transactions import Aborted, Commands, session, text
from worker.core.events import CampaignTriggered
from worker.core.triggers.policy import TriggerState

#: GCRA (generic cell rate algorithm) in one atomic step: allow a request when the
#: theoretical arrival time is not too far ahead of now. Returns the seconds to wait
#: (0: allowed now, and counted). KEYS[1]: the limiter; ARGV: now, interval, burst.
_TAKE_TOKEN = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allowed_at = tat - burst * interval
if allowed_at > now then
  return tostring(allowed_at - now)
end
local ttl = math.ceil((tat + interval - now) * 1000) + 1000
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', ttl)
return '0'
"""


class RedisTriggerStore:
    """Trigger states and the trigger outbox (``worker.ports.TriggerStore``)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str = "seg",
        shards: int = 1,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self.redis = redis
        #: replicas that must have a write before it counts (a cooldown lost in a
        #: failover would let a trigger fire twice)
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.prefix = prefix
        self.keys = KeyLayout(prefix, shards)
        self.daily_key = f"{prefix}:trig:daily"
        self._take_token = redis.register_script(_TAKE_TOKEN)

    @property
    def outbox_key(self) -> str:
        """The outbox of the single-shard layout (tests and tools)."""
        return self.keys.each[0].trigger_outbox

    @property
    def due_key(self) -> str:
        return self.keys.each[0].trigger_due

    def state_key(self, account_id: str) -> str:
        return self.keys.shard_keys(account_id).trigger_state(account_id)

    async def close(self) -> None:
        await self.redis.aclose()

    async def load(self, account_id: str) -> TriggerState:
        raw = await self.redis.get(self.state_key(account_id))
        return _state(account_id, raw)

    async def update(
        self,
        account_ids: Iterable[str],
        mutate: Callable[[dict[str, TriggerState]], Sequence[CampaignTriggered]],
    ) -> list[CampaignTriggered]:
        """Load the accounts' states, let ``mutate`` decide (it may run again on a
        conflict, so it must be pure given the states), and write the states and the
        triggers it returns to the outbox atomically: per shard, called with that shard's
        accounts only, the shards concurrently."""
        groups = self.keys.by_shard(account_ids)
        parts = await asyncio.gather(
            *(
                self._update_shard(self.keys.each[shard], accounts, mutate)
                for shard, accounts in groups.items()
            )
        )
        return [trigger for part in parts for trigger in part]

    async def _update_shard(
        self,
        keys: ShardKeys,
        accounts: list[str],
        mutate: Callable[[dict[str, TriggerState]], Sequence[CampaignTriggered]],
    ) -> list[CampaignTriggered]:
        state_keys = [keys.trigger_state(account) for account in accounts]
        while True:
            async with session(self.redis, keys.trigger_outbox) as shard:
                _, raws = await shard.call(("WATCH", *state_keys), ("MGET", *state_keys))
                states = {
                    account: _state(account, raw)
                    for account, raw in zip(accounts, raws, strict=True)
                }
                triggers = list(mutate(states))
                writes = Commands()
                writes.mset(
                    {
                        keys.trigger_state(account): json.dumps(state.to_dict())
                        for account, state in states.items()
                    }
                )
                if triggers:
                    writes.hset(
                        keys.trigger_outbox,
                        mapping={t.trigger_id: t.model_dump_json() for t in triggers},
                    )
                    writes.zadd(
                        keys.trigger_due,
                        {t.trigger_id: t.deliver_at.timestamp() for t in triggers},
                    )
                try:
                    await shard.commit(writes.recorded)
                except Aborted:
                    continue  # another router wrote one of these accounts meanwhile
                # On the node that ran it, as the state store's batches do.
                await confirm_replicated(
                    shard, keys.ticket, self.wait_replicas, self.wait_timeout_ms
                )
            break
        return triggers

    async def clear(self, triggers: Sequence[CampaignTriggered]) -> None:
        """Forget triggers that Kafka has acknowledged (each from its account's shard)."""
        by_outbox: dict[tuple[str, str], list[str]] = {}
        for trigger in triggers:
            keys = self.keys.shard_keys(trigger.account_id)
            outbox = (keys.trigger_due, keys.trigger_outbox)
            by_outbox.setdefault(outbox, []).append(trigger.trigger_id)
        await clear_entries(self.redis, by_outbox)

    async def due(self, until: float, limit: int = 500) -> list[CampaignTriggered]:
        """Outbox entries that may be sent by ``until`` (wall clock), oldest first: the ones
        quiet hours delayed, and those whose sender died before Kafka acknowledged them."""
        outboxes = [(keys.trigger_due, keys.trigger_outbox) for keys in self.keys.each]
        raws = await due_entries(self.redis, outboxes, until, limit)
        return [CampaignTriggered.model_validate_json(raw) for raw in raws]

    async def pending(self) -> int:
        """How many triggers wait in the outbox."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys in self.keys.each:
                pipe.hlen(keys.trigger_outbox)
            return sum(int(n) for n in await pipe.execute())

    async def take_token(self, destination: str, per_second: float, now: float) -> float:
        """One request to ``destination`` at ``rate`` per second across every process:
        0 when it may go now (and is counted), else the seconds to wait first."""
        key = f"{self.prefix}:trig:rate:{destination}"
        wait = await self._take_token(keys=[key], args=[repr(now), repr(1.0 / per_second), 1])
        return float(wait)

    async def count_daily(self, counts: Mapping[tuple[str, str, str, str], int]) -> None:
        """Add decisions per ``(UTC date, trigger, outcome, rule)`` (for the report)."""
        if counts:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, count in counts.items():
                    pipe.hincrby(self.daily_key, "/".join(key), count)
                await pipe.execute()

    async def daily_counts(self) -> dict[tuple[str, str, str, str], int]:
        """Decisions per ``(UTC date, trigger, outcome, rule)`` so far."""
        raw = await self.redis.hgetall(self.daily_key)
        counts: dict[tuple[str, str, str, str], int] = {}
        for field, count in raw.items():
            day, trigger, outcome, rule = text(field).split("/", 3)  # ids and rules hold no "/"
            counts[(day, trigger, outcome, rule)] = int(count)
        return counts

    async def erase(self, account_id: str) -> None:
        """Forget everything about an erased account (its outbox entries have gone out)."""
        await self.redis.delete(self.state_key(account_id))


def _state(account_id: str, raw: Any) -> TriggerState:
    if raw is None:
        return TriggerState(account_id)
    return TriggerState.from_dict(json.loads(raw))
