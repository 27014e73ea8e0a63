"""Batch k-means for the online learner: the current population, k-means++ and Lloyd passes.

Pure numpy, no I/O. :class:`ClusterLearner` (``worker.core.clustering``) learns online, one
sample at a time, but online k-means alone leaves centres that lost all their points
where they were and follows the order the samples came in (a replay starts with empty,
young accounts). So the learner also keeps the latest prepared vector of every account
(:class:`Population`) and, before a snapshot, refits on it with :func:`refit`: a few
Lloyd passes warm-started from the current centres that re-seed any empty or starved
centre from the points farthest from theirs (as scikit-learn's ``MiniBatchKMeans``
re-assigns its small centres), compared with fresh k-means++ starts.

Examples
--------
>>> data = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [9.9], [10.0]])
>>> fit = lloyd(data, np.array([[0.1], [50.0], [100.0]]), min_size=1,
...             rng=np.random.default_rng(1))  # two centres far from every point
>>> np.bincount(fit.labels, minlength=3).tolist()  # re-seeded: none is empty
[3, 2, 2]
>>> sorted(round(float(c), 2) for c in fit.centres[:, 0])
[0.1, 5.05, 9.95]
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["Fit", "Population", "best_kmeans", "kmeans_pp", "lloyd", "moments", "nearest", "refit"]

#: Variance below which a dimension counts as constant; its std is then taken as 1.
MIN_VARIANCE = 1e-12
#: A refit fits at most this many rows of the population (a seeded random subset), so
#: its cost does not grow with the accounts (about 0.5 s on the development machine;
#: the model owner runs it in a thread); only the final sizes count every account.
FIT_ROWS = 10_000
#: A fresh k-means++ start replaces the warm-started fit only when its within-cluster sum
#: of squares is this much (relative) lower: ids and memberships are worth more than a
#: marginally tighter model.
FRESH_GAIN = 0.01
#: Rounds of re-seeding starved centres in one Lloyd run (a genuinely tiny group stays).
RESEED_ROUNDS = 3


class Population:
    """The latest prepared vector per key (an account) and the day it was taken, at most
    ``capacity`` keys.

    A key seen again replaces its row, unless the row was taken on a later day (samples
    are sent concurrently, so they may arrive out of order, and a new owner reads the
    stored accounts before the samples still queued for it); when full, the least
    recently updated key makes room. Rows live in one growing array, so :meth:`matrix`
    is a view, not a copy. A day not given is NaN (the vector is taken as current).

    >>> population = Population(size=2, capacity=2)
    >>> population.put("A", [1.0, 2.0], day=10); population.put("B", [3.0, 4.0])
    >>> population.put("A", [1.5, 2.5], day=12); population.put("A", [0.0, 0.0], day=11)
    >>> population.put("C", [5.0, 6.0])  # B makes room
    >>> sorted(population.keys()), population.matrix().tolist(), population.days().tolist()
    (['A', 'C'], [[1.5, 2.5], [5.0, 6.0]], [12.0, nan])
    """

    def __init__(self, size: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.size = size
        self.capacity = capacity
        self._rows = np.empty((min(capacity, 256), size))
        self._days = np.empty(len(self._rows))
        self._index: OrderedDict[Hashable, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._index)

    def keys(self) -> list[Hashable]:
        return list(self._index)

    def put(self, key: Hashable, vector: Sequence[float], day: float | None = None) -> None:
        row = self._index.get(key)
        if row is not None:
            if day is not None and self._days[row] > day:
                return  # an older sample than the one held
            self._index.move_to_end(key)
        elif len(self._index) < self.capacity:
            row = len(self._index)
            if row == len(self._rows):
                grown = min(2 * len(self._rows), self.capacity)
                self._rows = np.concatenate([self._rows, np.empty((grown - row, self.size))])
                self._days = np.concatenate([self._days, np.empty(grown - row)])
            self._index[key] = row
        else:
            _, row = self._index.popitem(last=False)
            self._index[key] = row
        self._rows[row] = vector
        self._days[row] = math.nan if day is None else day

    def matrix(self) -> np.ndarray:
        """Every key's vector, one row each (rows ``0 .. len - 1``; order of arrival)."""
        return self._rows[: len(self._index)]

    def days(self) -> np.ndarray:
        """The day each row of :meth:`matrix` was taken (NaN: not known)."""
        return self._days[: len(self._index)]


def moments(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation per column; a constant column gets std 1.

    >>> [m.tolist() for m in moments(np.array([[1.0, 5.0], [3.0, 5.0]]))]
    [[2.0, 5.0], [1.0, 1.0]]
    """
    means = data.mean(axis=0)
    variances = data.var(axis=0)
    return means, np.where(variances > MIN_VARIANCE, np.sqrt(variances), 1.0)


def nearest(data: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each row's nearest centre and the squared distance to it."""
    squared = (
        (data * data).sum(axis=1)[:, None]
        - 2.0 * data @ centres.T
        + (centres * centres).sum(axis=1)[None, :]
    )
    labels = squared.argmin(axis=1)
    return labels, np.maximum(squared[np.arange(len(data)), labels], 0.0)


def kmeans_pp(data: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre is drawn with probability ~ squared distance."""
    centres = [data[rng.integers(len(data))]]
    closest = ((data - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = closest.sum()
        index = rng.choice(len(data), p=closest / total) if total > 0 else 0
        centres.append(data[index])
        closest = np.minimum(closest, ((data - data[index]) ** 2).sum(axis=1))
    return np.array(centres)


@dataclass(frozen=True)
class Fit:
    """The result of :func:`lloyd`: centres, each row's label, within-cluster SSQ."""

    centres: np.ndarray
    labels: np.ndarray
    inertia: float


def lloyd(
    data: np.ndarray,
    centres: np.ndarray,
    iterations: int = 25,
    *,
    min_size: int = 0,
    rng: np.random.Generator | None = None,
) -> Fit:
    """Lloyd's batch k-means from ``centres``; with ``rng``, centres holding fewer than
    ``min_size`` rows are re-seeded by k-means++ draws (probability ~ squared distance of a
    row to its nearest healthy centre), up to :data:`RESEED_ROUNDS` times.

    A centre left without rows (no ``rng``, or nothing left to draw) stays where it was.
    """
    centres = np.array(centres, dtype=float)
    k = len(centres)
    rounds = RESEED_ROUNDS if rng is not None else 0
    labels, squared = nearest(data, centres)
    for _ in range(iterations + rounds):
        sizes = np.bincount(labels, minlength=k)
        starved = np.flatnonzero(sizes < min_size)
        if len(starved) and rounds and rng is not None and len(starved) < k:
            rounds -= 1
            healthy = np.setdiff1d(np.arange(k), starved)
            closest = nearest(data, centres[healthy])[1]
            for j in starved:
                total = closest.sum()
                if total <= 0:
                    break  # fewer distinct rows than centres
                index = rng.choice(len(data), p=closest / total)
                centres[j] = data[index]
                closest = np.minimum(closest, ((data - data[index]) ** 2).sum(axis=1))
            labels, squared = nearest(data, centres)
            continue
        moved = centres.copy()
        for column in range(data.shape[1]):
            sums = np.bincount(labels, weights=data[:, column], minlength=k)
            filled = sizes > 0
            moved[filled, column] = sums[filled] / sizes[filled]
        converged = np.allclose(moved, centres)
        centres = moved
        labels, squared = nearest(data, centres)
        if converged:
            break
    return Fit(centres, labels, float(squared.sum()))


def best_kmeans(data: np.ndarray, k: int, n_init: int, seed: int) -> Fit:
    """Batch k-means from scratch: the lowest-SSQ result of ``n_init`` k-means++ starts."""
    rng = np.random.default_rng(seed)
    runs = [lloyd(data, kmeans_pp(data, k, rng)) for _ in range(max(n_init, 1))]
    return min(runs, key=lambda fit: fit.inertia)


def refit(
    prepared: np.ndarray,
    centres: np.ndarray,
    *,
    n_init: int,
    min_share: float,
    rng: np.random.Generator,
    iterations: int = 25,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Refit ``centres`` (prepared units, one row per cluster) to the population.

    Standardises with the population's own moments, runs :func:`lloyd` from the current
    centres with re-seeding of centres holding under ``min_share`` of the rows, and
    ``n_init`` fresh k-means++ starts; a fresh fit wins only when it is
    :data:`FRESH_GAIN` better. The winner's rows are matched (Hungarian) to the rows of
    ``centres``, so row ``j`` stays cluster ``j`` wherever possible.

    Returns the new centres (prepared units), each cluster's size in the whole
    population, and the means and stds the population standardises with.

    >>> rng = np.random.default_rng(3)
    >>> prepared = np.concatenate([rng.normal(0, 1, (50, 2)), rng.normal(8, 1, (50, 2))])
    >>> centres, sizes, means, stds = refit(
    ...     prepared, np.array([[8.0, 8.0], [40.0, 40.0]]), n_init=1, min_share=0.01, rng=rng)
    >>> sizes.tolist(), [round(float(c)) for c in centres[:, 0]]
    ([50, 50], [8, 0])
    """
    means, stds = moments(prepared)
    fit_rows = prepared
    if len(prepared) > FIT_ROWS:
        fit_rows = prepared[rng.choice(len(prepared), FIT_ROWS, replace=False)]
    z = (fit_rows - means) / stds
    warm = (centres - means) / stds
    k = len(centres)
    min_size = max(1, math.ceil(min_share * len(z)))
    warm_fit = best = lloyd(z, warm, iterations, min_size=min_size, rng=rng)
    bar = (1.0 - FRESH_GAIN) * best.inertia
    for _ in range(n_init):
        fresh = lloyd(z, kmeans_pp(z, k, rng), 25, min_size=min_size, rng=rng)
        if fresh.inertia < bar and fresh.inertia < best.inertia:
            best = fresh
    fitted = best.centres
    if best is not warm_fit:
        # Keep each row's cluster where the fit allows: match the new rows to where the
        # warm-started fit put them (Lloyd moved each row's own centre).
        costs = np.sqrt(((warm_fit.centres[:, None, :] - fitted[None, :, :]) ** 2).sum(axis=2))
        rows, cols = linear_sum_assignment(costs)
        fitted = fitted[cols[np.argsort(rows)]]
    labels = nearest((prepared - means) / stds, fitted)[0]
    return fitted * stds + means, np.bincount(labels, minlength=k), means, stds
