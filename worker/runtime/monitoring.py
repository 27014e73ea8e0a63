"""Segment statistics, drift alarms and profiles: the single owner's side loop.

The worker that owns the cluster-sample partition (see ``learning``) also runs this:
it already sees one feature sample per account and period, and the published cluster
models. Per interval it reads the segment sizes (SCARD) and the inflow/outflow that
every worker counted in Redis within its batch transactions, closes the interval of
its ``DriftMonitor``, sends a ``SegmentDrift`` event and logs every alarm. Less often
it recomputes the segment profiles over all accounts and stores them for ``/segments``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from worker.config.clusterings import clusterings
from worker.config.settings import Settings
from worker.core.clustering import ClusterSnapshot
from worker.core.drift import DriftMonitor
from worker.core.events import SegmentDrift
from worker.core.families import Families
from worker.core.features import FeatureView, day_of
from worker.core.profiles import ProfileBuilder, SegmentProfile
from worker.ports import DriftSender, StateStore
from worker.runtime.metrics import Metrics
from worker.runtime.overview import segment_overview

log = logging.getLogger(__name__)


class SegmentMonitor:
    def __init__(
        self,
        settings: Settings,
        families: Families,
        store: StateStore,
        sender: DriftSender,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.families = families
        self.store = store
        self.sender = sender
        self.metrics = metrics
        behaviour = next(c for c in clusterings(settings) if c.family == "cluster")
        self.feature_family = behaviour.family
        self.drift = DriftMonitor(
            share_bound=settings.drift_share_bound,
            centroid_bound=settings.drift_centroid_bound,
            features=behaviour.spec.dimensions,
            start=datetime.now(UTC),
        )

    def observe_sample(self, sample: Mapping[str, Any]) -> None:
        if sample.get("family") == self.feature_family and isinstance(sample.get("features"), dict):
            self.drift.observe_features(sample["features"])

    def observe_snapshot(self, family: str, snapshot: ClusterSnapshot) -> None:
        self.drift.observe_snapshot(snapshot, family)

    async def close_interval(self, at: datetime | None = None) -> SegmentDrift:
        """Sizes, flows and alarms of the interval that ends now; sent and logged."""
        overview = await segment_overview(self.store, self.families)
        sizes = {(row["family"], row["segment_id"]): row["size"] for row in overview}
        for (family, segment, change), count in (await self.store.take_flows()).items():
            flows = self.drift.inflow if change == "entered" else self.drift.outflow
            flows[(family, segment)] = flows.get((family, segment), 0) + count
        report = self.drift.close_interval(at or datetime.now(UTC), sizes)
        event = SegmentDrift.model_validate(report.to_event_dict())
        for alarm in event.alarms:
            log.warning("drift: %s", alarm.message)
            self.metrics.drift_alarms.labels(
                alarm.family or "", alarm.segment_id or alarm.feature or "", alarm.kind
            ).inc()
        await self.sender.send_drift(event)
        return event

    async def refresh_profiles(self) -> dict[tuple[str, str], SegmentProfile]:
        """Profiles of every segment over all stored accounts, stored for ``/segments``."""
        profiles, _ = await build_profiles(self.store, self.families)
        await self.store.save_profiles(
            {f"{family}/{segment}": p.to_dict() for (family, segment), p in profiles.items()}
        )
        return profiles


async def build_profiles(
    store: StateStore, families: Families
) -> tuple[dict[tuple[str, str], SegmentProfile], SegmentProfile]:
    """Per-segment profiles and the all-accounts profile, at the current stream time.

    One global day for every account (not each account's own clock), so idle accounts
    look idle. Accounts are loaded in batches: memory stays flat.
    """
    globals = await store.load_globals()
    stream_time = await store.stream_time()
    today = day_of(datetime.fromtimestamp(stream_time or 0, UTC))
    expected: dict[str, list[str]] = {
        family.id: [segment for segment, _ in family.segments()]
        for family in families.bind(globals)
    }
    builder = ProfileBuilder(expected=expected)
    async for accounts in store.account_ids():
        for state in (await store.load_many(accounts)).values():
            builder.add(state, FeatureView(state, max(today, state.now_day), globals))
    return builder.build(), builder.overall()
