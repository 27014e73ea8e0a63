"""The cluster models' single owner: learns from samples, publishes versioned snapshots.

Every worker sends, per account and at most every ``cluster_sample_days`` of stream
time, the account's raw clustering features to a one-partition topic. Whichever
worker owns that partition trains one ``ClusterLearner`` per clustering and, on a
timer, publishes a JSON snapshot to Redis with a compare-and-set on the version, so a
worker that lost the partition in a rebalance cannot overwrite a newer model. Only a model
whose centroids moved materially (``cluster_publish_min_shift``) is published, since each
publish re-assigns every account. A new owner resumes from the last published snapshot
(no pickle, no warm-up again).
Every worker assigns with the latest snapshot, read in each batch's round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from worker.config.clusterings import clusterings
from worker.config.settings import Settings
from worker.core.clustering import ClusterLearner, ClusterSnapshot, largest_centroid_shift
from worker.core.families import raw_sample
from worker.core.features import FeatureView
from worker.core.features.catalogue import DAYS_SINCE
from worker.ports import StateStore

log = logging.getLogger(__name__)


#: Stored accounts read per step when a new owner fills a learner's population.
POPULATION_STEP = 100


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
        """Train on ``{"family", "account_id", "features"}`` samples; returns how many.

        The account id keys the sample in the learner's population: an account's newer
        sample replaces its older one.
        """
        learned = 0
        for sample in samples:
            family = sample.get("family")
            if family not in self.clusterings or not isinstance(sample.get("features"), dict):
                continue
            learner = await self._learner(family)
            account, day = sample.get("account_id"), sample.get("day")
            learner.learn_one(
                sample["features"],
                account if isinstance(account, str) else None,
                day if isinstance(day, int) and not isinstance(day, bool) else None,
            )
            self._learned_since_publish[family] = self._learned_since_publish.get(family, 0) + 1
            learned += 1
        return learned

    async def publish(self) -> list[tuple[str, ClusterSnapshot]]:
        """Publish every model that moved materially; return the (family, snapshot)s.

        A learner that learned something is snapshotted (ids matched to the last published
        model) and published when :func:`largest_centroid_shift` from that model exceeds
        ``cluster_publish_min_shift``, or when nothing was published yet: every publish
        makes the owner re-assign every account, which online-learning jitter is not
        worth. A publish is a compare-and-set on the version; a learner that loses it, or
        finds a newer stored model while it holds back, was deposed and is dropped, so the
        next sample resumes from the stored model.
        """
        published = []
        for family, learner in list(self._learners.items()):
            learned = self._learned_since_publish.get(family, 0)
            if not learner.ready or not learned:
                continue
            previous = self._published.get(family)
            version = (previous.version if previous else 0) + 1
            task = learner.refit_task()
            if task is not None:
                # The refit is batch k-means over up to the whole population: off the
                # event loop, so the event agent keeps its turns.
                learner.apply_refit(await asyncio.to_thread(task))
            snapshot = learner.snapshot(
                version, created_at=datetime.now(UTC), previous=previous, refit=False
            )
            shift = largest_centroid_shift(previous, snapshot)
            if shift <= self.settings.cluster_publish_min_shift:
                stored = await self.store.load_snapshot(family)
                stored_version = stored.version if stored is not None else 0
                if stored_version >= version:
                    log.warning(
                        "%s model v%d stored by another owner; reloading", family, stored_version
                    )
                    self._drop(family)
                    continue
                if stored_version == version - 1:
                    log.debug(
                        "%s model moved %.3f since v%d: held back", family, shift, version - 1
                    )
                    continue
                # The stored model is gone (deleted by hand?): publish this one.
            if await self.store.publish_snapshot(family, snapshot):
                self._published[family] = snapshot
                # samples learned while the refit ran count towards the next model
                self._learned_since_publish[family] -= learned
                published.append((family, snapshot))
                log.info(
                    "published %s model v%d (%d samples, largest centroid shift %.3f)",
                    family,
                    version,
                    snapshot.samples,
                    shift,
                )
            else:
                # Somebody else published a newer model: we are no longer the owner, or
                # were not for a while. Start again from the stored model next time.
                log.warning("%s model v%d superseded; reloading", family, version)
                self._drop(family)
        return published

    def _drop(self, family: str) -> None:
        """Forget a deposed learner: the next sample resumes from the stored model."""
        del self._learners[family]
        self._learned_since_publish[family] = 0

    async def _learner(self, family: str) -> ClusterLearner:
        learner = self._learners.get(family)
        if learner is None:
            await self._start_learners()
            learner = self._learners[family]
        return learner

    async def _start_learners(self) -> None:
        """A learner for every clustering that has none: resumed from the stored model
        when it fits the configuration, and given every stored account's current
        features (one pass over the store for all of them)."""
        started: dict[str, ClusterLearner] = {}
        for family, config in self.clusterings.items():
            if family in self._learners:
                continue
            stored = await self.store.load_snapshot(family)
            params: dict[str, Any] = {
                "warmup": self.settings.cluster_warmup,
                "population": max(self.settings.cluster_population, self.settings.cluster_warmup),
                # days since the last order, say, keep growing after the sample was taken
                "ageing": [name for name in config.spec.names if name in DAYS_SINCE],
            }
            fits = stored is not None and stored.spec == config.spec
            if stored is not None and fits and len(stored.clusters) == config.k:
                started[family] = ClusterLearner.from_snapshot(stored, **params)
                log.info("resuming %s model from v%d", family, stored.version)
            else:
                started[family] = ClusterLearner(config.spec, config.k, **params)
            self._published[family] = stored
        await self._load_population(started.values())
        for learner in started.values():
            learner.min_population = learner.n_clusters  # every stored account is in it now
        self._learners.update(started)

    async def _load_population(self, learners: Iterable[ClusterLearner]) -> None:
        """Put every stored account's current features into new learners' populations.

        A new owner (a restart, a rebalance) would otherwise refit on only the accounts
        that happen to send a sample first: the active ones. Read in steps of 100
        accounts, so the event agent gets its turns in between.
        """
        learners = list(learners)
        if not learners:
            return
        loaded = 0
        async for accounts in self.store.account_ids(POPULATION_STEP):
            for state in (await self.store.load_many(accounts)).values():
                view = FeatureView(state, state.now_day)
                for learner in learners:
                    features = raw_sample(view, learner.spec)
                    learner.observe(state.account_id, features, state.now_day)
                loaded += 1
        if loaded:
            log.info("cluster models: %d stored accounts in their populations", loaded)
