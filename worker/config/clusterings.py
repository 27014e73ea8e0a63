"""The clusterings the worker runs: the segment family each fills, its space and its k."""

from __future__ import annotations

from dataclasses import dataclass

from worker.config.settings import Settings
from worker.core.clustering import BEHAVIOUR, NEEDS, FeatureSpec


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
