"""History import: order rows from an ERP export (CSV) as order events, in event-time order.

``segworker import-orders FILE.csv`` back-fills segments from an order history. The work is
split into pure steps and a writing step:

1. `parse_rows` reads the CSV and yields a `ParsedRow` or a `RowError` (line number and
   reason) per data row;
2. `plan_import` collects the rows, merges the rows of one order, sorts everything by event
   time and hands out the events (`ImportPlan.events`) with deterministic ids;
3. `worker.ops.importer.direct.import_into_state` (the command's default) folds them into
   the account states and emits only the net change per account and segment; `import_orders`
   (``--via-kafka``) produces them to the orders topic instead (key = ``account_id``, compact
   JSON, ``acks=all``); both return an `ImportReport`, which `format_report` renders.

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

from worker.ops.importer.plan import ImportPlan, plan_import
from worker.ops.importer.rows import (
    MAX_EXAMPLES,
    OPTIONAL_COLUMNS,
    REASONS,
    REQUIRED_COLUMNS,
    ImportFileError,
    ParsedRow,
    RowError,
    normalise_category,
    parse_rows,
)
from worker.ops.importer.run import ImportReport, format_report, import_orders

__all__ = [
    "MAX_EXAMPLES",
    "OPTIONAL_COLUMNS",
    "REASONS",
    "REQUIRED_COLUMNS",
    "ImportFileError",
    "ImportPlan",
    "ImportReport",
    "ParsedRow",
    "RowError",
    "format_report",
    "import_orders",
    "normalise_category",
    "parse_rows",
    "plan_import",
]
