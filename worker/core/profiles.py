"""Segment profiles: who is in each segment, what they buy and how they behave.

Pure: no I/O, no clocks. A :class:`ProfileBuilder` is an accumulator: feed it every
account once (``add(state, view)``, in any order and in batches as they come out of the
store) and ``build()`` the profiles. It keeps only sums and counts per segment, so its
memory does not grow with the number of accounts.

Memberships come from ``state.memberships`` (family -> segment id -> membership) unless
``memberships_of`` says otherwise. Every account counts towards the totals, whether or
not it is in a segment of a family; in a non-exclusive family the shares of its segments
need not add up to 1.

Feature values are read from the :class:`~worker.core.features.FeatureView` the caller passes,
so all accounts should be viewed at the same day (the global stream clock), not each at
its own stream time: an account idle for a year must look idle.

Examples
--------
>>> from worker.core.features import FeatureView
>>> a = AccountState("A", memberships={"value": {"a": {}}})
>>> b = AccountState("B", memberships={"value": {"c1": {}}})
>>> a.orders, b.orders = [[100, 900.0, 3]], [[100, 100.0, 1]]
>>> builder = ProfileBuilder(min_size=1)
>>> for state in (a, b):
...     builder.add(state, FeatureView(state, 110))
>>> profiles = builder.build()
>>> top = profiles["value", "a"]
>>> top.size, top.share_of_accounts, top.share_of_revenue, top.means["orders_365d"]
(1, 0.5, 0.9, 3.0)
>>> builder.overall().revenue_365d
1000.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from worker.core.features import ROLES, AccountState, FeatureView, category_shares

__all__ = [
    "ALL_ACCOUNTS",
    "PROFILE_FEATURES",
    "ROLE_WINDOW_DAYS",
    "MembershipsOf",
    "ProfileBuilder",
    "SegmentProfile",
    "profile_segments",
    "profiles_from_dicts",
    "profiles_to_dicts",
]

#: The features whose per-segment mean a profile carries (``None`` values are ignored).
PROFILE_FEATURES: tuple[str, ...] = (
    "revenue_365d",
    "orders_365d",
    "recency_days",
    "aov_365d",
    "points_earned_365d",
    "response_rate_365d",
    "momentum_90d",
)
#: A buying-centre role counts for a segment when a contact of it engaged this recently.
ROLE_WINDOW_DAYS = 90
#: Family and segment id of the profile of all accounts (:meth:`ProfileBuilder.overall`).
ALL_ACCOUNTS = ("*", "all")

_ROLE_RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}

#: From an account's state to the segment ids it belongs to, per family.
MembershipsOf = Callable[[AccountState], Mapping[str, Iterable[str]]]


def _stored_memberships(state: AccountState) -> Mapping[str, Iterable[str]]:
    return state.memberships


@dataclass(frozen=True)
class SegmentProfile:
    """The profile of one segment, JSON-serialisable with :meth:`to_dict`.

    ``means`` maps each profile feature to its mean over the members that have a value
    (``None`` when none has); ``top_categories`` are ``(category, mean share)`` of the
    members' trailing-year spend mix, largest first; ``roles`` are ``(role, accounts)``:
    how many members had a contact of that buying-centre role engaged in the last
    :data:`ROLE_WINDOW_DAYS` days, largest first. ``small`` warns that the segment is
    too small to act on (see :class:`ProfileBuilder`).
    """

    family: str
    segment_id: str
    size: int
    share_of_accounts: float
    revenue_365d: float
    share_of_revenue: float
    means: dict[str, float | None]
    top_categories: tuple[tuple[str, float], ...] = ()
    roles: tuple[tuple[str, int], ...] = ()
    small: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return self.family, self.segment_id

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (lists, not tuples).

        >>> SegmentProfile("value", "a", 2, 0.5, 10.0, 1.0, {"orders_365d": 1.5}).to_dict()
        ... # doctest: +NORMALIZE_WHITESPACE
        {'family': 'value', 'segment_id': 'a', 'size': 2, 'share_of_accounts': 0.5,
         'revenue_365d': 10.0, 'share_of_revenue': 1.0, 'means': {'orders_365d': 1.5},
         'top_categories': [], 'roles': [], 'small': False}
        """
        return {
            "family": self.family,
            "segment_id": self.segment_id,
            "size": self.size,
            "share_of_accounts": self.share_of_accounts,
            "revenue_365d": self.revenue_365d,
            "share_of_revenue": self.share_of_revenue,
            "means": dict(self.means),
            "top_categories": [[c, s] for c, s in self.top_categories],
            "roles": [[r, n] for r, n in self.roles],
            "small": self.small,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegmentProfile:
        """The profile of :meth:`to_dict` (e.g. read back from JSON)."""
        return cls(
            family=str(data["family"]),
            segment_id=str(data["segment_id"]),
            size=int(data["size"]),
            share_of_accounts=float(data["share_of_accounts"]),
            revenue_365d=float(data["revenue_365d"]),
            share_of_revenue=float(data["share_of_revenue"]),
            means={str(k): None if v is None else float(v) for k, v in dict(data["means"]).items()},
            top_categories=tuple((str(c), float(s)) for c, s in data.get("top_categories", ())),
            roles=tuple((str(r), int(n)) for r, n in data.get("roles", ())),
            small=bool(data.get("small", False)),
        )


@dataclass
class _Totals:
    """Running sums of one segment (or of all accounts)."""

    size: int = 0
    revenue: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    category_sums: dict[str, float] = field(default_factory=dict)
    with_categories: int = 0
    roles: dict[str, int] = field(default_factory=dict)

    def add(self, sample: _Sample) -> None:
        self.size += 1
        self.revenue += sample.revenue
        for name, value in sample.values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1
        if sample.shares:
            self.with_categories += 1
            for category, share in sample.shares.items():
                self.category_sums[category] = self.category_sums.get(category, 0.0) + share
        for role in sample.roles:
            self.roles[role] = self.roles.get(role, 0) + 1

    def merge(self, other: _Totals) -> None:
        self.size += other.size
        self.revenue += other.revenue
        self.with_categories += other.with_categories
        for mine, theirs in (
            (self.sums, other.sums),
            (self.category_sums, other.category_sums),
        ):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0.0) + value
        for counts, more in ((self.counts, other.counts), (self.roles, other.roles)):
            for key, n in more.items():
                counts[key] = counts.get(key, 0) + n


@dataclass(frozen=True)
class _Sample:
    """What one account contributes, computed once however many segments it is in."""

    revenue: float
    values: dict[str, float]
    shares: dict[str, float]
    roles: tuple[str, ...]


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class ProfileBuilder:
    """Accumulates accounts into per-segment profiles; ``build()`` at any time.

    Parameters
    ----------
    memberships_of
        The segments of an account per family; by default ``state.memberships``.
    features
        The features whose mean each profile carries.
    min_size, min_share
        A segment is flagged ``small`` when it has fewer than
        ``max(min_size, min_share * accounts)`` members.
    top_categories, top_roles
        How many categories and buying-centre roles a profile lists.
    expected
        Segments to report even when empty (family -> segment ids), e.g. every segment
        of the definitions; an empty segment is always ``small``.

    Examples
    --------
    >>> builder = ProfileBuilder(expected={"program": ["champions"]})
    >>> builder.build()["program", "champions"].small
    True
    """

    def __init__(
        self,
        memberships_of: MembershipsOf | None = None,
        *,
        features: Iterable[str] = PROFILE_FEATURES,
        min_size: int = 5,
        min_share: float = 0.01,
        top_categories: int = 3,
        top_roles: int = 2,
        expected: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        if min_size < 0 or not 0 <= min_share <= 1:
            raise ValueError("need min_size >= 0 and 0 <= min_share <= 1")
        self.memberships_of = memberships_of or _stored_memberships
        self.features = tuple(features)
        self.min_size = min_size
        self.min_share = min_share
        self.top_categories = top_categories
        self.top_roles = top_roles
        self._all = _Totals()
        self._segments: dict[tuple[str, str], _Totals] = {}
        for family, segment_ids in (expected or {}).items():
            for segment_id in segment_ids:
                self._segments.setdefault((family, segment_id), _Totals())

    @property
    def accounts(self) -> int:
        """How many accounts were added."""
        return self._all.size

    def _sample(self, state: AccountState, view: FeatureView) -> _Sample:
        values = {}
        for name in self.features:
            value = _number(view.get(name))
            if value is not None:
                values[name] = value
        revenue = _number(view.get("revenue_365d")) or 0.0
        now_day = view.now_day
        roles = tuple(
            role
            for role in ROLES
            if (engaged := state.roles.get(role, [None, None])[0]) is not None
            and 0 <= now_day - engaged < ROLE_WINDOW_DAYS
        )
        return _Sample(revenue, values, category_shares(state, now_day), roles)

    def add(self, state: AccountState, view: FeatureView) -> None:
        """Count one account (``view`` is its feature view at the profiling day)."""
        sample = self._sample(state, view)
        self._all.add(sample)
        for family, segment_ids in self.memberships_of(state).items():
            for segment_id in segment_ids:
                key = (family, segment_id)
                totals = self._segments.get(key)
                if totals is None:
                    totals = self._segments[key] = _Totals()
                totals.add(sample)

    def add_many(self, accounts: Iterable[tuple[AccountState, FeatureView]]) -> None:
        """``add`` every ``(state, view)`` pair."""
        for state, view in accounts:
            self.add(state, view)

    def merge(self, other: ProfileBuilder) -> None:
        """Fold in another builder's accounts (e.g. one that scanned other partitions)."""
        self._all.merge(other._all)
        for key, totals in other._segments.items():
            self._segments.setdefault(key, _Totals()).merge(totals)

    def small_below(self) -> float:
        """Segments with fewer members than this are flagged ``small``."""
        return max(float(self.min_size), self.min_share * self._all.size)

    def _profile(self, family: str, segment_id: str, totals: _Totals) -> SegmentProfile:
        accounts, revenue = self._all.size, self._all.revenue
        means = {
            name: totals.sums[name] / totals.counts[name] if totals.counts.get(name) else None
            for name in self.features
        }
        categories = (
            sorted(
                ((c, s / totals.with_categories) for c, s in totals.category_sums.items()),
                key=lambda item: (-item[1], item[0]),
            )
            if totals.with_categories
            else []
        )
        roles = sorted(
            ((r, n) for r, n in totals.roles.items() if n > 0),
            key=lambda item: (-item[1], _ROLE_RANK.get(item[0], len(ROLES))),
        )
        return SegmentProfile(
            family=family,
            segment_id=segment_id,
            size=totals.size,
            share_of_accounts=totals.size / accounts if accounts else 0.0,
            revenue_365d=totals.revenue,
            share_of_revenue=totals.revenue / revenue if revenue > 0 else 0.0,
            means=means,
            top_categories=tuple(categories[: self.top_categories]),
            roles=tuple(roles[: self.top_roles]),
            small=totals.size < self.small_below(),
        )

    def build(self) -> dict[tuple[str, str], SegmentProfile]:
        """Profiles by ``(family, segment_id)``: families by name, then largest segment first.

        ``share_of_revenue`` divides by the trailing-year revenue of all accounts added
        (net of returns); it is 0 when that is not positive.
        """
        ordered = sorted(
            self._segments.items(), key=lambda item: (item[0][0], -item[1].size, item[0][1])
        )
        return {
            (family, segment_id): self._profile(family, segment_id, totals)
            for (family, segment_id), totals in ordered
        }

    def overall(self) -> SegmentProfile:
        """The profile of all accounts added (key :data:`ALL_ACCOUNTS`): the reference a
        report compares segments with. Never ``small``."""
        return replace(self._profile(*ALL_ACCOUNTS, self._all), small=False)


def profile_segments(
    accounts: Iterable[tuple[AccountState, FeatureView]],
    memberships_of: MembershipsOf | None = None,
    **options: Any,
) -> dict[tuple[str, str], SegmentProfile]:
    """One-shot: the profiles of all ``accounts`` (see :class:`ProfileBuilder` for options).

    >>> profile_segments([])
    {}
    """
    builder = ProfileBuilder(memberships_of, **options)
    builder.add_many(accounts)
    return builder.build()


def profiles_to_dicts(profiles: Mapping[tuple[str, str], SegmentProfile]) -> list[dict[str, Any]]:
    """A JSON list of profiles, in the mapping's order."""
    return [profile.to_dict() for profile in profiles.values()]


def profiles_from_dicts(
    data: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str], SegmentProfile]:
    """Profiles read back from :func:`profiles_to_dicts`."""
    profiles = (SegmentProfile.from_dict(item) for item in data)
    return {profile.key: profile for profile in profiles}
