"""Cluster families: an account in the cluster of the model whose centroid is nearest
("hard" segments, ``worker.core.clustering``).

A family exists for every configured clustering; it is evaluated once its model is
published (``Globals.clusters``) and keeps its members until then. An account moves
only when another centroid is nearer by the margin (``clustering.assign``). The model
is part of what the family evaluates with, so its ``model_token`` changes with it. Time
moves a cluster family's answer through the spec's days-since features
(``recency_days``), solved per centroid (``days_until_switch`` below).
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from worker.core import clustering, membership
from worker.core.clustering import ClusterSnapshot, FeatureSpec
from worker.core.events import SegmentChanged
from worker.core.families.base import Family, FamilyKind
from worker.core.features import (
    FEATURE_INPUTS,
    FUNCTION_INPUTS,
    GLOBAL_INPUT,
    AccountState,
    FeatureView,
    Globals,
)
from worker.core.features.catalogue import DAYS_SINCE
from worker.core.membership import Context, Membership
from worker.core.rules import Match

DAY = 86400


class ClusterFamily(Family):
    """One clustering with its current model and the margin of switching."""

    def __init__(self, family_id: str, snapshot: ClusterSnapshot, margin: float) -> None:
        self.id = family_id
        self.snapshot = snapshot
        self.margin = margin
        self._inputs = spec_inputs(snapshot.spec)
        text = f"{family_id}\x1f{margin!r}\x1f{snapshot.to_json()}"
        digest = hashlib.blake2b(text.encode(), digest_size=6).digest()
        self._token = base64.urlsafe_b64encode(digest).decode()
        self._descriptions: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"ClusterFamily({self.id!r}, v{self.snapshot.version})"

    @property
    def model_token(self) -> str:
        """A digest of the family, the model's JSON and the margin: what an assignment
        depends on besides the features."""
        return self._token

    @property
    def descriptions(self) -> dict[str, str]:
        """The clusters' plain-language descriptions (written once per model)."""
        if self._descriptions is None:
            self._descriptions = clustering.describe(self.snapshot)
        return self._descriptions

    def evaluate(
        self, current: Mapping[str, Membership], view: FeatureView, context: Context
    ) -> tuple[dict[str, Membership], list[SegmentChanged]]:
        snapshot = self.snapshot
        old_id = next(iter(current), None)
        distances = snapshot.distances(view)
        new_id = clustering.assign(view, snapshot, old_id, self.margin, distances)
        if new_id == old_id:
            return dict(current), []  # the usual case: no reason to build
        target = self._match(new_id, view, distances)
        exit_reason = (
            f"centroid {new_id} is closer ({distances[new_id]:.3f} vs "
            f"{distances.get(old_id, float('nan')):.3f} to {old_id})"
            if old_id is not None
            else ""
        )
        return membership.diff_assignment(self.id, current, target, context, exit_reason)

    def explain(self, cluster_id: str, entry: Membership, view: FeatureView) -> str:
        """Why the account is in ``cluster_id``; "nearest centroid" only when it is.

        An account stays in its cluster until another is nearer by the margin, and is
        re-assigned to a new model at its next event or by the paced background pass.
        """
        snapshot, margin = self.snapshot, self.margin
        distances = snapshot.distances(view)
        nearest = min(distances, key=distances.__getitem__)
        if cluster_id == nearest:
            return self._match(cluster_id, view, distances).reason()
        model = f"{snapshot.spec.name} model v{snapshot.version}"
        if cluster_id not in distances:
            return (
                f"assigned with an earlier model; {model} has no cluster {cluster_id} "
                f"(nearest: {nearest})"
            )
        gap = f"({distances[nearest]:.3f} vs {distances[cluster_id]:.3f})"
        if clustering.assign(view, snapshot, cluster_id, margin, distances) == cluster_id:
            status = f"kept by the {margin:.0%} margin: {nearest} is nearer {gap}"
        else:
            status = f"assigned when last evaluated; {nearest} is nearer now {gap}"
        rule = f"centroid {cluster_id} of {model}: {self.descriptions[cluster_id]}"
        values = self._match(cluster_id, view, distances).values
        return f"{status}; {Match(cluster_id, rule, values).reason()}"

    def segments(self) -> list[tuple[str, str]]:
        return [(cluster_id, self.descriptions[cluster_id]) for cluster_id in self.snapshot.ids]

    def inputs(self) -> frozenset[str] | None:
        return self._inputs

    def next_due(self, state: AccountState, view: FeatureView) -> float | None:
        """The first day another centroid may win with the spec's days-since feature
        growing (several such features: every day; none: never, beyond the edges)."""
        current = next(iter(state.memberships.get(self.id, ())), None)
        if current is None:
            return None
        growing = [
            name
            for name in self.snapshot.spec.names
            if name in DAYS_SINCE and getattr(state, DAYS_SINCE[name]) is not None
        ]
        if not growing:
            return None
        if len(growing) > 1:  # not solved: look again every day
            days: int | None = 1
        else:
            days = days_until_switch(self.snapshot, view, current, self.margin, growing[0])
        return None if days is None else float((state.now_day + days) * DAY)

    def _match(
        self, cluster_id: str, view: FeatureView, distances: dict[str, float] | None = None
    ) -> Match:
        snapshot = self.snapshot
        if distances is None:
            distances = snapshot.distances(view)
        values = raw_sample(view, snapshot.spec)
        if cluster_id in distances:
            values["distance"] = round(distances[cluster_id], 4)
        description = self.descriptions.get(cluster_id, "")
        return Match(
            cluster_id,
            f"nearest centroid of {snapshot.spec.name} model v{snapshot.version}: {description}",
            values,
        )


class ClusterFamilies(FamilyKind):
    """A cluster family per clustering: ``families`` (default: every model the shared
    facts carry), each bound to its current model."""

    def __init__(self, families: Sequence[str] | None = None) -> None:
        self.families = None if families is None else tuple(families)
        self._bound: dict[str, ClusterFamily] = {}

    def ids(self, shared: Globals) -> tuple[str, ...]:
        return self.families if self.families is not None else tuple(shared.clusters)

    def bind(self, shared: Globals) -> list[Family]:
        bound: list[Family] = []
        for family_id in self.ids(shared):
            snapshot = shared.clusters.get(family_id)
            if snapshot is None:
                continue  # no model yet: its members stay where they are
            family = self._bound.get(family_id)
            if (
                family is None
                or family.snapshot is not snapshot
                or (family.margin != shared.cluster_margin)
            ):
                family = ClusterFamily(family_id, snapshot, shared.cluster_margin)
                self._bound[family_id] = family
            bound.append(family)
        return bound


def raw_sample(view: FeatureView, spec: FeatureSpec) -> dict[str, Any]:
    """The account's values of a clustering's features, untransformed (for reasons, training)."""
    return {name: view[name] for name in spec.names}


def spec_inputs(spec: FeatureSpec) -> frozenset[str] | None:
    """Everything a cluster spec's features read; None when that includes the shared
    globals or a feature the catalogue does not declare (never skipped then).

    >>> from worker.core.clustering import BEHAVIOUR, NEEDS
    >>> sorted(spec_inputs(NEEDS))
    ['categories']
    >>> sorted(spec_inputs(BEHAVIOUR))
    ['campaigns', 'last_order_day', 'orders', 'points']
    """
    inputs: set[str] = set()
    for name in spec.names:
        # ``share.<category>`` is what the ``share`` function reads (see FeatureView)
        read = FUNCTION_INPUTS["share"] if name.startswith("share.") else FEATURE_INPUTS.get(name)
        if read is None or GLOBAL_INPUT in read:
            return None
        inputs |= read
    return frozenset(inputs)


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

    >>> from worker.core.clustering import Cluster, Dimension, FeatureSpec
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
