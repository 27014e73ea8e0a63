"""The state codec and the grouping of a batch's writes (no Redis: a recording pipeline)."""

from __future__ import annotations

import itertools
import json
import math
import zlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.exact import same
from worker.adapters.redis_store import RedisStateStore
from worker.adapters.state_codec import (
    JSON_DICTIONARY,
    PACKED_DICTIONARY,
    PACKED_FORMAT,
    decode_state,
    decode_state_data,
    encode_json_state_data,
    encode_state,
    encode_state_data,
)
from worker.core.events import SegmentChanged
from worker.core.features import AccountState
from worker.ports import BatchResult

# ------------------------------------------------------------------------- codec


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), values, max_size=12))
def test_stored_data_round_trips_exactly(data: dict[str, Any]) -> None:
    assert same(decode_state_data(encode_state_data(data)), data)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=12), values, max_size=12))
def test_json_stored_before_compression_stays_readable(data: dict[str, Any]) -> None:
    for old in (json.dumps(data), json.dumps(data, separators=(",", ":"), ensure_ascii=False)):
        assert same(decode_state_data(old.encode()), data)


def test_lone_surrogates_round_trip() -> None:
    data = {"recent_ids": ["\ud800", "a\udfffb"], "pad": "x" * 300}
    assert same(decode_state_data(encode_state_data(data)), data)
    assert same(decode_state_data(encode_state_data({"s": "\ud800"})), {"s": "\ud800"})


def realistic_state() -> AccountState:
    days = range(20_000, 20_365, 3)
    return AccountState(
        "ACC-000042",
        clock=1_750_000_000.25,
        profile={"region": "DACH", "industry": "machinery", "employees": 120},
        orders=[[d, 1234.5 + d % 17, 1] for d in days],
        categories={str(b): {"tools": 100.5 * b, "safety": 3.25} for b in range(12)},
        first_order_day=20_000,
        last_order_day=20_363,
        points=[[d, 10, 0, 0, 1] for d in days[::4]],
        points_balance=-3,
        campaigns=[[d, 1, 1, 0, 0, 0] for d in days[::5]],
        roles={"buyer": [20_100, None]},
        applied={"orders:0": 12_345, "campaign-events:0": 99},
        recent_ids=[f"evt-{n:08d}" for n in range(40)],
        imported_until=0.0,
        memberships={
            "value": {"a": {"since": "2025-06-01T00:00:00Z", "reason": "revenue_365d >= 1000"}}
        },
    )


def test_a_state_round_trips_and_is_stored_packed_with_its_dictionary() -> None:
    state = realistic_state()
    raw = encode_state(state)
    plain = json.dumps(state.to_dict(), separators=(",", ":")).encode()
    assert raw[:1] == PACKED_FORMAT
    assert zstandard.get_frame_parameters(raw[1:]).dict_id == PACKED_DICTIONARY.dict_id()
    assert len(raw) < len(encode_json_state_data(state.to_dict())) < len(plain)
    assert same(decode_state(state.account_id, raw).to_dict(), state.to_dict())
    # and the forms Redis may still hold read the same: format 1, plain JSON, zlib
    format_1 = encode_json_state_data(state.to_dict())
    assert zstandard.get_frame_parameters(format_1).dict_id == JSON_DICTIONARY.dict_id()
    assert json.loads(zstandard.ZstdDecompressor(dict_data=JSON_DICTIONARY).decompress(format_1))
    for older in (format_1, plain, zlib.compress(plain, 1)):
        assert same(decode_state(state.account_id, older).to_dict(), state.to_dict())


STORED = Path(__file__).parent / "stored"


def test_a_state_written_by_format_1_reads_the_same_and_is_rewritten_in_format_2() -> None:
    # Written by the codec of 454b8b3 (format 1, the last before the packed form) from a
    # state folded out of a year of generated history; the JSON beside it is that state.
    raw = (STORED / "state-format-1.zst").read_bytes()
    expected = json.loads((STORED / "state-format-1.json").read_text())
    assert raw[:4] == b"\x28\xb5\x2f\xfd"
    assert zstandard.get_frame_parameters(raw).dict_id == JSON_DICTIONARY.dict_id()
    state = decode_state(expected["account_id"], raw)
    assert same(state.to_dict(), expected)
    rewritten = encode_state(state)
    assert rewritten[:1] == PACKED_FORMAT
    assert len(rewritten) < len(raw) * 0.8
    assert same(decode_state_data(rewritten), expected)


def test_a_state_the_packed_form_cannot_hold_is_stored_as_json() -> None:
    data = {**realistic_state().to_dict(), "profile": {"name": "Caf\udce9"}}
    raw = encode_state_data(data)
    assert raw[:4] == b"\x28\xb5\x2f\xfd"
    assert same(decode_state_data(raw), data)


def test_the_dictionaries_are_the_ones_states_were_written_with() -> None:
    # Stored frames name their dictionary; a replaced file would make them unreadable.
    assert JSON_DICTIONARY.dict_id() == 408809937
    assert PACKED_DICTIONARY.dict_id() == 1028992834


def test_empty_and_missing_states() -> None:
    empty = encode_state(AccountState("A"))
    assert decode_state("A", empty) == AccountState("A")
    assert decode_state("B", None) == AccountState("B")


# ------------------------------------------------------------------ batch writes


class RecordingPipeline:
    """The pipeline commands ``_queue_writes`` uses, applied to dicts, and recorded."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.strings: dict[str, bytes] = {}
        self.sets: dict[str, set[str]] = {}
        self.hashes: dict[str, dict[str, Any]] = {}
        self.zsets: dict[str, dict[str, float]] = {}

    def set(self, key: str, value: bytes) -> None:
        self.commands.append("SET")
        self.strings[key] = value

    def mset(self, mapping: dict[str, bytes]) -> None:
        self.commands.append("MSET")
        self.strings.update(mapping)

    def delete(self, *keys: str) -> None:
        self.commands.append("DEL")
        for key in keys:
            self.strings.pop(key, None)

    def sadd(self, key: str, *members: str) -> None:
        self.commands.append("SADD")
        assert members
        self.sets.setdefault(key, set()).update(members)

    def srem(self, key: str, *members: str) -> None:
        self.commands.append("SREM")
        assert members
        self.sets.setdefault(key, set()).difference_update(members)

    def hset(
        self, key: str, field: str | None = None, value: Any = None, mapping: Any = None
    ) -> None:
        self.commands.append("HSET")
        entries = dict(mapping or {})
        if field is not None:
            entries[field] = value
        assert entries
        self.hashes.setdefault(key, {}).update(entries)

    def hincrby(self, key: str, field: str, amount: int = 1) -> None:
        self.commands.append("HINCRBY")
        table = self.hashes.setdefault(key, {})
        table[field] = table.get(field, 0) + amount

    def zadd(self, key: str, mapping: dict[str, float], gt: bool = False) -> None:
        self.commands.append("ZADD")
        assert mapping
        zset = self.zsets.setdefault(key, {})
        for member, score in mapping.items():
            if not gt or score > zset.get(member, -math.inf):
                zset[member] = score

    def zrem(self, key: str, *members: str) -> None:
        self.commands.append("ZREM")
        for member in members:
            self.zsets.get(key, {}).pop(member, None)


T0 = datetime(2026, 3, 2, tzinfo=UTC)


def change(n: int, account: str, family: str, segment: str, kind: str) -> SegmentChanged:
    entered_or_exited: Literal["entered", "exited"] = "entered" if kind == "entered" else "exited"
    return SegmentChanged(
        change_id=f"chg-{n:04d}-{account}",
        account_id=account,
        family=family,
        segment_id=segment,
        change=entered_or_exited,
        reason="test",
        occurred_at=T0,
        definition_version="1",
        cause=f"evt-{n}",
    )


def sequential(
    store: RedisStateStore, pipe: RecordingPipeline, changes: list[SegmentChanged]
) -> None:
    """What the writes of ``changes`` must amount to: one command after another."""
    for change in changes:
        key = store.members_key(change.family, change.segment_id)
        if change.change == "entered":
            pipe.sadd(key, change.account_id)
        else:
            pipe.srem(key, change.account_id)
        pipe.hset(store.outbox_key, change.change_id, change.model_dump_json())
        pipe.hincrby(store.flows_key, f"{change.family}/{change.segment_id}/{change.change}", 1)


changes_strategy = st.lists(
    st.tuples(
        st.sampled_from(["A", "B", "C"]),
        st.sampled_from([("value", "a"), ("value", "b"), ("program", "champions")]),
        st.sampled_from(["entered", "exited"]),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(changes_strategy, st.sets(st.sampled_from(["A", "B", "C", "D"])))
def test_grouped_writes_equal_the_changes_applied_one_by_one(
    steps: list[tuple[str, tuple[str, str], str]], members_before: set[str]
) -> None:
    changes = [change(n, a, f, s, k) for n, (a, (f, s), k) in enumerate(steps)]
    store = RedisStateStore(None, "t")
    grouped, expected = RecordingPipeline(), RecordingPipeline()
    for pipe in (grouped, expected):
        for family, segment in [("value", "a"), ("value", "b"), ("program", "champions")]:
            pipe.sets[store.members_key(family, segment)] = set(members_before)
        pipe.hashes[store.flows_key] = {"value/a/entered": 5}
    states = {a: AccountState(a) for a in "ABC"}
    result = BatchResult(changed_accounts={a for a, _, _ in steps}, changes=changes)

    store._queue_writes(grouped, store.keys.each[0], states, result)
    sequential(store, expected, changes)

    assert grouped.sets == expected.sets
    assert grouped.hashes == expected.hashes
    written = grouped.zsets.get(store.outbox_written_key, {})
    assert list(written) == [c.change_id for c in changes]
    scores = list(written.values())
    assert all(a < b for a, b in itertools.pairwise(scores))  # write order
    unsent: dict[str, list[str]] = {}
    for written_change in changes:
        unsent.setdefault(written_change.account_id, []).append(written_change.change_id)
    assert grouped.strings == {
        store.state_key(a): encode_state(AccountState(a, unsent=unsent.get(a, [])))
        for a in result.changed_accounts
    }


def test_a_batch_is_a_few_commands_whatever_its_number_of_changes() -> None:
    store = RedisStateStore(None, "t")
    accounts = [f"ACC-{n}" for n in range(200)]
    changes = [
        change(n, account, "value", segment, kind)
        for n, account in enumerate(accounts)
        for segment, kind in [("b", "exited"), ("a", "entered")]
    ]
    result = BatchResult(
        changed_accounts=set(accounts),
        changes=changes,
        due={a: 1.0 for a in accounts},
        revenue={a: 10.0 for a in accounts},
        clock=5.0,
    )
    pipe = RecordingPipeline()
    store._queue_writes(pipe, store.keys.each[0], {a: AccountState(a) for a in accounts}, result)
    assert Counter(pipe.commands) == Counter(
        {"MSET": 1, "ZADD": 4, "SADD": 1, "SREM": 1, "HSET": 1, "HINCRBY": 2}
    )
    assert pipe.hashes[store.flows_key] == {"value/a/entered": 200, "value/b/exited": 200}
    assert pipe.sets[store.members_key("value", "a")] == set(accounts)


def test_scores_keep_increasing_across_batches() -> None:
    store = RedisStateStore(None, "t")
    pipe = RecordingPipeline()
    for batch in range(3):
        changes = [change(batch * 10 + n, "A", "value", "a", "entered") for n in range(5)]
        store._queue_writes(pipe, store.keys.each[0], {}, BatchResult(changes=changes))
    written = pipe.zsets[store.outbox_written_key]
    assert sorted(written, key=written.__getitem__) == list(written)
