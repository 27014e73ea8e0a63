"""Importing history straight into the state store: the default of ``segworker import-orders``.

Streaming an export through Kafka makes the worker evaluate every account at every one
of its events and emit every historical entry and exit. This folds the export into the
account states instead (``worker.core.backfill``: evaluated only over the stretch where
earlier evaluations can still matter) and emits, per account and segment, only the
difference between before and after the import (``origin: import``, never live).

It runs in ``processes`` processes, each owning the accounts whose id hashes to it
(``account_part``); each reads the file and parses and plans the rows of its own
accounts (nothing large crosses a pipe). Two passes:

1. each part loads its accounts' stored states and folds its events into them in
   memory (``AccountFold.apply``: everything but the evaluation at the end, the only
   one that reads the ABC cut-offs), and reports each account's trailing-year revenue
   at the end of the import; the parent computes the cut-offs over those and every
   other account's stored revenue, stores them and re-evaluates the other accounts
   they move (``cutoffs`` changes), so the imported accounts end with the cut-offs
   they will have;
2. each part finishes its accounts, a few hundred per atomic update of the store
   (``worker.runtime.history.HistoryWriter``): the fold of pass 1 where the stored state is
   still the one it started from, a new one where a running worker wrote the account
   in between; then states, indexes and outbox, the changes to Kafka and the outbox
   cleared, as a batch of the worker's. The folds wait in memory between the passes
   (a few KB per account).

A running worker that owns the same accounts writes them in turn with the import: each
update watches its states and is recomputed from fresh ones on a conflict, and events
applied already (a re-import, the rest of an interrupted one) are skipped.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import multiprocessing
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from worker.adapters.factory import UNREACHABLE_ERRORS, change_sender, open_state_store
from worker.adapters.kafka_topics import TopicError, create_topics
from worker.adapters.state_codec import encode_state
from worker.config.families import configured_families
from worker.config.security import redacted_url
from worker.config.settings import Settings
from worker.core.backfill import AccountFold, memory_windows
from worker.core.definitions import load_definitions
from worker.core.events import AnyInputEvent, OrderLine, OrderPlaced, OrderReturned
from worker.core.families import Families
from worker.core.features import VOCABULARY, AccountState, FeatureView
from worker.core.features.state import IMPORT_ID_PREFIX
from worker.core.impact import Impact
from worker.core.schedule import Schedule
from worker.ops.importer.plan import ImportPlan
from worker.ops.importer.rows import MAX_EXAMPLES, ImportFileError
from worker.ops.importer.run import ImportReport, open_plan
from worker.runtime.history import HistoryWriter
from worker.runtime.metrics import Metrics
from worker.runtime.processor import BatchProcessor

#: Accounts per atomic update of the store: a few hundred keep a transaction's
#: round trips few and its retry on a conflict with a running worker cheap.
ACCOUNTS_PER_UPDATE = 250


@dataclass
class FoldTally:
    """What one part (or all of them) folded into the store."""

    accounts: int = 0
    duplicates: int = 0
    #: ``(family, segment, change)`` -> net changes emitted
    changes: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def merge(self, other: FoldTally) -> None:
        self.accounts += other.accounts
        self.duplicates += other.duplicates
        self.changes.update(other.changes)


def import_cause(path: Path) -> str:
    """The import's own cause: ``imp-`` and a digest of the file (the same file, the same
    cause, hence the same change ids)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return f"{IMPORT_ID_PREFIX}{digest.hexdigest()[:32]}"


def import_into_state(
    settings: Settings,
    path: Path,
    *,
    processes: int = 2,
    now: datetime | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import an ERP order export into the state store (see the module docstring).

    ``on_progress`` is called with ``(events folded, total events)`` after each update.
    Raises `ImportFileError` when the file cannot be read, and re-raises (as
    ``RuntimeError``) what failed inside a part; what was stored before stays, and
    importing the file again completes it.
    """
    started = time.monotonic()
    cause = import_cause(path)
    stream_time = asyncio.run(_stream_time(settings))
    spawn = multiprocessing.get_context("spawn")
    parts: list[tuple[Connection, Any]] = []
    for index in range(processes):
        mine, theirs = spawn.Pipe()
        process = spawn.Process(
            target=_part_main,
            args=(theirs, settings, str(path), now, (index, processes), cause),
            daemon=True,
        )
        process.start()
        parts.append((mine, process))
    try:
        # The end of the import: its latest event in any part, or the store's stream time.
        ends = [_receive(connection, "planned_until") for connection, _ in parts]
        end = max([stream_time, *ends])
        for connection, _ in parts:
            connection.send(end)
        planned = [_receive(connection, "planned") for connection, _ in parts]
        plan = _merged_summary([answer["plan"] for answer in planned])
        total = sum(answer["events"] for answer in planned)
        revenues = {a: r for answer in planned for a, r in answer["revenues"].items()}
        parse_seconds = time.monotonic() - started
        moved = asyncio.run(_store_cutoffs(settings, revenues)) if revenues else 0
        for connection, _ in parts:
            connection.send("fold")
        tally = FoldTally()
        done, waiting = 0, {connection for connection, _ in parts}
        while waiting:
            for ready in wait(list(waiting)):
                assert isinstance(ready, Connection)
                kind, payload = _message(ready)
                if kind == "progress":
                    done += payload
                    if on_progress is not None:
                        on_progress(done, total)
                else:
                    tally.merge(payload)
                    waiting.discard(ready)
    finally:
        for connection, process in parts:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
            connection.close()
    seconds = time.monotonic() - started
    return ImportReport(
        rows=plan["rows"],
        imported=plan["imported"],
        skipped=plan["skipped"],
        errors_by_reason=plan["errors_by_reason"],
        examples=plan["examples"],
        seconds=seconds,
        events_per_second=total / seconds if seconds > 0 else 0.0,
        events=total,
        parse_seconds=parse_seconds,
        ignored_columns=plan["ignored_columns"],
        earliest_event_time=settings.earliest_event_time,
        target="state",
        accounts=tally.accounts,
        duplicates=tally.duplicates,
        changes={f"{f}/{s} {c}": n for (f, s, c), n in sorted(tally.changes.items())},
        cutoff_moves=moved,
    )


def _receive(connection: Connection, expected: str) -> Any:
    kind, payload = _message(connection)
    if kind != expected:
        raise RuntimeError(f"import part answered {kind!r}, expected {expected!r}")
    return payload


def _message(connection: Connection) -> tuple[str, Any]:
    try:
        kind, payload = connection.recv()
    except EOFError:
        raise RuntimeError("an import process ended without an answer") from None
    if kind == "file_error":
        raise ImportFileError(payload)
    if kind == "error":
        raise RuntimeError(f"an import process failed:\n{payload}")
    return kind, payload


#: What says Redis or Kafka cannot be reached (the topics could not be created, too).
UNREACHABLE_OR_NO_TOPICS: tuple[type[BaseException], ...] = (*UNREACHABLE_ERRORS, TopicError)


class ImportTargetError(Exception):
    """Redis or Kafka cannot be reached: nothing was imported."""


async def _stream_time(settings: Settings) -> float:
    """The store's stream time; first checks that Redis and Kafka answer (the parts
    would otherwise each fail with a traceback)."""
    try:
        async with open_state_store(settings) as store, change_sender(settings):
            if settings.create_topics:
                # Before anything is produced: a broker that creates a missing topic
                # on first use gives it its own partition count, which the worker
                # then refuses (found running import-orders before the first run).
                assert settings.kafka_bootstrap_servers
                partitions = settings.topic_partitions()
                await asyncio.to_thread(create_topics, settings.kafka_bootstrap_servers, partitions)
            return await store.stream_time() or 0.0
    except UNREACHABLE_OR_NO_TOPICS as error:
        raise ImportTargetError(
            f"cannot reach Redis ({redacted_url(settings.redis_url or '')}) or Kafka"
            f" ({settings.kafka_bootstrap_servers}): {error}"
        ) from None


async def _store_cutoffs(settings: Settings, imported: Mapping[str, float]) -> int:
    """Store the cut-offs the import leads to; re-evaluate the other accounts they move."""
    async with open_state_store(settings) as store, change_sender(settings) as sender:
        processor = BatchProcessor(settings, _families(settings), store, sender, Metrics())
        revenues = await store.revenues()
        revenues.update(imported)
        earning = {account: r for account, r in revenues.items() if r > 0}
        return await processor.refresh_thresholds(earning, paced=False, skip=imported)


def _families(settings: Settings) -> Families:
    return configured_families(settings, load_definitions(settings.definitions_path, VOCABULARY))


# ------------------------------------------------------------------ inside a part


def _part_main(
    connection: Connection,
    settings: Settings,
    path: str,
    now: datetime | None,
    part: tuple[int, int],
    cause: str,
) -> None:
    from worker.runtime.process import freeze_loaded_objects

    try:
        freeze_loaded_objects()  # as the worker does
        # The plan and the events live until the end: collecting while they are built
        # only re-scans them (it doubled the time of building the events, measured).
        gc.disable()
        try:
            plan = open_plan(Path(path), now, settings.earliest_event_time, part)
            history = history_of(plan)
        except ImportFileError as error:
            connection.send(("file_error", str(error)))
            return
        finally:
            gc.freeze()
            gc.enable()
        connection.send(("planned_until", plan.end.timestamp() if plan.end else 0.0))
        end = connection.recv()
        families = _families(settings)
        revenues, prepared = asyncio.run(_prepare(settings, families, history, end, cause))
        connection.send(
            (
                "planned",
                {
                    "plan": _plan_summary(plan),
                    "events": sum(map(len, history.values())),
                    "revenues": revenues,
                },
            )
        )
        if connection.recv() != "fold":
            return
        tally = asyncio.run(_fold(settings, families, history, prepared, end, cause, connection))
        connection.send(("done", tally))
    except BaseException:
        connection.send(("error", traceback.format_exc()))


def history_of(plan: ImportPlan) -> dict[str, list[AnyInputEvent]]:
    """The plan's events per account, in event-time order, as event models."""
    history: dict[str, list[AnyInputEvent]] = {}
    for event in plan.events():
        model = event_model(event)
        history.setdefault(model.account_id, []).append(model)
    return history


def event_model(event: Mapping[str, Any]) -> OrderPlaced | OrderReturned:
    """The model of an event the plan built, without validating it again.

    The plan builds events only from rows it checked against the same limits as the
    contracts (identifiers, amounts, dates), and validation would cost more than
    folding the event (19 µs of about 60); ``tests/unit/ops/test_importer.py`` shows
    that this gives the very models ``decode_input`` gives, for valid and messy files.
    """
    fields = dict(event)
    fields["occurred_at"] = datetime.fromisoformat(fields["occurred_at"])
    if fields["type"] == "order_returned":
        return OrderReturned.model_construct(**fields)
    fields["lines"] = [OrderLine.model_construct(**line) for line in fields.get("lines", ())]
    return OrderPlaced.model_construct(**fields)


def _merged_summary(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One plan's summary from its parts' (rows are counted in the part of their account)."""
    errors: Counter[str] = Counter()
    for summary in summaries:
        errors.update(summary["errors_by_reason"])
    examples = sorted((e for s in summaries for e in s["examples"]), key=lambda e: e.line)
    return {
        "rows": sum(s["rows"] for s in summaries),
        "imported": sum(s["imported"] for s in summaries),
        "skipped": sum(s["skipped"] for s in summaries),
        "errors_by_reason": dict(errors.most_common()),
        "examples": examples[:MAX_EXAMPLES],
        "ignored_columns": summaries[0]["ignored_columns"],
    }


def _plan_summary(plan: ImportPlan) -> dict[str, Any]:
    return {
        "rows": plan.rows,
        "imported": plan.imported,
        "skipped": plan.skipped,
        "errors_by_reason": dict(plan.errors.most_common()),
        "examples": list(plan.examples),
        "ignored_columns": list(plan.ignored_columns),
    }


async def _prepare(
    settings: Settings,
    families: Families,
    history: Mapping[str, Sequence[AnyInputEvent]],
    end: float,
    cause: str,
) -> tuple[dict[str, float], dict[str, tuple[bytes, AccountFold]]]:
    """Apply each account's history to its stored state (nothing is written); return
    each account's trailing-year revenue at ``end`` and its fold, with the stored form
    of the state it started from (``HistoryWriter.write`` finishes it if the
    state is still that one)."""
    revenues: dict[str, float] = {}
    prepared: dict[str, tuple[bytes, AccountFold]] = {}
    accounts = sorted(history)
    impact, schedule = Impact(families), Schedule(families)
    async with open_state_store(settings) as store:
        globals = await store.load_globals()
        windows = memory_windows(families, globals)
        for start in range(0, len(accounts), ACCOUNTS_PER_UPDATE):
            chunk = accounts[start : start + ACCOUNTS_PER_UPDATE]
            stored = await store.load_many(chunk)
            for account in chunk:
                state = stored.get(account) or AccountState(account)
                before = encode_state(state)
                fold = AccountFold(state, families, end, cause, windows, impact, schedule)
                fold.apply(history[account], globals)
                day = max(int(end // 86_400), state.now_day)
                revenues[account] = float(FeatureView(state, day)["revenue_365d"])
                prepared[account] = (before, fold)
    return revenues, prepared


async def _fold(
    settings: Settings,
    families: Families,
    history: Mapping[str, Sequence[AnyInputEvent]],
    prepared: Mapping[str, tuple[bytes, AccountFold]],
    end: float,
    cause: str,
    connection: Connection,
) -> FoldTally:
    tally = FoldTally()
    accounts = sorted(history)
    async with open_state_store(settings) as store, change_sender(settings) as sender:
        processor = BatchProcessor(settings, families, store, sender, Metrics())
        writer = HistoryWriter(processor)
        for start in range(0, len(accounts), ACCOUNTS_PER_UPDATE):
            chunk = {a: history[a] for a in accounts[start : start + ACCOUNTS_PER_UPDATE]}
            result = await writer.write(chunk, end, cause, prepared)
            tally.accounts += len(result.changed_accounts)
            tally.duplicates += result.outcomes.get(("import", "duplicate"), 0)
            tally.changes.update((c.family, c.segment_id, c.change) for c in result.changes)
            connection.send(("progress", sum(map(len, chunk.values()))))
        await processor.samples_sent()
    return tally
