"""Online clustering of accounts with stable cluster ids, JSON snapshots and profiles.

Pure: no I/O, no clocks. One worker owns the learner and feeds it feature samples;
every worker predicts with the latest published snapshot.

- :func:`vectorize` turns a feature mapping into the FULL, fixed vector of a
  :class:`FeatureSpec` (missing values get documented defaults), because river's
  ``KMeans.predict_one`` mutates its centres for keys it has not seen.
- :class:`ClusterLearner` seeds its centres with k-means++ on a warm-up population,
  learns one sample at a time, keeps its centres in prepared units and refits them on
  the latest sample of every account before each snapshot (``worker.kmeans``), so no
  cluster stays empty and no centroid leaves the range of the data.
- :class:`ClusterSnapshot` is frozen and JSON-serialisable (never pickled); it carries the
  scaler, the centroids keyed by stable ids ``c1``, ``c2``, ... and predicts purely.
- Ids survive successive snapshots: new centroids are matched to the previous ones with
  the Hungarian algorithm; an unmatched centroid gets a fresh id, never a reused one.
- :func:`assign` keeps an account's current cluster unless another one is clearly
  closer, :func:`describe` writes a plain-language profile per cluster,
  :func:`centroid_shift` measures centroid movement for drift monitoring and
  :func:`largest_centroid_shift` tells whether a new model moved enough to publish.

Examples
--------
>>> learner = ClusterLearner(BEHAVIOUR, n_clusters=2, warmup=20, seed=1)
>>> for i in range(60):
...     key = i % 2 == 0
...     learner.learn_one({
...         "recency_days": 3 if key else 200, "orders_365d": 80 if key else 2,
...         "revenue_365d": 90_000 + i if key else 900 + i,
...         "points_earned_365d": 9_000 if key else 0, "response_rate_365d": 0.5 if key else 0.0,
...     })
>>> snapshot = learner.snapshot(version=1)
>>> snapshot.ids
('c1', 'c2')
>>> big = {"recency_days": 5, "orders_365d": 60, "revenue_365d": 70_000}
>>> small = {"recency_days": 150, "orders_365d": 1}
>>> snapshot.predict_one(big)[0] != snapshot.predict_one(small)[0]
True
>>> ClusterSnapshot.from_json(snapshot.to_json()) == snapshot
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from worker import kmeans

__all__ = [
    "BEHAVIOUR",
    "DEFAULT_CATEGORIES",
    "NEEDS",
    "Cluster",
    "ClusterLearner",
    "ClusterSnapshot",
    "Dimension",
    "FeatureSpec",
    "NotReadyError",
    "RunningScaler",
    "assign",
    "centroid_shift",
    "describe",
    "largest_centroid_shift",
    "needs_spec",
    "vectorize",
]

#: Version of the snapshot JSON layout; bump on incompatible changes.
SNAPSHOT_FORMAT = 1
#: Variance below which a dimension counts as constant; its std is then taken as 1.
_MIN_VARIANCE = 1e-12

Transform = Literal["identity", "log1p"]
#: How :func:`describe` words a dimension: an adjective before the spec's noun
#: ("high-value buyers"), a clause after it ("strong campaign response"), or one of the
#: things the cluster is "focused on" (only high values are mentioned).
Style = Literal["adjective", "clause", "focus"]


# ----------------------------------------------------------------------------- features


@dataclass(frozen=True)
class Dimension:
    """One coordinate of a feature vector: where it comes from and how it is prepared.

    A missing, ``None`` or non-finite feature becomes ``default`` (original units); the value
    is then clipped to ``[lower, upper]`` and transformed (``log1p`` for skewed amounts).
    ``high`` / ``low`` / ``figure`` are only used by :func:`describe` (an empty phrase is
    never mentioned); ``{very}`` in a phrase becomes "very " for a pronounced deviation,
    and "" otherwise; ``{name}`` becomes the dimension's name.

    >>> Dimension("revenue_365d", transform="log1p").value(None)
    0.0
    >>> round(Dimension("revenue_365d", transform="log1p").value(-50.0), 6)  # net returns
    0.0
    >>> Dimension("recency_days", default=400, upper=400).value(900)
    400.0
    """

    name: str
    default: float = 0.0
    transform: Transform = "identity"
    lower: float | None = 0.0
    upper: float | None = None
    style: Style = "clause"
    high: str = "{very}high {name}"
    low: str = "{very}low {name}"
    figure: str = "{:.3g} " + "{name}"

    def __post_init__(self) -> None:
        if self.transform not in ("identity", "log1p"):
            raise ValueError(f"{self.name}: unknown transform {self.transform!r}")
        if self.transform == "log1p" and (self.lower is None or self.lower <= -1):
            raise ValueError(f"{self.name}: log1p needs lower > -1")
        if self.style not in ("adjective", "clause", "focus"):
            raise ValueError(f"{self.name}: unknown style {self.style!r}")

    def value(self, raw: Any) -> float:
        """The prepared coordinate of the raw feature value ``raw``."""
        x = float(self.default if raw is None else raw)
        if not math.isfinite(x):  # NaN or inf: as good as missing
            x = float(self.default)
        if self.lower is not None and x < self.lower:
            x = float(self.lower)
        if self.upper is not None and x > self.upper:
            x = float(self.upper)
        return math.log1p(x) if self.transform == "log1p" else x

    def original(self, value: float) -> float:
        """Back from the prepared coordinate to original units (inverse transform, clipped)."""
        x = math.expm1(value) if self.transform == "log1p" else value
        if self.lower is not None and x < self.lower:
            x = float(self.lower)
        if self.upper is not None and x > self.upper:
            x = float(self.upper)
        return x

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class FeatureSpec:
    """A named, ordered, fixed list of dimensions: the space one clustering lives in."""

    name: str
    dimensions: tuple[Dimension, ...]
    noun: str = "accounts"

    def __post_init__(self) -> None:
        names = self.names
        if not names or len(set(names)) != len(names):
            raise ValueError(f"spec {self.name!r}: dimension names must be non-empty, unique")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "noun": self.noun,
            "dimensions": [d.to_dict() for d in self.dimensions],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        dimensions = tuple(Dimension(**d) for d in data["dimensions"])
        return cls(name=data["name"], dimensions=dimensions, noun=data.get("noun", "accounts"))


#: Recency of an account that never ordered (or not within a long time): past the horizon.
RECENCY_NEVER = 400.0

#: Behaviour ("hard" segmentation): recency, monetary, frequency, points, campaign response.
#: Amounts are skewed, so they are log1p-transformed; a response rate of ``None`` (no
#: campaign sent) counts as no response.
BEHAVIOUR = FeatureSpec(
    name="behaviour",
    noun="buyers",
    dimensions=(
        Dimension(
            "recency_days", RECENCY_NEVER, "log1p", upper=RECENCY_NEVER, style="adjective",
            high="lapsed", low="{very}recent", figure="last order {:.0f} days ago",
        ),
        Dimension(
            "revenue_365d", 0.0, "log1p", style="adjective",
            high="{very}high-value", low="low-value", figure="{:,.0f} revenue/yr",
        ),
        Dimension(
            "orders_365d", 0.0, "log1p", style="adjective",
            high="{very}frequent", low="occasional", figure="{:.0f} orders/yr",
        ),
        Dimension(
            "points_earned_365d", 0.0, "log1p",
            high="collect {very}many points", low="rarely collect points",
            figure="{:,.0f} points/yr",
        ),
        Dimension(
            "response_rate_365d", 0.0, upper=1.0,
            high="{very}strong campaign response", low="weak campaign response",
            figure="{:.0%} campaign response",
        ),
    ),
)  # fmt: skip

#: The product categories of the needs clustering (those of the demo generator).
DEFAULT_CATEGORIES: tuple[str, ...] = (
    "tools", "fasteners", "safety", "electrical", "cleaning",
    "office", "packaging", "hvac", "workwear", "it_hardware",
)  # fmt: skip


def needs_spec(categories: Iterable[str] = DEFAULT_CATEGORIES) -> FeatureSpec:
    """The needs space: each category's share (0..1) of trailing-year spend.

    >>> needs_spec(["tools", "office"]).names
    ('share.tools', 'share.office')
    """
    return FeatureSpec(
        name="needs",
        dimensions=tuple(
            Dimension(
                f"share.{c}", 0.0, upper=1.0, style="focus",
                high=c.replace("_", " "), low="", figure="{:.0%} " + c.replace("_", " "),
            )
            for c in categories
        ),
    )  # fmt: skip


#: Needs: category spend mix over :data:`DEFAULT_CATEGORIES`.
NEEDS = needs_spec()


def _values(features: Mapping[str, Any], spec: FeatureSpec) -> list[float]:
    return [d.value(features.get(d.name)) for d in spec.dimensions]


def vectorize(features: Mapping[str, Any], spec: FeatureSpec) -> dict[str, float]:
    """The full, fixed feature vector of ``spec``: every dimension, always, in order.

    >>> vectorize({"orders_365d": 12, "response_rate_365d": None}, BEHAVIOUR)
    ... # doctest: +NORMALIZE_WHITESPACE
    {'recency_days': 5.993961427306569, 'revenue_365d': 0.0,
     'orders_365d': 2.5649493574615367, 'points_earned_365d': 0.0, 'response_rate_365d': 0.0}
    """
    return dict(zip(spec.names, _values(features, spec), strict=True))


# ---------------------------------------------------------------------------- scaling


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


# --------------------------------------------------------------------------- snapshot


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
        return _standardise(_values(features, self.spec), self.means, self.stds)

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
            clusters=tuple(sorted(clusters, key=lambda c: _id_number(c.id))),
            next_id=int(data["next_id"]),
            samples=int(data["samples"]),
            created_at=data.get("created_at"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ClusterSnapshot:
        """Parse :meth:`to_json` output; ``ValueError`` on anything else."""
        return cls.from_dict(json.loads(text))


def _id_number(cluster_id: str) -> int:
    return int(cluster_id.removeprefix("c"))


# --------------------------------------------------------------------------- stable ids


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


# ---------------------------------------------------------------------------- learner


@dataclass(frozen=True)
class Refit:
    """A refit's result (see ``worker.kmeans.refit``) and the samples it had seen."""

    centres: np.ndarray
    sizes: np.ndarray
    means: np.ndarray
    stds: np.ndarray
    samples: int


def _aged(
    data: np.ndarray,
    days: np.ndarray,
    today: float | None,
    dimensions: Sequence[tuple[int, Dimension]],
) -> np.ndarray:
    """``data`` (prepared rows taken on ``days``) with each of ``dimensions`` (column,
    dimension) grown by the days from then to ``today``; a copy when anything grew."""
    if not dimensions or today is None:
        return data
    elapsed = today - days
    elapsed = np.where(np.isnan(elapsed) | (elapsed < 0), 0.0, elapsed)
    if not elapsed.any():
        return data
    data = data.copy()
    for index, d in dimensions:
        raw = np.expm1(data[:, index]) if d.transform == "log1p" else data[:, index]
        raw = raw + elapsed
        if d.upper is not None:
            raw = np.minimum(raw, d.upper)
        data[:, index] = np.log1p(raw) if d.transform == "log1p" else raw
    return data


class ClusterLearner:
    """Online k-means with stable ids whose centres live in prepared units, refitted on
    the current population before every snapshot.

    Centres are kept in prepared units (after ``log1p``, before standardising), so a
    changing standardisation cannot distort them; distances are measured in standard
    deviations of the population (its means and stds as of the last refit). The first
    ``warmup`` samples only fill the population; the centres are then seeded by
    k-means++ plus Lloyd iterations on it (best of ``n_init``). From then on each sample
    moves its nearest centre by ``max(1 / wins, halflife)``: a running mean while a
    centre is young, then an exponential average with rate ``halflife`` (the name of
    river's parameter) so centres follow slow drift between refits.

    The population holds the latest prepared vector per account (``learn_one``'s ``key``;
    a sample without one counts as a new key: a window of the latest ``population``
    samples), at most ``population`` keys, with the day it was taken. Dimensions named in
    ``ageing`` grow by one a day while nothing happens (``recency_days``): a refit takes
    them as of the latest day seen, not as of each sample (an order's sample always says
    0 days since the last order). A snapshot first refits the centres on it
    (:func:`worker.kmeans.refit`): Lloyd passes warm-started from the current centres,
    re-seeding a centre left with under ``min_share`` of the accounts from the accounts
    farthest from their centres, against fresh k-means++ starts. So every snapshot has
    ``n_clusters`` clusters that each hold accounts, centroids inside the range of the
    data, and the standardisation the centroids are expressed in, whatever order the
    samples came in (a replay starts with young, empty accounts).

    Parameters
    ----------
    spec
        The feature space.
    n_clusters
        k.
    halflife
        Steady-state online learning rate of a centre: it remembers about ``1 / halflife``
        of the samples it wins. 0.01 measured best in ``bench/clustering_quality.py``.
    warmup
        Samples before seeding; seeding waits until ``n_clusters`` of them differ. A
        refit needs at least this many accounts in the population.
    n_init
        k-means++ starts when seeding, and fresh starts a refit compares with.
    seed
        Seed of the k-means++ draws (a refit's draws depend on it and the sample count).
    max_match_distance
        When set, a centroid that moved farther than this (std units) between two
        snapshots gets a fresh id instead of keeping its old one.
    population
        Most accounts whose latest sample is kept (about 8 bytes per dimension each).
    min_share
        A centre holding fewer accounts than this share of the population is re-seeded.
    refit
        False: snapshots use the online centres as they are (for comparisons).
    ageing
        Names of dimensions that grow by one per day (see above).

    Examples
    --------
    >>> learner = ClusterLearner(needs_spec(["tools", "office"]), n_clusters=2, warmup=4)
    >>> for share in (0.9, 0.1, 0.8, 0.2, 0.85):
    ...     learner.learn_one({"share.tools": share, "share.office": 1 - share})
    >>> learner.ready, learner.samples
    (True, 5)
    >>> snapshot = learner.snapshot(version=1)
    >>> snapshot.predict_one({"share.tools": 1.0})[0] == snapshot.predict_one(
    ...     {"share.tools": 0.9, "share.office": 0.1})[0]
    True
    >>> sorted(c.count for c in snapshot.clusters)  # accounts per cluster
    [2, 3]
    """

    def __init__(
        self,
        spec: FeatureSpec,
        n_clusters: int = 5,
        *,
        halflife: float = 0.01,
        warmup: int = 200,
        n_init: int = 4,
        seed: int = 42,
        max_match_distance: float | None = None,
        population: int = 100_000,
        min_share: float = 0.01,
        refit: bool = True,
        ageing: Iterable[str] = (),
    ) -> None:
        if n_clusters < 1 or warmup < n_clusters or not 0 < halflife <= 1:
            raise ValueError("need n_clusters >= 1, warmup >= n_clusters, 0 < halflife <= 1")
        if population < warmup or not 0 <= min_share < 1 / n_clusters:
            raise ValueError("need population >= warmup and 0 <= min_share < 1 / n_clusters")
        self.spec = spec
        self.n_clusters = n_clusters
        self.halflife = halflife
        self.warmup = warmup
        self.n_init = n_init
        self.seed = seed
        self.max_match_distance = max_match_distance
        self.min_share = min_share
        self.refits = refit
        self.population = kmeans.Population(len(spec.dimensions), population)
        self.ageing = tuple(spec.names.index(name) for name in ageing)
        #: the latest day a sample was taken on (what ageing dimensions are brought up to)
        self.today: float | None = None
        self.samples = 0
        #: centres in prepared units, one row per cluster; None until seeded
        self.centres: np.ndarray | None = None
        #: the standardisation distances are measured in (population moments)
        self.means = np.zeros(len(spec.dimensions))
        self.stds = np.ones(len(spec.dimensions))
        #: samples each centre won online (its learning rate), and accounts it holds
        self.counts = [0] * n_clusters
        self.sizes = [0] * n_clusters
        #: the population a refit needs: a restored learner's starts empty (see
        #: ``from_snapshot``), and refitting on the few accounts seen first would undo it
        self.min_population = n_clusters
        self._distinct: set[tuple[float, ...]] = set()
        self._refitted_at = 0
        self._ids = [f"c{i + 1}" for i in range(n_clusters)]
        self._next_id = n_clusters + 1
        self._last: ClusterSnapshot | None = None

    @property
    def ready(self) -> bool:
        """Whether the centres are seeded (``snapshot`` works from then on)."""
        return self.centres is not None

    def learn_one(
        self, features: Mapping[str, Any], key: Hashable | None = None, day: int | None = None
    ) -> None:
        """Learn from one account's features (any mapping; see :func:`vectorize`).

        ``key`` (the account id) replaces that account's earlier sample in the population;
        ``day``: when the features were taken (epoch days), for ``ageing``.
        """
        x = _values(features, self.spec)
        self.samples += 1
        self.population.put(self.samples if key is None else key, x, day)
        self._saw(day)
        if self.centres is None:
            if len(self._distinct) < self.n_clusters:
                self._distinct.add(tuple(x))
            if self.samples >= self.warmup and len(self._distinct) >= self.n_clusters:
                self._seed()
            return
        deviations = (self.centres - x) / self.stds
        closest = int(np.einsum("ij,ij->i", deviations, deviations).argmin())
        self.counts[closest] += 1
        rate = self._rate(self.counts[closest])
        self.centres[closest] += rate * (np.asarray(x) - self.centres[closest])

    def observe(self, key: Hashable, features: Mapping[str, Any], day: int | None = None) -> None:
        """Put an account's current features into the population without learning from
        them online (a new owner loads the stored accounts)."""
        self.population.put(key, _values(features, self.spec), day)
        self._saw(day)

    def _saw(self, day: int | None) -> None:
        if day is not None and (self.today is None or day > self.today):
            self.today = day

    def current_population(self, data: np.ndarray | None = None) -> np.ndarray:
        """The population's prepared vectors with the ``ageing`` dimensions brought up to
        ``today`` (a copy then; else the population's own rows, or ``data``: a copy of
        them).

        >>> learner = ClusterLearner(BEHAVIOUR, n_clusters=1, warmup=1,
        ...                          ageing=["recency_days"])
        >>> learner.observe("A", {"recency_days": 0}, day=90)
        >>> learner.observe("B", {"recency_days": 395}, day=90)  # capped at 400
        >>> learner.observe("C", {"recency_days": 5}, day=100)  # the latest day
        >>> learner.observe("D", {"recency_days": 3})  # no day: as it is
        >>> [round(math.expm1(r)) for r in learner.current_population()[:, 0]]
        [10, 400, 5, 3]
        """
        data = self.population.matrix() if data is None else data
        dimensions = [(index, self.spec.dimensions[index]) for index in self.ageing]
        return _aged(data, self.population.days(), self.today, dimensions)

    def _rate(self, wins: int) -> float:
        """Learning rate of a centre that has won ``wins`` samples (this one included)."""
        return max(1.0 / wins, self.halflife)

    def _seed(self) -> None:
        data = self.current_population()
        if len(np.unique(data, axis=0)) < self.n_clusters:
            self._distinct.clear()  # the distinct ones were evicted: collect again
            return
        means, stds = kmeans.moments(data)
        fit = kmeans.best_kmeans((data - means) / stds, self.n_clusters, self.n_init, self.seed)
        sizes = np.bincount(fit.labels, minlength=self.n_clusters)
        # c1 is the largest cluster at the start; ties by centre coordinates.
        order = sorted(range(self.n_clusters), key=lambda i: (-sizes[i], tuple(fit.centres[i])))
        self.centres = fit.centres[order] * stds + means
        self.means, self.stds = means, stds
        self.counts = [int(sizes[j]) for j in order]
        self.sizes = list(self.counts)
        self._refitted_at = self.samples
        self._distinct.clear()

    def refit(self) -> bool:
        """Refit the centres on the population (see the class); False when there is
        nothing new to fit or the population is smaller than ``min_population``."""
        task = self.refit_task()
        if task is None:
            return False
        self.apply_refit(task())
        return True

    def refit_task(self) -> Callable[[], Refit] | None:
        """The work of :meth:`refit` as a function of copies of the learner's data (so it
        may run in another thread while the learner goes on learning), or None when there
        is nothing to refit; hand its result to :meth:`apply_refit`."""
        if self.centres is None or not self.refits or self._refitted_at == self.samples:
            return None
        if len(self.population) < self.min_population:
            return None
        data, days = self.population.matrix().copy(), self.population.days().copy()
        dimensions = [(index, self.spec.dimensions[index]) for index in self.ageing]
        centres, today, samples = self.centres.copy(), self.today, self.samples
        n_init, min_share = self.n_init, self.min_share
        rng = np.random.default_rng([self.seed, samples])

        def task() -> Refit:
            fitted = kmeans.refit(
                _aged(data, days, today, dimensions),
                centres,
                n_init=n_init,
                min_share=min_share,
                rng=rng,
            )
            return Refit(*fitted, samples=samples)

        return task

    def apply_refit(self, refit: Refit) -> None:
        """Take the centres of a :meth:`refit_task` (online steps since are superseded)."""
        self.centres = refit.centres
        self.means, self.stds = refit.means, refit.stds
        self.sizes = [int(s) for s in refit.sizes]
        self.counts = [max(wins, size) for wins, size in zip(self.counts, self.sizes, strict=True)]
        self._refitted_at = max(self._refitted_at, refit.samples)

    def snapshot(
        self,
        version: int,
        *,
        created_at: datetime | None = None,
        previous: ClusterSnapshot | None = None,
        refit: bool = True,
    ) -> ClusterSnapshot:
        """A frozen copy of the model, refitted first (see :meth:`refit`; unless ``refit``
        is False: the caller did), whose ids continue ``previous``'s.

        ``previous`` defaults to this learner's last snapshot; pass the last published one
        when a new owner starts a fresh learner. Centroids are standardised with the same
        means and stds the snapshot carries. Raises :class:`NotReadyError` before the
        centres are seeded.
        """
        if self.centres is None:
            raise NotReadyError(f"warm-up: {self.samples} of {self.warmup} samples seen")
        if refit:
            self.refit()
        means = tuple(float(m) for m in self.means)
        stds = tuple(float(s) for s in self.stds)
        prepared = self.centres.tolist()
        standardised = ((self.centres - self.means) / self.stds).tolist()
        previous = previous if previous is not None else self._last
        if previous is not None:
            # Ids of a learner that never took a snapshot are provisional: not reserved.
            next_id = self._next_id if self._last is not None else 1
            self._ids, self._next_id = match_ids(
                previous, prepared, stds, self.spec, next_id, self.max_match_distance
            )
        clusters = sorted(
            (Cluster(cid, tuple(row), count) for cid, row, count in
             zip(self._ids, standardised, self.sizes, strict=True)),
            key=lambda c: _id_number(c.id),
        )  # fmt: skip
        self._last = ClusterSnapshot(
            version=version,
            spec=self.spec,
            means=means,
            stds=stds,
            clusters=tuple(clusters),
            next_id=self._next_id,
            samples=self.samples,
            created_at=None if created_at is None else created_at.isoformat(),
        )
        return self._last

    @classmethod
    def from_snapshot(cls, snapshot: ClusterSnapshot, **params: Any) -> ClusterLearner:
        """A learner that continues training from ``snapshot`` (e.g. after an owner change).

        Its population starts empty (``observe`` fills it): it refits once that holds
        ``warmup`` accounts, or ``min_population`` when the caller lowers it after putting
        every known account in.

        >>> again = ClusterLearner.from_snapshot(_demo_snapshot())
        >>> again.snapshot(version=2).centroids == _demo_snapshot().centroids
        True
        """
        learner = cls(snapshot.spec, len(snapshot.clusters), **params)
        learner.samples = learner._refitted_at = snapshot.samples
        learner.means = np.array(snapshot.means)
        learner.stds = np.array(snapshot.stds)
        learner.centres = np.array(list(snapshot.prepared_centroids().values()))
        learner.counts = [c.count for c in snapshot.clusters]
        learner.sizes = list(learner.counts)
        learner._ids = list(snapshot.ids)
        learner._next_id = snapshot.next_id
        learner._last = snapshot
        learner.min_population = learner.warmup
        return learner


# ------------------------------------------------------------------------- prediction


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


# --------------------------------------------------------------------------- profiles


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

    >>> describe(_demo_snapshot())["c1"]
    'accounts focused on tools (90% tools)'
    >>> snapshot = ClusterSnapshot(
    ...     1, BEHAVIOUR, means=(3.0, 9.0, 2.0, 6.0, 0.3), stds=(1.0, 2.0, 1.0, 3.0, 0.2),
    ...     clusters=(Cluster("c1", (-2.0, 2.0, 0.7, 0.0, 1.0), 50),), next_id=2, samples=50)
    >>> describe(snapshot)["c1"]  # doctest: +NORMALIZE_WHITESPACE
    'very recent very high-value frequent buyers, strong campaign response
     (last order 2 days ago, 442,412 revenue/yr, 14 orders/yr, 50% campaign response)'
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
            word = word.format(very="very " if abs(z) >= pronounced else "", name=d.name)
            {"adjective": adjectives, "focus": focus, "clause": clauses}[d.style].append(word)
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
