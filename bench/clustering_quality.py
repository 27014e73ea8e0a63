"""Quality of the online clustering against batch k-means, on synthetic data with known groups.

For every data set (a few thousand samples, k known) the online learner makes one pass over
the shuffled stream; its final snapshot assigns every sample. scikit-learn's batch
``KMeans(n_clusters=k, n_init=10)`` clusters the same samples standardised with the same
means/stds. Printed: adjusted Rand index (ARI) of online vs batch, online vs truth, batch vs
truth, and the within-cluster sum of squares ratio online SSQ / batch SSQ (online SSQ uses the
snapshot's centroids as they are). Means over the seeds, the worst seed in brackets.

A second table compares learner tunings (river's default random init and ``halflife=0.5``
against warm-up seeding and learning-rate schedules), including id churn: the share of a
fixed probe set whose predicted id changes between successive snapshots in the second half
of the stream, and a drift data set whose groups move halfway through the stream (scored
on its last third, against batch k-means fitted on that third).

    .venv/bin/python bench/clustering_quality.py [--samples 3000] [--seeds 3]

Needs scikit-learn (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from river import cluster as river_cluster
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.core.clustering import (  # noqa: E402
    BEHAVIOUR,
    NEEDS,
    Cluster,
    ClusterLearner,
    ClusterSnapshot,
    Dimension,
    FeatureSpec,
    RunningScaler,
    centroid_shift,
)

console = Console(width=180)
Features = dict[str, Any]


@dataclass
class DataSet:
    name: str
    spec: FeatureSpec
    k: int
    samples: list[Features]
    labels: np.ndarray
    score_from: int = 0  # score on samples[score_from:] only (drift: the last third)

    def prepared(self) -> np.ndarray:
        """Every sample as its full vector before standardising (see ``vectorize``)."""
        return np.array(
            [[d.value(x.get(d.name)) for d in self.spec.dimensions] for x in self.samples]
        )


# ------------------------------------------------------------------------------- data

#: persona -> (weight, recency days, orders/yr, revenue/yr, points/yr, response rate)
PERSONAS = {
    "key accounts": (0.08, 3, 150, 250_000, 25_000, 0.55),
    "regular": (0.30, 12, 35, 30_000, 3_000, 0.35),
    "occasional": (0.27, 60, 6, 3_000, 300, 0.15),
    "dormant": (0.20, 280, 1, 400, 0, 0.03),
    "points collectors": (0.15, 15, 20, 12_000, 15_000, 0.70),
}


def _persona_sample(rng: np.random.Generator, persona: Sequence[float], shift: float) -> Features:
    _, recency, orders, revenue, points, response = persona

    def around(median: float) -> float:
        return float(median * rng.lognormal(0.0, 0.4)) if median > 0 else 0.0

    rate = float(rng.beta(20 * response, 20 * (1 - response)))
    return {
        "recency_days": round(around(recency) * (1 + shift)),
        "orders_365d": round(around(orders) / (1 + shift)),
        "revenue_365d": around(revenue) / (1 + shift),
        "points_earned_365d": around(points),
        # ~5 % got no campaign at all: the feature is None and defaults to 0.
        "response_rate_365d": None if rng.random() < 0.05 else rate,
    }


def personas(n: int, seed: int, drift: bool = False) -> DataSet:
    """Behaviour features of five personas; with ``drift`` regular accounts halve from n/2."""
    rng = np.random.default_rng(seed)
    table = list(PERSONAS.values())
    labels = rng.choice(len(table), size=n, p=[p[0] for p in table])
    samples = [
        _persona_sample(rng, table[g], 1.0 if drift and i >= n // 2 and g == 1 else 0.0)
        for i, g in enumerate(labels)
    ]
    name = "personas, drift at n/2" if drift else "personas (behaviour)"
    return DataSet(name, BEHAVIOUR, len(table), samples, labels, 2 * n // 3 if drift else 0)


NEEDS_PROFILES = (
    ("tools", "fasteners", "safety"),
    ("cleaning", "hvac", "office"),
    ("office", "it_hardware", "electrical"),
    ("packaging", "safety", "workwear"),
    ("electrical", "hvac", "tools"),
)


def needs(n: int, seed: int) -> DataSet:
    """Category spend mixes: Dirichlet around five buying profiles."""
    rng = np.random.default_rng(seed)
    categories = [d.name.removeprefix("share.") for d in NEEDS.dimensions]
    labels = rng.choice(len(NEEDS_PROFILES), size=n, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    samples = []
    for g in labels:
        alpha = [6.0 if c in NEEDS_PROFILES[g] else 0.3 for c in categories]
        shares = rng.dirichlet(alpha)
        samples.append({f"share.{c}": float(s) for c, s in zip(categories, shares, strict=True)})
    return DataSet("needs (category mix)", NEEDS, len(NEEDS_PROFILES), samples, labels)


BLOBS = FeatureSpec("blobs", tuple(Dimension(f"x{i}", lower=None) for i in range(4)))


def blobs(n: int, seed: int, spread: float = 1.0) -> DataSet:
    """Six Gaussian blobs of unequal size in 4-d; centres at least 6 sd apart."""
    rng = np.random.default_rng(seed)
    centres: list[np.ndarray] = []
    while len(centres) < 6:
        c = rng.uniform(-10, 10, size=4)
        if all(np.linalg.norm(c - other) >= 6 for other in centres):
            centres.append(c)
    labels = rng.choice(6, size=n, p=[0.3, 0.25, 0.15, 0.12, 0.1, 0.08])
    points = np.array(centres)[labels] + rng.normal(0, spread, size=(n, 4))
    samples = [{f"x{i}": float(v) for i, v in enumerate(row)} for row in points]
    name = "blobs (well separated)" if spread == 1.0 else f"blobs (overlapping, sd {spread})"
    return DataSet(name, BLOBS, 6, samples, labels)


# --------------------------------------------------------------------------- learners


class FixedRate(ClusterLearner):
    """Seeded, but every update uses the constant rate ``halflife`` (river's behaviour)."""

    def _rate(self, wins: int) -> float:
        return self.halflife


class Frozen(ClusterLearner):
    """Seeded from the warm-up buffer, then never moves (reference)."""

    def _rate(self, wins: int) -> float:
        return 0.0


class RiverPlain:
    """river ``KMeans`` as it comes (random Gaussian centres) over online-standardised vectors."""

    def __init__(self, spec: FeatureSpec, k: int, halflife: float, seed: int) -> None:
        self.spec = spec
        self.scaler = RunningScaler(len(spec.dimensions))
        self.kmeans = river_cluster.KMeans(n_clusters=k, halflife=halflife, seed=seed)
        # river draws a centre's coordinates lazily, in the iteration order of a set of str
        # keys, which depends on PYTHONHASHSEED: draw them in spec order to be reproducible.
        for centre in self.kmeans.centers.values():
            for name in spec.names:
                centre[name]

    def learn_one(self, features: Features) -> None:
        x = [d.value(features.get(d.name)) for d in self.spec.dimensions]
        self.scaler.learn_one(x)
        stds = self.scaler.stds()
        z = {
            name: (xi - m) / s
            for name, xi, m, s in zip(self.spec.names, x, self.scaler.means, stds, strict=True)
        }
        self.kmeans.learn_one(z)

    @property
    def ready(self) -> bool:
        return True

    def snapshot(self, version: int) -> ClusterSnapshot:
        clusters = tuple(
            Cluster(f"c{i + 1}", tuple(c[name] for name in self.spec.names), 0)
            for i, c in self.kmeans.centers.items()
        )
        return ClusterSnapshot(
            version, self.spec, tuple(self.scaler.means), tuple(self.scaler.stds()),
            clusters, len(clusters) + 1, self.scaler.n,
        )  # fmt: skip


Factory = Callable[[FeatureSpec, int, int], Any]
CHOSEN = "seeded, 1/n then 0.01 (default)"
VARIANTS: dict[str, Factory] = {
    "river default: random init, hl 0.5": lambda s, k, seed: RiverPlain(s, k, 0.5, seed),
    "river random init, hl 0.02": lambda s, k, seed: RiverPlain(s, k, 0.02, seed),
    "seeded, then frozen": lambda s, k, seed: Frozen(s, k, seed=seed),
    "seeded, fixed 0.5": lambda s, k, seed: FixedRate(s, k, halflife=0.5, seed=seed),
    "seeded, fixed 0.1": lambda s, k, seed: FixedRate(s, k, halflife=0.1, seed=seed),
    "seeded, fixed 0.02": lambda s, k, seed: FixedRate(s, k, halflife=0.02, seed=seed),
    "seeded, 1/n then 0.02": lambda s, k, seed: ClusterLearner(s, k, halflife=0.02, seed=seed),
    CHOSEN: lambda s, k, seed: ClusterLearner(s, k, halflife=0.01, seed=seed),
    "seeded, 1/n then 0.005": lambda s, k, seed: ClusterLearner(s, k, halflife=0.005, seed=seed),
}


# ------------------------------------------------------------------------- evaluation


@dataclass
class Result:
    ari_batch: float
    ari_online_truth: float
    ari_batch_truth: float
    ssq_ratio: float
    churn: float
    jitter: float
    micros: float


def evaluate(data: DataSet, factory: Factory, seed: int, probes: int = 500) -> Result:
    learner = factory(data.spec, data.k, seed)
    snapshots: list[ClusterSnapshot] = []
    every = max(len(data.samples) // 20, 1)
    started = time.perf_counter()
    for i, features in enumerate(data.samples, 1):
        learner.learn_one(features)
        if i % every == 0 and i >= len(data.samples) // 2 and learner.ready:
            snapshots.append(learner.snapshot(version=len(snapshots) + 1))
    micros = (time.perf_counter() - started) / len(data.samples) * 1e6
    final = learner.snapshot(version=len(snapshots) + 1)

    prepared = data.prepared()
    ids = [_nearest(s, prepared[:probes])[0] for s in snapshots]
    changes = [np.mean(p != q) for p, q in itertools.pairwise(ids)]
    shifts = [max(centroid_shift(*pair).values()) for pair in itertools.pairwise(snapshots)]

    truth = data.labels[data.score_from :]
    online, squared, z = _nearest(final, prepared[data.score_from :])
    # The vectorised assignment must agree with the snapshot's own predict_one.
    spot = data.samples[data.score_from :][:50]
    assert [final.predict_one(x)[0] for x in spot] == list(online[:50]), "predict_one differs"
    batch = KMeans(n_clusters=data.k, n_init=10, random_state=seed).fit(z)
    return Result(
        ari_batch=adjusted_rand_score(batch.labels_, online),
        ari_online_truth=adjusted_rand_score(truth, online),
        ari_batch_truth=adjusted_rand_score(truth, batch.labels_),
        ssq_ratio=float(squared.sum() / batch.inertia_),
        churn=float(np.mean(changes)) if changes else 0.0,
        jitter=float(np.mean(shifts)) if shifts else 0.0,
        micros=micros,
    )


def _nearest(
    snapshot: ClusterSnapshot, prepared: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest cluster id and squared distance per row, and the standardised rows."""
    z = (prepared - np.array(snapshot.means)) / np.array(snapshot.stds)
    centroids = np.array([c.centroid for c in snapshot.clusters])
    squared = ((z[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    nearest = squared.argmin(axis=1)
    return np.array(snapshot.ids)[nearest], squared.min(axis=1), z


def datasets(n: int, seed: int) -> list[DataSet]:
    return [
        personas(n, seed),
        needs(n, seed),
        blobs(n, seed),
        blobs(n, seed, spread=2.5),
        personas(n, seed, drift=True),
    ]


def _fmt(values: Sequence[float], digits: int = 3) -> str:
    return f"{np.mean(values):.{digits}f} ({min(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    seeds = range(1, args.seeds + 1)
    per_seed = {seed: datasets(args.samples, seed) for seed in seeds}
    names = [d.name for d in per_seed[1]]
    results = {(variant, d.name): [] for variant in VARIANTS for d in per_seed[1]}  # type: dict[tuple[str, str], list[Result]]
    for seed, sets in per_seed.items():
        for data in sets:
            for variant, factory in VARIANTS.items():
                results[variant, data.name].append(evaluate(data, factory, seed))

    title = f"{CHOSEN}: online vs batch k-means (n={args.samples}, seeds={args.seeds})"
    quality = Table(title=title)
    for column in ("data set", "k", "ARI online~batch", "ARI online~truth", "ARI batch~truth",
                   "SSQ online/batch", "id churn/snapshot"):  # fmt: skip
        quality.add_column(column, justify="left" if column == "data set" else "right")
    for data in per_seed[1]:
        rs = results[CHOSEN, data.name]
        quality.add_row(
            data.name, str(data.k),
            _fmt([r.ari_batch for r in rs]), _fmt([r.ari_online_truth for r in rs]),
            _fmt([r.ari_batch_truth for r in rs]),
            f"{np.mean([r.ssq_ratio for r in rs]):.3f} ({max(r.ssq_ratio for r in rs):.3f})",
            f"{np.mean([r.churn for r in rs]):.2%}",
        )  # fmt: skip
    console.print(quality)
    console.print("mean (worst seed); for SSQ the worst is the highest", markup=False)

    tuning = Table(title="Tuning: ARI online~batch per data set, mean (worst seed)")
    tuning.add_column("variant")
    for name in names:
        tuning.add_column(name, justify="right")
    tuning.add_column("SSQ ratio", justify="right")
    tuning.add_column("SSQ drift", justify="right")
    tuning.add_column("churn", justify="right")
    tuning.add_column("jitter sd", justify="right")
    tuning.add_column("µs/learn", justify="right")
    for variant in VARIANTS:
        every = [r for name in names for r in results[variant, name]]
        tuning.add_row(
            variant,
            *[_fmt([r.ari_batch for r in results[variant, name]], 2) for name in names],
            f"{np.mean([r.ssq_ratio for r in every]):.3f}",
            f"{np.mean([r.ssq_ratio for r in results[variant, names[-1]]]):.3f}",
            f"{np.mean([r.churn for r in every]):.2%}",
            f"{np.mean([r.jitter for r in every]):.3f}",
            f"{np.mean([r.micros for r in every]):.0f}",
            style="bold" if variant == CHOSEN else None,
        )
    console.print(tuning)
    console.print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    # The data are small: one BLAS/OpenMP thread is faster, and immune to busy neighbours.
    with threadpool_limits(limits=1):
        main()
