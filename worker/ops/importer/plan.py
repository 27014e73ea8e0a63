"""Planning an import: one order per order id, in event-time order, with deterministic ids."""

from __future__ import annotations

import hashlib
import itertools
import math
import operator
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from worker.adapters.kafka_clients import encode
from worker.core.events import (
    DEFAULT_EARLIEST_EVENT_TIME,
    decode_input,
)
from worker.ops.importer.rows import (
    ID_PREFIX,
    MAX_AMOUNT,
    MAX_EXAMPLES,
    MAX_LINES,
    UNCATEGORIZED,
    ParsedRow,
    Reject,
    RowError,
    parse_rows,
)

EventDict = dict[str, Any]


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
        """Merge another row of the order; raises `Reject` (leaving it as it was)."""
        if row.currency != self.first.currency:
            raise Reject(
                "conflicting_currency",
                f"currency {row.currency} differs from {self.first.currency} of order "
                f"{row.order_id} (line {self.first.line})",
            )
        if row.category not in self.spend and len(self.spend) >= MAX_LINES:
            raise Reject(
                "too_many_categories", f"order {row.order_id} has over {MAX_LINES} categories"
            )
        if math.fsum(self.spend.values()) + row.amount > MAX_AMOUNT:
            raise Reject("amount_too_large", f"order {row.order_id} exceeds {MAX_AMOUNT:g}")
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

    @property
    def end(self) -> datetime | None:
        """The latest event time (None: no events); the plan is sorted by then."""
        return self._planned[-1].occurred_at if self._planned else None

    def reject(self, error: RowError) -> None:
        """Count a skipped row (and keep it if it is one of the first `MAX_EXAMPLES`)."""
        self.errors[error.reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(error)

    def add(self, row: ParsedRow, orders: _OrderIndex) -> None:
        """Plan ``row``: as an event of its own, or merged into its order.

        A single-row order stays a `ParsedRow` (small); a second row makes it an `_Order`.
        Raises `Reject` when the row cannot join its order.
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

        With ``validate``, every event is checked with `worker.core.events.decode_input` (at the
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
    part: tuple[int, int] = (0, 1),
) -> ImportPlan:
    """Parse, merge the rows of each order and sort by event time (all in memory).

    ``now`` and ``earliest_event_time`` bound the rows' dates, as in `parse_rows`;
    ``part=(i, n)``: the rows of the accounts of part ``i`` of ``n`` only (`parse_rows`).

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
        part=part,
    )
    for item in rows:
        plan.rows += 1
        if isinstance(item, RowError):
            plan.reject(item)
            continue
        try:
            plan.add(item, orders)
        except Reject as rejected:
            plan.reject(RowError(item.line, rejected.reason, rejected.detail))
    plan.sort()
    return plan


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
