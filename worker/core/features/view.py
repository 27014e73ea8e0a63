"""The feature catalogue of one account at a day, computed on demand.

A ``FeatureView`` is a dict of the features computed so far: a rule reads a cached value
at C speed and only a miss computes it. The windows of one column (``revenue_30d`` ...
``revenue_365d``) are summed in one pass.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from worker.core.clustering import DEFAULT_CATEGORIES
from worker.core.features.catalogue import (
    FEATURES,
    GLOBAL_FEATURES,
    WINDOWS_OF,
    Feature,
    Ratio,
    Window,
    top_category,
    top_of,
)
from worker.core.features.state import NO_GLOBALS, AccountState, Globals
from worker.core.features.windows import category_shares, window_totals


class FeatureView(dict[str, Any]):
    """The feature catalogue of one account at day ``now_day``, computed on demand.

    A dict of the features computed so far: a rule reads a cached value at C speed
    and only a miss computes it. The windows of one column (``revenue_30d`` ...
    ``revenue_365d``) are summed in one pass. ``share.<category>`` reads the
    category's share of trailing-year spend. Iterate over :data:`FEATURES` (and
    :data:`GLOBAL_FEATURES`) to read the whole catalogue.
    """

    __slots__ = ("_category_shares", "globals", "now_day", "state")

    def __init__(self, state: AccountState, now_day: int, globals: Globals = NO_GLOBALS) -> None:
        super().__init__()
        self.state = state
        self.now_day = now_day
        self.globals = globals
        self._category_shares: dict[str, float] | None = None

    @classmethod
    def of(cls, state: AccountState, globals: Globals = NO_GLOBALS) -> FeatureView:
        """The view of ``state`` at its own day, shared by the evaluation and the
        indexing of one step: kept on the state until an event is applied to it
        (``features.apply`` drops it), its day moves or other shared facts are used.
        Only for states changed through ``features.apply``: code that edits a state's
        rows directly builds a view."""
        day = state.now_day
        cached = state.__dict__.get(_CACHED)
        if cached is not None and cached.now_day == day and cached.globals is globals:
            return cached
        view = state.__dict__[_CACHED] = cls(state, day, globals)
        return view

    def __missing__(self, name: str) -> Any:
        # One lookup for every catalogue name (see _VIEW_COMPUTE); a miss costs little more
        # than the computation itself.
        compute = _VIEW_COMPUTE.get(name)
        if compute is not None:
            value = compute(self)
        elif name.startswith("share."):
            value = self._shares().get(name[6:], 0.0)  # no spend in the category
        else:
            raise KeyError(name)
        self[name] = value
        return value

    def get(self, name: str, default: Any = None) -> Any:
        # dict.get would skip __missing__; clustering, drift and profiles read through here.
        try:
            return self[name]
        except KeyError:
            return default

    def _shares(self) -> dict[str, float]:
        """All category shares, computed once per view.

        Each is also stored as ``share.<category>``, and so is 0.0 for the known
        categories without spend, so that the next category read (the needs model reads
        all of them, conditions a few) is a plain dict hit rather than another miss.
        """
        shares = self._category_shares
        if shares is None:
            shares = self._category_shares = category_shares(self.state, self.now_day)
            self.update(_NO_SHARES)
            self.update({"share." + category: share for category, share in shares.items()})
        return shares


#: Where ``FeatureView.of`` keeps a state's view (not a dataclass field: never stored).
_CACHED = "_feature_view"


def forget_view(state: AccountState) -> None:
    """Drop the view ``FeatureView.of`` keeps for ``state`` (its features changed)."""
    state.__dict__.pop(_CACHED, None)


#: ``share.<category>`` of the known categories (the needs space) for an account without spend.
_NO_SHARES: dict[str, float] = {f"share.{category}": 0.0 for category in DEFAULT_CATEGORIES}


def _top_category_in_view(view: FeatureView) -> str | None:
    return top_of(view._shares())  # the shares the view already computed for share.*


def _view_computer(name: str, feature: Feature) -> Callable[[FeatureView], Any]:
    """How ``FeatureView`` computes a catalogue feature: from what it already holds where
    that gives the identical value, else from the state at the view's day."""
    compute = feature.compute
    if isinstance(compute, Window):
        return _column_windows(name, compute)
    if isinstance(compute, Ratio):
        return compute.in_view
    if compute is top_category:
        return _top_category_in_view
    return lambda view: compute(view.state, view.now_day)


def _column_windows(name: str, window: Window) -> Callable[[FeatureView], Any]:
    """Computes ``name`` and stores every other catalogued window of its column in the
    view as well: one pass over the rows for all of them."""
    rows_of = operator.attrgetter(window.attribute)
    column = window.column
    windows = WINDOWS_OF[(window.attribute, window.column)]  # (days, name), shortest first
    days = tuple(length for length, _ in windows)
    names = tuple(window_name for _, window_name in windows)
    position = names.index(name)

    def compute(view: FeatureView) -> float:
        totals = window_totals(rows_of(view.state), view.now_day, column, days)
        values = [round(total, 2) for total in totals]
        view.update(zip(names, values, strict=True))
        return values[position]

    return compute


#: What ``FeatureView.__missing__`` calls for each name of the catalogue.
_VIEW_COMPUTE: dict[str, Callable[[FeatureView], Any]] = {
    **{name: _view_computer(name, feature) for name, feature in FEATURES.items()},
    **{name: feature.compute for name, feature in GLOBAL_FEATURES.items()},
}
