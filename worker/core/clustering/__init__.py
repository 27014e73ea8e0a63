"""Online clustering of accounts with stable cluster ids, JSON snapshots and profiles.

Pure: no I/O, no clocks. One worker owns the learner and feeds it feature samples;
every worker predicts with the latest published snapshot.

- :func:`vectorize` turns a feature mapping into the FULL, fixed vector of a
  :class:`FeatureSpec` (missing values get documented defaults), because river's
  ``KMeans.predict_one`` mutates its centres for keys it has not seen.
- :class:`ClusterLearner` seeds its centres with k-means++ on a warm-up population,
  learns one sample at a time, keeps its centres in prepared units and refits them on
  the latest sample of every account before each snapshot (``worker.core.clustering.kmeans``), so no
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

from worker.core.clustering.learner import ClusterLearner, Refit
from worker.core.clustering.snapshot import (
    SNAPSHOT_FORMAT,
    Cluster,
    ClusterSnapshot,
    NotReadyError,
    RunningScaler,
    _demo_snapshot,
    assign,
    centroid_shift,
    describe,
    largest_centroid_shift,
    match_ids,
)
from worker.core.clustering.spec import (
    BEHAVIOUR,
    DEFAULT_CATEGORIES,
    NEEDS,
    RECENCY_NEVER,
    Dimension,
    FeatureSpec,
    needs_spec,
    vectorize,
)

__all__ = [
    "BEHAVIOUR",
    "DEFAULT_CATEGORIES",
    "NEEDS",
    "RECENCY_NEVER",
    "SNAPSHOT_FORMAT",
    "Cluster",
    "ClusterLearner",
    "ClusterSnapshot",
    "Dimension",
    "FeatureSpec",
    "NotReadyError",
    "Refit",
    "RunningScaler",
    "_demo_snapshot",
    "assign",
    "centroid_shift",
    "describe",
    "largest_centroid_shift",
    "match_ids",
    "needs_spec",
    "vectorize",
]
