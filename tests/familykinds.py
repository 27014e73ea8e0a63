"""A kind of segment family the worker does not ship, for the tests that show the family
interface is real: registered with ``SEGWORKER_FAMILY_KINDS=tests.familykinds:spend_bands``
(or passed to ``worker_families``), with no production file edited.

``spend_band`` places an account by its trailing-year revenue in ``small``, ``mid`` or
``large``, unless it has been inactive for 45 days or more (``dormant``): an exclusive
family that reads the order rows and the day of the last activity, and whose answer
changes with time alone on the day inactivity reaches 45 days.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from worker.config.settings import Settings
from worker.core.definitions import Definitions
from worker.core.events import SegmentChanged
from worker.core.families import Family, FamilyKind
from worker.core.features import AccountState, FeatureView, Globals
from worker.core.membership import Context, Membership, diff_assignment
from worker.core.rules import Match

DAY = 86400
DORMANT_AFTER = 45
BANDS = (("small", 1_000.0), ("mid", 10_000.0), ("large", float("inf")))


class SpendBand(Family):
    id = "spend_band"

    def _place(self, view: FeatureView) -> Match:
        inactive = view["days_since_activity"]
        if inactive is not None and inactive >= DORMANT_AFTER:
            rule = f"days_since_activity >= {DORMANT_AFTER}"
            return Match("dormant", rule, {"days_since_activity": inactive})
        revenue = view["revenue_365d"]
        band, limit = next((band, limit) for band, limit in BANDS if revenue < limit)
        rule = f"revenue_365d < {limit:g}" if limit != float("inf") else "revenue_365d >= 10000"
        return Match(band, rule, {"revenue_365d": revenue})

    def evaluate(
        self, current: Mapping[str, Membership], view: FeatureView, context: Context
    ) -> tuple[dict[str, Membership], list[SegmentChanged]]:
        target = self._place(view)
        if target.segment_id in current:
            return dict(current), []
        return diff_assignment(self.id, current, target, context, f"now {target.rule}")

    def explain(self, segment_id: str, membership: Membership, view: FeatureView) -> str:
        return self._place(view).reason()

    def segments(self) -> Sequence[tuple[str, str]]:
        return [
            ("small", "Less than 1,000 revenue a year"),
            ("mid", "1,000 to 10,000 revenue a year"),
            ("large", "10,000 revenue a year or more"),
            ("dormant", f"No activity for {DORMANT_AFTER} days"),
        ]

    def inputs(self) -> frozenset[str]:
        return frozenset({"orders", "last_activity_day"})

    def next_due(self, state: AccountState, view: FeatureView) -> float | None:
        last = state.last_activity_day
        if last is None:
            return None
        moment = float((last + DORMANT_AFTER) * DAY)
        return moment if moment > state.clock else None

    def __repr__(self) -> str:
        return f"SpendBand(dormant after {DORMANT_AFTER} days, bands {BANDS})"


class SpendBands(FamilyKind):
    def __init__(self) -> None:
        self.family = SpendBand()

    def bind(self, shared: Globals) -> Sequence[Family]:
        return (self.family,)

    def ids(self, shared: Globals) -> Sequence[str]:
        return (self.family.id,)


def spend_bands(settings: Settings, definitions: Definitions, **_: Any) -> SpendBands:
    """The factory ``SEGWORKER_FAMILY_KINDS`` names."""
    return SpendBands()
