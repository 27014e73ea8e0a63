"""Bad input never crashes the worker and never vanishes: `decode_record` under fuzzing.

Every record must come out as either a valid event that belongs on its topic and is keyed
by its account, or a `DeadLetter` that keeps the original bytes, the source position and a
reason a person can act on, with an ``error_kind`` that fits the case.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

import worker.core.decoding as decoding
from worker.config.settings import Settings
from worker.core.decoding import Record, decode_record
from worker.core.events import (
    INPUT_EVENT_TYPES,
    CampaignInteraction,
    DeadLetter,
    LoyaltyPoints,
    OrderLine,
    OrderPlaced,
    decode_input,
)

SETTINGS = Settings(kafka_bootstrap_servers="127.0.0.1:9092", redis_url="redis://127.0.0.1/0")
ALLOWED = {topic: SETTINGS.allowed_types(topic) for topic in SETTINGS.input_topics}
MAX_BYTES = Settings.model_fields["max_event_bytes"].default
FLOOR = SETTINGS.earliest_event_time
TOPIC_OF = {kind: topic for topic, kinds in ALLOWED.items() for kind in kinds}
EVENT_TYPES = sorted(TOPIC_OF)
ERROR_KINDS = frozenset(get_args(DeadLetter.model_fields["error_kind"].annotation))
#: A dead letter must carry at least this much of the original value, byte for byte.
RAW_KEPT_AT_LEAST = 64 * 1024
#: Every field name of every input event (and of an order line): what producers send.
MODELS: tuple[type[BaseModel], ...] = (*INPUT_EVENT_TYPES, OrderLine)
FIELD_NAMES = sorted({name for model in MODELS for name in model.model_fields})
REQUIRED = {
    model.model_fields["type"].default: sorted(
        name for name, field in model.model_fields.items() if field.is_required()
    )
    for model in INPUT_EVENT_TYPES
}
FUZZ = settings(
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- the properties -------------------------------------------------------------------------


def decode(
    value: bytes | None,
    *,
    topic: str = "orders",
    key: bytes | None = b"ACC-1",
    partition: int = 3,
    offset: int = 42,
) -> Any:
    return checked(Record(topic, partition, offset, key, value))


def checked(record: Record) -> Any:
    """Decode ``record`` and check what holds for every outcome; return the outcome."""
    result = decode_record(record, ALLOWED, MAX_BYTES, earliest_event_time=FLOOR)  # must not raise
    if isinstance(result, DeadLetter):
        original = record.value or b""
        kept = base64.b64decode(result.raw, validate=True)
        assert original.startswith(kept)
        assert len(kept) >= min(len(original), RAW_KEPT_AT_LEAST)
        assert (result.source_topic, result.source_partition, result.source_offset) == (
            record.topic,
            record.partition,
            record.offset,
        )
        assert isinstance(result.reason, str) and result.reason.strip()
        assert result.error_kind in ERROR_KINDS
        assert result.received_at.utcoffset() is not None
        # It must survive its own trip to the dead-letter topic.
        assert DeadLetter.model_validate_json(result.model_dump_json()) == result
        return result
    assert result.type in ALLOWED[record.topic]
    assert record.key == result.account_id.encode()
    serialised = result.model_dump_json().encode()
    assert decode_input(serialised) == result
    again = decode_record(
        Record(record.topic, record.partition, record.offset, record.key, serialised),
        ALLOWED,
        MAX_BYTES,
        earliest_event_time=FLOOR,
    )
    assert again == result
    return result


def dead(value: bytes | None, kind: str, **record: Any) -> DeadLetter:
    result = decode(value, **record)
    assert isinstance(result, DeadLetter), f"expected a {kind} dead letter, got {result!r}"
    assert result.error_kind == kind, result.reason
    return result


# -- strategies -------------------------------------------------------------------------------

identifiers = st.from_regex(r"[A-Za-z0-9_.:@/+-]{1,16}", fullmatch=True)
categories = st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True)
money = st.floats(min_value=0, max_value=1e6, allow_nan=False).map(lambda x: round(x, 2))
# Offsets up to a day, but not at the very ends of the calendar: see
# test_event_time_at_the_ends_of_the_calendar_is_a_dead_letter.
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
event_times = st.datetimes(
    min_value=datetime(1980, 1, 3), max_value=datetime(2025, 12, 31), timezones=offsets
).map(datetime.isoformat)
any_times = st.datetimes(
    min_value=datetime(1, 1, 3), max_value=datetime(9999, 12, 29), timezones=offsets
).map(datetime.isoformat)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def literal_values(model: type[BaseModel], name: str) -> list[Any]:
    """The values a ``Literal[...]`` field (possibly ``| None``) allows."""

    def walk(annotation: Any) -> list[Any]:
        if get_origin(annotation) is Literal:
            return list(get_args(annotation))
        return [value for option in get_args(annotation) for value in walk(option)]

    return walk(model.model_fields[name].annotation)


def _drop_none(event: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in event.items() if value is not None}


def _order(line_data: list[dict[str, Any]], total: float, **rest: Any) -> dict[str, Any]:
    if line_data:  # the same sum, in the same order, as the validator
        total = sum(line["unit_price"] * line["quantity"] for line in line_data)
    return _drop_none({"type": "order_placed", **rest, "lines": line_data, "total": total})


order_lines = st.fixed_dictionaries(
    {
        "sku": identifiers,
        "category": categories,
        "quantity": st.integers(1, 1000),
        "unit_price": money,
    }
)
common = {"event_id": identifiers, "occurred_at": event_times, "account_id": identifiers}
valid_events: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.builds(
        _order,
        st.lists(order_lines, max_size=3),
        money,
        **common,
        order_id=identifiers,
        contact_id=optional(identifiers),
        currency=optional(st.from_regex(r"[A-Z]{3}", fullmatch=True)),
        channel=optional(st.sampled_from(literal_values(OrderPlaced, "channel"))),
    ),
    st.fixed_dictionaries(
        {"type": st.just("order_returned"), **common, "order_id": identifiers, "amount": money},
        optional={"category": categories},
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("campaign_interaction"),
            **common,
            "campaign_id": identifiers,
            "kind": st.sampled_from(literal_values(CampaignInteraction, "kind")),
        },
        optional={
            "contact_id": identifiers,
            "contact_role": st.sampled_from(literal_values(CampaignInteraction, "contact_role")),
        },
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("loyalty_points"),
            **common,
            "kind": st.sampled_from(literal_values(LoyaltyPoints, "kind")),
            "points": st.integers(1, 10_000_000),
            "reason": st.sampled_from(literal_values(LoyaltyPoints, "reason")),
        },
        optional={"tier": categories, "contact_id": identifiers},
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("account_profile"),
            **common,
            "industry": categories,
            "employees": st.integers(1, 10_000_000),
            "country": st.sampled_from(["DE", "US", "JP", "BR", "XX"])
            | st.from_regex(r"[A-Z]{2}", fullmatch=True),
        },
        optional={"name": st.text(max_size=40)},
    ),
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats()  # NaN and ±Infinity too, written as the literals NaN / Infinity
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
#: Absurd or wrong values a broken producer sends.
bad_values: st.SearchStrategy[Any] = st.sampled_from(
    [
        -1,
        0,
        -0.01,
        10**30,
        1e308,
        1e13,
        float("nan"),
        float("inf"),
        float("-inf"),
        "",
        " ",
        "x" * 10_000,
        "ACC 1",
        "ACC-1\n",
        "ünïcode",
        "2026-01-05T10:00:00",  # naive
        "2026-01-05",
        "1999-12-31T23:59:59Z",
        "0001-01-02T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "9999-12-30T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "yesterday",
        True,
        None,
        [],
        {},
        [{"sku": "S"}],
    ]
)
keys = st.none() | st.binary(max_size=24) | identifiers.map(str.encode)
topics = st.sampled_from([*SETTINGS.input_topics, "segment-changes", "unknown-topic"])


def to_json(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


# -- fuzzing -------------------------------------------------------------------------------------


@FUZZ
@given(
    value=st.none() | st.binary(max_size=512),
    topic=topics,
    key=keys,
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**63 - 1),
)
def test_arbitrary_bytes(
    value: bytes | None, topic: str, key: bytes | None, partition: int, offset: int
) -> None:
    checked(Record(topic, partition, offset, key, value))


@FUZZ
@given(value=json_values, topic=topics, key=keys)
def test_arbitrary_json_values(value: Any, topic: str, key: bytes | None) -> None:
    result = checked(Record(topic, 0, 0, key, to_json(value)))
    if not isinstance(value, dict):
        assert result.error_kind == "invalid_event"
        assert result.reason.startswith("(root):")


@FUZZ
@given(
    event=st.dictionaries(
        st.sampled_from(FIELD_NAMES),
        st.one_of(
            json_values, bad_values, identifiers, event_times, st.lists(order_lines, max_size=2)
        ),
    ),
    kind=st.none() | st.sampled_from(EVENT_TYPES) | st.text(max_size=12),
    topic=topics,
)
def test_objects_built_from_the_event_field_names(
    event: dict[str, Any], kind: str | None, topic: str
) -> None:
    if kind is not None:
        event["type"] = kind
    key = event.get("account_id")
    record_key = key.encode() if isinstance(key, str) else None
    result = checked(Record(topic, 1, 9, record_key, to_json(event)))
    if event.get("type") not in EVENT_TYPES:
        assert result.error_kind == "unknown_type"


@FUZZ
@given(event=valid_events, partition=st.integers(0, 99), offset=st.integers(0, 2**40))
def test_valid_events_decode_on_their_topic(
    event: dict[str, Any], partition: int, offset: int
) -> None:
    record = Record(
        TOPIC_OF[event["type"]], partition, offset, event["account_id"].encode(), to_json(event)
    )
    result = checked(record)
    assert not isinstance(result, DeadLetter), result.reason
    assert (result.type, result.event_id, result.account_id) == (
        event["type"],
        event["event_id"],
        event["account_id"],
    )


@FUZZ
@given(event=valid_events, data=st.data())
def test_valid_events_with_one_field_changed(event: dict[str, Any], data: st.DataObject) -> None:
    kind = event["type"]
    field = data.draw(st.sampled_from(sorted(event)), label="field")
    change = data.draw(st.sampled_from(["delete", "replace", "bad", "extra"]), label="change")
    mutated = dict(event)
    if change == "delete":
        del mutated[field]
    elif change == "extra":
        field = data.draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in FIELD_NAMES))
        mutated[field] = data.draw(json_values)
    else:
        mutated[field] = data.draw(json_values if change == "replace" else bad_values | any_times)
    record = Record(TOPIC_OF[kind], 0, 5, event["account_id"].encode(), to_json(mutated))
    result = checked(record)
    if change == "delete" and field == "type":
        assert result.error_kind == "unknown_type"
    elif change == "delete" and field in REQUIRED[kind]:
        assert result.error_kind == "invalid_event"
        assert field in result.reason
    elif change == "extra":
        assert result.error_kind == "invalid_event"
    elif field == "type" and mutated["type"] not in EVENT_TYPES:
        assert result.error_kind == "unknown_type"
    elif not isinstance(result, DeadLetter) and field != "type":
        assert result.type == kind


@FUZZ
@given(event=valid_events, topic=topics)
def test_an_event_on_a_foreign_topic_is_a_dead_letter(event: dict[str, Any], topic: str) -> None:
    result = checked(Record(topic, 0, 1, event["account_id"].encode(), to_json(event)))
    if topic != TOPIC_OF[event["type"]]:
        assert result.error_kind == "wrong_topic"
        assert topic in result.reason and event["type"] in result.reason


@FUZZ
@given(event=valid_events, key=keys)
def test_an_event_keyed_by_anything_but_its_account_is_a_dead_letter(
    event: dict[str, Any], key: bytes | None
) -> None:
    result = checked(Record(TOPIC_OF[event["type"]], 0, 1, key, to_json(event)))
    if key != event["account_id"].encode():
        assert result.error_kind == "wrong_key"
        assert repr(event["account_id"]) in result.reason


# -- the concrete bad inputs of the issue --------------------------------------------------------

ORDER: dict[str, Any] = {
    "type": "order_placed",
    "event_id": "erp-88213",
    "occurred_at": "2025-11-20T09:12:00Z",
    "account_id": "ACC-1",
    "contact_id": "ACC-1-C1",
    "order_id": "SO-1001",
    "currency": "EUR",
    "total": 1180.0,
    "channel": "web",
    "lines": [{"sku": "DRL-18V", "category": "tools", "quantity": 4, "unit_price": 295.0}],
}
POINTS: dict[str, Any] = {
    "type": "loyalty_points",
    "event_id": "lp-1",
    "occurred_at": "2025-11-20T09:12:00+01:00",
    "account_id": "ACC-1",
    "kind": "earned",
    "points": 500,
    "reason": "purchase",
}
PROFILE: dict[str, Any] = {
    "type": "account_profile",
    "event_id": "p-1",
    "occurred_at": "2025-11-20T09:12:00Z",
    "account_id": "ACC-1",
    "industry": "manufacturing",
    "employees": 420,
    "country": "DE",
}
EXAMPLES = {"order_placed": ORDER, "loyalty_points": POINTS, "account_profile": PROFILE}


def with_(event: dict[str, Any], **changes: Any) -> bytes:
    return to_json({**event, **changes})


def with_line(**changes: Any) -> bytes:
    return with_(ORDER, lines=[{**ORDER["lines"][0], **changes}])


def without(event: dict[str, Any], field: str) -> bytes:
    return to_json({name: value for name, value in event.items() if name != field})


def test_the_examples_are_valid() -> None:
    for kind, event in EXAMPLES.items():
        result = decode(to_json(event), topic=TOPIC_OF[kind])
        assert not isinstance(result, DeadLetter), result.reason


@pytest.mark.parametrize(
    "value",
    [
        b"{not json",
        b"",
        None,
        b"   ",
        b"\x00\x01\x02",
        b"\xff\xfe{}",
        b"\xef\xbb\xbf" + to_json(ORDER),  # a byte order mark
        to_json(ORDER)[:-1],  # truncated
        to_json(ORDER) + b" trailing",
        to_json(ORDER) * 2,
        b"{'type': 'order_placed'}",
        b'{"type": "order_placed",}',
        b'{"type": "order_\xff"}',  # not UTF-8
        b"[" * 10_000 + b"]" * 10_000,  # nested beyond the parser's limit
        with_(ORDER, total=0).replace(b'"total": 0', b'"total": ' + b"1" * 5000),  # too big
    ],
    ids=lambda value: repr(value)[:30],
)
def test_malformed_json(value: bytes | None) -> None:
    letter = dead(value, "malformed_json")
    assert letter.reason.startswith("not a JSON object:")


@pytest.mark.parametrize("value", [b"[]", b"[1, 2]", b"1", b"null", b'"order_placed"', b"true"])
def test_json_that_is_not_an_object(value: bytes) -> None:
    assert dead(value, "invalid_event").reason.startswith("(root):")


@pytest.mark.parametrize(
    ("kind", "field"),
    [(kind, field) for kind in EXAMPLES for field in REQUIRED[kind]],
)
def test_missing_required_fields(kind: str, field: str) -> None:
    letter = dead(without(EXAMPLES[kind], field), "invalid_event", topic=TOPIC_OF[kind])
    assert f"{field}: Field required" in letter.reason


@pytest.mark.parametrize(
    ("value", "where"),
    [
        # wrong types
        (with_(ORDER, total="a lot"), "total"),
        (with_(ORDER, total=None), "total"),
        (with_(ORDER, lines={"sku": "x"}), "lines"),
        (with_(ORDER, lines=["DRL-18V"]), "lines.0"),
        (with_line(quantity="four"), "lines.0.quantity"),
        (with_line(quantity=4.5), "lines.0.quantity"),
        (with_(ORDER, account_id=42), "account_id"),
        (with_(ORDER, event_id=["erp-1"]), "event_id"),
        (with_(ORDER, occurred_at=True), "occurred_at"),
        (with_(ORDER, occurred_at={"date": "2025-11-20"}), "occurred_at"),
        (with_(ORDER, channel=1), "channel"),
        (with_(POINTS, kind=5), "kind"),
        (with_(PROFILE, employees="many"), "employees"),
        # unknown fields
        (with_(ORDER, discount=0.1), "discount"),
        (with_line(colour="red"), "lines.0.colour"),
        # negative and absurd values
        (with_line(quantity=-4), "lines.0.quantity"),
        (with_line(quantity=0), "lines.0.quantity"),
        (with_line(quantity=10**30), "lines.0.quantity"),
        (with_line(unit_price=-295.0), "lines.0.unit_price"),
        (with_(ORDER, total=-1180.0, lines=[]), "total"),
        (with_(ORDER, total=1e13, lines=[]), "total"),
        (with_(ORDER, total=10**400, lines=[]), "total"),
        (with_(ORDER, total=5.0), "(root)"),  # does not match the lines
        (with_(ORDER, lines=[ORDER["lines"][0]] * 1001, total=1180.0 * 1001), "lines"),
        (with_(POINTS, points=0), "points"),
        (with_(POINTS, points=-500), "points"),
        (with_(POINTS, points=10**12), "points"),
        (with_(PROFILE, employees=0), "employees"),
        # NaN and Infinity literals
        (with_(ORDER, total=float("nan"), lines=[]), "total"),
        (with_(ORDER, total=float("inf"), lines=[]), "total"),
        (with_(ORDER, total=float("-inf"), lines=[]), "total"),
        (with_line(unit_price=float("nan")), "lines.0.unit_price"),
        (with_(POINTS, points=float("inf")), "points"),
        # event times: naive, before the floor (1980), far in the future, not a date
        (with_(ORDER, occurred_at="2025-11-20T09:12:00"), "occurred_at"),
        (with_(ORDER, occurred_at="2025-11-20"), "occurred_at"),
        (with_(ORDER, occurred_at="1979-12-31T23:59:59Z"), "occurred_at"),
        (with_(ORDER, occurred_at="1980-01-01T00:30:00+01:00"), "occurred_at"),
        (with_(ORDER, occurred_at="1970-01-01T00:00:00Z"), "occurred_at"),
        (with_(ORDER, occurred_at="0001-01-01T00:00:00Z"), "occurred_at"),
        (with_(ORDER, occurred_at="2999-01-01T00:00:00Z"), "occurred_at"),
        (with_(ORDER, occurred_at="9999-12-31T23:59:59Z"), "occurred_at"),
        (with_(ORDER, occurred_at="2025-02-30T00:00:00Z"), "occurred_at"),
        (with_(ORDER, occurred_at="last tuesday"), "occurred_at"),
        (with_(ORDER, occurred_at=-1), "occurred_at"),
        (with_(ORDER, occurred_at=1e20), "occurred_at"),
        # very long and malformed strings
        (with_(ORDER, event_id="e" * 129), "event_id"),
        (with_(ORDER, account_id="A" * 100_000), "account_id"),
        (with_(ORDER, account_id=""), "account_id"),
        (with_(ORDER, account_id="ACC 1"), "account_id"),
        (with_(ORDER, account_id="ACC-\uff11"), "account_id"),  # a full-width digit
        (with_(ORDER, currency="euro"), "currency"),
        (with_(PROFILE, country="Germany"), "country"),
        (with_(PROFILE, name="n" * 201), "name"),
    ],
    ids=lambda value: None if isinstance(value, bytes) else value,
)
def test_invalid_events(value: bytes, where: str) -> None:
    letter = dead(value, "invalid_event", topic=TOPIC_OF[json.loads(value)["type"]])
    assert letter.reason.startswith(f"{where}: ") or f"; {where}: " in letter.reason


@pytest.mark.parametrize(
    "value",
    [
        without(ORDER, "type"),
        with_(ORDER, type="order_cancelled"),
        with_(ORDER, type="ORDER_PLACED"),
        with_(ORDER, type=""),
        with_(ORDER, type=None),
        with_(ORDER, type=5),
        with_(ORDER, type=["order_placed"]),
        with_(ORDER, type="segment_changed"),  # an output event is no input
        with_(ORDER, type="dead_letter"),
        b"{}",
    ],
)
def test_unknown_event_kinds(value: bytes) -> None:
    assert "event type" in dead(value, "unknown_type").reason


def test_wrong_topic_and_wrong_key() -> None:
    assert "loyalty-points" in dead(to_json(ORDER), "wrong_topic", topic="loyalty-points").reason
    assert "segment-changes" in dead(to_json(ORDER), "wrong_topic", topic="segment-changes").reason
    for key in (None, b"", b"ACC-2", b"acc-1", b"ACC-1 ", b"\xffACC-1"):
        assert "account_id 'ACC-1'" in dead(to_json(ORDER), "wrong_key", key=key).reason


# -- oversized values --------------------------------------------------------------------------


def test_a_10_mb_value_is_too_large_and_is_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_parse(raw: bytes | str, *args: Any) -> Any:
        raise AssertionError("an oversized value must be rejected before it is parsed")

    monkeypatch.setattr(decoding, "decode_input", must_not_parse)
    value = b'{"type": "order_placed", "padding": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    decode_record(
        Record("orders", 0, 1, b"ACC-1", value), ALLOWED, MAX_BYTES, earliest_event_time=FLOOR
    )
    letter = dead(value, "too_large")
    assert str(len(value)) in letter.reason and str(MAX_BYTES) in letter.reason


def test_the_size_limit_is_inclusive() -> None:
    valid = to_json(ORDER)
    padded = valid[:-1] + b" " * (MAX_BYTES - len(valid)) + b"}"
    assert len(padded) == MAX_BYTES
    assert not isinstance(decode(padded), DeadLetter)
    dead(padded[:-1] + b" }", "too_large")


# -- bugs these tests found, fixed ---------------------------------------------------------------


@pytest.mark.parametrize("occurred_at", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_event_time_at_the_ends_of_the_calendar_is_a_dead_letter(occurred_at: str) -> None:
    dead(with_(ORDER, occurred_at=occurred_at), "invalid_event")


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (with_line(quantity=True), "lines.0.quantity"),
        (with_(ORDER, total=True, lines=[]), "total"),
        (with_(ORDER, total="1180.0"), "total"),
        (with_(POINTS, points="500"), "points"),
        (with_(ORDER, occurred_at=1763629920), "occurred_at"),  # Unix seconds, guessed
        (with_(ORDER, occurred_at=1763629920000), "occurred_at"),  # ... or milliseconds
        (with_(ORDER, occurred_at="1763629920"), "occurred_at"),
    ],
    ids=[
        "quantity true",
        "total true",
        "total text",
        "points text",
        "unix s",
        "unix ms",
        "unix s text",
    ],
)
def test_values_of_the_wrong_json_type_are_not_coerced(value: bytes, where: str) -> None:
    assert dead(value, "invalid_event").reason.startswith(f"{where}: ")


@pytest.mark.parametrize(
    "make",
    [
        lambda: decode(with_(ORDER, type="x\nERROR forged log line " + "y" * 100_000)),
        lambda: decode(to_json(ORDER), key=b"K\n" * 100_000),
    ],
    ids=["type tag", "record key"],
)
def test_reasons_are_one_bounded_printable_line(make: Callable[[], DeadLetter]) -> None:
    reason = make().reason
    assert reason.isprintable() and len(reason) <= 1000


@pytest.mark.parametrize("size", [10 * 1024 * 1024, 900_000])
def test_a_dead_letter_fits_in_a_kafka_message(size: int) -> None:
    # Faust's producer refuses messages over producer_max_request_size (1,000,000 bytes): a
    # dead letter bigger than that fails its batch again and again.
    letter = decode(with_(ORDER, padding="x" * size))
    assert isinstance(letter, DeadLetter)
    assert len(letter.model_dump_json().encode()) < 1_000_000


# -- the event-time floor is one setting -------------------------------------------------------

OLD_ORDER = with_(ORDER, occurred_at="1997-01-14T00:00:00Z")


def test_long_b2b_histories_pass_and_epoch_zero_does_not() -> None:
    assert decode(OLD_ORDER).occurred_at == datetime(1997, 1, 14, tzinfo=UTC)
    letter = dead(with_(ORDER, occurred_at="1970-01-01T00:00:00Z"), "invalid_event")
    assert "before 1980-01-01" in letter.reason


def test_the_floor_follows_the_setting_and_a_refusal_names_it() -> None:
    later = Settings.model_validate({"earliest_event_time": "2000-01-01"}).earliest_event_time
    record = Record("orders", 3, 42, b"ACC-1", OLD_ORDER)
    letter = decode_record(record, ALLOWED, MAX_BYTES, earliest_event_time=later)
    assert isinstance(letter, DeadLetter) and letter.error_kind == "invalid_event"
    assert "before 2000-01-01" in letter.reason
    assert "SEGWORKER_EARLIEST_EVENT_TIME" in letter.reason
    with pytest.raises(ValidationError, match="before 2000-01-01"):
        decode_input(OLD_ORDER, earliest_event_time=later)
    # Another floor for another caller: nothing global changed.
    assert decode_input(OLD_ORDER).occurred_at.year == 1997


def test_the_worker_decodes_with_the_configured_floor() -> None:
    from worker.core.definitions import load_definitions
    from worker.core.features import VOCABULARY
    from worker.runtime.metrics import Metrics
    from worker.runtime.processor import BatchProcessor

    settings = Settings.model_validate(
        {**SETTINGS.model_dump(), "earliest_event_time": "2000-01-01"}
    )
    definitions = load_definitions(settings.definitions_path, VOCABULARY)
    processor = BatchProcessor(settings, definitions, None, None, Metrics())  # type: ignore[arg-type]
    events, letters = processor._decode([Record("orders", 3, 42, b"ACC-1", OLD_ORDER)])
    assert events == [] and [letter.error_kind for letter in letters] == ["invalid_event"]
    assert "SEGWORKER_EARLIEST_EVENT_TIME" in letters[0].reason
