"""Importing history straight into the state store: the default of ``segworker import-orders``.

Streaming an export through Kafka makes the worker evaluate every account at every one
of its events and emit every historical entry and exit. This folds the export into the
account states instead (``worker.core.backfill``: evaluated only over the stretch where
earlier evaluations can still matter) and emits, per account and segment, only the
difference between before and after the import (``origin: import``, never live).

It runs in ``processes`` processes, each owning the accounts whose id hashes to it
(``account_part``); each plans the file itself (planning is deterministic, so they
agree, and nothing large crosses a pipe). Two passes:

1. each part loads its accounts' stored states, applies its events to copies and
   reports each account's trailing-year revenue at the end of the import; the parent
   computes the ABC cut-offs over those and every other account's stored revenue,
   stores them and re-evaluates the other accounts they move (``cutoffs`` changes),
   so the imported accounts are folded with the cut-offs they will have;
2. each part folds its accounts, a few hundred per atomic update of the store
   (``BatchProcessor.import_history``): states, indexes, outbox, then the changes to
   Kafka and the outbox cleared, as a batch of the worker's.

A running worker that owns the same accounts writes them in turn with the import: each
update watches its states and is recomputed from fresh ones on a conflict, and events
applied already (a re-import, the rest of an interrupted one) are skipped.
"""

from __future__ import annotations

import asyncio
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

from worker.adapters.factory import change_sender, open_state_store
from worker.config.families import configured_families
from worker.config.settings import Settings
from worker.core import features
from worker.core.definitions import load_definitions
from worker.core.events import AnyInputEvent, OrderPlaced, OrderReturned
from worker.core.features import VOCABULARY, AccountState, FeatureView
from worker.core.features.state import IMPORT_ID_PREFIX
from worker.ops.importer.plan import ImportPlan
from worker.ops.importer.rows import ImportFileError
from worker.ops.importer.run import ImportReport, open_plan
from worker.runtime.metrics import Metrics
from worker.runtime.processor import BatchProcessor

#: Accounts per atomic update of the store: a few hundred keep a transaction's
#: round trips few and its retry on a conflict with a running worker cheap.
ACCOUNTS_PER_UPDATE = 250
_EVENT_TYPES: dict[str, type[OrderPlaced] | type[OrderReturned]] = {
    "order_placed": OrderPlaced,
    "order_returned": OrderReturned,
}


@dataclass
class FoldTally:
    """What one part (or all of them) folded into the store."""

    accounts: int = 0
    applied: int = 0
    duplicates: int = 0
    evaluations: int = 0
    #: ``(family, segment, change)`` -> net changes emitted
    changes: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def merge(self, other: FoldTally) -> None:
        self.accounts += other.accounts
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.evaluations += other.evaluations
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
            args=(theirs, settings, str(path), now, (index, processes), stream_time, cause),
            daemon=True,
        )
        process.start()
        parts.append((mine, process))
    try:
        planned = [_receive(connection, "planned") for connection, _ in parts]
        plan: dict[str, Any] = planned[0]["plan"]
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


async def _stream_time(settings: Settings) -> float:
    async with open_state_store(settings) as store:
        return await store.stream_time() or 0.0


async def _store_cutoffs(settings: Settings, imported: Mapping[str, float]) -> int:
    """Store the cut-offs the import leads to; re-evaluate the other accounts they move."""
    async with open_state_store(settings) as store, change_sender(settings) as sender:
        processor = _processor(settings, store, sender)
        revenues = await store.revenues()
        revenues.update(imported)
        earning = {account: r for account, r in revenues.items() if r > 0}
        return await processor.refresh_thresholds(earning, paced=False, skip=imported)


def _processor(settings: Settings, store: Any, sender: Any) -> BatchProcessor:
    definitions = load_definitions(settings.definitions_path, VOCABULARY)
    families = configured_families(settings, definitions)
    return BatchProcessor(settings, families, store, sender, Metrics())


# ------------------------------------------------------------------ inside a part


def _part_main(
    connection: Connection,
    settings: Settings,
    path: str,
    now: datetime | None,
    part: tuple[int, int],
    stream_time: float,
    cause: str,
) -> None:
    from worker.runtime.process import freeze_loaded_objects

    try:
        try:
            plan = open_plan(Path(path), now, settings.earliest_event_time)
        except ImportFileError as error:
            connection.send(("file_error", str(error)))
            return
        history = history_of(plan, part)
        end = max(stream_time, plan.end.timestamp() if plan.end else 0.0)
        freeze_loaded_objects()  # as the worker does: the plan and states are long-lived
        revenues = asyncio.run(_revenues_after(settings, history, end))
        connection.send(
            (
                "planned",
                {
                    "plan": _plan_summary(plan) if part[0] == 0 else {},
                    "events": sum(map(len, history.values())),
                    "revenues": revenues,
                },
            )
        )
        if connection.recv() != "fold":
            return
        tally = asyncio.run(_fold(settings, history, end, cause, connection))
        connection.send(("done", tally))
    except BaseException:
        connection.send(("error", traceback.format_exc()))


def history_of(plan: ImportPlan, part: tuple[int, int] = (0, 1)) -> dict[str, list[AnyInputEvent]]:
    """The events of the part's accounts, per account in event-time order.

    The plan's events are built from rows it checked; they are validated again here as
    the worker would (pydantic), so an event it would refuse cannot reach a state.
    """
    history: dict[str, list[AnyInputEvent]] = {}
    for event in plan.events(part=part):
        model = _EVENT_TYPES[event["type"]].model_validate(event)
        history.setdefault(model.account_id, []).append(model)
    return history


def _plan_summary(plan: ImportPlan) -> dict[str, Any]:
    return {
        "rows": plan.rows,
        "imported": plan.imported,
        "skipped": plan.skipped,
        "errors_by_reason": dict(plan.errors.most_common()),
        "examples": list(plan.examples),
        "ignored_columns": list(plan.ignored_columns),
    }


async def _revenues_after(
    settings: Settings, history: Mapping[str, Sequence[AnyInputEvent]], end: float
) -> dict[str, float]:
    """Each account's trailing-year revenue at ``end`` once its history is applied
    (to copies of the stored states: nothing is written)."""
    revenues: dict[str, float] = {}
    accounts = sorted(history)
    async with open_state_store(settings) as store:
        for start in range(0, len(accounts), ACCOUNTS_PER_UPDATE):
            chunk = accounts[start : start + ACCOUNTS_PER_UPDATE]
            stored = await store.load_many(chunk)
            for account in chunk:
                state = stored.get(account) or AccountState(account)
                for event in history[account]:
                    features.apply(state, event)
                day = max(int(end // 86_400), state.now_day)
                revenues[account] = float(FeatureView(state, day)["revenue_365d"])
    return revenues


async def _fold(
    settings: Settings,
    history: Mapping[str, Sequence[AnyInputEvent]],
    end: float,
    cause: str,
    connection: Connection,
) -> FoldTally:
    tally = FoldTally()
    accounts = sorted(history)
    async with open_state_store(settings) as store, change_sender(settings) as sender:
        processor = _processor(settings, store, sender)
        for start in range(0, len(accounts), ACCOUNTS_PER_UPDATE):
            chunk = {a: history[a] for a in accounts[start : start + ACCOUNTS_PER_UPDATE]}
            result = await processor.import_history(chunk, end, cause)
            tally.accounts += len(result.changed_accounts)
            tally.applied += result.outcomes.get(("import", "applied"), 0)
            tally.duplicates += result.outcomes.get(("import", "duplicate"), 0)
            tally.evaluations += result.outcomes.get(("import", "evaluated"), 0)
            tally.changes.update((c.family, c.segment_id, c.change) for c in result.changes)
            connection.send(("progress", sum(map(len, chunk.values()))))
        await processor.samples_sent()
    return tally
