"""``segworker report``: the segment report of the stored accounts, as one HTML page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.adapters.factory import open_state_store, trigger_store
from worker.adapters.kafka_clients import topic_reader
from worker.config.families import configured_families
from worker.config.settings import Settings
from worker.core.definitions import Definitions
from worker.core.families import RuleFamily
from worker.ops.report import write_report
from worker.runtime.monitoring import build_profiles


def drift_history(settings: Settings, limit: int = 500) -> list[dict[str, Any]]:
    """The last ``limit`` ``SegmentDrift`` events, oldest first."""
    consumer = topic_reader(settings, settings.topic_segment_drift, idle_ms=1500)
    try:
        events = [json.loads(message.value) for message in consumer]
    finally:
        consumer.close()
    events.sort(key=lambda event: event["interval_end"])
    return events[-limit:]


async def report(settings: Settings, definitions: Definitions, path: Path) -> Path:
    """Profiles of every segment, sizes and flows over time, cluster descriptions and the
    campaign triggers' decisions: HTML."""
    families = configured_families(settings, definitions)
    async with open_state_store(settings) as store:
        profiles, overall = await build_profiles(store, families)
        shared = await store.load_globals()
    triggers = trigger_store(settings)
    try:
        trigger_counts = await triggers.daily_counts()
    finally:
        await triggers.close()
    # Per family that is no rule family (a cluster family: every model numbers its
    # clusters c1, c2, ..., so the descriptions are kept apart by family).
    descriptions = {
        family.id: dict(family.segments())
        for family in families.bind(shared)
        if not isinstance(family, RuleFamily)
    }
    history = drift_history(settings) if settings.kafka_bootstrap_servers else []
    return write_report(
        path,
        profiles,
        history,
        descriptions,
        f"Segments — definitions {definitions.version}",
        overall=overall,
        trigger_counts=trigger_counts,
    )
