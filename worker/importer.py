"""History import: order rows from an ERP export (CSV) as order events, in event-time order.

``segworker import-orders FILE.csv`` back-fills segments from an order history. The work is
split into pure steps and a producing step:

1. `parse_rows` reads the CSV and yields a `ParsedRow` or a `RowError` (line number and
   reason) per data row;
2. `plan_import` collects the rows, merges the rows of one order, sorts everything by event
   time and hands out the events (`ImportPlan.events`) with deterministic ids;
3. `import_orders` produces them to the orders topic (key = ``account_id``, compact JSON,
   ``acks=all``) and returns an `ImportReport`; `format_report` renders it for the CLI.

File format
-----------
UTF-8 (a byte-order mark is fine), a header row, one order row per line. Column names are
case-insensitive, their order is free, columns not listed here are ignored (reported once).
The delimiter is ``,``, or ``;`` or a tab when the header uses those instead.

``account_id`` (required)
    The account (company); must be a valid identifier (``A-Z a-z 0-9 _ . : @ / + -``, at
    most 128 characters), as it becomes the Kafka key.
``date`` (required)
    ISO date (``2025-03-01``: midnight UTC of that day) or ISO datetime with a UTC offset
    (``2025-03-01T09:30:00+01:00``, ``...Z``) or without one (``2025-03-01 09:30``), which is
    taken as **UTC**. Not before the event-time floor the worker accepts (1980-01-01 unless
    the setting ``SEGWORKER_EARLIEST_EVENT_TIME`` moves it: the worker and the import must use
    the same value), not after the moment the import starts.
``amount`` (required)
    Decimal number with ``.`` as the decimal separator and no thousands separators
    (``1180.50``, ``-20``). Positive: an order (``OrderPlaced`` with ``total``). Zero: an
    order too (free goods, samples, a promotion), which counts for the order count, recency
    and tenure with no revenue. **Negative: a return** (``OrderReturned`` with ``amount =
    abs(amount)``), which reduces revenue on its date. At most 1e12 either way.
``order_id`` (optional)
    Rows of an account with the same ``order_id`` and an amount of zero or more are *one
    order* (ERP exports often have a row per order line): they become a single ``OrderPlaced``
    whose total is their sum, dated at the earliest of their dates. Negative rows with an
    ``order_id`` are returns of that order, one event per row. Without an ``order_id`` each
    row is an order (or a return) of its own and gets a generated ``order_id``, the event id.
``category`` (optional)
    Normalised to the event contract: lower case, accents dropped, runs of other characters
    replaced by ``_`` (``"HVAC Parts"`` -> ``hvac_parts``). An order's rows become one order
    line per category (``sku = "import:<category>"``, quantity 1, price = the category's
    sum); rows without a category in an order that has categorised rows count as
    ``uncategorized``; an order without any category has no lines (revenue only).
``currency`` (optional, default ``EUR``)
    ISO 4217 code; all rows of one order must agree.
``contact_id`` (optional)
    The ordering contact (orders only: the return contract has no contact). An order with
    several rows takes the first non-empty one.

Event ids and idempotency
-------------------------
Ids are derived from content, never from the file name or the time of the import, so
importing the same file again yields the same ids, which the worker drops as duplicates:

* an order with an ``order_id``: ``sha256(account_id, "order_placed", order_id)`` (an
  order happens once, whatever its rows' dates or amounts say in a later export);
* every other row: ``sha256(account_id, type, order_id or "", time, amount, category,
  currency, contact_id, n)`` where ``n`` counts identical earlier rows in the file, so two
  identical legitimate orders of one account on one day stay two events.

The id is ``"imp-"`` followed by the first 32 hex digits (128 bits) of the digest.

Examples
--------
>>> plan = plan_import([
...     "account_id,date,amount,category,order_id",
...     "ACME,2025-03-02,-20,Tools,SO-1",
...     "ACME,2025-03-01,100,Tools,SO-1",
...     "ACME,2025-03-01,50.5,Safety,SO-1",
...     "ACME,2025-13-01,10,,",
... ])
>>> plan.rows, plan.skipped, [str(error) for error in plan.examples]
(4, 1, ["line 5: bad_date: '2025-13-01' is not an ISO date or datetime (month must be in 1..12)"])
>>> [(e["type"], e["occurred_at"], e.get("total", e.get("amount"))) for e in plan.events()]
[('order_placed', '2025-03-01T00:00:00Z', 150.5), ('order_returned', '2025-03-02T00:00:00Z', 20.0)]
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import math
import operator
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from worker.events import (
    DEFAULT_EARLIEST_EVENT_TIME,
    EARLIEST_EVENT_TIME_SETTING,
    OrderPlaced,
    decode_input,
    moment_text,
)
from worker.features import IMPORT_ID_PREFIX
from worker.generator import encode, produce

EventDict = dict[str, Any]

#: Column names the importer understands; the first three are required.
REQUIRED_COLUMNS = ("account_id", "date", "amount")
OPTIONAL_COLUMNS = ("category", "order_id", "currency", "contact_id")
DEFAULT_CURRENCY = "EUR"
#: Category of an order's rows without one when other rows of the order have one.
UNCATEGORIZED = "uncategorized"
#: How many `RowError` examples an `ImportPlan` / `ImportReport` keeps.
MAX_EXAMPLES = 20
ID_PREFIX = IMPORT_ID_PREFIX
#: Producer settings of `import_orders` (overriding those of `worker.generator.produce`).
PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 20,
    "batch_size": 256 * 1024,
    "client_id": "segworker-importer",
}

# The constraints of the event contract, read from it so that they cannot drift apart.
_SCHEMA = OrderPlaced.model_json_schema()
_ID_SPEC = _SCHEMA["properties"]["account_id"]
_ID_PATTERN = re.compile(_ID_SPEC["pattern"])
_ID_MAX_LENGTH: int = _ID_SPEC["maxLength"]
_CURRENCY_PATTERN = re.compile(_SCHEMA["properties"]["currency"]["pattern"])
_CATEGORY_SPEC = _SCHEMA["$defs"]["OrderLine"]["properties"]["category"]
_CATEGORY_MAX_LENGTH: int = _CATEGORY_SPEC["maxLength"]
_MAX_AMOUNT: float = _SCHEMA["properties"]["total"]["maximum"]
_MAX_LINES: int = _SCHEMA["properties"]["lines"]["maxItems"]

_AMOUNT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_AMOUNT_HINT = " (use '.' as the decimal separator, no thousands separators)"
_NOT_CATEGORY = re.compile(r"[^a-z0-9]+")
_DELIMITERS = (",", ";", "\t")
#: Parse caches are cleared when they grow beyond this (date-only files need ~1k entries).
_CACHE_LIMIT = 100_000


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (no header, missing columns, not UTF-8)."""


class ParsedRow(NamedTuple):
    """One valid data row, normalised (a tuple: millions of them must stay small)."""

    line: int
    account_id: str
    occurred_at: datetime
    """Timezone-aware, UTC."""
    amount: float
    """As in the file: negative for a return."""
    category: str | None
    order_id: str | None
    currency: str
    contact_id: str | None

    @property
    def returned(self) -> bool:
        """Whether the row is a return (negative amount)."""
        return self.amount < 0


@dataclass(frozen=True, slots=True)
class RowError:
    """Why a data row was skipped.

    ``reason`` is a short stable key (``bad_date``, ``missing_field``, ...; see `REASONS`)
    for counting, ``detail`` the explanation with the offending value.
    """

    line: int
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}: {self.detail}"


#: Every `RowError.reason`.
REASONS = (
    "bad_row",
    "missing_field",
    "bad_account_id",
    "bad_date",
    "date_too_old",
    "future_date",
    "bad_amount",
    "amount_too_large",
    "bad_category",
    "bad_order_id",
    "bad_currency",
    "bad_contact_id",
    "conflicting_currency",
    "too_many_categories",
)


class _Reject(Exception):
    """A row is rejected (control flow inside this module; callers see `RowError`)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


# ------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class _Header:
    width: int
    positions: dict[str, int]
    ignored: list[str]


def _parse_header(record: list[str]) -> _Header:
    names = [name.strip().lstrip("\ufeff").strip().lower() for name in record]
    known = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    duplicates = sorted({n for n in names if n in known and names.count(n) > 1})
    if duplicates:
        raise ImportFileError(f"duplicate columns in the header: {', '.join(duplicates)}")
    positions = {name: i for i, name in enumerate(names) if name in known}
    missing = [name for name in REQUIRED_COLUMNS if name not in positions]
    if missing:
        raise ImportFileError(
            f"missing required columns: {', '.join(missing)} (header: {record!r}; "
            "the first line must name the columns, separated by ',' ';' or tabs)"
        )
    ignored = [raw.strip() for raw, name in zip(record, names, strict=True) if name not in known]
    return _Header(len(record), positions, ignored)


def _sniff_delimiter(header_line: str) -> str:
    """The most frequent of ``,`` ``;`` and tab in the header line (``,`` on a tie)."""
    return max(_DELIMITERS, key=header_line.count)


def _identifier(value: str, column: str) -> str:
    if len(value) > _ID_MAX_LENGTH or not _ID_PATTERN.fullmatch(value):
        raise _Reject(
            f"bad_{column}",
            f"{column} {value!r} must be 1-{_ID_MAX_LENGTH} of A-Z a-z 0-9 _ . : @ / + -",
        )
    return value


def _amount(value: str) -> float:
    if not _AMOUNT.fullmatch(value):
        hint = _AMOUNT_HINT if "," in value else ""
        raise _Reject("bad_amount", f"amount {value!r} is not a decimal number{hint}")
    # + 0.0 turns "-0.00" into 0.0: an order of free goods, not a return (nor a total of -0.0)
    amount = float(value) + 0.0
    if abs(amount) > _MAX_AMOUNT:
        raise _Reject("amount_too_large", f"amount {value!r} exceeds {_MAX_AMOUNT:g}")
    return amount


def _currency(value: str) -> str:
    currency = value.upper() or DEFAULT_CURRENCY
    if not _CURRENCY_PATTERN.fullmatch(currency):
        raise _Reject("bad_currency", f"currency {value!r} is not a 3-letter ISO 4217 code")
    return currency


def normalise_category(value: str) -> str:
    """Map a free-text category to the event contract's ``[a-z0-9_]+``.

    >>> normalise_category(" Werkzeug & Zubehör ")
    'werkzeug_zubehor'
    """
    ascii_only = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return _NOT_CATEGORY.sub("_", ascii_only.lower()).strip("_")


class _RowParser:
    """Turns the cells of one data row into a `ParsedRow` or raises `_Reject`."""

    def __init__(self, header: _Header, now: datetime, earliest: datetime) -> None:
        self.header = header
        self.now = now
        self.earliest = earliest
        self._optional = {name: header.positions.get(name) for name in OPTIONAL_COLUMNS}
        self._dates: dict[str, datetime | _Reject] = {}
        self._categories: dict[str, str | _Reject] = {}
        self._identifiers: dict[str, str] = {}

    def parse(self, cells: list[str], line: int) -> ParsedRow:
        if len(cells) != self.header.width:
            raise _Reject("bad_row", self._width_problem(cells))
        return ParsedRow(
            line=line,
            account_id=self._shared(self._required(cells, "account_id"), "account_id"),
            occurred_at=self._date(self._required(cells, "date")),
            amount=_amount(self._required(cells, "amount")),
            category=self._category(self._cell(cells, "category")),
            order_id=self._optional_id(cells, "order_id"),
            currency=_currency(self._cell(cells, "currency")),
            contact_id=self._optional_id(cells, "contact_id"),
        )

    def _width_problem(self, cells: list[str]) -> str:
        problem = f"{len(cells)} fields where the header has {self.header.width}"
        if len(cells) > self.header.width:
            return f"{problem} (a delimiter in an unquoted value?)"
        return f"{problem} (missing values, or a quote that is not closed?)"

    def _required(self, cells: list[str], column: str) -> str:
        value = cells[self.header.positions[column]].strip()
        if not value:
            raise _Reject("missing_field", f"{column} is empty")
        return value

    def _cell(self, cells: list[str], column: str) -> str:
        position = self._optional[column]
        return "" if position is None else cells[position].strip()

    def _optional_id(self, cells: list[str], column: str) -> str | None:
        value = self._cell(cells, column)
        if not value:
            return None
        if column == "contact_id":
            return self._shared(value, column)
        return _identifier(value, column)

    def _shared(self, value: str, column: str) -> str:
        """A checked identifier, one string object per distinct value (less memory)."""
        shared = self._identifiers.get(value)
        if shared is None:
            if len(self._identifiers) >= _CACHE_LIMIT:
                self._identifiers.clear()
            shared = self._identifiers[value] = _identifier(value, column)
        return shared

    def _date(self, value: str) -> datetime:
        parsed = self._dates.get(value)
        if parsed is None:
            if len(self._dates) >= _CACHE_LIMIT:
                self._dates.clear()
            parsed = self._dates[value] = self._parse_date(value)
        if isinstance(parsed, _Reject):
            raise parsed
        return parsed

    def _parse_date(self, value: str) -> datetime | _Reject:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            reason = "" if "isoformat" in str(exc) else f" ({exc})"
            return _Reject("bad_date", f"{value!r} is not an ISO date or datetime{reason}")
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        if moment < self.earliest:
            return _Reject(
                "date_too_old",
                f"{value!r} is before {moment_text(self.earliest)}: "
                f"set {EARLIEST_EVENT_TIME_SETTING} to import it",
            )
        if moment > self.now:
            return _Reject("future_date", f"{value!r} is in the future")
        return moment

    def _category(self, value: str) -> str | None:
        if not value:
            return None
        category = self._categories.get(value)
        if category is None:
            if len(self._categories) >= _CACHE_LIMIT:
                self._categories.clear()
            category = self._categories[value] = self._parse_category(value)
        if isinstance(category, _Reject):
            raise category
        return category

    @staticmethod
    def _parse_category(value: str) -> str | _Reject:
        category = normalise_category(value)
        if not category or len(category) > _CATEGORY_MAX_LENGTH:
            return _Reject(
                "bad_category",
                f"category {value!r} must have 1-{_CATEGORY_MAX_LENGTH} letters or digits",
            )
        return category


def _records(source: Iterable[str]) -> Iterator[tuple[int, list[str] | csv.Error]]:
    """``(first line number, cells)`` of every non-blank CSV record, the header included.

    A record the ``csv`` module cannot read (e.g. a runaway quoted field over its size
    limit) comes as the `csv.Error`; reading goes on after it.
    """
    lines = iter(source)
    blank = 0
    for first in lines:
        if first.strip():
            break
        blank += 1
    else:
        return
    reader = csv.reader(itertools.chain([first], lines), delimiter=_sniff_delimiter(first))
    end = 0
    while True:
        start = end + 1 + blank
        try:
            cells: list[str] | csv.Error = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            cells = exc
        end = reader.line_num
        if isinstance(cells, csv.Error) or any(cell.strip() for cell in cells):
            yield start, cells


def parse_rows(
    lines: Iterable[str] | TextIO,
    *,
    now: datetime | None = None,
    on_ignored_columns: Callable[[list[str]], None] | None = None,
    earliest_event_time: datetime = DEFAULT_EARLIEST_EVENT_TIME,
) -> Iterator[ParsedRow | RowError]:
    """Parse an ERP order export; yield a `ParsedRow` or a `RowError` per data row.

    Blank lines are skipped silently. Line numbers are 1-based physical lines of the file
    (a record with a quoted line break is numbered by its first line).

    Parameters
    ----------
    lines
        The CSV text, e.g. a file opened with ``encoding="utf-8-sig", newline=""``, or a
        list of lines (with or without line endings).
    now
        Rows dated after this are rejected (``future_date``); default: the time of the call.
    on_ignored_columns
        Called once, with the original names, when the header has columns the importer does
        not use.
    earliest_event_time
        Rows dated before this are rejected (``date_too_old``): the worker's setting
        ``earliest_event_time``, which would refuse their events.

    Raises
    ------
    ImportFileError
        When there is no header or it lacks a required column (before the first row).

    Examples
    --------
    >>> rows = list(parse_rows(["date;amount;account_id", "", "2025-03-01T10:00;12;X", "x;1;Y"]))
    >>> rows[0].line, rows[0].account_id, rows[0].occurred_at.isoformat(), rows[0].amount
    (3, 'X', '2025-03-01T10:00:00+00:00', 12.0)
    >>> print(rows[1])
    line 4: bad_date: 'x' is not an ISO date or datetime
    """
    records = _records(lines)
    first = next(records, None)
    if first is None:
        raise ImportFileError("the file is empty: expected a header row and order rows")
    if isinstance(first[1], csv.Error):
        raise ImportFileError(f"unreadable header row: {first[1]}")
    header = _parse_header(first[1])
    if header.ignored and on_ignored_columns is not None:
        on_ignored_columns(header.ignored)
    parser = _RowParser(header, now or datetime.now(UTC), earliest_event_time)
    for line, cells in records:
        if isinstance(cells, csv.Error):
            yield RowError(line, "bad_row", f"unreadable CSV record: {cells}")
            continue
        try:
            yield parser.parse(cells, line)
        except _Reject as rejected:
            yield RowError(line, rejected.reason, rejected.detail)


# ----------------------------------------------------------------------------- planning


@dataclass(slots=True)
class _Order:
    """The rows of one order (account, ``order_id``, no negative amount) merged into one event."""

    first: ParsedRow
    """The first row in the file: it gives the currency and (if any) the contact."""
    occurred_at: datetime
    """The earliest date of the rows."""
    line: int
    """The line of the earliest row (the tie-breaker of the time order)."""
    contact_id: str | None
    spend: dict[str | None, float]
    """Amount per category (``None``: rows without one)."""

    @classmethod
    def of(cls, row: ParsedRow) -> _Order:
        return cls(row, row.occurred_at, row.line, row.contact_id, {row.category: row.amount})

    def add(self, row: ParsedRow) -> None:
        """Merge another row of the order; raises `_Reject` (leaving it as it was)."""
        if row.currency != self.first.currency:
            raise _Reject(
                "conflicting_currency",
                f"currency {row.currency} differs from {self.first.currency} of order "
                f"{row.order_id} (line {self.first.line})",
            )
        if row.category not in self.spend and len(self.spend) >= _MAX_LINES:
            raise _Reject(
                "too_many_categories", f"order {row.order_id} has over {_MAX_LINES} categories"
            )
        if math.fsum(self.spend.values()) + row.amount > _MAX_AMOUNT:
            raise _Reject("amount_too_large", f"order {row.order_id} exceeds {_MAX_AMOUNT:g}")
        self.spend[row.category] = self.spend.get(row.category, 0.0) + row.amount
        if (row.occurred_at, row.line) < (self.occurred_at, self.line):
            self.occurred_at, self.line = row.occurred_at, row.line
        if self.contact_id is None:
            self.contact_id = row.contact_id


#: A row that is an event of its own, or an order of several rows.
_Planned = ParsedRow | _Order
#: ``(account_id, order_id)`` -> position of the order in `ImportPlan._planned`.
_OrderIndex = dict[tuple[str, str], int]


@dataclass
class ImportPlan:
    """Everything parsed from one file, ready to produce in event-time order.

    ``rows`` counts data rows, ``skipped`` the rejected ones (by reason in ``errors``, the
    first `MAX_EXAMPLES` in ``examples``); the rest are ``imported``, as ``len(self)``
    events. ``earliest_event_time`` is the floor the rows were checked against.
    """

    earliest_event_time: datetime = DEFAULT_EARLIEST_EVENT_TIME
    rows: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    examples: list[RowError] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    _planned: list[_Planned] = field(default_factory=list, repr=False)

    @property
    def skipped(self) -> int:
        return sum(self.errors.values())

    @property
    def imported(self) -> int:
        return self.rows - self.skipped

    def __len__(self) -> int:
        return len(self._planned)

    def reject(self, error: RowError) -> None:
        """Count a skipped row (and keep it if it is one of the first `MAX_EXAMPLES`)."""
        self.errors[error.reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(error)

    def add(self, row: ParsedRow, orders: _OrderIndex) -> None:
        """Plan ``row``: as an event of its own, or merged into its order.

        A single-row order stays a `ParsedRow` (small); a second row makes it an `_Order`.
        Raises `_Reject` when the row cannot join its order.
        """
        if row.order_id is None or row.returned:
            self._planned.append(row)
            return
        key = (row.account_id, row.order_id)
        position = orders.get(key)
        if position is None:
            orders[key] = len(self._planned)
            self._planned.append(row)
            return
        order = self._planned[position]
        if isinstance(order, ParsedRow):
            order = self._planned[position] = _Order.of(order)
        order.add(row)

    def sort(self) -> None:
        """Event-time order; the file's order among equal times (the sort is stable)."""
        self._planned.sort(key=operator.attrgetter("occurred_at", "line"))

    def events(self, *, validate: bool = False) -> Iterator[EventDict]:
        """The events in event-time order (file order among equal times).

        With ``validate``, every event is checked with `worker.events.decode_input` (at the
        plan's floor) first (a guard against bugs here: only valid events are built).
        """
        by_time = operator.attrgetter("occurred_at")
        for _, same_time in itertools.groupby(self._planned, key=by_time):
            occurrences: Counter[tuple[str, ...]] = Counter()
            for planned in same_time:
                if isinstance(planned, _Order):
                    event = _order_event(planned)
                elif planned.order_id is not None and not planned.returned:
                    event = _order_event(_Order.of(planned))
                else:
                    key = _row_key(planned)
                    event = _row_event(planned, key, occurrences[key])
                    occurrences[key] += 1
                if validate:
                    decode_input(encode(event), self.earliest_event_time)
                yield event


def plan_import(
    lines: Iterable[str] | TextIO,
    *,
    now: datetime | None = None,
    earliest_event_time: datetime = DEFAULT_EARLIEST_EVENT_TIME,
) -> ImportPlan:
    """Parse, merge the rows of each order and sort by event time (all in memory).

    ``now`` and ``earliest_event_time`` bound the rows' dates, as in `parse_rows`.

    Memory is about 300 bytes per row (rows are tuples; dates, accounts, contacts and
    categories are shared objects), so a few million rows fit comfortably.

    Raises
    ------
    ImportFileError
        From `parse_rows`.
    """
    plan = ImportPlan(earliest_event_time)
    orders: _OrderIndex = {}
    rows = parse_rows(
        lines,
        now=now,
        on_ignored_columns=plan.ignored_columns.extend,
        earliest_event_time=earliest_event_time,
    )
    for item in rows:
        plan.rows += 1
        if isinstance(item, RowError):
            plan.reject(item)
            continue
        try:
            plan.add(item, orders)
        except _Reject as rejected:
            plan.reject(RowError(item.line, rejected.reason, rejected.detail))
    plan.sort()
    return plan


# ------------------------------------------------------------------------------- events


def _iso(moment: datetime) -> str:
    """ISO-8601 UTC with ``Z``, seconds or microseconds as needed."""
    return moment.isoformat().replace("+00:00", "Z")


def _event_id(*parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"{ID_PREFIX}{digest[:32]}"


def _row_key(row: ParsedRow) -> tuple[str, ...]:
    """What identifies a row without an order of its own (see the module docstring)."""
    return (
        row.account_id,
        "order_returned" if row.returned else "order_placed",
        row.order_id or "",
        _iso(row.occurred_at),
        repr(abs(row.amount)),
        row.category or "",
        row.currency,
        row.contact_id or "",
    )


def _money(value: float) -> float:
    """Sums of decimal amounts without binary noise (``0.1 + 0.2`` -> ``0.3``)."""
    return round(value, 6)


def _line(category: str, amount: float) -> EventDict:
    """One order line per category: the rows' sum as the price of quantity 1."""
    return {"sku": f"import:{category}", "category": category, "quantity": 1, "unit_price": amount}


def _order_event(order: _Order) -> EventDict:
    first = order.first
    assert first.order_id is not None
    lines: list[EventDict] = []
    if any(category is not None for category in order.spend):
        lines = [_line(c or UNCATEGORIZED, _money(amount)) for c, amount in order.spend.items()]
    event: EventDict = {
        "type": "order_placed",
        "event_id": _event_id(first.account_id, "order_placed", first.order_id),
        "occurred_at": _iso(order.occurred_at),
        "account_id": first.account_id,
        "order_id": first.order_id,
        "currency": first.currency,
        "total": _money(math.fsum(order.spend.values())),
        "lines": lines,
    }
    if order.contact_id is not None:
        event["contact_id"] = order.contact_id
    return event


def _row_event(row: ParsedRow, key: tuple[str, ...], occurrence: int) -> EventDict:
    event_id = _event_id(*key, str(occurrence))
    event: EventDict = {
        "type": key[1],
        "event_id": event_id,
        "occurred_at": key[3],
        "account_id": row.account_id,
        "order_id": row.order_id or event_id,
        "currency": row.currency,
    }
    if row.returned:
        event["amount"] = -row.amount
        if row.category is not None:
            event["category"] = row.category
        return event
    event["total"] = row.amount
    if row.category is not None:
        event["lines"] = [_line(row.category, row.amount)]
    if row.contact_id is not None:
        event["contact_id"] = row.contact_id
    return event


# ---------------------------------------------------------------------------- producing


@dataclass(frozen=True)
class ImportReport:
    """The outcome of `import_orders`.

    ``rows`` = ``imported`` + ``skipped`` data rows; ``events`` were produced (fewer than
    ``imported`` when orders span several rows). ``seconds`` is the whole run (parsing
    included, ``parse_seconds`` of it) and ``events_per_second`` is ``events / seconds``.
    ``earliest_event_time`` is the floor rows were checked against (``date_too_old``).
    """

    rows: int
    imported: int
    skipped: int
    errors_by_reason: dict[str, int]
    examples: list[RowError]
    seconds: float
    events_per_second: float
    events: int = 0
    parse_seconds: float = 0.0
    ignored_columns: list[str] = field(default_factory=list)
    dry_run: bool = False
    earliest_event_time: datetime = DEFAULT_EARLIEST_EVENT_TIME


def _open_plan(path: Path, now: datetime | None, earliest_event_time: datetime) -> ImportPlan:
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            return plan_import(file, now=now, earliest_event_time=earliest_event_time)
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            f"{path} is not UTF-8 (byte {exc.start}: {exc.reason}); export it as UTF-8"
        ) from None


def import_orders(
    path: Path,
    bootstrap_servers: str,
    topic: str,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    client_options: Mapping[str, Any] | None = None,
    earliest_event_time: datetime = DEFAULT_EARLIEST_EVENT_TIME,
) -> ImportReport:
    """Import an ERP order export: parse, sort by event time, produce to ``topic``.

    Nothing is produced unless the whole file could be read (bad rows are skipped and
    reported; a bad header or encoding raises). Events go out in event-time order, keyed by
    ``account_id``, through `worker.generator.produce` with `PRODUCER_CONFIG`.

    Parameters
    ----------
    path
        The CSV file (format: see the module docstring).
    bootstrap_servers
        ``host:port[,host:port...]``.
    topic
        The orders topic (co-partitioned with the other input topics).
    on_progress
        Called with ``(produced, total events)`` every 1,000 events and at the end.
    dry_run
        Parse and check only; nothing is produced (``events`` is what would be).
    now
        Rows after this are ``future_date``; default: the start of the import.
    client_options
        Extra Kafka client options, e.g. SASL/SSL (`worker.security.kafka_client_options`).
    earliest_event_time
        Rows before this are ``date_too_old``: the worker's setting, which would refuse
        their events.

    Raises
    ------
    ImportFileError
        The file has no usable header or is not UTF-8.
    OSError
        The file cannot be read.
    kafka.errors.KafkaError
        A delivery failed (events before it may have been produced; importing the file
        again is safe, see the module docstring).
    """
    started = time.monotonic()
    plan = _open_plan(path, now, earliest_event_time)
    parse_seconds = time.monotonic() - started
    produced = 0
    if len(plan) and not dry_run:
        total = len(plan)

        def progress(count: int) -> None:
            if on_progress is not None:
                on_progress(count, total)

        produced = produce(
            (("orders", event) for event in plan.events()),
            bootstrap_servers,
            topics={"orders": topic},
            on_progress=progress,
            producer_config={**PRODUCER_CONFIG, **(client_options or {})},
        )
    seconds = time.monotonic() - started
    return ImportReport(
        rows=plan.rows,
        imported=plan.imported,
        skipped=plan.skipped,
        errors_by_reason=dict(plan.errors.most_common()),
        examples=list(plan.examples),
        seconds=seconds,
        events_per_second=produced / seconds if seconds > 0 else 0.0,
        events=produced if not dry_run else len(plan),
        parse_seconds=parse_seconds,
        ignored_columns=list(plan.ignored_columns),
        dry_run=dry_run,
        earliest_event_time=earliest_event_time,
    )


def _floor_hint(floor: datetime) -> str:
    return (
        f"Rows dated before {moment_text(floor)} are refused: to import them, set "
        f"{EARLIEST_EVENT_TIME_SETTING} to an earlier date (after 1970-01-01) for this "
        "import and for the worker alike (it refuses such events too)."
    )


def format_report(report: ImportReport) -> str:
    """Plain text for the terminal.

    >>> print(format_report(ImportReport(
    ...     rows=3, imported=2, skipped=1, errors_by_reason={"bad_date": 1},
    ...     examples=[RowError(4, "bad_date", "'2025-13-01' is not an ISO date or datetime")],
    ...     seconds=0.5, events_per_second=4.0, events=2, ignored_columns=["region"])))
    Imported 2 of 3 rows as 2 events in 0.5 s (4 events/s).
    Ignored columns: region
    Skipped 1 row:
      bad_date  1
    First errors:
      line 4: bad_date: '2025-13-01' is not an ISO date or datetime
    """
    if report.dry_run:
        head = (
            f"Checked {report.rows:,} rows in {report.seconds:.1f} s: {report.imported:,} valid,"
            f" {report.events:,} events to produce (dry run)."
        )
    else:
        head = (
            f"Imported {report.imported:,} of {report.rows:,} rows as {report.events:,} events"
            f" in {report.seconds:.1f} s ({report.events_per_second:,.0f} events/s)."
        )
    lines = [head]
    if report.ignored_columns:
        lines.append(f"Ignored columns: {', '.join(report.ignored_columns)}")
    if report.skipped:
        lines.append(f"Skipped {report.skipped:,} row{'s' if report.skipped != 1 else ''}:")
        width = max(len(reason) for reason in report.errors_by_reason)
        lines += [f"  {r:{width}}  {n:,}" for r, n in report.errors_by_reason.items()]
        if "date_too_old" in report.errors_by_reason:
            lines.append(_floor_hint(report.earliest_event_time))
        lines.append("First errors:")
        lines += [f"  {error}" for error in report.examples]
    return "\n".join(lines)
