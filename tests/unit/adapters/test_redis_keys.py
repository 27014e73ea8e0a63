"""The key layout: one hash slot per shard, the single-shard names as they always were."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from worker.adapters.redis_keys import MAX_SHARDS, KeyLayout, ShardKeys

account_ids = st.text(min_size=1, max_size=40).filter(lambda a: "\x00" not in a)


def every_key(keys: ShardKeys, account: str) -> list[str]:
    return [
        keys.state(account),
        keys.trigger_state(account),
        keys.members("value", "a"),
        keys.outbox,
        keys.outbox_written,
        keys.due,
        keys.revenue,
        keys.clock,
        keys.flows,
        keys.trigger_outbox,
        keys.trigger_due,
        *keys.watched_globals,
    ]


@settings(max_examples=200, deadline=None)
@given(account_ids, st.sampled_from([2, 3, 16, 64]))
def test_everything_one_transaction_of_a_shard_touches_is_in_one_slot(
    account: str, shards: int
) -> None:
    layout = KeyLayout("seg", shards, ["cluster", "needs_cluster"])
    keys = layout.shard_keys(account)
    slots = {key_slot(key.encode("utf-8", "surrogatepass")) for key in every_key(keys, account)}
    assert len(slots) == 1
    assert 0 <= layout.shard_of(account) < shards
    assert layout.account_of(keys.state(account)) == account


@settings(max_examples=100, deadline=None)
@given(account_ids)
def test_one_shard_is_the_layout_before_shards(account: str) -> None:
    layout = KeyLayout("seg", 1, ["cluster"])
    keys = layout.shard_keys(account)
    assert keys.state(account) == f"seg:acct:{{{account}}}"
    assert keys.trigger_state(account) == f"seg:trig:{{{account}}}"
    assert (keys.due, keys.revenue, keys.clock, keys.outbox) == (
        "seg:due",
        "seg:value:revenue",
        "seg:clock",
        "seg:outbox",
    )
    assert keys.watched_globals == [layout.thresholds, layout.cluster["cluster"]]
    assert layout.copies(layout.thresholds) == []
    assert layout.account_of(keys.state(account)) == account


def test_accounts_spread_over_the_shards_and_group_sorted() -> None:
    layout = KeyLayout("seg", 16)
    accounts = [f"ACC-{n:05d}" for n in range(1600)]
    groups = layout.by_shard([*accounts, *accounts[:10]])
    assert sorted(groups) == list(range(16))
    assert all(60 <= len(group) <= 140 for group in groups.values())
    assert all(group == sorted(group) for group in groups.values())
    assert sum(map(len, groups.values())) == 1600
    # the shard of an account is the same for every process and every run
    assert layout.shard_of("ACC-00001") == KeyLayout("other", 16).shard_of("ACC-00001")


def test_the_shard_count_is_bounded_by_the_slots() -> None:
    for bad in (0, MAX_SHARDS + 1):
        with pytest.raises(ValueError, match="shards must be between"):
            KeyLayout("seg", bad)
