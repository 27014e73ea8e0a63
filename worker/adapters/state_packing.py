"""The packed form of an account state: ``AccountState.to_dict()`` as compact MessagePack.

What makes a state large in JSON is its per-day rows (orders, points, campaigns: a day
number and a few small numbers each, a year of them), money written as decimal text and
the recent event-id digests. The packed form keeps the same mapping but stores:

- each row table by column, the day column as differences from the day before (mostly one
  byte each) and every other column as it is;
- money (an order row's revenue, category spend) as whole cents where that is exact,
  otherwise as the float itself (MessagePack tells integers from floats, so each value says
  which it is; NaN and the infinities are floats and pass unchanged);
- the recent event-id digests (8 base64url characters for 6 bytes each) as one byte string.

``pack`` refuses (``NotPackable``) what it cannot represent exactly, e.g. rows of unequal
length or a day that is not an integer; the codec then stores the JSON form instead, which
reads back the same. Nothing is rounded: ``unpack(pack(d))`` equals ``d``.

>>> data = {"orders": [[20426, 68.21, 1], [20441, 15.05, 2]], "categories": {"680": {"tools": 1.5}},
...         "recent_ids": ["ODQB3cyC", "7jzCEfiX"], "clock": 1796298379.379}
>>> unpack(pack(data)) == data
True
>>> len(pack(data)) < len(str(data))
True
"""

from __future__ import annotations

import base64
import binascii
import itertools
import math
import operator
from collections.abc import Mapping
from typing import Any

import msgspec

from worker.core.features.state import ORDER_REVENUE, ROW_TABLES

#: Row columns that hold money, per row table.
MONEY_COLUMNS = {"orders": (ORDER_REVENUE,)}
#: Length of a recent event-id digest (``worker.core.features.inputs.id_token``).
DIGEST_CHARS = 8
_HUNDRED = 100.0
_MAX_CENTS = 2**53

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()


class NotPackable(ValueError):
    """The state holds something the packed form does not represent exactly."""


def pack(data: Mapping[str, Any]) -> bytes:
    """MessagePack of ``data`` (an ``AccountState.to_dict()``) in the packed layout."""
    packed = dict(data)
    try:
        for table in ROW_TABLES:
            if table in packed:
                packed[table] = _columns(packed[table], MONEY_COLUMNS.get(table, ()))
        if "categories" in packed:
            packed["categories"] = _spend_columns(packed["categories"])
        if "recent_ids" in packed:
            packed["recent_ids"] = _digest_bytes(packed["recent_ids"])
        return _ENCODER.encode(packed)
    except (UnicodeEncodeError, OverflowError, TypeError, AttributeError, KeyError) as error:
        # A lone surrogate in a name, an integer beyond 64 bits, a shape the layout does
        # not expect: the JSON form keeps them.
        raise NotPackable(f"{type(error).__name__}: {error}") from error


def unpack(raw: bytes) -> dict[str, Any]:
    """The ``AccountState.to_dict()`` that ``pack`` stored as ``raw``."""
    data: dict[str, Any] = _DECODER.decode(raw)
    for table in ROW_TABLES:
        if table in data:
            data[table] = _rows(data[table], MONEY_COLUMNS.get(table, ()))
    if "categories" in data:
        data["categories"] = _spend(data["categories"])
    recent = data.get("recent_ids")
    if isinstance(recent, bytes):
        data["recent_ids"] = _digest_tokens(recent)
    return data


def _cents(values: list[Any]) -> list[Any]:
    """``values`` as whole cents (ints) if that is exact for every one, else unchanged.

    Per list rather than per value, so the loops run in C (``map``); NaN, the
    infinities and -0.0 keep the list as floats.
    """
    kinds = set(map(type, values))
    if kinds != {float}:
        if int in kinds:
            # An int would read back as cents: only floats are money here.
            raise NotPackable("money as an integer")
        return values
    try:
        cents = list(map(round, map(_HUNDRED.__mul__, values)))
    except (ValueError, OverflowError):  # NaN, infinities
        return values
    # Exact round trip or nothing; beyond 2**53 cents they would not fit 64 bits anyway.
    if list(map(_HUNDRED.__rtruediv__, cents)) != values or max(map(abs, cents)) > _MAX_CENTS:
        return values
    if 0 in cents and any(math.copysign(1.0, v) < 0 for v in values if v == 0):
        return values  # -0.0 (a return that cancelled a day's revenue) would read as 0.0
    return cents


def _money(values: list[Any]) -> list[Any]:
    if values and type(values[0]) is int:
        return list(map(_HUNDRED.__rtruediv__, values))
    return values


def _columns(rows: Any, money: tuple[int, ...]) -> list[list[Any]]:
    """``[[day, a, b], ...]`` as ``[[day differences], [a, ...], [b, ...]]``."""
    if not rows:
        return []
    try:
        columns = list(map(list, zip(*rows, strict=True)))
    except ValueError as error:
        raise NotPackable("rows of unequal length") from error
    width = len(columns)
    days = columns[0] if columns else []
    if set(map(type, days)) != {int}:
        raise NotPackable("a day that is not an integer")
    columns[0] = [days[0], *map(operator.sub, days[1:], days)]
    for index in money:
        if index < width:
            columns[index] = _cents(columns[index])
    return columns


def _rows(columns: list[list[Any]], money: tuple[int, ...]) -> list[list[Any]]:
    if not columns:
        return []
    columns[0] = list(itertools.accumulate(columns[0]))
    for index in money:
        if index < len(columns):
            columns[index] = _money(columns[index])
    return list(map(list, zip(*columns, strict=True)))


def _spend_columns(categories: dict[str, dict[str, float]]) -> list[Any]:
    """``{bucket: {category: spend}}`` as ``[[bucket, ...], [[category, ...], ...], [spend, ...]]``
    (every bucket's spend in one list, converted to cents in one go)."""
    spends = [spend for spent in categories.values() for spend in spent.values()]
    return [list(categories), [list(spent) for spent in categories.values()], _cents(spends)]


def _spend(packed: list[Any]) -> dict[str, dict[str, float]]:
    buckets, names, spends = packed
    amounts = iter(_money(spends))
    return {
        bucket: dict(zip(categories, amounts, strict=False))
        for bucket, categories in zip(buckets, names, strict=True)
    }


def _digest_bytes(recent: Any) -> Any:
    """The digests as one byte string, if every one is a canonical 8-character digest."""
    if (
        not isinstance(recent, list)
        or not recent
        or not all(type(token) is str and len(token) == DIGEST_CHARS for token in recent)
    ):
        return recent  # (also the full event ids of older states: kept as they are)
    joined = "".join(recent)
    try:
        digests = base64.urlsafe_b64decode(joined)
    except (binascii.Error, ValueError):
        return recent
    # Non-alphabet characters are skipped by the decoder: encoding back tells.
    return digests if base64.urlsafe_b64encode(digests).decode() == joined else recent


def _digest_tokens(digests: bytes) -> list[str]:
    text = base64.urlsafe_b64encode(digests).decode()
    return [text[i : i + DIGEST_CHARS] for i in range(0, len(text), DIGEST_CHARS)]
