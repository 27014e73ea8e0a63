"""Reading an ERP order export: rows, or the reason a row is skipped."""

from __future__ import annotations

import csv
import itertools
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, TextIO

from worker.core.events import (
    DEFAULT_EARLIEST_EVENT_TIME,
    EARLIEST_EVENT_TIME_SETTING,
    OrderPlaced,
    moment_text,
)
from worker.core.features import IMPORT_ID_PREFIX

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
#: Producer settings of `import_orders` (overriding those of
#: `worker.adapters.kafka_clients.produce`).
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
MAX_AMOUNT: float = _SCHEMA["properties"]["total"]["maximum"]
MAX_LINES: int = _SCHEMA["properties"]["lines"]["maxItems"]

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


class Reject(Exception):
    """A row is rejected (control flow inside the importer; callers see `RowError`)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


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
        raise Reject(
            f"bad_{column}",
            f"{column} {value!r} must be 1-{_ID_MAX_LENGTH} of A-Z a-z 0-9 _ . : @ / + -",
        )
    return value


def _amount(value: str) -> float:
    if not _AMOUNT.fullmatch(value):
        hint = _AMOUNT_HINT if "," in value else ""
        raise Reject("bad_amount", f"amount {value!r} is not a decimal number{hint}")
    # + 0.0 turns "-0.00" into 0.0: an order of free goods, not a return (nor a total of -0.0)
    amount = float(value) + 0.0
    if abs(amount) > MAX_AMOUNT:
        raise Reject("amount_too_large", f"amount {value!r} exceeds {MAX_AMOUNT:g}")
    return amount


def _currency(value: str) -> str:
    currency = value.upper() or DEFAULT_CURRENCY
    if not _CURRENCY_PATTERN.fullmatch(currency):
        raise Reject("bad_currency", f"currency {value!r} is not a 3-letter ISO 4217 code")
    return currency


def normalise_category(value: str) -> str:
    """Map a free-text category to the event contract's ``[a-z0-9_]+``.

    >>> normalise_category(" Werkzeug & Zubehör ")
    'werkzeug_zubehor'
    """
    ascii_only = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return _NOT_CATEGORY.sub("_", ascii_only.lower()).strip("_")


class _RowParser:
    """Turns the cells of one data row into a `ParsedRow` or raises `Reject`."""

    def __init__(self, header: _Header, now: datetime, earliest: datetime) -> None:
        self.header = header
        self.now = now
        self.earliest = earliest
        self._optional = {name: header.positions.get(name) for name in OPTIONAL_COLUMNS}
        self._dates: dict[str, datetime | Reject] = {}
        self._categories: dict[str, str | Reject] = {}
        self._identifiers: dict[str, str] = {}

    def parse(self, cells: list[str], line: int) -> ParsedRow:
        if len(cells) != self.header.width:
            raise Reject("bad_row", self._width_problem(cells))
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
            raise Reject("missing_field", f"{column} is empty")
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
        if isinstance(parsed, Reject):
            raise parsed
        return parsed

    def _parse_date(self, value: str) -> datetime | Reject:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            reason = "" if "isoformat" in str(exc) else f" ({exc})"
            return Reject("bad_date", f"{value!r} is not an ISO date or datetime{reason}")
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        if moment < self.earliest:
            return Reject(
                "date_too_old",
                f"{value!r} is before {moment_text(self.earliest)}: "
                f"set {EARLIEST_EVENT_TIME_SETTING} to import it",
            )
        if moment > self.now:
            return Reject("future_date", f"{value!r} is in the future")
        return moment

    def _category(self, value: str) -> str | None:
        if not value:
            return None
        category = self._categories.get(value)
        if category is None:
            if len(self._categories) >= _CACHE_LIMIT:
                self._categories.clear()
            category = self._categories[value] = self._parse_category(value)
        if isinstance(category, Reject):
            raise category
        return category

    @staticmethod
    def _parse_category(value: str) -> str | Reject:
        category = normalise_category(value)
        if not category or len(category) > _CATEGORY_MAX_LENGTH:
            return Reject(
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


def account_part(account_id: str, parts: int) -> int:
    """Which of ``parts`` parts an account belongs to (stable across processes and runs).

    >>> account_part("ACME", 1), account_part("ACME", 2) in (0, 1)
    (0, True)
    """
    return zlib.crc32(account_id.encode()) % parts


def parse_rows(
    lines: Iterable[str] | TextIO,
    *,
    now: datetime | None = None,
    on_ignored_columns: Callable[[list[str]], None] | None = None,
    earliest_event_time: datetime = DEFAULT_EARLIEST_EVENT_TIME,
    part: tuple[int, int] = (0, 1),
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
    part
        ``(i, n)``: only the rows whose ``account_id`` cell hashes to ``i`` of ``n``
        (`account_part`; unreadable records go to part 0), so that ``n`` processes
        importing one file share its parsing.

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
    index, parts = part
    account = header.positions["account_id"]
    for line, cells in records:
        if isinstance(cells, csv.Error):
            if index == 0:
                yield RowError(line, "bad_row", f"unreadable CSV record: {cells}")
            continue
        if parts > 1:
            cell = cells[account].strip() if account < len(cells) else ""
            if account_part(cell, parts) != index:
                continue
        try:
            yield parser.parse(cells, line)
        except Reject as rejected:
            yield RowError(line, rejected.reason, rejected.detail)
