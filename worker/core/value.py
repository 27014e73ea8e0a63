"""Figures of the value family: ABC / Pareto cut-offs on trailing-year revenue, and CLV.

Pure: no I/O and no clocks; the caller passes every figure in.

Inputs per account (features from :mod:`worker.core.features`)
---------------------------------------------------------
``revenue_365d``
    Order revenue of the trailing 365 days, net of returns; may be zero or negative.
``momentum_90d``
    Revenue of the last 90 days divided by the revenue of the 90 days before; ``None``
    when the 90 days before had no revenue.
``recency_days``
    Days since the last order; ``None`` when the account never ordered.

Pareto ranking and thresholds
-----------------------------
Only accounts with ``revenue_365d > 0`` take part. Sort their revenues in descending order
and let ``total`` be their sum (``math.fsum``, exactly rounded) and ``before(i)`` the running
sum of the revenues ranked strictly before rank ``i`` (plain float addition in rank order).
The account at rank ``i`` is

* **A** if ``i == 0`` or ``before(i) < a_share * total``: the top accounts that make
  ``a_share`` (80 %) of revenue, *including* the account that crosses the line, so A's share
  is at least ``a_share`` and is the smallest such prefix (``i == 0`` only matters when
  ``a_share * total`` underflows to 0 for absurdly tiny revenues);
* **B** if ``before(i) < (a_share + b_share) * total``: the next ``b_share`` (15 %);
* **C** otherwise: the rest.

**Ties:** equal revenues always share a tier, the *higher* one: a group of accounts with the
same revenue gets the tier of its best-ranked member (the boundary moves down to include all
of them). This is exactly what the threshold form gives, and it does not depend on how a sort
orders equal revenues.

:class:`Thresholds` holds the tiers in threshold form: ``a_min`` is the smallest revenue of
an A account and ``b_min`` the smallest revenue of a B account (``b_min == a_min`` when B is
empty). Then ``revenue >= a_min`` → A, ``revenue >= b_min`` → B, otherwise C. When no account
has revenue, ``a_min == b_min == 5e-324`` (the smallest positive float), so every account that
gets revenue is an A until the thresholds are recomputed, as it would be in the ranking.
:func:`compute_thresholds` is O(n log n): about 20 ms for 100 000 accounts on a 2-core machine,
of which the sort is most.

Segments
--------
The segments are plain definitions (family ``value`` in ``worker/config/definitions/default.yaml``)
over the features above and ``value_a_min`` / ``value_b_min``, the global features that carry
the current cut-offs (:mod:`worker.core.features`). When the thresholds change, only accounts whose
revenue lies in one of the intervals of :func:`affected_revenue_range` can change tier; the
others keep their segments.

Customer lifetime value (:func:`clv_estimate`)
----------------------------------------------
``CLV = sum over t = 1..horizon_years of m * r**t / (1 + discount_rate)**t`` with

* ``m = max(annual_revenue, 0) * margin``, the yearly margin contribution, where
  ``annual_revenue = revenue_365d * 365 / observed_days`` and
  ``observed_days = min(max(tenure_days + 1, 90), 365)``: young accounts are annualised,
  but from at least 90 days of history;
* ``r``, the yearly retention probability, from recency: 0.9 if the last order is at most 90
  days old, 0.7 if at most 180, 0.4 if at most 365, else 0.1; capped at 0.5 for one-off
  buyers (fewer than 2 orders in the year).

Examples
--------
>>> thresholds = compute_thresholds([50_000.0, 20_000.0, 8_000.0, 15_000.0, 4_000.0, 3_000.0])
>>> thresholds.a_min, thresholds.b_min
(15000.0, 4000.0)
>>> [thresholds.tier(revenue) for revenue in (20_000.0, 12_000.0, 3_000.0)]
['A', 'B', 'C']
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = [
    "NO_REVENUE_CUTOFF",
    "Thresholds",
    "Tier",
    "affected_revenue_range",
    "clv_estimate",
    "compute_thresholds",
    "offline_abc",
    "retention_probability",
    "same_cutoffs",
    "thresholds_from_dict",
    "thresholds_to_dict",
]

Tier = Literal["A", "B", "C"]

#: ``a_min`` and ``b_min`` when no account has revenue: any positive revenue is an A.
NO_REVENUE_CUTOFF = 5e-324

#: Yearly retention probability by the age of the last order, for :func:`clv_estimate`.
RETENTION_BY_RECENCY: tuple[tuple[int, float], ...] = ((90, 0.9), (180, 0.7), (365, 0.4))
RETENTION_LAPSED = 0.1
#: One-off buyers (fewer than 2 orders in the year) retain at most this.
RETENTION_ONE_OFF = 0.5
#: Young accounts are annualised from at least this many days of history.
MIN_OBSERVED_DAYS = 90


def _check_shares(a_share: float, b_share: float) -> None:
    if not 0.0 < a_share <= 1.0:
        raise ValueError(f"a_share must be in (0, 1], got {a_share!r}")
    if not 0.0 <= b_share <= 1.0 or a_share + b_share > 1.0 + 1e-9:
        raise ValueError(f"b_share must be in [0, 1 - a_share], got {b_share!r}")


# --------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """ABC cut-offs in threshold form; see the module docstring for the definition.

    ``version`` is a short hash of the figures (not of ``computed_at``), so the same revenues
    give the same version on every worker. ``computed_at`` is set by the caller (e.g. with
    :func:`dataclasses.replace`), since this module reads no clock.

    Examples
    --------
    >>> t = compute_thresholds([85.0, 12.0, 3.0])
    >>> [t.tier(revenue) for revenue in (85.0, 12.0, 3.0, 0.0)]
    ['A', 'B', 'C', 'C']
    >>> Thresholds.from_dict(t.to_dict()) == t
    True
    """

    a_min: float
    b_min: float
    total_revenue: float
    accounts: int
    a_share: float = 0.8
    b_share: float = 0.15
    version: str = ""
    computed_at: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.b_min <= self.a_min < math.inf:
            raise ValueError(f"need 0 < b_min <= a_min < inf, got {self.b_min!r}, {self.a_min!r}")
        _check_shares(self.a_share, self.b_share)
        if not self.version:
            object.__setattr__(self, "version", self._fingerprint())

    def _fingerprint(self) -> str:
        figures = [self.a_min, self.b_min, self.total_revenue, self.accounts]
        figures += [self.a_share, self.b_share]
        return hashlib.sha256(json.dumps(figures).encode()).hexdigest()[:12]

    @property
    def ranked(self) -> bool:
        """False for the fallback computed from no revenue at all."""
        return self.accounts > 0

    def tier(self, revenue: float) -> Tier:
        """The tier of ``revenue``: A, B, or C (also for revenue <= 0)."""
        if revenue >= self.a_min:
            return "A"
        return "B" if revenue >= self.b_min else "C"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields, e.g. to publish or store the thresholds."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Thresholds:
        """The inverse of :meth:`to_dict`; unknown keys are ignored."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def thresholds_to_dict(thresholds: Thresholds) -> dict[str, Any]:
    """JSON-ready fields of ``thresholds``, what the store keeps (:meth:`Thresholds.to_dict`)."""
    return thresholds.to_dict()


def thresholds_from_dict(data: Mapping[str, Any]) -> Thresholds:
    """Thresholds from :func:`thresholds_to_dict` output; see :meth:`Thresholds.from_dict`."""
    return Thresholds.from_dict(data)


def same_cutoffs(old: Thresholds | Mapping[str, Any], new: Thresholds | Mapping[str, Any]) -> bool:
    """Whether two thresholds (objects or dicts) give every revenue the same tier.

    >>> t = compute_thresholds([85.0, 12.0, 3.0])
    >>> same_cutoffs(t.to_dict(), compute_thresholds([3.0, 85.0, 12.0, -1.0]))
    True
    >>> same_cutoffs(t, compute_thresholds([85.0, 12.0, 3.0, 40.0]))
    False
    """
    return _cutoffs(old) == _cutoffs(new)


def _cutoffs(thresholds: Thresholds | Mapping[str, Any]) -> tuple[float, float]:
    if isinstance(thresholds, Thresholds):
        return thresholds.a_min, thresholds.b_min
    return float(thresholds["a_min"]), float(thresholds["b_min"])


def compute_thresholds(
    revenues: Iterable[float], a_share: float = 0.8, b_share: float = 0.15
) -> Thresholds:
    """ABC cut-offs of the given revenues (one per account) in O(n log n).

    Revenues <= 0 are ignored; non-finite ones raise ``ValueError``. Equal revenues share
    the higher tier (see the module docstring).

    Examples
    --------
    >>> t = compute_thresholds([50.0, 30.0, 10.0, 6.0, 4.0, 0.0, -3.0])
    >>> t.a_min, t.b_min, t.total_revenue, t.accounts
    (30.0, 6.0, 100.0, 5)

    The 20 at rank 3 would be B, but it ties with the A at rank 2, so both are A:

    >>> t = compute_thresholds([60.0, 20.0, 20.0])
    >>> t.a_min, t.b_min
    (20.0, 20.0)
    >>> compute_thresholds([]).tier(0.01)
    'A'
    """
    _check_shares(a_share, b_share)
    ranked = _positive_descending(revenues)
    if not ranked:
        return Thresholds(NO_REVENUE_CUTOFF, NO_REVENUE_CUTOFF, 0.0, 0, a_share, b_share)
    total = math.fsum(ranked)
    # before[i] = revenue ranked strictly before rank i; non-decreasing, so bisect counts
    # the ranks whose running sum is still below a cut.
    before = list(itertools.accumulate(ranked[:-1], initial=0.0))
    in_a = max(bisect.bisect_left(before, a_share * total), 1)  # rank 0 is always an A
    in_a_or_b = bisect.bisect_left(before, (a_share + b_share) * total)
    a_min = ranked[in_a - 1]
    b_min = ranked[in_a_or_b - 1] if in_a_or_b > in_a else a_min
    return Thresholds(a_min, b_min, total, len(ranked), a_share, b_share)


def _positive_descending(revenues: Iterable[float]) -> list[float]:
    positive: list[float] = []
    for revenue in revenues:
        if not math.isfinite(revenue):
            raise ValueError(f"revenue must be finite, got {revenue!r}")
        if revenue > 0:
            positive.append(float(revenue))
    positive.sort(reverse=True)
    return positive


def offline_abc(
    revenue_by_account: Mapping[str, float], a_share: float = 0.8, b_share: float = 0.15
) -> dict[str, str]:
    """The naive reference: rank, cumulate, cut, then lift ties; 'A'/'B'/'C' per account.

    Only accounts with revenue > 0 appear. Written independently of
    :func:`compute_thresholds` (which tests compare it against), straight from the
    definition in the module docstring.

    Examples
    --------
    >>> offline_abc({"x": 60.0, "y": 20.0, "z": 20.0, "w": 0.0})
    {'x': 'A', 'y': 'A', 'z': 'A'}
    >>> offline_abc({"x": 85.0, "y": 12.0, "z": 3.0})
    {'x': 'A', 'y': 'B', 'z': 'C'}
    """
    _check_shares(a_share, b_share)
    ranking = sorted(
        ((account, revenue) for account, revenue in revenue_by_account.items() if revenue > 0),
        key=lambda item: item[1],
        reverse=True,
    )
    total = math.fsum(revenue for _, revenue in ranking)
    tier_of_revenue: dict[float, str] = {}
    cumulative = 0.0
    for rank, (_, revenue) in enumerate(ranking):
        if rank == 0 or cumulative < a_share * total:
            tier = "A"
        elif cumulative < (a_share + b_share) * total:
            tier = "B"
        else:
            tier = "C"
        # The best-ranked account of a group of equal revenues comes first: it sets the tier.
        tier_of_revenue.setdefault(revenue, tier)
        cumulative += revenue
    return {account: tier_of_revenue[revenue] for account, revenue in ranking}


def affected_revenue_range(old: Thresholds | None, new: Thresholds) -> list[tuple[float, float]]:
    """Revenue intervals (inclusive, sorted, disjoint) whose tier can differ from old to new.

    An account whose revenue lies outside all of them has the same tier under both; re-evaluate
    the others, e.g. with ``ZRANGEBYSCORE revenue lo hi`` per interval. Without old
    thresholds, everything is affected.

    Examples
    --------
    >>> old = Thresholds(a_min=1000.0, b_min=200.0, total_revenue=1e5, accounts=90)
    >>> new = Thresholds(a_min=1100.0, b_min=200.0, total_revenue=1e5, accounts=91)
    >>> affected_revenue_range(old, new)
    [(1000.0, 1100.0)]
    >>> affected_revenue_range(None, new)
    [(-inf, inf)]
    >>> affected_revenue_range(new, new)
    []
    """
    if old is None:
        return [(-math.inf, math.inf)]
    intervals = sorted(
        (min(before, after), max(before, after))
        for before, after in ((old.a_min, new.a_min), (old.b_min, new.b_min))
        if before != after
    )
    merged: list[tuple[float, float]] = []
    for low, high in intervals:
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


# --------------------------------------------------------------------------------------
# Customer lifetime value
# --------------------------------------------------------------------------------------


def retention_probability(recency_days: int, orders_365d: float) -> float:
    """Yearly retention probability for :func:`clv_estimate`.

    >>> retention_probability(30, 6), retention_probability(30, 1), retention_probability(500, 9)
    (0.9, 0.5, 0.1)
    """
    retention = next(
        (r for max_days, r in RETENTION_BY_RECENCY if recency_days <= max_days), RETENTION_LAPSED
    )
    return min(retention, RETENTION_ONE_OFF) if orders_365d < 2 else retention


def clv_estimate(
    revenue_365d: float,
    orders_365d: float,
    tenure_days: int | None,
    recency_days: int | None,
    margin: float = 0.3,
    discount_rate: float = 0.1,
    horizon_years: int = 3,
) -> float | None:
    """Discounted margin of the next ``horizon_years`` years (formula: module docstring).

    ``None`` when the account never ordered; rounded to cents.

    Examples
    --------
    A steady buyer: m = 10 000 * 0.3 = 3 000 a year, r = 0.9,
    CLV = 3000 * (0.9/1.1 + 0.9**2/1.1**2 + 0.9**3/1.1**3):

    >>> clv_estimate(10_000.0, 6, tenure_days=800, recency_days=30)
    6105.94

    A 60-day-old account is annualised from 90 days (x 365/90); one order caps r at 0.5:

    >>> clv_estimate(900.0, 1, tenure_days=60, recency_days=60)
    826.8
    >>> clv_estimate(-50.0, 1, tenure_days=400, recency_days=200)
    0.0
    >>> clv_estimate(0.0, 0, tenure_days=None, recency_days=None) is None
    True
    """
    if recency_days is None:
        return None
    if not 0.0 <= margin <= 1.0 or discount_rate <= -1.0 or horizon_years < 0:
        raise ValueError("need 0 <= margin <= 1, discount_rate > -1 and horizon_years >= 0")
    observed_days = (
        365 if tenure_days is None else min(max(tenure_days + 1, MIN_OBSERVED_DAYS), 365)
    )
    contribution = max(revenue_365d * 365 / observed_days, 0.0) * margin
    retention = retention_probability(recency_days, orders_365d)
    clv = math.fsum(
        contribution * (retention / (1.0 + discount_rate)) ** year
        for year in range(1, horizon_years + 1)
    )
    return round(clv, 2)
