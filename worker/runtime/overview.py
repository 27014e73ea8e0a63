"""Every segment at a glance: size, description and profile (``/segments``, gauges, drift)."""

from __future__ import annotations

from typing import Any

from worker.core.families import Families
from worker.ports import StateStore


async def segment_overview(store: StateStore, families: Families) -> list[dict[str, Any]]:
    """Size and description of every segment of every family (a cluster family's once
    its model is published)."""
    shared = await store.load_globals()
    described = [
        (family.id, segment, description)
        for family in families.bind(shared)
        for segment, description in family.segments()
    ]
    sizes = await store.segment_sizes([(family, segment) for family, segment, _ in described])
    profiles = await store.load_profiles()
    return [
        {
            "family": family,
            "segment_id": segment,
            "size": size,
            "description": description,
            "profile": profiles.get(f"{family}/{segment}"),
        }
        for (family, segment, description), size in zip(described, sizes, strict=True)
    ]
