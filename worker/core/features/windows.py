"""Sums over day windows of the per-day rows, exact at day granularity.

The 90-day window at day ``t`` covers the days ``t-89 .. t``.
"""

from __future__ import annotations

from typing import Any

from worker.core.features.state import CATEGORY_BUCKET_DAYS, HORIZON_DAYS, AccountState


def window_sums(rows: list[list[Any]], now_day: int, column: int, days: int) -> float:
    total = 0.0
    for row in reversed(rows):
        age = now_day - row[0]
        if age >= days:
            break
        if age >= 0:
            total += row[column]
    return total


def window_totals(
    rows: list[list[Any]], now_day: int, column: int, days: tuple[int, ...]
) -> list[float]:
    """``window_sums`` of several windows (``days`` ascending) from one newest-first pass.

    Each total adds the same rows in the same order as a pass of its own would, so
    the values are identical to calling ``window_sums`` once per window.
    """
    totals: list[float] = []
    count = len(days)
    limit = days[0]
    total = 0.0
    for row in reversed(rows):
        age = now_day - row[0]
        if age >= limit:  # the row is outside one or more windows: they are complete
            while age >= days[len(totals)]:
                totals.append(total)
                if len(totals) == count:
                    return totals
            limit = days[len(totals)]
        if age >= 0:
            total += row[column]
    totals.extend([total] * (count - len(totals)))
    return totals


def category_shares(state: AccountState, now_day: int) -> dict[str, float]:
    """Each category's share of positive trailing-year category spend."""
    oldest_bucket = (now_day - HORIZON_DAYS) // CATEGORY_BUCKET_DAYS
    spend: dict[str, float] = {}
    for bucket, categories in state.categories.items():
        if int(bucket) > oldest_bucket:
            for category, amount in categories.items():
                spend[category] = spend.get(category, 0.0) + amount
    total = sum(amount for amount in spend.values() if amount > 0)
    if total <= 0:
        return {}
    return {c: round(max(a, 0.0) / total, 4) for c, a in spend.items()}
