"""A frozen, versioned clustering model as JSON; stable cluster ids; assignment, profiles."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from worker.core.clustering.spec import FeatureSpec, needs_spec, prepared_values

#: Version of the snapshot JSON layout; bump on incompatible changes.
SNAPSHOT_FORMAT = 1
#: Variance below which a dimension counts as constant; its std is then taken as 1.
_MIN_VARIANCE = 1e-12


@dataclass
class RunningScaler:
    """Running mean and population variance per dimension (Welford), for standardising.

    >>> scaler = RunningScaler(1)
    >>> for x in (1.0, 2.0, 3.0):
    ...     scaler.learn_one([x])
    >>> scaler.means, [round(s, 4) for s in scaler.stds()]
    ([2.0], [0.8165])
    """

    size: int
    n: int = 0
    means: list[float] = field(default_factory=list)
    m2: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.means = self.means or [0.0] * self.size
        self.m2 = self.m2 or [0.0] * self.size

    def learn_one(self, x: Sequence[float]) -> None:
        self.n += 1
        for i, xi in enumerate(x):
            delta = xi - self.means[i]
            self.means[i] += delta / self.n
            self.m2[i] += delta * (xi - self.means[i])

    def stds(self) -> list[float]:
        """Standard deviations; a constant dimension gets 1 so it standardises to 0."""
        n = max(self.n, 1)
        return [math.sqrt(v / n) if v / n > _MIN_VARIANCE else 1.0 for v in self.m2]


def _standardise(x: Sequence[float], means: Sequence[float], stds: Sequence[float]) -> list[float]:
    return [(xi - m) / s for xi, m, s in zip(x, means, stds, strict=True)]


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    return math.dist(a, b)  # C: an account's assignment computes k of these per event


class NotReadyError(ValueError):
    """The learner has not yet seen enough (distinct) samples to seed its centres."""


@dataclass(frozen=True)
class Cluster:
    """One cluster of a snapshot: stable id, standardised centroid, samples it has won."""

    id: str
    centroid: tuple[float, ...]
    count: int


@dataclass(frozen=True)
class ClusterSnapshot:
    """A frozen, versioned clustering model: everything needed to predict, as JSON.

    ``means`` / ``stds`` standardise the prepared vector (see :func:`vectorize`);
    centroids are in standardised units; ``next_id`` is the number of the next fresh
    cluster id, so ids are never reused. ``created_at`` is whatever time the owner
    passed (stream time), ISO 8601, or ``None``.
    """

    version: int
    spec: FeatureSpec
    means: tuple[float, ...]
    stds: tuple[float, ...]
    clusters: tuple[Cluster, ...]
    next_id: int
    samples: int
    created_at: str | None = None

    def __post_init__(self) -> None:
        size = len(self.spec.dimensions)
        if len(self.means) != size or len(self.stds) != size:
            raise ValueError("means/stds do not match the feature spec")
        if not all(s > 0 and math.isfinite(s) for s in self.stds):
            raise ValueError("stds must be positive and finite")
        if not self.clusters or len({c.id for c in self.clusters}) != len(self.clusters):
            raise ValueError("cluster ids must be present and unique")
        if any(len(c.centroid) != size for c in self.clusters):
            raise ValueError("a centroid does not match the feature spec")

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.clusters)

    @property
    def centroids(self) -> dict[str, tuple[float, ...]]:
        """Standardised centroids by stable id."""
        return {c.id: c.centroid for c in self.clusters}

    def standardise(self, features: Mapping[str, Any]) -> list[float]:
        """The standardised full vector of ``features``."""
        return _standardise(prepared_values(features, self.spec), self.means, self.stds)

    def distances(self, features: Mapping[str, Any]) -> dict[str, float]:
        """Euclidean distance (standardised units) from ``features`` to every centroid."""
        z = self.standardise(features)
        return {c.id: _distance(z, c.centroid) for c in self.clusters}

    def predict_one(self, features: Mapping[str, Any]) -> tuple[str, float]:
        """The nearest cluster's id and its distance; ties go to the earlier cluster."""
        distances = self.distances(features)
        best = min(distances, key=distances.__getitem__)
        return best, distances[best]

    def prepared_centroids(self) -> dict[str, list[float]]:
        """Centroids back in prepared units (after transform, before standardising)."""
        return {
            c.id: [z * s + m for z, s, m in zip(c.centroid, self.stds, self.means, strict=True)]
            for c in self.clusters
        }

    def typical(self) -> dict[str, dict[str, float]]:
        """Each centroid in original feature units (log1p undone: a geometric-mean-like value)."""
        return {
            cid: {d.name: d.original(v) for d, v in zip(self.spec.dimensions, row, strict=True)}
            for cid, row in self.prepared_centroids().items()
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "version": self.version,
            "spec": self.spec.to_dict(),
            "means": list(self.means),
            "stds": list(self.stds),
            "clusters": {
                c.id: {"centroid": list(c.centroid), "count": c.count} for c in self.clusters
            },
            "next_id": self.next_id,
            "samples": self.samples,
            "created_at": self.created_at,
        }

    def to_json(self) -> str:
        """Compact JSON; floats round-trip exactly, NaN/inf are refused."""
        return json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClusterSnapshot:
        """The snapshot of :meth:`to_dict`; ``ValueError`` when it is not one."""
        if not isinstance(data, Mapping) or data.get("format") != SNAPSHOT_FORMAT:
            raise ValueError("not a cluster snapshot of format " + str(SNAPSHOT_FORMAT))
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"malformed cluster snapshot: {error!r}") from error

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> ClusterSnapshot:
        clusters = tuple(
            Cluster(cid, tuple(float(v) for v in c["centroid"]), int(c["count"]))
            for cid, c in data["clusters"].items()
        )
        return cls(
            version=int(data["version"]),
            spec=FeatureSpec.from_dict(data["spec"]),
            means=tuple(float(v) for v in data["means"]),
            stds=tuple(float(v) for v in data["stds"]),
            clusters=tuple(sorted(clusters, key=lambda c: id_number(c.id))),
            next_id=int(data["next_id"]),
            samples=int(data["samples"]),
            created_at=data.get("created_at"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ClusterSnapshot:
        """Parse :meth:`to_json` output; ``ValueError`` on anything else."""
        return cls.from_dict(json.loads(text))


def id_number(cluster_id: str) -> int:
    return int(cluster_id.removeprefix("c"))


def _scaled_distance(a: Sequence[float], b: Sequence[float], stds: Sequence[float]) -> float:
    """Euclidean distance of two prepared vectors, measured in units of ``stds``."""
    return math.sqrt(sum(((ai - bi) / s) ** 2 for ai, bi, s in zip(a, b, stds, strict=True)))


def match_ids(
    previous: ClusterSnapshot | None,
    prepared: Sequence[Sequence[float]],
    stds: Sequence[float],
    spec: FeatureSpec,
    next_id: int,
    max_distance: float | None = None,
) -> tuple[list[str], int]:
    """Stable ids for new centroids (prepared units), carried over from ``previous``.

    The Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) pairs old and new
    centroids so that their total distance is minimal. A new centroid left without a
    partner (more clusters than before), or farther than ``max_distance`` from its partner,
    or every centroid when the spec changed, gets a fresh id from ``next_id`` on.
    Returns the ids in the order of ``prepared`` and the next fresh id number.

    >>> from worker.core.clustering import NEEDS
    >>> match_ids(None, [[0.0], [1.0]], [1.0], NEEDS, 1)
    (['c1', 'c2'], 3)
    """
    ids: list[str | None] = [None] * len(prepared)
    if previous is not None:
        next_id = max(next_id, previous.next_id)
        if previous.spec.names == spec.names:
            old = previous.prepared_centroids().values()
            costs = [[_scaled_distance(o, n, stds) for n in prepared] for o in old]
            rows, cols = linear_sum_assignment(np.asarray(costs))
            for row, col in zip(rows, cols, strict=True):
                if max_distance is None or costs[row][col] <= max_distance:
                    ids[col] = previous.clusters[row].id
    result = []
    for cid in ids:
        if cid is None:
            cid, next_id = f"c{next_id}", next_id + 1
        result.append(cid)
    return result, next_id


def centroid_shift(old: ClusterSnapshot, new: ClusterSnapshot) -> dict[str, float]:
    """How far each cluster id present in both snapshots moved, in ``new``'s std units.

    Centroids are compared in prepared units, so a moving scaler alone is no movement.

    >>> centroid_shift(_demo_snapshot(), _demo_snapshot())
    {'c1': 0.0, 'c2': 0.0}
    """
    if old.spec.names != new.spec.names:
        raise ValueError("snapshots of different feature specs cannot be compared")
    before = old.prepared_centroids()
    return {
        cid: _scaled_distance(before[cid], row, new.stds)
        for cid, row in new.prepared_centroids().items()
        if cid in before
    }


def largest_centroid_shift(old: ClusterSnapshot | None, new: ClusterSnapshot) -> float:
    """How far the farthest-moving centroid went from ``old`` to ``new`` (std units).

    The measure the model owner compares with ``cluster_publish_min_shift`` to decide
    whether ``new`` is worth publishing (each publish re-assigns every account).

    Parameters
    ----------
    old
        The last published snapshot, or ``None`` when nothing was published yet.
    new
        The candidate, whose ids continue ``old``'s (see :meth:`ClusterLearner.snapshot`).

    Returns
    -------
    float
        The largest :func:`centroid_shift` over the cluster ids; ``math.inf`` when there is
        no ``old``, the feature specs differ, or the ids differ (a cluster appeared or
        vanished): such a change is always material.

    Examples
    --------
    >>> old = _demo_snapshot()  # stds 0.4
    >>> moved = ClusterSnapshot(
    ...     2, old.spec, old.means, old.stds,
    ...     clusters=(Cluster("c1", (1.0, -0.9), 12), Cluster("c2", (-1.0, 1.0), 10)),
    ...     next_id=3, samples=22)
    >>> round(largest_centroid_shift(old, moved), 6)
    0.1
    >>> largest_centroid_shift(old, old), largest_centroid_shift(None, old)
    (0.0, inf)
    """
    if old is None or old.spec.names != new.spec.names or set(old.ids) != set(new.ids):
        return math.inf
    return max(centroid_shift(old, new).values())


def assign(
    features: Mapping[str, Any],
    snapshot: ClusterSnapshot,
    current_cluster_id: str | None,
    margin: float = 0.1,
    distances: Mapping[str, float] | None = None,
) -> str:
    """The account's cluster, keeping ``current_cluster_id`` unless another is clearly closer.

    Switches only when the nearest centroid is closer than the current one by more than
    ``margin`` (relative: 0.1 = the nearest must be under 90 % of the current distance).
    An unknown or ``None`` current id takes the nearest cluster.

    >>> snapshot = _demo_snapshot()
    >>> middle = {"share.tools": 0.48, "share.office": 0.52}  # a bit closer to c2
    >>> snapshot.predict_one(middle)[0]
    'c2'
    >>> [assign(middle, snapshot, current) for current in ("c1", "c2", None, "c9")]
    ['c1', 'c2', 'c2', 'c2']
    """
    if distances is None:  # a caller that needs them too passes them in
        distances = snapshot.distances(features)
    nearest = min(distances, key=distances.__getitem__)
    current = distances.get(current_cluster_id) if current_cluster_id is not None else None
    if current is None or distances[nearest] < (1.0 - margin) * current:
        return nearest
    return current_cluster_id  # type: ignore[return-value]


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def describe(
    snapshot: ClusterSnapshot, threshold: float = 0.5, pronounced: float = 1.5
) -> dict[str, str]:
    """A plain-language profile per cluster, from its centroid relative to the overall mean.

    A dimension is mentioned when the centroid lies at least ``threshold`` standard
    deviations above (``high`` phrase) or below (``low`` phrase) the mean, in spec order;
    from ``pronounced`` standard deviations on, a phrase's ``{very}`` reads "very ". The
    typical values of the mentioned dimensions follow in parentheses, in original units.
    Adjectives go before the spec's noun, "focus" dimensions after "focused on", and
    clauses after a comma. The same snapshot always gets the same text.

    >>> from worker.core.clustering import BEHAVIOUR, _demo_snapshot
    >>> describe(_demo_snapshot())["c1"]
    'accounts focused on tools (90% tools)'
    >>> snapshot = ClusterSnapshot(
    ...     1, BEHAVIOUR, means=(3.0, 9.0, 2.0, 6.0, 0.3), stds=(1.0, 2.0, 1.0, 3.0, 0.2),
    ...     clusters=(Cluster("c1", (-2.0, 2.0, 0.7, 0.0, 1.0), 50),), next_id=2, samples=50)
    >>> describe(snapshot)["c1"]  # doctest: +NORMALIZE_WHITESPACE
    'very recent very high-value frequent buyers, strong campaign response
     (last order 2 days ago, 442,412 revenue/yr, 14 orders/yr, 50% campaign response)'

    A group whose typical account placed no order in the year is said to have none:

    >>> lapsed = ClusterSnapshot(
    ...     1, BEHAVIOUR, means=(3.0, 9.0, 2.0, 6.0, 0.3), stds=(1.0, 2.0, 1.0, 3.0, 0.2),
    ...     clusters=(Cluster("c1", (2.99, -4.5, -2.0, 0.0, 0.0), 50),), next_id=2, samples=50)
    >>> describe(lapsed)["c1"]  # doctest: +NORMALIZE_WHITESPACE
    'lapsed low-value buyers, no orders in the year
     (last order 398 days ago, 0 revenue/yr, 0 orders/yr)'
    """
    typical = snapshot.typical()
    result = {}
    for c in snapshot.clusters:
        adjectives: list[str] = []
        focus: list[str] = []
        clauses: list[str] = []
        figures: list[str] = []
        for d, z in zip(snapshot.spec.dimensions, c.centroid, strict=True):
            word = d.high if z >= threshold else d.low if z <= -threshold else ""
            if not word:
                continue
            style = d.style
            if z < 0 and d.none and abs(typical[c.id][d.name]) < 0.5:
                word, style = d.none, "clause"  # "occasional" would be false of nil
            word = word.format(very="very " if abs(z) >= pronounced else "", name=d.name)
            {"adjective": adjectives, "focus": focus, "clause": clauses}[style].append(word)
            figures.append(d.figure.format(typical[c.id][d.name], name=d.name))
        head = " ".join([*adjectives, snapshot.spec.noun])
        if focus:
            head += " focused on " + _join(focus)
        text = ", ".join([head, *clauses])
        if not (adjectives or focus or clauses):
            text = f"average {snapshot.spec.noun}"
        result[c.id] = f"{text} ({', '.join(figures)})" if figures else text
    return result


def _demo_snapshot() -> ClusterSnapshot:
    """A tiny hand-made two-cluster needs snapshot for the doctests."""
    return ClusterSnapshot(
        version=1,
        spec=needs_spec(["tools", "office"]),
        means=(0.5, 0.5),
        stds=(0.4, 0.4),
        clusters=(Cluster("c1", (1.0, -1.0), 10), Cluster("c2", (-1.0, 1.0), 10)),
        next_id=3,
        samples=20,
    )
