"""The online learner of one clustering: seeded, refitted on its population, with stable ids."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from worker.core.clustering import kmeans
from worker.core.clustering.snapshot import (
    Cluster,
    ClusterSnapshot,
    NotReadyError,
    id_number,
    match_ids,
)
from worker.core.clustering.spec import Dimension, FeatureSpec, prepared_values


@dataclass(frozen=True)
class Refit:
    """A refit's result (``worker.core.clustering.kmeans.refit``) and the samples it saw."""

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
    (:func:`worker.core.clustering.kmeans.refit`): Lloyd passes warm-started from the
    current centres, re-seeding a centre left with under ``min_share`` of the accounts
    from the accounts farthest from their centres, against fresh k-means++ starts. So
    every snapshot has ``n_clusters`` clusters that each hold accounts, centroids inside
    the range of the data, and the standardisation the centroids are expressed in,
    whatever order the samples came in (a replay starts with young, empty accounts).

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
    >>> from worker.core.clustering import needs_spec
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
        n_init: int = 10,
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
        x = prepared_values(features, self.spec)
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
        self.population.put(key, prepared_values(features, self.spec), day)
        self._saw(day)

    def _saw(self, day: int | None) -> None:
        if day is not None and (self.today is None or day > self.today):
            self.today = day

    def current_population(self, data: np.ndarray | None = None) -> np.ndarray:
        """The population's prepared vectors with the ``ageing`` dimensions brought up to
        ``today`` (a copy then; else the population's own rows, or ``data``: a copy of
        them).

        >>> import math
        >>> from worker.core.clustering import BEHAVIOUR
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
            key=lambda c: id_number(c.id),
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

        >>> from worker.core.clustering import _demo_snapshot
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
