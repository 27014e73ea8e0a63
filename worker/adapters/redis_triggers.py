"""The trigger router's state in Redis: per-account trigger state and the trigger outbox.

Keys (``seg`` is the configurable prefix; braces are Redis Cluster hash tags)::

    seg:trig:{<account_id>}        the account's TriggerState (JSON): cooldowns, the cap's
                                   recent firings, decided change ids, the decision log
    seg:trig:outbox                HASH trigger_id -> CampaignTriggered JSON, not yet sent
    seg:trig:outbox:due            ZSET trigger_id -> when it may be sent (wall clock; later
                                   than now while quiet hours delay it)
    seg:trig:rate:<destination>    the webhook rate limiter's state (``take_token``)
    seg:trig:daily                 HASH "<UTC date>/<trigger>/<outcome>/<rule>" -> decisions
                                   (the report's triggers section)

``update`` writes the states of a batch of changes together with their triggers' outbox
entries in one MULTI/EXEC, with a WATCH on the states (a router that lost its partitions
in a rebalance recomputes instead of overwriting): a cooldown is never recorded without
its trigger, nor the other way round. ``clear`` forgets what Kafka acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

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

    def __init__(self, redis: aioredis.Redis, prefix: str = "seg") -> None:
        self.redis = redis
        self.prefix = prefix
        self.outbox_key = f"{prefix}:trig:outbox"
        self.due_key = f"{prefix}:trig:outbox:due"
        self.daily_key = f"{prefix}:trig:daily"
        self._take_token = redis.register_script(_TAKE_TOKEN)

    def state_key(self, account_id: str) -> str:
        return f"{self.prefix}:trig:{{{account_id}}}"

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
        triggers it returns to the outbox atomically."""
        accounts = sorted(set(account_ids))
        keys = [self.state_key(account) for account in accounts]
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(*keys)
                    raws = await pipe.mget(keys)
                    states = {
                        account: _state(account, raw)
                        for account, raw in zip(accounts, raws, strict=True)
                    }
                    triggers = list(mutate(states))
                    pipe.multi()
                    pipe.mset(
                        {
                            self.state_key(account): json.dumps(state.to_dict())
                            for account, state in states.items()
                        }
                    )
                    if triggers:
                        pipe.hset(
                            self.outbox_key,
                            mapping={t.trigger_id: t.model_dump_json() for t in triggers},
                        )
                        pipe.zadd(
                            self.due_key,
                            {t.trigger_id: t.deliver_at.timestamp() for t in triggers},
                        )
                    await pipe.execute()
                    return triggers
                except WatchError:
                    continue

    async def clear(self, trigger_ids: Sequence[str]) -> None:
        """Forget triggers that Kafka has acknowledged."""
        if not trigger_ids:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.outbox_key, *trigger_ids)
            pipe.zrem(self.due_key, *trigger_ids)
            await pipe.execute()

    async def due(self, until: float, limit: int = 500) -> list[CampaignTriggered]:
        """Outbox entries that may be sent by ``until`` (wall clock), oldest first: the ones
        quiet hours delayed, and those whose sender died before Kafka acknowledged them."""
        ids = await self.redis.zrangebyscore(self.due_key, "-inf", until, start=0, num=limit)
        if not ids:
            return []
        raws = await self.redis.hmget(self.outbox_key, ids)
        orphans = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
        if orphans:
            await self.redis.zrem(self.due_key, *orphans)
        return [CampaignTriggered.model_validate_json(raw) for raw in raws if raw is not None]

    async def pending(self) -> int:
        """How many triggers wait in the outbox."""
        return int(await self.redis.hlen(self.outbox_key))

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
            text = field.decode() if isinstance(field, bytes) else field
            day, trigger, outcome, rule = text.split("/", 3)  # ids and rules hold no "/"
            counts[(day, trigger, outcome, rule)] = int(count)
        return counts

    async def erase(self, account_id: str) -> None:
        """Forget everything about an erased account (its outbox entries have gone out)."""
        await self.redis.delete(self.state_key(account_id))


def _state(account_id: str, raw: Any) -> TriggerState:
    if raw is None:
        return TriggerState(account_id)
    return TriggerState.from_dict(json.loads(raw))
