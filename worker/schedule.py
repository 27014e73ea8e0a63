"""When can an account's memberships change without a new event?

Pure. An order leaves the 90-day window exactly 90 days after it was placed; a
``recency_days <= 30`` condition turns false 31 days after the last order; a held
membership (``min_dwell``/``exit_grace``) may end at a known moment. ``next_due``
returns the earliest such moment after the account's stream time, and the worker
keeps it in a Redis sorted set that a timer sweeps: that is how an account leaves
"ordered in the last 90 days" with no further event.

The candidates over-approximate (a window edge that changes no condition still
counts); a needless re-evaluation finds nothing to change and emits nothing.

Cluster families follow time too (``Schedule.cluster_due``): between events only
time-driven features move, and of a cluster spec's features only the days-since ones
(``recency_days``) move between the window and category edges above, which are due
times anyway. With the model in hand, the first day another centroid beats the
account's cluster by the margin is solved per centroid (:func:`days_until_switch`).
"""

from __future__ import annotations

import ast
import bisect
import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from worker import membership
from worker.clustering import ClusterSnapshot
from worker.features import (
    CATEGORY_BUCKET_DAYS,
    DAILY_INPUT,
    HORIZON_DAYS,
    NO_GLOBALS,
    AccountState,
    FeatureView,
    Globals,
)
from worker.rules import Definitions

#: Every window length (days) some feature sums over.
WINDOW_DAYS = (30, 90, 180, 365)
#: Features that grow by one every day, and the day in the state they count from.
DAYS_SINCE = {
    "recency_days": "last_order_day",
    "tenure_days": "first_order_day",
    "days_since_activity": "last_activity_day",
}
ROLE_WINDOWS = (30, 90)
#: The per-day row tables the windows sum over.
TABLES = ("orders", "points", "campaigns")
#: State attributes whose features do not change with time (only with an event).
TIMELESS = frozenset({"profile", "tier", "points_balance", "unsubscribed"})
DAY = 86400


class Schedule:
    r"""Due-time computation for one set of definitions (built once, then per account).

    >>> from worker.features import VOCABULARY
    >>> from worker.rules import load_definitions
    >>> rules = load_definitions(
    ...     'version: "1"\nfamilies:\n  f:\n    exclusive: false\n    segments:\n'
    ...     '      - id: recent\n        when: recency_days <= 30\n', VOCABULARY)
    >>> state = AccountState("A", clock=100 * DAY, last_order_day=100)
    >>> schedule = Schedule(rules)
    >>> schedule.next_due(state) / DAY  # recency_days reaches 30 (would matter for `< 30`)
    130.0
    >>> state.clock = 130 * DAY
    >>> schedule.next_due(state) / DAY  # recency_days becomes 31: `<= 30` turns false
    131.0
    """

    def __init__(self, definitions: Definitions) -> None:
        self.definitions = definitions
        self.constants = {
            feature: constants_compared_with(definitions, feature) for feature in DAYS_SINCE
        }

    def next_due(self, state: AccountState) -> float | None:
        """Epoch seconds of the next moment a re-evaluation could change a membership."""
        today = state.now_day
        days = [*_window_edges(state, today), *self._days_since_crossings(state)]
        days += _role_edges(state)
        days += _category_edges(state)
        moments: list[float] = [day * DAY for day in days if day > today]
        for family in self.definitions.families:
            moments += membership.due_times(family, state.memberships.get(family.id, {}))
        future = [moment for moment in moments if moment > state.clock]
        return min(future) if future else None

    def cluster_due(
        self, state: AccountState, globals: Globals = NO_GLOBALS, view: FeatureView | None = None
    ) -> float | None:
        r"""Epoch seconds of the first day time alone may move the account to another
        cluster of a model in ``globals`` (its days-since features growing; the other
        features move only at the window and category edges of ``next_due``); None: not
        before those. ``view``: the account's features now, if the caller has them.

        >>> from worker.clustering import BEHAVIOUR, Cluster
        >>> means, stds = (3.0, 5.0, 1.0, 1.0, 0.2), (1.5, 3.0, 1.0, 3.0, 0.2)
        >>> model = ClusterSnapshot(1, BEHAVIOUR, means, stds, clusters=(
        ...     Cluster("c1", (-1.0, 0.0, 0.0, 0.0, 0.0), 10),   # recent: log1p(recency) 1.5
        ...     Cluster("c2", (1.0, 0.0, 0.0, 0.0, 0.0), 10)),   # lapsed: 4.5
        ...     next_id=3, samples=20)
        >>> state = AccountState("A", clock=100 * DAY, last_order_day=100,
        ...                      memberships={"cluster": {"c1": {"since": 100 * DAY}}})
        >>> from worker.features import VOCABULARY
        >>> from worker.rules import load_definitions
        >>> schedule = Schedule(load_definitions(
        ...     'version: "1"\nfamilies:\n  f: {exclusive: false, segments: [{id: a, when: true}]}',
        ...     VOCABULARY))
        >>> due = schedule.cluster_due(state, Globals(clusters={"cluster": model}))
        >>> due / DAY - 100  # days since the last order when c2 is 10 % closer than c1
        32.0
        """
        earliest: float | None = None
        for family, snapshot in globals.clusters.items():
            current = next(iter(state.memberships.get(family, ())), None)
            if snapshot is None or current is None:
                continue
            growing = [
                name
                for name in snapshot.spec.names
                if name in DAYS_SINCE and getattr(state, DAYS_SINCE[name]) is not None
            ]
            if not growing:
                continue
            if view is None:
                view = FeatureView(state, state.now_day, globals)
            if len(growing) > 1:  # not solved: look again every day
                days: int | None = 1
            else:
                days = days_until_switch(
                    snapshot, view, current, globals.cluster_margin, growing[0]
                )
            if days is not None:
                moment = float((state.now_day + days) * DAY)
                earliest = moment if earliest is None else min(earliest, moment)
        return earliest

    def _days_since_crossings(self, state: AccountState) -> list[int]:
        crossings = []
        for feature, attribute in DAYS_SINCE.items():
            start = getattr(state, attribute)
            if start is None:
                continue
            for constant in self.constants[feature]:
                # covers <, <=, >, >= and == against the constant
                crossings += [start + constant, start + constant + 1]
        return crossings


def _window_edges(state: AccountState, today: int) -> list[int]:
    return [edge for table in TABLES for edge in _table_edges(getattr(state, table), today)]


def _table_edges(rows: list[list[Any]], today: int) -> list[int]:
    edges = []
    for window in WINDOW_DAYS:
        # the oldest row still inside the window is the next to leave it
        index = bisect.bisect_right(rows, today - window, key=lambda row: row[0])
        if index < len(rows):
            edges.append(int(rows[index][0]) + window)
    return edges


def _role_edges(state: AccountState) -> list[int]:
    return [
        int(day) + window
        for engaged, accepted in state.roles.values()
        for day in (engaged, accepted)
        if day is not None
        for window in ROLE_WINDOWS
    ]


def _category_edges(state: AccountState) -> list[int]:
    if not state.categories:
        return []
    # category_shares drops bucket b from day 30*b + 365 on: the next such day is due
    today = state.now_day
    leaving = [int(bucket) * CATEGORY_BUCKET_DAYS + HORIZON_DAYS for bucket in state.categories]
    future = [day for day in leaving if day > today]
    return [min(future)] if future else []


def stable_until(state: AccountState, inputs: Iterable[str]) -> int | None:
    """The first day after the account's own on which a feature that reads only ``inputs``
    (state attributes, see ``worker.features.FEATURE_INPUTS``) may have another value
    without a new event; None: never.

    Window and category edges as in ``Schedule.next_due``, whatever the definitions
    compare; a days-since feature changes every day (the next day); an input not known
    here (the shared globals) may change at any moment: the account's own day.

    >>> state = AccountState("A", clock=100 * DAY, categories={"3": {"tools": 5.0}})
    >>> stable_until(state, {"categories", "profile"})  # bucket 3 leaves on day 3*30+365
    455
    >>> state.last_order_day = 90
    >>> stable_until(state, {"categories", "last_order_day"})  # recency_days grows daily
    101
    >>> stable_until(state, {"profile"}) is None, stable_until(state, {"globals"})
    (True, 100)
    """
    horizon = _horizon(inputs if isinstance(inputs, frozenset) else frozenset(inputs))
    today = state.now_day
    if horizon.unknown:
        return today
    for table in horizon.tables:
        rows = getattr(state, table)
        if rows and rows[0][0] <= today - HORIZON_DAYS:
            return today  # a row out of every window, which the next event prunes (is_member)
    daily = horizon.daily
    for attribute in horizon.since:
        daily = daily or getattr(state, attribute) is not None
    if daily:
        return today + 1  # no edge comes sooner (edges are later days)
    days: list[int] = []
    for table in horizon.tables:
        days += _table_edges(getattr(state, table), today)
    if horizon.categories:
        days += _category_edges(state)
    if horizon.roles:
        days += _role_edges(state)
    future = [day for day in days if day > today]
    return min(future) if future else None


@dataclass(frozen=True)
class _Horizon:
    """How ``stable_until`` treats a set of inputs (sorted out once per set)."""

    unknown: bool
    daily: bool
    since: tuple[str, ...]
    tables: tuple[str, ...]
    categories: bool
    roles: bool


@functools.cache
def _horizon(inputs: frozenset[str]) -> _Horizon:
    known = {*DAYS_SINCE.values(), DAILY_INPUT, *TABLES, "categories", "roles", *TIMELESS}
    return _Horizon(
        unknown=not inputs <= known,
        daily=DAILY_INPUT in inputs,
        since=tuple(sorted(inputs & set(DAYS_SINCE.values()))),
        tables=tuple(table for table in TABLES if table in inputs),
        categories="categories" in inputs,
        roles="roles" in inputs,
    )


def constants_compared_with(definitions: Definitions, feature: str) -> tuple[int, ...]:
    """Whole-day constants in any condition that mentions ``feature``."""
    found: set[int] = set()
    for family in definitions.families:
        for segment in family.segments:
            if feature not in segment.condition.names:
                continue
            for node in ast.walk(ast.parse(segment.when.strip(), mode="eval")):
                value = getattr(node, "value", None) if isinstance(node, ast.Constant) else None
                is_number = isinstance(value, int | float) and not isinstance(value, bool)
                if is_number and 0 <= value <= 10 * 365:  # type: ignore[operator]
                    found.add(int(value))  # type: ignore[arg-type]
    return tuple(sorted(found))


def days_until_switch(
    snapshot: ClusterSnapshot,
    features: Mapping[str, Any],
    current: str,
    margin: float,
    growing: str,
) -> int | None:
    """Whole days until ``clustering.assign`` moves the account away from ``current``
    when feature ``growing`` grows by one a day and the others stay; None: never.

    Only the standardised coordinate ``z`` of ``growing`` moves (increasing with time,
    up to the dimension's ``upper`` bound). Another centroid ``j`` wins once
    ``d_j^2 < (1 - margin)^2 d_current^2``; both squared distances are quadratics in
    ``z``, so their difference is ``a z^2 + b z + c`` with ``a = 1 - (1 - margin)^2
    >= 0``, negative exactly between its roots. The first day past the lower root is
    the answer for ``j``, if the value of that day is still below the upper root.

    >>> from worker.clustering import Cluster, Dimension, FeatureSpec
    >>> spec = FeatureSpec("line", (Dimension("recency_days", upper=400.0),))
    >>> line = ClusterSnapshot(1, spec, (0.0,), (1.0,), clusters=(
    ...     Cluster("c1", (10.0,), 1), Cluster("c2", (30.0,), 1)), next_id=3, samples=2)
    >>> days_until_switch(line, {"recency_days": 12}, "c1", 0.0, "recency_days")  # at 21
    9
    >>> days_until_switch(line, {"recency_days": 12}, "c1", 0.5, "recency_days")  # at 24
    12
    >>> days_until_switch(line, {"recency_days": 25}, "c2", 0.1, "recency_days") is None
    True
    """
    spec = snapshot.spec
    index = spec.names.index(growing)
    dimension = spec.dimensions[index]
    raw = features.get(growing)
    if raw is None:
        return None
    start = float(raw)
    if dimension.upper is not None and start >= dimension.upper:
        return None
    z = snapshot.standardise(features)
    mean, std = snapshot.means[index], snapshot.stds[index]
    centroids = snapshot.centroids
    if current not in centroids:
        return None

    def coordinate(days: float) -> float:
        return (dimension.value(start + days) - mean) / std

    def rest(centroid: tuple[float, ...]) -> tuple[float, float]:
        """The centroid's coordinate of ``growing``; the squared distance over the others."""
        return centroid[index], math.dist(z, centroid) ** 2 - (z[index] - centroid[index]) ** 2

    q = (1.0 - margin) ** 2
    own, own_rest = rest(centroids[current])
    a = 1.0 - q
    best: int | None = None
    for cid, centroid in centroids.items():
        if cid == current:
            continue
        other, other_rest = rest(centroid)
        b = -2.0 * (other - q * own)
        c = other * other + other_rest - q * (own * own + own_rest)
        day = _first_day_below(a, b, c, coordinate, start, dimension.upper)
        if day is not None and (best is None or day < best):
            best = day
    return best


def _first_day_below(
    a: float,
    b: float,
    c: float,
    coordinate: Any,
    start: float,
    upper: float | None,
) -> int | None:
    """The first whole day ``d >= 1`` with ``a z^2 + b z + c < 0`` at ``z = coordinate(d)``,
    ``coordinate`` increasing (constant from ``upper - start`` days on); None: never."""

    def below(days: float) -> bool:
        z = coordinate(days)
        return a * z * z + b * z + c < 0

    if a > 0:
        discriminant = b * b - 4 * a * c
        if discriminant <= 0:
            return None
        root = math.sqrt(discriminant)
        low, high = (-b - root) / (2 * a), (-b + root) / (2 * a)
    elif b < 0:
        low, high = -c / b, math.inf
    elif b > 0:
        low, high = -math.inf, -c / b
    else:
        return 1 if c < 0 else None
    if coordinate(0) >= high:
        return None  # past the interval: the coordinate only grows
    if below(0) or below(1):
        return 1  # (ties and rounding: an evaluation tomorrow decides)
    # The day whose coordinate first exceeds ``low``: invert the coordinate by bisection
    # (monotone; at most ``upper`` days matter).
    horizon = (upper - start) if upper is not None else 10.0 * 365
    if coordinate(math.ceil(horizon)) <= low:
        return None
    lo, hi = 1, max(math.ceil(horizon), 1)
    while lo < hi:  # the first day d with coordinate(d) > low
        mid = (lo + hi) // 2
        if coordinate(mid) > low:
            hi = mid
        else:
            lo = mid + 1
    for day in (lo, lo + 1):
        if below(day):
            return day
    return None
