"""Segment families: rule families and cluster families behind one interface.

``base`` holds the interface (:class:`Family`, :class:`FamilyKind`, :class:`Families`),
``rules`` the families of the definitions file, ``clusters`` the online clusterings.
``worker_families`` is what the worker runs: the rule families of its definitions, the
cluster families of its clusterings, and any further kinds passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.core.definitions import Definitions
from worker.core.families.base import Families, Family, FamilyKind
from worker.core.families.clusters import ClusterFamilies, ClusterFamily, raw_sample
from worker.core.families.rules import RuleFamilies, RuleFamily

__all__ = [
    "ClusterFamilies",
    "ClusterFamily",
    "Families",
    "Family",
    "FamilyKind",
    "RuleFamilies",
    "RuleFamily",
    "as_families",
    "raw_sample",
    "worker_families",
]


def worker_families(
    definitions: Definitions,
    *more: FamilyKind,
    clusterings: Sequence[str] | None = None,
) -> Families:
    """The rule families of ``definitions``, a cluster family per clustering
    (``clusterings``; default: every model the shared facts carry), then ``more``."""
    return Families([RuleFamilies(definitions), ClusterFamilies(clusterings), *more])


_OF: dict[int, tuple[object, Families]] = {}


def as_families(source: Families | Definitions) -> Families:
    """``source`` itself, or the worker's families of these definitions (cached by
    identity: evaluation asks once per event)."""
    if isinstance(source, Families):
        return source
    cached = _OF.get(id(source))
    if cached is not None and cached[0] is source:
        return cached[1]
    if len(_OF) >= 64:
        _OF.clear()
    families = worker_families(source)
    _OF[id(source)] = (source, families)
    return families
