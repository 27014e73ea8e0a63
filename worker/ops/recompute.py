"""``segworker recompute``: every stored account evaluated again after a definitions change.

It reuses the worker's own pieces (the state store, ``BatchProcessor``), so a recompute
writes and emits exactly as the worker would, with the cause
``recompute:<definition version>`` that makes its change ids stable: running the same
recompute twice emits nothing the second time. A dry run reports who would enter and
leave each segment, told apart by why: what the change of definitions causes, and what
was merely pending (time not swept yet, a newer cluster model).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Container, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from worker.adapters.factory import change_sender, open_state_store
from worker.config.families import configured_families
from worker.config.settings import Settings
from worker.core.definitions import Definitions, load_definitions
from worker.core.events import SegmentChanged
from worker.core.features import NO_GLOBALS, VOCABULARY
from worker.core.impact import Impact
from worker.core.processing import evaluate
from worker.runtime.metrics import Metrics
from worker.runtime.processor import BatchProcessor


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
    from worker.runtime.process import freeze_loaded_objects

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
    families = configured_families(settings, definitions)
    report = RecomputeReport()
    cause = f"recompute:{definitions.version}"
    impact = Impact(families)
    # What a model family (a clustering) changes is what a newer model made pending.
    model_families = frozenset(families.ids(NO_GLOBALS)) - frozenset(impact.inputs)
    async with open_state_store(settings) as store:
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
                    changes = evaluate(state, families, cause, globals, at=now, skip=skip)
                    report.add(changes, redefined, model_families)
            return report
        await store.save_family_fingerprints(impact.fingerprint, impact.family_fingerprints)
        async with change_sender(settings) as sender:
            processor = BatchProcessor(settings, families, store, sender, Metrics())
            async for accounts in _part_of(store.account_ids(), part):
                result = await processor.reevaluate(accounts, cause, at=now, previous=previous)
                report.accounts += len(accounts)
                report.add(result.changes, result.redefined, model_families)
        return report


async def _part_of(
    chunks: AsyncIterator[list[str]], part: tuple[int, int]
) -> AsyncIterator[list[str]]:
    index, count = part
    async for accounts in chunks:
        mine = [a for a in accounts if count == 1 or zlib.crc32(a.encode()) % count == index]
        if mine:
            yield mine
