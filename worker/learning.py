"""The cluster models' single owner: learns from samples, publishes versioned snapshots.

Every worker sends, per account and at most every ``cluster_sample_days`` of stream
time, the account's raw clustering features to a one-partition topic. Whichever
worker owns that partition trains one ``ClusterLearner`` per clustering and, on a
timer, publishes a JSON snapshot to Redis with a compare-and-set on the version, so a
worker that lost the partition in a rebalance cannot overwrite a newer model. A new
owner resumes from the last published snapshot (no pickle, no warm-up again).
Every worker assigns with the latest snapshot, read in each batch's round trip.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from worker.clustering import BEHAVIOUR, NEEDS, ClusterLearner, ClusterSnapshot, FeatureSpec
from worker.settings import Settings
from worker.store import StateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clustering:
    """One clustering: the segment family it fills, its feature space and its k."""

    family: str
    spec: FeatureSpec
    k: int


def clusterings(settings: Settings) -> tuple[Clustering, ...]:
    """The configured clusterings: behaviour ("hard" segmentation) and needs.

    >>> [c.family for c in clusterings(Settings())]
    ['cluster', 'needs_cluster']
    """
    return (
        Clustering("cluster", BEHAVIOUR, settings.cluster_k_behaviour),
        Clustering("needs_cluster", NEEDS, settings.cluster_k_needs),
    )


class ClusterTrainer:
    """Owns the learners of the worker that consumes the sample topic."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings = settings
        self.store = store
        self.clusterings = {c.family: c for c in clusterings(settings)}
        self._learners: dict[str, ClusterLearner] = {}
        self._published: dict[str, ClusterSnapshot | None] = {}
        self._learned_since_publish: dict[str, int] = {}

    async def learn(self, samples: Sequence[Mapping[str, Any]]) -> int:
        """Train on ``{"family", "account_id", "features"}`` samples; returns how many."""
        learned = 0
        for sample in samples:
            family = sample.get("family")
            if family not in self.clusterings or not isinstance(sample.get("features"), dict):
                continue
            learner = await self._learner(family)
            learner.learn_one(sample["features"])
            self._learned_since_publish[family] = self._learned_since_publish.get(family, 0) + 1
            learned += 1
        return learned

    async def publish(self) -> list[tuple[str, ClusterSnapshot]]:
        """Snapshot every learner that learned something; return (family, snapshot)s."""
        published = []
        for family, learner in list(self._learners.items()):
            if not learner.ready or not self._learned_since_publish.get(family):
                continue
            previous = self._published.get(family)
            version = (previous.version if previous else 0) + 1
            snapshot = learner.snapshot(version, created_at=datetime.now(UTC), previous=previous)
            if await self.store.publish_snapshot(family, snapshot):
                self._published[family] = snapshot
                self._learned_since_publish[family] = 0
                published.append((family, snapshot))
                log.info("published %s model v%d (%d samples)", family, version, snapshot.samples)
            else:
                # Somebody else published a newer model: we are no longer the owner, or
                # were not for a while. Start again from the stored model next time.
                log.warning("%s model v%d superseded; reloading", family, version)
                del self._learners[family]
        return published

    async def _learner(self, family: str) -> ClusterLearner:
        learner = self._learners.get(family)
        if learner is not None:
            return learner
        config = self.clusterings[family]
        stored = await self.store.load_snapshot(family)
        if stored is not None and stored.spec == config.spec and len(stored.clusters) == config.k:
            learner = ClusterLearner.from_snapshot(stored, warmup=self.settings.cluster_warmup)
            log.info("resuming %s model from v%d", family, stored.version)
        else:
            learner = ClusterLearner(config.spec, config.k, warmup=self.settings.cluster_warmup)
        self._published[family] = stored
        self._learners[family] = learner
        return learner
