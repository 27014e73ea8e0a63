"""Operator commands that act on stored state: explain an account, recompute after a
definitions change, write the segment report.

They reuse the worker's own pieces (``StateStore``, ``BatchProcessor``), so a
recompute writes and emits exactly as the worker would, with the cause
``recompute:<definition version>`` that makes its change ids stable: running the same
recompute twice emits nothing the second time.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Container, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from worker.agents import BatchProcessor
from worker.clients import topic_reader
from worker.clustering import describe
from worker.events import DeadLetter, SegmentChanged
from worker.features import FEATURES, VOCABULARY, FeatureView
from worker.impact import Impact
from worker.learning import clusterings, encode_samples
from worker.metrics import Metrics
from worker.monitoring import build_profiles
from worker.processing import evaluate, membership_reasons
from worker.report import write_report
from worker.rules import Definitions, load_definitions
from worker.security import kafka_client_options
from worker.settings import Settings
from worker.store import StateStore


class ProducerSender:
    """A ``Sender`` for command-line tools: an aiokafka producer, acks from all replicas."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            acks="all",
            linger_ms=5,
            **kafka_client_options(settings),
        )

    async def __aenter__(self) -> ProducerSender:
        await self.producer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.producer.stop()

    async def send_changes(self, changes: Sequence[SegmentChanged]) -> None:
        pending = [
            await self.producer.send(
                self.settings.topic_segment_changes,
                key=change.account_id.encode(),
                value=change.model_dump_json().encode(),
            )
            for change in changes
        ]
        await asyncio.gather(*pending)

    async def send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        raise NotImplementedError("command-line tools do not decode input records")

    async def send_samples(self, samples: Sequence[dict[str, Any]]) -> None:
        pending = [
            await self.producer.send(
                self.settings.topic_cluster_samples, key=b"samples", value=message
            )
            for message in encode_samples(samples)
        ]
        await asyncio.gather(*pending)


@dataclass
class ChangeTally:
    """Changes counted per ``(family, segment, change)``, with a few example accounts."""

    by_segment: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    examples: dict[tuple[str, str, str], list[str]] = field(
        default_factory=lambda: defaultdict(list)
    )

    @property
    def changes(self) -> int:
        return sum(self.by_segment.values())

    def add(self, change: SegmentChanged, examples: int = 3) -> None:
        key = (change.family, change.segment_id, change.change)
        self.by_segment[key] += 1
        if len(self.examples[key]) < examples:
            self.examples[key].append(change.account_id)

    def merge(self, other: ChangeTally, examples: int = 3) -> None:
        self.by_segment.update(other.by_segment)
        for key, accounts in other.examples.items():
            self.examples[key] = (self.examples[key] + accounts)[:examples]

    def rows(self) -> list[tuple[str, str, int, str]]:
        """``(family/segment, change, count, example accounts)`` sorted by segment."""
        return [
            (
                f"{family}/{segment}",
                change,
                count,
                ", ".join(self.examples[(family, segment, change)]),
            )
            for (family, segment, change), count in sorted(self.by_segment.items())
        ]


@dataclass
class RecomputeReport:
    """What a recompute changed (or would change), told apart by why.

    ``caused``: changes in the families the new definitions redefine for the account
    (changed, added, removed; all rule families of an account whose last definitions
    were not recorded). ``pending``: changes in the other families, cluster families
    included: what time (a due time not swept yet) or a newer cluster model had made
    pending, which the worker applies anyway. Pending changes inside a redefined family
    count as caused (the old definitions are not at hand to tell them apart).
    """

    accounts: int = 0
    caused: ChangeTally = field(default_factory=ChangeTally)
    pending: ChangeTally = field(default_factory=ChangeTally)

    @property
    def changes(self) -> int:
        return self.caused.changes + self.pending.changes

    def add(
        self,
        changes: Sequence[SegmentChanged],
        redefined: Mapping[str, frozenset[str] | None],
        cluster_families: Container[str] = (),
    ) -> None:
        """Count ``changes``; ``redefined``: each account's redefined rule families
        (``Impact.redefined``; missing or None: not known, every rule family counts)."""
        for change in changes:
            if change.family in cluster_families:
                self.pending.add(change)
                continue
            families = redefined.get(change.account_id)
            if families is None or change.family in families:
                self.caused.add(change)
            else:
                self.pending.add(change)

    def merge(self, other: RecomputeReport) -> None:
        self.accounts += other.accounts
        self.caused.merge(other.caused)
        self.pending.merge(other.pending)

    def rows(self) -> list[tuple[str, str, int, str]]:
        """Every change, caused and pending together (see :meth:`ChangeTally.rows`)."""
        every = ChangeTally()
        every.merge(self.caused)
        every.merge(self.pending)
        return every.rows()


def recompute_in_processes(
    settings: Settings, source: str | Path, *, dry_run: bool, processes: int
) -> RecomputeReport:
    """``recompute`` split over ``processes`` processes by account (the definitions are
    loaded from ``source`` in each); their reports merged.

    Evaluation is CPU-bound Python: a second core nearly halves the time.
    """
    if processes <= 1:
        return asyncio.run(
            recompute(settings, load_definitions(source, VOCABULARY), dry_run=dry_run)
        )
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=spawn) as pool:
        parts = [
            pool.submit(_recompute_part, settings, str(source), dry_run, (index, processes))
            for index in range(processes)
        ]
        reports = [part.result() for part in parts]
    merged = RecomputeReport()
    for report in reports:
        merged.merge(report)
    return merged


def _recompute_part(
    settings: Settings, source: str, dry_run: bool, part: tuple[int, int]
) -> RecomputeReport:
    from worker.cli import freeze_loaded_objects

    definitions = load_definitions(source, VOCABULARY)
    freeze_loaded_objects()
    return asyncio.run(recompute(settings, definitions, dry_run=dry_run, part=part))


async def recompute(
    settings: Settings,
    definitions: Definitions,
    *,
    dry_run: bool,
    part: tuple[int, int] = (0, 1),
) -> RecomputeReport:
    """Re-evaluate every stored account with ``definitions``.

    Accounts are evaluated at the current time (stream time by default), so the
    result is what the worker would hold now. Dry run: nothing is written or sent;
    the report says who would enter and leave. ``part=(i, n)``: only the accounts
    whose id hashes to ``i`` of ``n`` (see ``recompute_in_processes``).
    """
    redis = aioredis.Redis.from_url(settings.redis_url)
    store = StateStore(
        redis,
        settings.redis_key_prefix,
        [c.family for c in clusterings(settings)],
        settings.cluster_margin,
    )
    report = RecomputeReport()
    cause = f"recompute:{definitions.version}"
    impact = Impact(definitions)
    cluster_families = frozenset(c.family for c in clusterings(settings))
    try:
        globals = await store.load_globals()
        now = time.time() if settings.time_mode == "wall" else await store.stream_time()
        # Families defined as when an account was last evaluated keep their memberships
        # unless time may have changed them: mostly, only the changed families run.
        previous = await store.load_family_fingerprints()
        if dry_run:
            async for accounts in _part_of(store.account_ids(), part):
                states = await store.load_many(accounts)
                report.accounts += len(states)
                for state in states.values():
                    skip = impact.unchanged(state, now, previous)
                    redefined = {state.account_id: impact.redefined(state, previous)}
                    changes = evaluate(state, definitions, cause, globals, at=now, skip=skip)
                    report.add(changes, redefined, cluster_families)
            return report
        await store.save_family_fingerprints(impact.fingerprint, impact.family_fingerprints)
        async with ProducerSender(settings) as sender:
            processor = BatchProcessor(settings, definitions, store, sender, Metrics())
            async for accounts in _part_of(store.account_ids(), part):
                result = await processor.reevaluate(accounts, cause, at=now, previous=previous)
                report.accounts += len(accounts)
                report.add(result.changes, result.redefined, cluster_families)
        return report
    finally:
        await redis.aclose()


async def _part_of(
    chunks: AsyncIterator[list[str]], part: tuple[int, int]
) -> AsyncIterator[list[str]]:
    index, count = part
    async for accounts in chunks:
        mine = [a for a in accounts if count == 1 or zlib.crc32(a.encode()) % count == index]
        if mine:
            yield mine


@dataclass
class Explanation:
    account_id: str
    as_of: datetime
    memberships: list[tuple[str, str, datetime, str]]
    features: dict[str, Any]


async def explain(
    settings: Settings, account_id: str, definitions: Definitions
) -> Explanation | None:
    """The account's current memberships with their reasons, and its feature values."""
    redis = aioredis.Redis.from_url(settings.redis_url)
    store = StateStore(redis, settings.redis_key_prefix, [c.family for c in clusterings(settings)])
    try:
        state = await store.load(account_id)
        if state is None:
            return None
        globals = await store.load_globals()
    finally:
        await redis.aclose()
    view = FeatureView(state, state.now_day, globals)
    reasons = membership_reasons(state, definitions, globals)
    memberships = [
        (family, segment, datetime.fromtimestamp(entry["since"], UTC), reasons[(family, segment)])
        for family, segments in state.memberships.items()
        for segment, entry in segments.items()
    ]
    features = {name: view[name] for name in FEATURES}
    features["abc_class"] = view["abc_class"]
    features["clv_estimate"] = view["clv_estimate"]
    return Explanation(account_id, datetime.fromtimestamp(state.clock, UTC), memberships, features)


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
    """Profiles of every segment, sizes and flows over time, cluster descriptions: HTML."""
    redis = aioredis.Redis.from_url(settings.redis_url)
    store = StateStore(redis, settings.redis_key_prefix, [c.family for c in clusterings(settings)])
    try:
        profiles, overall = await build_profiles(store, definitions)
        snapshots = (await store.load_globals()).clusters
    finally:
        await redis.aclose()
    # Per family: every cluster model numbers its clusters c1, c2, ...
    descriptions = {
        family: describe(snapshot) for family, snapshot in snapshots.items() if snapshot is not None
    }
    history = drift_history(settings) if settings.kafka_bootstrap_servers else []
    return write_report(
        path,
        profiles,
        history,
        descriptions,
        f"Segments — definitions {definitions.version}",
        overall=overall,
    )
