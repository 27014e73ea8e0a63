"""When can an account's memberships change without a new event?

Pure. An order leaves the 90-day window exactly 90 days after it was placed; a
``recency_days <= 30`` condition turns false 31 days after the last order; a held
membership (``min_dwell``/``exit_grace``) may end at a known moment. ``next_due``
returns the earliest such moment after the account's stream time, and the worker
keeps it in a Redis sorted set that a timer sweeps: that is how an account leaves
"ordered in the last 90 days" with no further event.

The candidates over-approximate (a window edge that changes no condition still
counts); a needless re-evaluation finds nothing to change and emits nothing.

Each family adds what only it knows (``Family.next_due``): a rule family the days a
days-since feature crosses a constant of its conditions and the end of a hold; a
cluster family the first day another centroid beats the account's cluster by the
margin (``worker.core.families.clusters.days_until_switch``).
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import Any

from worker.core.definitions import Definitions
from worker.core.families import Families, Family, as_families
from worker.core.features import (
    CATEGORY_BUCKET_DAYS,
    DAILY_INPUT,
    HORIZON_DAYS,
    NO_GLOBALS,
    AccountState,
    FeatureView,
    Globals,
)
from worker.core.features.catalogue import DAYS_SINCE, ROLE_WINDOWS, TIMELESS, WINDOW_DAYS
from worker.core.features.state import ROW_TABLES as TABLES  # the per-day row tables

DAY = 86400


class Schedule:
    r"""Due-time computation for one set of families (built once, then per account).

    >>> from worker.core.features import VOCABULARY
    >>> from worker.core.definitions import load_definitions
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

    def __init__(self, families: Families | Definitions) -> None:
        self.families = as_families(families)

    def next_due(
        self,
        state: AccountState,
        shared: Globals = NO_GLOBALS,
        view: FeatureView | None = None,
        only: Container[str] | None = None,
    ) -> float | None:
        """Epoch seconds of the next moment a re-evaluation could change a membership:
        the window, role and category edges of the account's rows (whatever the
        families read: an over-approximation), and what each family bound to
        ``shared`` says of itself (``Family.next_due``: a days-since feature crossing a
        constant, a hold ending, another centroid winning). ``view``: the account's
        features now, if the caller has them. ``only``: the moments that may change
        these families (edges of the state attributes they read only; a family whose
        inputs are not known reads all)."""
        today = state.now_day
        families = self.families.bind(shared)
        if only is not None:
            families = tuple(family for family in families if family.id in only)
            read = _read_by(families)
        days = [
            *_window_edges(state, today, None if only is None else read),
            *(_role_edges(state) if only is None or "roles" in read else ()),
            *(_category_edges(state) if only is None or "categories" in read else ()),
        ]
        moments: list[float] = [day * DAY for day in days if day > today]
        for family in families:
            if view is None:
                view = FeatureView(state, today, shared)
            moment = family.next_due(state, view)
            if moment is not None:
                moments.append(moment)
        future = [moment for moment in moments if moment > state.clock]
        return min(future) if future else None


def _read_by(families: Iterable[Family]) -> frozenset[str]:
    """The state attributes the families read (every table, when one does not say)."""
    read: set[str] = set()
    for family in families:
        inputs = family.inputs()
        read.update(inputs if inputs is not None else (*TABLES, "roles", "categories"))
    return frozenset(read)


def _window_edges(state: AccountState, today: int, read: Container[str] | None = None) -> list[int]:
    return [
        edge
        for table in TABLES
        if read is None or table in read
        for edge in _table_edges(getattr(state, table), today)
    ]


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
    (state attributes, see ``worker.core.features.FEATURE_INPUTS``) may have another value
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
