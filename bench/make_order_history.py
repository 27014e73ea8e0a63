"""Write a synthetic ERP order export (CSV) for ``segworker import-orders``.

    .venv/bin/python bench/make_order_history.py [--accounts 20000] [--days 730] [--seed 7]
        [--bad-rows N] [--times] [--output PATH]

The history ends yesterday (UTC). Order frequency and basket size are both Pareto-distributed
per account, so revenue is very concentrated (ABC analysis makes sense: a few percent of the
accounts make most of the revenue); accounts buy from one to three of eight categories, some
start late (new customers) and some stop (churned). An order has one to three rows (one per
category, sharing the ``order_id``); about 3 % of orders come back partly, as a negative row
2-30 days later. The file is grouped by account, not sorted by date, and has two columns the
importer ignores (``customer_name``, ``erp_company``). ``--bad-rows N`` adds N invalid rows
(bad date, decimal comma, epoch-0 date, future date, bad account id, ...), one kind after the
other. The same arguments give the same file (on the same day: the end is yesterday).

Writes to a file under the system's temporary directory unless ``--output`` is given, and
prints the row count and the file size. Generation is pure (`history_rows`); the defaults
(20,000 accounts, two years, ~330k rows) take a few seconds.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TextIO

COLUMNS = (
    "order_id",
    "date",
    "account_id",
    "customer_name",
    "category",
    "amount",
    "currency",
    "contact_id",
    "erp_company",
)
#: Category names as an ERP shows them (the importer normalises them, e.g. ``safety_ppe``).
CATEGORIES = (
    "Tools",
    "Fasteners",
    "Safety & PPE",
    "Electrical",
    "Cleaning",
    "Office Supplies",
    "Packaging",
    "HVAC",
)
#: Invalid rows ``--bad-rows`` adds, one kind after the other: (reason, column -> value).
BAD_ROWS: tuple[tuple[str, dict[str, str]], ...] = (
    ("bad_date", {"date": "2025-02-30"}),
    ("bad_amount", {"amount": "1.234,50"}),
    ("date_too_old", {"date": "1970-01-01"}),  # epoch 0: a producer's default, not history
    ("future_date", {"date": "2099-01-01"}),
    ("bad_account_id", {"account_id": "ACME GmbH"}),
    ("missing_field", {"account_id": ""}),
    ("bad_currency", {"currency": "EURO"}),
    ("bad_amount", {"amount": "n/a"}),
    ("bad_date", {"date": "01/03/2025"}),
)
_NAMES = ("Müller", "Schmidt", "Dubois", "Rossi", "Nowak", "Jansen", "Smith", "García")
_FORMS = ("GmbH", "AG", "S.A.", "S.r.l.", "Sp. z o.o.", "B.V.", "Ltd", "GmbH & Co. KG")
_RETURN_PROBABILITY = 0.03
_MAX_ORDERS_PER_YEAR = 260.0


def _yesterday() -> date:
    return datetime.now(UTC).date() - timedelta(days=1)


def _day_labels(end: date, days: int, times: bool, rng: random.Random) -> list[str]:
    """Label of each day of the history (index 0 = first day), precomputed for speed."""
    first = end - timedelta(days=days - 1)
    labels = [(first + timedelta(days=n)).isoformat() for n in range(days)]
    if times:  # business hours, Central European time
        labels = [f"{d}T{rng.randint(7, 17):02d}:{rng.randint(0, 59):02d}:00+01:00" for d in labels]
    return labels


def _account_rows(number: int, labels: list[str], rng: random.Random) -> Iterator[list[str]]:
    """The rows of one account, in date order."""
    days = len(labels)
    account_id = f"CUST-{100000 + number}"
    name = f"{rng.choice(_NAMES)} {rng.choice(_FORMS)}"
    company = "2000" if number % 5 == 0 else "1000"
    currency = "CHF" if number % 17 == 0 else "EUR"
    per_year = min(_MAX_ORDERS_PER_YEAR, 2.0 * rng.paretovariate(1.4))
    basket = min(250_000.0, 80.0 * rng.paretovariate(1.2))
    categories = rng.sample(CATEGORIES, rng.randint(1, 3))
    weights = [rng.random() + 0.2 for _ in categories]
    first = int(days * rng.random() ** 3) if rng.random() < 0.25 else 0  # new customers
    last = days - int(days * rng.random()) if rng.random() < 0.15 else days  # churned
    expected = per_year * max(0, last - first) / 365
    count = int(expected + rng.random())  # rounded at random: the mean stays right
    order_days = sorted(rng.randrange(first, max(first + 1, last)) for _ in range(count))
    for n, day in enumerate(order_days, 1):
        order_id = f"SO-{number:05d}-{n:04d}"
        contact = f"{account_id}-C{rng.randint(1, 3)}" if rng.random() < 0.7 else ""
        total = basket * rng.lognormvariate(-0.125, 0.5)
        picked = dict.fromkeys(rng.choices(categories, weights, k=rng.randint(1, 3)))
        shares = [rng.random() + 0.3 for _ in picked]
        amounts = [max(0.01, total * share / sum(shares)) for share in shares]
        for category, amount in zip(picked, amounts, strict=True):
            row = [order_id, labels[day], account_id, name, category, f"{amount:.2f}"]
            yield [*row, currency, contact, company]
        back = day + rng.randint(2, 30)
        if rng.random() < _RETURN_PROBABILITY and back < days:
            amount = max(0.01, amounts[0] * rng.uniform(0.05, 1.0))
            row = [order_id, labels[back], account_id, name, next(iter(picked)), f"-{amount:.2f}"]
            yield [*row, currency, contact, company]


def _bad_row(n: int, labels: list[str]) -> list[str]:
    _, overrides = BAD_ROWS[n % len(BAD_ROWS)]
    good = {
        "order_id": f"BAD-{n + 1}",
        "date": labels[-1],
        "account_id": "CUST-BAD",
        "customer_name": "Bad Row Ltd",
        "category": "Tools",
        "amount": "10.00",
        "currency": "EUR",
        "contact_id": "",
        "erp_company": "1000",
    }
    good.update(overrides)
    return [good[column] for column in COLUMNS]


def history_rows(
    accounts: int = 20_000,
    days: int = 730,
    *,
    seed: int = 7,
    end: date | None = None,
    bad_rows: int = 0,
    times: bool = False,
) -> Iterator[list[str]]:
    """The header and then every row of the export, grouped by account.

    Parameters
    ----------
    accounts
        Number of accounts (``CUST-100000`` ...).
    days
        Length of the history, ending on ``end``.
    seed
        The same seed (and arguments) give the same rows.
    end
        Last day of the history; default: yesterday (UTC).
    bad_rows
        Invalid rows to add, spread over the file (see `BAD_ROWS`).
    times
        Datetimes with a ``+01:00`` offset instead of dates.
    """
    rng = random.Random(seed)
    aside = random.Random(f"{seed}-aside")  # times and bad rows leave the good rows alone
    labels = _day_labels(end or _yesterday(), days, times, aside)
    bad_after = sorted(aside.randrange(accounts) for _ in range(bad_rows))
    yield list(COLUMNS)
    bad = 0
    for number in range(accounts):
        yield from _account_rows(number, labels, rng)
        while bad < bad_rows and bad_after[bad] == number:
            yield _bad_row(bad, labels)
            bad += 1


def write_history(file: TextIO, rows: Iterator[list[str]]) -> int:
    """Write ``rows`` (header included) as CSV; return the number of data rows."""
    writer = csv.writer(file, lineterminator="\n")
    count = -1
    for count, row in enumerate(rows):  # noqa: B007 - the count is the result
        writer.writerow(row)
    return max(count, 0)


def _default_output(accounts: int, days: int, seed: int) -> Path:
    return Path(tempfile.gettempdir()) / f"order-history-{accounts}a-{days}d-s{seed}.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=730, help="length of the history")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bad-rows", type=int, default=0, help="invalid rows to add")
    parser.add_argument("--times", action="store_true", help="datetimes instead of dates")
    parser.add_argument("--output", type=Path, default=None, help="default: in the temp dir")
    args = parser.parse_args(argv)
    output = args.output or _default_output(args.accounts, args.days, args.seed)
    started = time.monotonic()
    rows = history_rows(
        args.accounts, args.days, seed=args.seed, bad_rows=args.bad_rows, times=args.times
    )
    with output.open("w", encoding="utf-8", newline="") as file:
        count = write_history(file, rows)
    size = output.stat().st_size
    seconds = time.monotonic() - started
    print(
        f"{output}: {count:,} rows, {size / 1e6:,.1f} MB"
        f" ({args.accounts:,} accounts, {args.days} days, {seconds:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
