"""History import (``worker.ops.importer``): parsing, errors, ids, order, and the bench's CSV."""

from __future__ import annotations

import csv
import importlib.util
import io
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.adapters.kafka_clients import encode
from worker.core.events import OrderPlaced, OrderReturned, decode_input
from worker.ops import importer
from worker.ops.importer import (
    REASONS,
    ImportFileError,
    ImportPlan,
    ImportReport,
    ParsedRow,
    RowError,
    format_report,
    import_orders,
    parse_rows,
    plan_import,
)
from worker.ops.importer.direct import event_model

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
BENCH = Path(__file__).resolve().parents[3] / "bench" / "make_order_history.py"


def _parse(*lines: str, now: datetime = NOW) -> list[ParsedRow | RowError]:
    return list(parse_rows(lines, now=now))


def _plan(*lines: str, now: datetime = NOW) -> ImportPlan:
    return plan_import(lines, now=now)


def _events(*lines: str) -> list[dict[str, Any]]:
    return list(_plan(*lines).events())


def _rows(items: Iterable[ParsedRow | RowError]) -> list[ParsedRow]:
    rows = list(items)
    assert all(isinstance(row, ParsedRow) for row in rows), rows
    return rows  # type: ignore[return-value]


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_order_history", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and typing look modules up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    module = _load_bench()
    yield module
    sys.modules.pop("make_order_history", None)


# ------------------------------------------------------------------------------ parsing


def test_happy_path_any_column_order_and_defaults() -> None:
    row = _rows(_parse("Amount, DATE ,account_id", " 120.50 ,2025-03-01, ACME "))[0]
    assert row == ParsedRow(
        line=2,
        account_id="ACME",
        occurred_at=datetime(2025, 3, 1, tzinfo=UTC),
        amount=120.5,
        category=None,
        order_id=None,
        currency="EUR",
        contact_id=None,
    )


def test_all_optional_columns() -> None:
    header = "contact_id,currency,order_id,category,amount,date,account_id"
    row = _rows(_parse(header, "ACME-C1,chf,SO-1,HVAC Parts,+7,2025-03-01,ACME"))[0]
    assert (row.contact_id, row.currency, row.order_id, row.category, row.amount) == (
        "ACME-C1",
        "CHF",
        "SO-1",
        "hvac_parts",
        7.0,
    )


def test_extra_columns_are_reported_once() -> None:
    reported: list[list[str]] = []
    lines = ["account_id,Region,date,amount,note", "A,EU,2025-03-01,1,x", "B,US,2025-03-02,2,y"]
    rows = _rows(parse_rows(lines, now=NOW, on_ignored_columns=reported.append))
    assert len(rows) == 2
    assert reported == [["Region", "note"]]
    assert plan_import(lines, now=NOW).ignored_columns == ["Region", "note"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-03-01", datetime(2025, 3, 1, tzinfo=UTC)),
        ("2025-03-01T09:30:00", datetime(2025, 3, 1, 9, 30, tzinfo=UTC)),  # naive -> UTC
        ("2025-03-01 09:30", datetime(2025, 3, 1, 9, 30, tzinfo=UTC)),
        ("2025-03-01T09:30:00Z", datetime(2025, 3, 1, 9, 30, tzinfo=UTC)),
        ("2025-03-01T09:30:00+01:00", datetime(2025, 3, 1, 8, 30, tzinfo=UTC)),
        ("2025-03-01T00:30:00+02:00", datetime(2025, 2, 28, 22, 30, tzinfo=UTC)),
        ("2025-03-01T09:30:00.250-05:00", datetime(2025, 3, 1, 14, 30, 0, 250000, tzinfo=UTC)),
    ],
)
def test_dates(raw: str, expected: datetime) -> None:
    row = _rows(_parse("account_id,date,amount", f"A,{raw},1"))[0]
    assert row.occurred_at == expected
    assert row.occurred_at.tzinfo is UTC


def test_naive_datetime_is_utc_in_the_event() -> None:
    (event,) = _events("account_id,date,amount", "A,2025-03-01T09:30:00,1")
    assert event["occurred_at"] == "2025-03-01T09:30:00Z"
    assert decode_input(encode(event)).occurred_at == datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


def test_semicolon_and_tab_delimiters_bom_blank_lines() -> None:
    for delimiter in (";", "\t"):
        lines = [
            "",
            f"\ufeffaccount_id{delimiter}date{delimiter}amount",
            "",
            f"A{delimiter}2025-03-01{delimiter}1.5",
            f"{delimiter}{delimiter}",
        ]
        assert _rows(parse_rows(lines, now=NOW)) == [
            ParsedRow(4, "A", datetime(2025, 3, 1, tzinfo=UTC), 1.5, None, None, "EUR", None)
        ]


def test_reads_a_file_with_quoted_line_breaks(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text('account_id,note,date,amount\r\nA,"two\r\nlines",2025-03-01,1\r\nB,,x,1\r\n')
    with path.open(encoding="utf-8-sig", newline="") as file:
        items = list(parse_rows(file, now=NOW))
    assert [item.line for item in items] == [2, 4]
    assert isinstance(items[1], RowError) and items[1].reason == "bad_date"


GOOD = {"account_id": "ACME", "date": "2025-03-01", "amount": "10", "currency": "EUR"}

ERROR_CASES: list[tuple[dict[str, str], str, str]] = [
    ({"account_id": ""}, "missing_field", "account_id is empty"),
    ({"date": " "}, "missing_field", "date is empty"),
    ({"amount": ""}, "missing_field", "amount is empty"),
    ({"account_id": "ACME GmbH"}, "bad_account_id", "'ACME GmbH'"),
    ({"account_id": "A" * 129}, "bad_account_id", "1-128"),
    ({"account_id": "Müller"}, "bad_account_id", "'Müller'"),
    ({"date": "01.03.2025"}, "bad_date", "'01.03.2025' is not an ISO date"),
    ({"date": "2025-02-30"}, "bad_date", "day is out of range"),
    ({"date": "1979-12-31"}, "date_too_old", "before 1980-01-01"),
    ({"date": "1970-01-01"}, "date_too_old", "set SEGWORKER_EARLIEST_EVENT_TIME"),
    ({"date": "2026-01-15T12:00:01Z"}, "future_date", "in the future"),
    ({"date": "2026-01-16"}, "future_date", "in the future"),
    ({"amount": "1,5"}, "bad_amount", "use '.' as the decimal separator"),
    ({"amount": "1.234,50"}, "bad_amount", "no thousands separators"),
    ({"amount": "abc"}, "bad_amount", "'abc' is not a decimal number"),
    ({"amount": "1e3"}, "bad_amount", "'1e3'"),
    ({"amount": "nan"}, "bad_amount", "'nan'"),
    ({"amount": "1000000000001"}, "amount_too_large", "exceeds 1e+12"),
    ({"category": "---"}, "bad_category", "'---'"),
    ({"category": "x" * 65}, "bad_category", "1-64"),
    ({"order_id": "SO 1"}, "bad_order_id", "order_id 'SO 1'"),
    ({"currency": "EURO"}, "bad_currency", "'EURO'"),
    ({"currency": "€"}, "bad_currency", "'€'"),
    ({"contact_id": "Jane Doe"}, "bad_contact_id", "contact_id 'Jane Doe'"),
]
COLUMNS = ("account_id", "date", "amount", "category", "order_id", "currency", "contact_id")


def _csv_line(cells: list[str]) -> str:
    text = io.StringIO()
    csv.writer(text).writerow(cells)
    return text.getvalue()


@pytest.mark.parametrize(("change", "reason", "detail"), ERROR_CASES)
def test_row_errors_name_line_and_reason(change: dict[str, str], reason: str, detail: str) -> None:
    bad = _csv_line([{**GOOD, **change}.get(column, "") for column in COLUMNS])
    good = _csv_line([GOOD.get(column, "") for column in COLUMNS])
    items = _parse(",".join(COLUMNS), good, "", bad, good)
    assert [type(item) for item in items] == [ParsedRow, RowError, ParsedRow]
    error = items[1]
    assert isinstance(error, RowError)
    assert (error.line, error.reason) == (4, reason)
    assert detail in error.detail
    assert str(error).startswith(f"line 4: {reason}: ")


def test_every_reason_is_tested_or_order_level() -> None:
    tested = {reason for _, reason, _ in ERROR_CASES} | {"bad_row"}
    order_level = {"conflicting_currency", "too_many_categories"}
    assert set(REASONS) == tested | order_level


def test_wrong_field_count() -> None:
    items = _parse("account_id,date,amount", "A,2025-03-01,1,234.50", "B,2025-03-01")
    assert [(e.line, e.reason) for e in items if isinstance(e, RowError)] == [
        (2, "bad_row"),
        (3, "bad_row"),
    ]
    assert isinstance(items[0], RowError) and "delimiter in an unquoted value" in items[0].detail


def test_unreadable_records() -> None:
    items = _parse(
        "account_id,date,amount",
        f"A,{'x' * 200_000},1",  # over the csv module's field size limit
        "B,2025-03-01,1",
        '"C,2025-03-01,1',  # never closed: swallows the rest of the file
        "D,2025-03-01,1",
    )
    assert [(item.line, type(item).__name__) for item in items] == [
        (2, "RowError"),
        (3, "ParsedRow"),
        (4, "RowError"),
    ]
    assert isinstance(items[0], RowError) and "unreadable CSV record" in items[0].detail
    assert isinstance(items[2], RowError) and "quote that is not closed" in items[2].detail


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "empty"),
        (["", "  "], "empty"),
        (["account_id,amount", "A,1"], "missing required columns: date"),
        (["A,2025-03-01,1"], "missing required columns: account_id, date, amount"),
        (
            ["account_id,date,amount,Date", "A,2025-03-01,1,x"],
            "duplicate columns in the header: date",
        ),
    ],
)
def test_unusable_header(lines: list[str], message: str) -> None:
    with pytest.raises(ImportFileError, match=message):
        list(parse_rows(lines, now=NOW))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("account_id,date,amount,category\nA,2025-03-01,1,Zubehör\n".encode("latin-1"))
    with pytest.raises(ImportFileError, match="not UTF-8"):
        import_orders(path, "unused:9092", "orders", dry_run=True)


def test_future_is_relative_to_now() -> None:
    lines = ("account_id,date,amount", "A,2026-01-15T12:00:00Z,1")
    assert isinstance(_parse(*lines)[0], ParsedRow)
    assert isinstance(_parse(*lines, now=NOW - timedelta(seconds=1))[0], RowError)


# ------------------------------------------------------------------------------- events


def test_positive_row_is_an_order() -> None:
    (event,) = _events(
        "account_id,date,amount,category,order_id,contact_id,currency",
        "ACME,2025-03-01,1180,Tools,SO-1001,ACME-C1,EUR",
    )
    order = decode_input(encode(event))
    assert isinstance(order, OrderPlaced)
    assert (order.order_id, order.total, order.contact_id, order.currency) == (
        "SO-1001",
        1180.0,
        "ACME-C1",
        "EUR",
    )
    assert [(line.category, line.quantity, line.unit_price) for line in order.lines] == [
        ("tools", 1, 1180.0)
    ]


def test_negative_row_is_a_return_with_its_absolute_amount() -> None:
    events = _events(
        "account_id,date,amount,category,order_id,contact_id",
        "ACME,2025-03-05,-20.5,Tools,SO-1,ACME-C1",
        "ACME,2025-03-06,-3,,,",
    )
    first, second = (decode_input(encode(event)) for event in events)
    assert isinstance(first, OrderReturned) and isinstance(second, OrderReturned)
    assert (first.order_id, first.amount, first.category) == ("SO-1", 20.5, "tools")
    assert "contact_id" not in events[0]  # the return contract has none
    assert (second.amount, second.category) == (3.0, None)
    assert second.order_id == second.event_id  # generated


def test_order_without_id_gets_its_event_id_and_no_lines_without_category() -> None:
    (event,) = _events("account_id,date,amount", "ACME,2025-03-01,99.99")
    assert event["order_id"] == event["event_id"]
    assert event["event_id"].startswith("imp-") and len(event["event_id"]) == 36
    assert "lines" not in event and event["total"] == 99.99


def test_rows_of_one_order_are_merged() -> None:
    events = _events(
        "account_id,date,amount,category,order_id,contact_id",
        "ACME,2025-03-02,100,Tools,SO-1,",
        "ACME,2025-03-01,0.1,Safety,SO-1,ACME-C2",  # earlier: the order's date
        "ACME,2025-03-02,0.2,Safety,SO-1,ACME-C3",
        "ACME,2025-03-02,5,,SO-1,",
        "OTHER,2025-03-02,7,,SO-1,",  # same order id, other account: another order
        "ACME,2025-03-03,-10,Tools,SO-1,",  # a return of the order
    )
    assert [(e["account_id"], e["type"]) for e in events] == [
        ("ACME", "order_placed"),
        ("OTHER", "order_placed"),
        ("ACME", "order_returned"),
    ]
    order = events[0]
    assert order["occurred_at"] == "2025-03-01T00:00:00Z"
    assert order["total"] == 105.3
    assert order["contact_id"] == "ACME-C2"  # the first non-empty, in file order
    assert sorted((line["category"], line["unit_price"]) for line in order["lines"]) == [
        ("safety", 0.3),
        ("tools", 100.0),
        ("uncategorized", 5.0),
    ]
    assert (
        _plan(
            "account_id,date,amount,category,order_id",
            "ACME,2025-03-02,100,Tools,SO-1",
            "ACME,2025-03-01,0.1,Safety,SO-1",
        ).imported
        == 2
    )
    for event in events:
        decode_input(encode(event))


def test_order_without_categories_has_no_lines() -> None:
    (event,) = _events(
        "account_id,date,amount,order_id", "A,2025-03-01,1,SO-1", "A,2025-03-01,2,SO-1"
    )
    assert event["lines"] == [] and event["total"] == 3.0


def test_conflicting_currency_in_one_order_is_rejected() -> None:
    plan = _plan(
        "account_id,date,amount,order_id,currency",
        "A,2025-03-01,1,SO-1,EUR",
        "A,2025-03-01,2,SO-1,CHF",
        "A,2025-03-01,4,SO-1,",
    )
    assert (plan.rows, plan.imported, plan.skipped, len(plan)) == (3, 2, 1, 1)
    assert [str(e) for e in plan.examples] == [
        "line 3: conflicting_currency: currency CHF differs from EUR of order SO-1 (line 2)"
    ]
    assert next(plan.events())["total"] == 5.0


def test_order_total_limit() -> None:
    plan = _plan(
        "account_id,date,amount,order_id",
        "A,2025-03-01,1e12,",
        "A,2025-03-01,1000000000000,SO-1",
        "A,2025-03-01,1,SO-1",
    )
    assert [(e.line, e.reason) for e in plan.examples] == [
        (2, "bad_amount"),
        (4, "amount_too_large"),
    ]


def test_events_are_in_time_order_and_stable() -> None:
    header = "account_id,date,amount,order_id"
    lines = [
        "B,2025-03-03,1,",
        "A,2025-03-01T12:00:00+01:00,2,",  # 11:00 UTC
        "C,2025-03-01,3,",
        "A,2025-03-01T11:00:00Z,4,",  # same instant as line 3: file order
        "B,2025-03-02,5,SO-9",
        "B,2025-03-01,6,SO-9",  # moves SO-9 before line 6
    ]
    events = _events(header, *lines)
    assert [(e["account_id"], e["total"]) for e in events] == [
        ("C", 3.0),
        ("B", 11.0),
        ("A", 2.0),
        ("A", 4.0),
        ("B", 1.0),
    ]
    times = [e["occurred_at"] for e in events]
    assert times == sorted(times)


# ---------------------------------------------------------------------------------- ids


HISTORY = [
    "account_id,date,amount,category,order_id",
    "A,2025-03-01,10.5,Tools,",
    "A,2025-03-01,10.5,Tools,",  # an identical second order
    "A,2025-03-01,-10.5,Tools,",
    "A,2025-03-01,10.5,Tools,SO-1",
    "A,2025-03-02,10.5,Tools,SO-1",
    "B,2025-03-01,10.5,Tools,",
]


def _ids(lines: Iterable[str], now: datetime = NOW) -> list[str]:
    return [event["event_id"] for event in plan_import(lines, now=now).events()]


def test_the_same_file_gives_the_same_ids() -> None:
    first = _ids(HISTORY)
    assert first == _ids(HISTORY, now=NOW + timedelta(days=30))
    assert len(set(first)) == len(first) == 5


def test_identical_rows_get_different_ids() -> None:
    events = _events(*HISTORY[:3])
    ids = {"event_id": events[0]["event_id"], "order_id": events[0]["order_id"]}
    assert events[0] == {**events[1], **ids}
    assert events[0]["event_id"] != events[1]["event_id"]


def test_ids_survive_reformatting_and_reordering() -> None:
    reexport = [
        "order_id,category,amount,date,account_id,erp_note",
        "SO-1,tools,10.50,2025-03-02T00:00:00Z,A,x",  # the order's date does not matter
        ",Tools,10.50,2025-03-01T00:00:00+00:00,B,x",
        ",Tools,-10.50,2025-03-01,A,x",
        ",TOOLS,10.5,2025-03-01,A,x",
        ",tools,10.5,2025-03-01T01:00:00+01:00,A,x",
    ]
    assert sorted(_ids(reexport)) == sorted(_ids(HISTORY))


def test_content_changes_change_ids() -> None:
    base = _ids(["account_id,date,amount", "A,2025-03-01,10"])
    for row in ("A,2025-03-01,11", "A,2025-03-02,10", "B,2025-03-01,10", "A,2025-03-01,-10"):
        assert _ids(["account_id,date,amount", row]) != base


def test_a_reimport_is_dropped_by_the_worker_within_its_duplicate_window() -> None:
    from worker.core.features import RECENT_IDS_KEPT, AccountState, apply

    lines = ["account_id,date,amount", *(f"A,2025-03-{d:02d},{d}" for d in range(1, 29))]
    assert len(lines) - 1 <= RECENT_IDS_KEPT
    state = AccountState("A")
    applied = [
        [apply(state, decode_input(encode(event))) for event in plan_import(lines).events()]
        for _ in range(2)
    ]
    assert all(applied[0]) and not any(applied[1])


# ------------------------------------------------------------------------------- validity


_CELL = st.one_of(
    st.sampled_from(["", " ", "A", "ACME-1", "a b", "2025-03-01", "x", "-1", "0", "Tools"]),
    st.text(max_size=8),
)
_GOOD_ROW = st.tuples(
    st.sampled_from(["A", "B", "ACC:1", "c@d/e+f"]),
    st.dates(date(1980, 1, 1), date(2026, 1, 14)).map(date.isoformat),
    st.decimals(-1e6, 1e6, places=2, allow_nan=False).map(str),
    st.sampled_from(["", "Tools", "Safety & PPE", "hvac"]),
    st.sampled_from(["", "SO-1", "SO-2"]),
    st.sampled_from(["", "EUR", "usd"]),
    st.sampled_from(["", "A-C1"]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_GOOD_ROW, st.tuples(*[_CELL] * 7)), max_size=30))
def test_every_event_validates(rows: list[tuple[str, ...]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    text.seek(0)
    plan = plan_import(text, now=NOW)
    assert plan.rows == plan.imported + plan.skipped
    assert plan.skipped == sum(plan.errors.values()) and set(plan.errors) <= set(REASONS)
    events = list(plan.events(validate=True))
    assert len(events) == len(plan)
    for event in events:
        decoded = decode_input(encode(event))
        assert decoded.model_dump(mode="json", exclude_defaults=True).keys() <= event.keys()
    assert len({event["event_id"] for event in events}) == len(events)
    assert [e["occurred_at"] for e in events] == sorted(e["occurred_at"] for e in events)


def _csv(rows: list[tuple[str, ...]]) -> str:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return text.getvalue()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_GOOD_ROW, st.tuples(*[_CELL] * 7)), max_size=30))
def test_the_direct_import_builds_the_models_validation_builds(rows: list[tuple[str, ...]]) -> None:
    """``event_model`` skips validation: it must give exactly what ``decode_input`` gives."""
    plan = plan_import(io.StringIO(_csv(rows)), now=NOW)
    for event in plan.events():
        built, validated = event_model(event), decode_input(encode(event))
        assert built == validated
        assert built.model_dump(mode="json") == validated.model_dump(mode="json")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.one_of(_GOOD_ROW, st.tuples(*[_CELL] * 7)), max_size=30),
    st.integers(min_value=2, max_value=4),
)
def test_planning_in_parts_plans_the_same_events_and_counts(
    rows: list[tuple[str, ...]], parts: int
) -> None:
    text = _csv(rows)
    whole = plan_import(io.StringIO(text), now=NOW)
    split = [plan_import(io.StringIO(text), now=NOW, part=(i, parts)) for i in range(parts)]
    events = sorted((e for plan in split for e in plan.events()), key=lambda e: e["event_id"])
    assert events == sorted(whole.events(), key=lambda e: e["event_id"])
    assert sum(plan.rows for plan in split) == whole.rows
    assert sum((plan.errors for plan in split), Counter()) == whole.errors
    accounts = [{e["account_id"] for e in plan.events()} for plan in split]
    assert sum(map(len, accounts)) == len(set().union(*accounts))  # each in one part


# ----------------------------------------------------------------------------- bench CSV


def _bench_csv(bench: ModuleType, **kwargs: Any) -> io.StringIO:
    text = io.StringIO()
    rows = bench.history_rows(300, 400, seed=3, end=date(2025, 12, 31), **kwargs)
    bench.write_history(text, rows)
    text.seek(0)
    return text


def test_bench_history_round_trips_without_errors(bench: ModuleType) -> None:
    text = _bench_csv(bench)
    count = text.getvalue().count("\n") - 1
    plan = plan_import(text)
    assert (plan.rows, plan.skipped, plan.examples) == (count, 0, [])
    assert plan.ignored_columns == ["customer_name", "erp_company"]
    events = list(plan.events(validate=True))
    types = Counter(event["type"] for event in events)
    assert types["order_placed"] > 1000 and types["order_returned"] > 10
    assert len(events) < plan.rows  # multi-row orders were merged
    categories = {line["category"] for e in events for line in e.get("lines", [])}
    assert categories == {
        normalised for normalised in map(importer.normalise_category, bench.CATEGORIES)
    }
    assert len({event["account_id"] for event in events}) > 250


def test_bench_revenue_is_concentrated(bench: ModuleType) -> None:
    revenue: Counter[str] = Counter()
    for event in plan_import(_bench_csv(bench)).events():
        revenue[event["account_id"]] += event.get("total", -event.get("amount", 0))
    ranked = sorted(revenue.values(), reverse=True)
    top_fifth = sum(ranked[: len(ranked) // 5]) / sum(ranked)
    assert top_fifth > 0.6  # ABC: a few accounts make most of the revenue


def test_bench_is_deterministic_and_bad_rows_are_counted(bench: ModuleType) -> None:
    assert _bench_csv(bench).getvalue() == _bench_csv(bench).getvalue()
    clean = _bench_csv(bench).getvalue().splitlines()
    dirty = _bench_csv(bench, bad_rows=20).getvalue().splitlines()
    assert [line for line in dirty if "CUST-BAD" not in line and "BAD-" not in line] == clean
    plan = plan_import(dirty)
    expected = Counter(bench.BAD_ROWS[n % len(bench.BAD_ROWS)][0] for n in range(20))
    assert plan.errors == expected


def test_bench_main_writes_where_told(bench: ModuleType, tmp_path: Path, capsys: Any) -> None:
    output = tmp_path / "history.csv"
    assert bench.main(["--accounts", "50", "--days", "60", "--times", "--output", str(output)]) == 0
    assert str(output) in capsys.readouterr().out
    with output.open(encoding="utf-8", newline="") as file:
        plan = plan_import(file)
    assert plan.skipped == 0 and plan.rows > 0
    assert next(plan.events())["occurred_at"].endswith("Z")


# ----------------------------------------------------------------------------- producing


class _FakeProduce:
    """Stands in for `worker.adapters.kafka_clients.produce`: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.kwargs: dict[str, Any] = {}

    def __call__(
        self,
        events: Iterable[tuple[str, dict[str, Any]]],
        bootstrap_servers: str,
        *,
        on_progress: Callable[[int], None] | None = None,
        **kwargs: Any,
    ) -> int:
        self.kwargs = {"bootstrap_servers": bootstrap_servers, **kwargs}
        for topic, event in events:
            self.sent.append((topic, event))
            if on_progress is not None and len(self.sent) % 2 == 0:
                on_progress(len(self.sent))
        if on_progress is not None:
            on_progress(len(self.sent))
        return len(self.sent)


def test_import_orders_produces_in_time_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("\n".join([*HISTORY, "C,2025-02-01,1,Tools,", "C,bad,1,,"]) + "\n")
    fake = _FakeProduce()
    monkeypatch.setattr(importer.run, "produce", fake)
    progress: list[tuple[int, int]] = []
    report = import_orders(
        path, "k1:9092,k2:9092", "erp-orders", on_progress=lambda *a: progress.append(a)
    )
    assert fake.kwargs["bootstrap_servers"] == "k1:9092,k2:9092"
    assert fake.kwargs["topics"] == {"orders": "erp-orders"}
    assert fake.kwargs["producer_config"]["acks"] == "all"
    assert fake.sent[0][1]["account_id"] == "C"
    assert {topic for topic, _ in fake.sent} == {"orders"}
    assert progress == [(2, 6), (4, 6), (6, 6), (6, 6)]
    assert (report.rows, report.imported, report.skipped, report.events) == (8, 7, 1, 6)
    assert report.errors_by_reason == {"bad_date": 1}
    assert [e.line for e in report.examples] == [9]
    assert report.seconds > 0 and report.events_per_second > 0
    assert report.ignored_columns == [] and not report.dry_run
    assert _ids(HISTORY) == [
        event["event_id"] for _, event in fake.sent if event["account_id"] != "C"
    ]


def test_dry_run_and_empty_imports_do_not_produce(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any, **kwargs: Any) -> int:
        raise AssertionError("must not produce")

    monkeypatch.setattr(importer.run, "produce", fail)
    path = tmp_path / "orders.csv"
    path.write_text("\n".join(HISTORY))
    report = import_orders(path, "unused:9092", "orders", dry_run=True)
    assert (report.rows, report.events, report.dry_run, report.events_per_second) == (
        6,
        5,
        True,
        0.0,
    )
    assert format_report(report).startswith("Checked 6 rows in ")
    assert "6 valid, 5 events to produce (dry run)" in format_report(report)
    path.write_text("account_id,date,amount\nA,x,1\n")
    report = import_orders(path, "unused:9092", "orders")
    assert (report.rows, report.skipped, report.events) == (1, 1, 0)


def test_format_report_lists_reasons_and_examples() -> None:
    plan = _plan(
        "account_id,date,amount,extra", *(f"A,bad-{n},1,x" for n in range(25)), "A,1970-01-01,1,x"
    )
    report = ImportReport(
        rows=plan.rows,
        imported=plan.imported,
        skipped=plan.skipped,
        errors_by_reason=dict(plan.errors.most_common()),
        examples=plan.examples,
        seconds=2.0,
        events_per_second=0.0,
        ignored_columns=plan.ignored_columns,
    )
    text = format_report(report)
    assert "Imported 0 of 26 rows as 0 events in 2.0 s" in text
    assert "Ignored columns: extra" in text
    assert "  bad_date      25\n  date_too_old  1\n" in text
    assert (
        "Rows dated before 1980-01-01 are refused: to import them, set "
        "SEGWORKER_EARLIEST_EVENT_TIME to an earlier date" in text
    )
    assert text.count("\n  line ") == importer.MAX_EXAMPLES


def test_format_report_names_the_floor_setting_only_for_rows_before_it() -> None:
    report = ImportReport(
        rows=1,
        imported=0,
        skipped=1,
        errors_by_reason={"bad_date": 1},
        examples=[RowError(2, "bad_date", "'x' is not an ISO date or datetime")],
        seconds=0.1,
        events_per_second=0.0,
    )
    assert "EARLIEST_EVENT_TIME" not in format_report(report)


# ------------------------------------------------------- history as ERP exports have it


#: An export as ERP systems write it: chronological, ';' separated with a byte-order mark,
#: columns the importer ignores (one with a quoted ';'), several date forms, orders of
#: several rows, history back to 1997, free goods (amount 0, also as "-0.00"), a return.
REAL_EXPORT = [
    "\ufeffaccount_id;Customer;date;amount;category;currency;contact_id;order_id;Sales Office",
    "ACC-1001;Müller GmbH;1997-01-14;1180.50;Tools;EUR;ACC-1001-C1;SO-970114;Hamburg",
    "ACC-1001;Müller GmbH;1997-01-14;220.00;Safety & PPE;eur;ACC-1001-C1;SO-970114;Hamburg",
    "ACC-1002;Dubois S.A.;1997-03-02;0.00;Samples;EUR;;SO-970302;Paris",
    'ACC-1003;"Rossi; S.r.l.";1997-08-15 10:30;0;Promotion;;;SO-970815;Milano',
    "ACC-1001;Müller GmbH;1998-11-20;-120.00;Tools;EUR;;SO-970114;Hamburg",
    "ACC-1004;Nowak Sp. z o.o.;1999-01-05;450.00;Fasteners;EUR;;SO-990105;Warszawa",
    "ACC-1004;Nowak Sp. z o.o.;1999-01-05;0.00;Fasteners;EUR;;SO-990105;Warszawa",
    "ACC-1005;Jansen B.V.;2003-02-28T09:15:00+01:00; 0.00 ;HVAC Parts;EUR;;;Stuttgart",
    "ACC-1002;Dubois S.A.;2023-06-11;-0.00;Samples;EUR;;SO-230611;Paris",
    "ACC-1001;Müller GmbH;2024-02-10;2400.00;Tools;EUR;ACC-1001-C2;SO-240210;Hamburg",
    "ACC-1004;Nowak Sp. z o.o.;2025-05-01;89.90;Fasteners;EUR;;SO-250501;Warszawa",
]
REAL_ACCOUNTS = {"ACC-1001", "ACC-1002", "ACC-1003", "ACC-1004", "ACC-1005"}


def _fold(plan: ImportPlan) -> dict[str, Any]:
    """Every account's state after the worker applied the plan's events, in order."""
    from worker.core.features import AccountState, apply

    states: dict[str, AccountState] = {}
    for event in plan.events(validate=True):
        decoded = decode_input(encode(event))
        state = states.setdefault(decoded.account_id, AccountState(decoded.account_id))
        assert apply(state, decoded)
    return states


def _features(state: Any, at: date) -> dict[str, Any]:
    from worker.core.features import FEATURES, FeatureView

    view = FeatureView(state, (at - date(1970, 1, 1)).days)
    return {name: view[name] for name in FEATURES}


def test_rows_since_1997_are_history_not_errors() -> None:
    (row,) = _rows(_parse("account_id,date,amount", "ACME,1997-01-14,10"))
    assert row.occurred_at == datetime(1997, 1, 14, tzinfo=UTC)


def test_the_floor_is_the_setting_of_the_worker() -> None:
    floor = datetime(2000, 1, 1, tzinfo=UTC)
    lines = ["account_id,date,amount", "ACME,1997-01-14,10", "ACME,2000-01-01,10"]
    plan = plan_import(lines, now=NOW, earliest_event_time=floor)
    assert (plan.imported, plan.errors) == (1, {"date_too_old": 1})
    assert str(plan.examples[0]) == (
        "line 2: date_too_old: '1997-01-14' is before 2000-01-01: "
        "set SEGWORKER_EARLIEST_EVENT_TIME to import it"
    )


def test_an_order_of_free_goods_is_an_order_without_revenue() -> None:
    events = _events(
        "account_id,date,amount,category,order_id",
        "ACME,2025-03-01,0,Samples,",
        "ACME,2025-03-02,-0.00,,",
        "ACME,2025-03-03,0.00,Promotion,SO-3",
        "ACME,2025-03-03,0.00,,SO-3",
    )
    assert [event["type"] for event in events] == ["order_placed"] * 3
    for event in events:
        assert str(event["total"]) == "0.0"  # not -0.0: a free order is no return
    assert [line["unit_price"] for line in events[0]["lines"]] == [0.0]
    assert [line["category"] for line in events[2]["lines"]] == ["promotion", "uncategorized"]
    (state,) = _fold(_plan(
        "account_id,date,amount,category,order_id",
        "ACME,2025-03-01,0,Samples,", "ACME,2025-03-02,-0.00,,", "ACME,2025-03-03,0.00,,SO-3",
    )).values()  # fmt: skip
    features = _features(state, date(2025, 3, 10))
    assert (features["orders_30d"], features["revenue_30d"], features["aov_365d"]) == (3, 0, 0)
    assert (features["recency_days"], features["tenure_days"]) == (7, 9)


def test_a_real_export_gives_every_customer_state() -> None:
    plan = plan_import(REAL_EXPORT, now=NOW)
    assert (plan.rows, plan.skipped, plan.ignored_columns) == (11, 0, ["Customer", "Sales Office"])
    events = list(plan.events(validate=True))
    assert [e["type"] for e in events].count("order_returned") == 1
    (returned,) = (e for e in events if e["type"] == "order_returned")
    assert (returned["account_id"], returned["amount"]) == ("ACC-1001", 120.0)
    states = _fold(plan)
    assert set(states) == REAL_ACCOUNTS
    free_only = _features(states["ACC-1003"], date(1997, 8, 20))
    assert (free_only["orders_30d"], free_only["revenue_30d"], free_only["recency_days"]) == (
        1,
        0,
        5,
    )
    samples = _features(states["ACC-1002"], date(2023, 6, 11))
    assert (samples["orders_30d"], samples["revenue_365d"]) == (1, 0)
    assert samples["tenure_days"] == (date(2023, 6, 11) - date(1997, 3, 2)).days
    paid_and_free = _features(states["ACC-1004"], date(2025, 5, 1))
    assert paid_and_free["tenure_days"] == (date(2025, 5, 1) - date(1999, 1, 5)).days
    assert (paid_and_free["orders_365d"], paid_and_free["revenue_365d"]) == (1, 89.9)


#: A whole number of 30-day category buckets: 1997 + SHIFT lies in 2024.
SHIFT = timedelta(days=329 * 30)


def _history(start: date, shift: timedelta = timedelta(0)) -> list[str]:
    """Two years of orders, returns and free orders of four accounts from ``start``."""
    import random

    rng = random.Random(11)
    lines = ["account_id,date,amount,category,order_id"]
    day = start
    while day < start + timedelta(days=730):
        account = rng.choice("ABCD")
        amount = rng.choice(["0", "0.00", f"{rng.uniform(10, 900):.2f}", f"-{rng.randint(1, 50)}"])
        order_id = rng.choice(["", f"SO-{day:%y%m%d}"])
        category = rng.choice(["", "Tools", "Safety & PPE", "HVAC"])
        lines.append(f"{account},{day + shift},{amount},{category},{order_id}")
        day += timedelta(days=rng.randint(1, 9))
    return lines


def test_a_1997_import_gives_the_features_of_the_same_history_in_2024() -> None:
    old = _fold(plan_import(_history(date(1997, 1, 1)), now=NOW))
    new = _fold(plan_import(_history(date(1997, 1, 1), SHIFT), now=NOW))
    assert set(old) == set(new) == set("ABCD")
    assert date(1997, 1, 1) + SHIFT > date(2024, 1, 1)
    for account in old:
        for offset in range(0, 1100, 13):
            at = date(1997, 1, 1) + timedelta(days=offset)
            assert _features(old[account], at) == _features(new[account], at + SHIFT), (
                account,
                at,
            )
