"""The feature catalogue: every feature, its kind, how it is computed and what it reads.

One entry per feature, and everything else is derived from these entries: what each
feature reads (``FEATURE_INPUTS``: which families an event can change), the windows
the schedule watches (``WINDOW_DAYS``, ``DAYS_SINCE``, ``ROLE_WINDOWS``) and the
vocabulary of the condition language. A feature is computed from the account state
at a day (``compute(state, day)``); a global feature also reads the facts shared by
all accounts through the view (``GLOBAL_FEATURES``).

Examples
--------
>>> FEATURES["revenue_90d"].reads, FEATURES["aov_365d"].reads
(frozenset({'orders'}), frozenset({'orders'}))
>>> WINDOW_DAYS, DAYS_SINCE["recency_days"], ROLE_WINDOWS
((30, 90, 180, 365), 'last_order_day', (30, 90))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from worker.core.conditions import FeatureKind
from worker.core.features.state import (
    CAMPAIGN_COLUMNS,
    ORDER_COUNT,
    ORDER_REVENUE,
    POINTS_ACTIONS,
    POINTS_EARNED,
    POINTS_EXPIRED,
    POINTS_REDEEMED,
    ROLES,
    AccountState,
    Globals,
)
from worker.core.features.windows import category_shares, window_sums, window_totals
from worker.core.value import clv_estimate

#: Input of the features that also depend on the shared ``Globals``.
GLOBAL_INPUT = "globals"
#: Input of the features that change every day in a way no due time predicts.
DAILY_INPUT = "daily"

Compute = Callable[[AccountState, int], Any]


class View(Protocol):
    """What a global feature reads: the catalogue at a day, and the shared facts
    (``worker.core.features.view.FeatureView``)."""

    state: AccountState
    now_day: int
    globals: Globals

    def __getitem__(self, name: str) -> Any: ...


@dataclass(frozen=True)
class Feature:
    """One catalogue entry: its kind for the condition language, how to compute it, and
    what it reads (state attributes, or ``GLOBAL_INPUT``/``DAILY_INPUT``)."""

    kind: FeatureKind
    description: str
    compute: Compute
    reads: frozenset[str]

    @property
    def window(self) -> Window | None:
        return self.compute if isinstance(self.compute, Window) else None


@dataclass(frozen=True)
class Window:
    """A windowed sum: column ``column`` of the per-day rows ``attribute``, last ``days``."""

    attribute: str
    column: int
    days: int

    def __call__(self, state: AccountState, now_day: int) -> float:
        rows = getattr(state, self.attribute)
        return round(window_sums(rows, now_day, self.column, self.days), 2)


@dataclass(frozen=True)
class Ratio:
    """Feature ``numerator`` / feature ``denominator``, rounded; None when the latter is 0."""

    numerator: str
    denominator: str

    def __call__(self, state: AccountState, now_day: int) -> float | None:
        below = FEATURES[self.denominator].compute(state, now_day)
        if not below:
            return None
        return round(FEATURES[self.numerator].compute(state, now_day) / below, 4)

    def in_view(self, view: View) -> float | None:
        """The same from ``view``'s values: they equal what ``__call__`` computes, and the
        view usually holds them already (``campaigns_sent_365d`` is read just before)."""
        below = view[self.denominator]
        if not below:
            return None
        return round(view[self.numerator] / below, 4)


@dataclass(frozen=True)
class DaysSince:
    """Days from the day in state attribute ``attribute`` to the view's day: it grows by
    one every day without an event (the schedule knows when it crosses a constant)."""

    attribute: str

    def __call__(self, state: AccountState, now_day: int) -> int | None:
        day = getattr(state, self.attribute)
        return None if day is None else now_day - day


@dataclass(frozen=True)
class RoleWindow:
    """Whether a contact of ``role`` engaged (column 0) or accepted (column 1) within the
    last ``days`` days."""

    role: str
    days: int
    column: int

    def __call__(self, state: AccountState, now_day: int) -> bool:
        day = state.roles.get(self.role, [None, None])[self.column]
        return day is not None and 0 <= now_day - day < self.days


@dataclass(frozen=True)
class Attribute:
    """A value the state holds as it is (``profile.<key>`` for the profile's fields): it
    changes with an event only, never with time."""

    name: str

    def __call__(self, state: AccountState, now_day: int) -> Any:
        if self.name.startswith("profile."):
            return state.profile.get(self.name[8:])
        return getattr(state, self.name)

    @property
    def attribute(self) -> str:
        return self.name.partition(".")[0]


def _windowed(description: str, attribute: str, column: int, days: int) -> Feature:
    return Feature("number", description, Window(attribute, column, days), frozenset({attribute}))


def _attribute(kind: FeatureKind, description: str, name: str) -> Feature:
    attribute = Attribute(name)
    return Feature(kind, description, attribute, frozenset({attribute.attribute}))


def _last_and_previous_90d(state: AccountState, now_day: int) -> tuple[float, float]:
    """Revenue of the last 90 days (unrounded) and of the 90 before (rounded), one pass."""
    last_90, last_180 = window_totals(state.orders, now_day, ORDER_REVENUE, (90, 180))
    return last_90, round(last_180 - last_90, 2)


def _revenue_prev_90d(state: AccountState, now_day: int) -> float:
    return _last_and_previous_90d(state, now_day)[1]


def _momentum(state: AccountState, now_day: int) -> float | None:
    """Revenue of the last 90 days relative to the 90 before (1.0 = flat)."""
    last_90, before = _last_and_previous_90d(state, now_day)
    if before <= 0:
        return None
    return round(last_90 / before, 4)


def top_category(state: AccountState, now_day: int) -> str | None:
    """The category with the largest trailing-year spend (ties: the later name)."""
    return top_of(category_shares(state, now_day))


def top_of(shares: dict[str, float]) -> str | None:
    return max(shares, key=lambda c: (shares[c], c)) if shares else None


def _campaign_acceptances(state: AccountState, now_day: int) -> float:
    return window_sums(state.campaigns, now_day, CAMPAIGN_COLUMNS["responded"], 365) + (
        window_sums(state.campaigns, now_day, CAMPAIGN_COLUMNS["converted"], 365)
    )


def _is_member(state: AccountState, _now_day: int) -> bool:
    return bool(state.points) or state.tier is not None or state.points_balance != 0


def _windows() -> Iterator[tuple[str, Feature]]:
    for days in (30, 90, 180, 365):
        yield (
            f"revenue_{days}d",
            _windowed(
                f"Order revenue net of returns, last {days} days", "orders", ORDER_REVENUE, days
            ),
        )
        yield (
            f"orders_{days}d",
            _windowed(f"Number of orders, last {days} days", "orders", ORDER_COUNT, days),
        )
    for days in (30, 90, 365):
        yield (
            f"points_earned_{days}d",
            _windowed(f"Loyalty points earned, last {days} days", "points", POINTS_EARNED, days),
        )
        yield (
            f"points_redeemed_{days}d",
            _windowed(
                f"Loyalty points redeemed, last {days} days", "points", POINTS_REDEEMED, days
            ),
        )
        yield (
            f"actions_{days}d",
            _windowed(
                f"Loyalty actions taken part in, last {days} days", "points", POINTS_ACTIONS, days
            ),
        )
    yield (
        "points_expired_365d",
        _windowed("Loyalty points expired, last 365 days", "points", POINTS_EXPIRED, 365),
    )
    for kind, column in CAMPAIGN_COLUMNS.items():
        for days in (90, 365):
            yield (
                f"campaigns_{kind}_{days}d",
                _windowed(
                    f"Campaign interactions '{kind}', last {days} days", "campaigns", column, days
                ),
            )


#: Where a ratio goes in the catalogue's order, until its two features are known.
_RATIO = Feature("number", "", lambda _state, _day: None, frozenset())


def _catalogue() -> dict[str, Feature]:
    features = dict(_windows())
    orders = frozenset({"orders"})
    features.update(
        {
            "revenue_prev_90d": Feature(
                "number", "Revenue of the 90 days before the last 90", _revenue_prev_90d, orders
            ),
            "momentum_90d": Feature(
                "number", "Revenue last 90 days / the 90 before", _momentum, orders
            ),
            "aov_365d": _RATIO,
            "recency_days": Feature(
                "number",
                "Days since the last order",
                DaysSince("last_order_day"),
                frozenset({"last_order_day"}),
            ),
            "tenure_days": Feature(
                "number",
                "Days since the first order",
                DaysSince("first_order_day"),
                frozenset({"first_order_day"}),
            ),
            "days_since_activity": Feature(
                "number",
                "Days since any activity",
                DaysSince("last_activity_day"),
                frozenset({"last_activity_day"}),
            ),
            "response_rate_365d": _RATIO,
            "campaign_acceptances_365d": Feature(
                "number",
                "Campaign responses plus conversions, last 365 days",
                _campaign_acceptances,
                frozenset({"campaigns"}),
            ),
            "points_balance": _attribute(
                "number", "Current loyalty points balance", "points_balance"
            ),
            "tier": _attribute("string", "Loyalty tier", "tier"),
            "is_member": Feature(
                "bool",
                "Has ever earned or redeemed points, or has a tier",
                _is_member,
                frozenset({"points", "tier", "points_balance"}),
            ),
            "unsubscribed": _attribute(
                "bool", "A contact unsubscribed from campaigns", "unsubscribed"
            ),
            "top_category": Feature(
                "string",
                "Category with the largest trailing-year spend",
                top_category,
                frozenset({"categories"}),
            ),
            "industry": _attribute("string", "Industry (profile)", "profile.industry"),
            "employees": _attribute("number", "Head count (profile)", "profile.employees"),
            "size_class": _attribute(
                "string", "micro/small/medium/large/enterprise (profile)", "profile.size_class"
            ),
            "country": _attribute("string", "ISO country code (profile)", "profile.country"),
            "region": _attribute("string", "EMEA/AMER/APAC (profile)", "profile.region"),
        }
    )
    for role in ROLES:
        features[f"{role}_engaged_30d"] = Feature(
            "bool",
            f"A {role} contact interacted in the last 30 days",
            RoleWindow(role, 30, 0),
            frozenset({"roles"}),
        )
        features[f"{role}_accepted_90d"] = Feature(
            "bool",
            f"A {role} contact responded to or converted on a campaign in the last 90 days",
            RoleWindow(role, 90, 1),
            frozenset({"roles"}),
        )
    # A ratio reads what its two features read (its place in the catalogue is kept).
    for name, numerator, denominator, description in (
        ("aov_365d", "revenue_365d", "orders_365d", "Average order value, last 365 days"),
        (
            "response_rate_365d",
            "campaign_acceptances_365d",
            "campaigns_sent_365d",
            "Campaign responses and conversions per campaign sent, last 365 days",
        ),
    ):
        reads = features[numerator].reads | features[denominator].reads
        features[name] = Feature("number", description, Ratio(numerator, denominator), reads)
    return features


#: The feature catalogue: name -> kind, description, computation and inputs.
FEATURES: dict[str, Feature] = _catalogue()


@dataclass(frozen=True)
class GlobalFeature:
    """A feature that also depends on facts shared by all accounts (``Globals``)."""

    kind: FeatureKind
    description: str
    compute: Callable[[View], Any]
    reads: frozenset[str]


def _abc_class(view: View) -> str | None:
    a_min, b_min = view.globals.value_a_min, view.globals.value_b_min
    revenue = view["revenue_365d"]
    if a_min is None or b_min is None or revenue <= 0:
        return None
    return "A" if revenue >= a_min else "B" if revenue >= b_min else "C"


def _clv(view: View) -> float | None:
    return clv_estimate(
        view["revenue_365d"], view["orders_365d"], view["tenure_days"], view["recency_days"]
    )


GLOBAL_FEATURES: dict[str, GlobalFeature] = {
    "value_a_min": GlobalFeature(
        "number",
        "Smallest trailing-year revenue of an A account (global ABC cut-off)",
        lambda view: view.globals.value_a_min,
        frozenset({GLOBAL_INPUT}),
    ),
    "value_b_min": GlobalFeature(
        "number",
        "Smallest trailing-year revenue of a B account (global ABC cut-off)",
        lambda view: view.globals.value_b_min,
        frozenset({GLOBAL_INPUT}),
    ),
    "abc_class": GlobalFeature(
        "string",
        "A, B or C by the Pareto analysis of trailing-year revenue (null: no revenue)",
        _abc_class,
        frozenset({"orders", GLOBAL_INPUT}),
    ),
    "clv_estimate": GlobalFeature(
        "number",
        "Customer lifetime value estimate (see worker.core.value.clv_estimate)",
        _clv,
        # grows with tenure and recency every day; the schedule has no due time for it
        frozenset({"orders", "first_order_day", "last_order_day", DAILY_INPUT}),
    ),
}

#: What each feature reads: state attributes, or GLOBAL_INPUT / DAILY_INPUT.
FEATURE_INPUTS: dict[str, frozenset[str]] = {
    **{name: feature.reads for name, feature in FEATURES.items()},
    **{name: feature.reads for name, feature in GLOBAL_FEATURES.items()},
}
#: What each condition-language function reads (``share``: the category spend).
FUNCTION_INPUTS: dict[str, frozenset[str]] = {"share": frozenset({"categories"})}

#: The windowed features, and per (rows, column) their windows shortest first.
WINDOWED: dict[str, Window] = {
    name: window for name, feature in FEATURES.items() if (window := feature.window) is not None
}
WINDOWS_OF: dict[tuple[str, int], list[tuple[int, str]]] = {}
for _name, _window in WINDOWED.items():
    WINDOWS_OF.setdefault((_window.attribute, _window.column), []).append((_window.days, _name))
for _windows_of_column in WINDOWS_OF.values():
    _windows_of_column.sort()
del _name, _window, _windows_of_column

#: Every window length (days) some feature sums over.
WINDOW_DAYS: tuple[int, ...] = tuple(sorted({window.days for window in WINDOWED.values()}))
#: Features that grow by one every day, and the state attribute holding the day they count from.
DAYS_SINCE: dict[str, str] = {
    name: feature.compute.attribute
    for name, feature in FEATURES.items()
    if isinstance(feature.compute, DaysSince)
}
#: The windows (days) of the buying-centre role features.
ROLE_WINDOWS: tuple[int, ...] = tuple(
    sorted({f.compute.days for f in FEATURES.values() if isinstance(f.compute, RoleWindow)})
)
#: State attributes whose features do not change with time (only with an event).
TIMELESS: frozenset[str] = frozenset(
    feature.compute.attribute
    for feature in FEATURES.values()
    if isinstance(feature.compute, Attribute)
)
