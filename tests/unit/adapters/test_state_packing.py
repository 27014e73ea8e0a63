"""The packed state form: exact for every state shape, smaller than JSON where it matters."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.clock import TEST_NOW
from tests.exact import same
from worker.adapters.state_codec import PACKED_FORMAT, decode_state_data, encode_state_data
from worker.adapters.state_packing import NotPackable, pack, unpack
from worker.core.features.inputs import id_token
from worker.core.features.state import day_of

FIRST_DAY = day_of(TEST_NOW) - 400

#: Money as the worker keeps it (rounded to cents), and what it must survive anyway.
money = st.one_of(
    st.integers(-(10**11), 10**11).map(lambda cents: round(cents / 100, 2)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e300, 5e-324]),
)
small = st.integers(0, 2**40)


def row_table(columns: st.SearchStrategy[list[Any]]) -> st.SearchStrategy[list[list[Any]]]:
    days = st.lists(st.integers(FIRST_DAY, FIRST_DAY + 400), unique=True, max_size=40)
    return days.flatmap(
        lambda picked: st.tuples(*[columns for _ in picked]).map(
            lambda rows: [[day, *row] for day, row in zip(sorted(picked), rows, strict=True)]
        )
    )


digests = st.lists(st.text(max_size=30).map(id_token), max_size=32)
states = st.fixed_dictionaries(
    {
        "account_id": st.text(max_size=12),
        "clock": st.floats(allow_nan=False),
        "orders": row_table(st.tuples(money, small).map(list)),
        "points": row_table(st.lists(small, min_size=4, max_size=4)),
        "campaigns": row_table(st.lists(small, min_size=5, max_size=5)),
        "categories": st.dictionaries(
            st.integers(0, 800).map(str), st.dictionaries(st.text(max_size=8), money), max_size=14
        ),
        "recent_ids": digests | st.lists(st.text(max_size=12), max_size=5),
        "memberships": st.dictionaries(
            st.text(max_size=8),
            st.dictionaries(st.text(max_size=8), st.fixed_dictionaries({"since": money})),
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(states)
def test_every_state_shape_packs_and_reads_back_exactly(data: dict[str, Any]) -> None:
    assert same(unpack(pack(data)), data)
    stored = encode_state_data(data)
    assert stored[:1] == PACKED_FORMAT
    assert same(decode_state_data(stored), data)


def test_money_is_stored_in_cents_only_where_that_is_exact() -> None:
    rows = [[FIRST_DAY, 68.21, 1], [FIRST_DAY + 3, -0.0, 0], [FIRST_DAY + 4, 0.1 + 0.2, 1]]
    # 0.1 + 0.2 is not a whole number of cents, -0.0 would lose its sign: floats kept.
    for kept in (rows, rows[1:2], rows[2:]):
        assert same(unpack(pack({"orders": kept}))["orders"], kept)
    cents = [[FIRST_DAY, 68.21, 1], [FIRST_DAY + 1, 0.0, 2]]
    assert len(pack({"orders": cents})) < len(pack({"orders": [[FIRST_DAY, 68.2100001, 1]]}))


def test_digests_are_stored_as_bytes_and_full_ids_as_they_are() -> None:
    tokens = [id_token(f"evt-{n}") for n in range(32)]
    # a one-entry map: its header, the key with its header, 6 bytes per digest as one bin8
    assert len(pack({"recent_ids": tokens})) == 1 + (1 + len("recent_ids")) + (2 + 6 * 32)
    for ids in (tokens, ["evt-00000001", *tokens], ["ab+/cdef"], ["abc=defg"]):
        assert unpack(pack({"recent_ids": ids}))["recent_ids"] == ids


@pytest.mark.parametrize(
    "data",
    [
        {"orders": [[FIRST_DAY, 1.5, 1], [FIRST_DAY + 1, 2.5]]},  # rows of unequal length
        {"points": [[1.5, 1, 0, 0, 0]]},  # a day that is not an integer
        {"orders": [[FIRST_DAY, 5, 1]]},  # money as an int: it would read back as cents
        {"profile": {"name": "\udce9"}},  # not UTF-8
        {"applied": {"orders:0": 2**70}},  # beyond 64 bits
    ],
)
def test_what_the_packed_form_cannot_hold_exactly_is_refused_and_stored_as_json(
    data: dict[str, Any],
) -> None:
    with pytest.raises(NotPackable):
        pack(data)
    stored = encode_state_data(data)
    assert stored[:1] != PACKED_FORMAT
    assert same(decode_state_data(stored), data)
