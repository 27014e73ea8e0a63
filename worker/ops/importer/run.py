"""Producing an import to the orders topic, and what it did."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from worker.adapters.kafka_clients import produce
from worker.core.events import (
    DEFAULT_EARLIEST_EVENT_TIME,
    EARLIEST_EVENT_TIME_SETTING,
    moment_text,
)
from worker.ops.importer.plan import ImportPlan, plan_import
from worker.ops.importer.rows import PRODUCER_CONFIG, ImportFileError, RowError


@dataclass(frozen=True)
class ImportReport:
    """The outcome of `import_orders`.

    ``rows`` = ``imported`` + ``skipped`` data rows; ``events`` were produced (fewer than
    ``imported`` when orders span several rows). ``seconds`` is the whole run (parsing
    included, ``parse_seconds`` of it) and ``events_per_second`` is ``events / seconds``.
    ``earliest_event_time`` is the floor rows were checked against (``date_too_old``).
    """

    rows: int
    imported: int
    skipped: int
    errors_by_reason: dict[str, int]
    examples: list[RowError]
    seconds: float
    events_per_second: float
    events: int = 0
    parse_seconds: float = 0.0
    ignored_columns: list[str] = field(default_factory=list)
    dry_run: bool = False
    earliest_event_time: datetime = DEFAULT_EARLIEST_EVENT_TIME
    #: where the events went: ``kafka`` (the orders topic) or ``state`` (folded into the
    #: state store, ``worker.ops.importer.direct``); the rest is about the latter
    target: str = "kafka"
    accounts: int = 0
    duplicates: int = 0
    #: ``"family/segment entered|exited"`` -> net changes emitted
    changes: dict[str, int] = field(default_factory=dict)
    #: other accounts the import's new ABC cut-offs re-evaluated
    cutoff_moves: int = 0


def open_plan(
    path: Path,
    now: datetime | None,
    earliest_event_time: datetime,
    part: tuple[int, int] = (0, 1),
) -> ImportPlan:
    """`plan_import` of a file (``part``: of some of its accounts only)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            return plan_import(file, now=now, earliest_event_time=earliest_event_time, part=part)
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            f"{path} is not UTF-8 (byte {exc.start}: {exc.reason}); export it as UTF-8"
        ) from None


def import_orders(
    path: Path,
    bootstrap_servers: str,
    topic: str,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    client_options: Mapping[str, Any] | None = None,
    earliest_event_time: datetime = DEFAULT_EARLIEST_EVENT_TIME,
) -> ImportReport:
    """Import an ERP order export: parse, sort by event time, produce to ``topic``.

    Nothing is produced unless the whole file could be read (bad rows are skipped and
    reported; a bad header or encoding raises). Events go out in event-time order, keyed by
    ``account_id``, through `worker.adapters.kafka_clients.produce` with `PRODUCER_CONFIG`.

    Parameters
    ----------
    path
        The CSV file (format: see the module docstring).
    bootstrap_servers
        ``host:port[,host:port...]``.
    topic
        The orders topic (co-partitioned with the other input topics).
    on_progress
        Called with ``(produced, total events)`` every 1,000 events and at the end.
    dry_run
        Parse and check only; nothing is produced (``events`` is what would be).
    now
        Rows after this are ``future_date``; default: the start of the import.
    client_options
        Extra Kafka client options, e.g. SASL/SSL
        (`worker.adapters.kafka_options.kafka_client_options`).
    earliest_event_time
        Rows before this are ``date_too_old``: the worker's setting, which would refuse
        their events.

    Raises
    ------
    ImportFileError
        The file has no usable header or is not UTF-8.
    OSError
        The file cannot be read.
    kafka.errors.KafkaError
        A delivery failed (events before it may have been produced; importing the file
        again is safe, see the module docstring).
    """
    started = time.monotonic()
    plan = open_plan(path, now, earliest_event_time)
    parse_seconds = time.monotonic() - started
    produced = 0
    if len(plan) and not dry_run:
        total = len(plan)

        def progress(count: int) -> None:
            if on_progress is not None:
                on_progress(count, total)

        produced = produce(
            (("orders", event) for event in plan.events()),
            bootstrap_servers,
            topics={"orders": topic},
            on_progress=progress,
            producer_config={**PRODUCER_CONFIG, **(client_options or {})},
        )
    seconds = time.monotonic() - started
    return ImportReport(
        rows=plan.rows,
        imported=plan.imported,
        skipped=plan.skipped,
        errors_by_reason=dict(plan.errors.most_common()),
        examples=list(plan.examples),
        seconds=seconds,
        events_per_second=produced / seconds if seconds > 0 else 0.0,
        events=produced if not dry_run else len(plan),
        parse_seconds=parse_seconds,
        ignored_columns=list(plan.ignored_columns),
        dry_run=dry_run,
        earliest_event_time=earliest_event_time,
    )


def _floor_hint(floor: datetime) -> str:
    return (
        f"Rows dated before {moment_text(floor)} are refused: to import them, set "
        f"{EARLIEST_EVENT_TIME_SETTING} to an earlier date (after 1970-01-01) for this "
        "import and for the worker alike (it refuses such events too)."
    )


def format_report(report: ImportReport) -> str:
    """Plain text for the terminal.

    >>> print(format_report(ImportReport(
    ...     rows=3, imported=2, skipped=1, errors_by_reason={"bad_date": 1},
    ...     examples=[RowError(4, "bad_date", "'2025-13-01' is not an ISO date or datetime")],
    ...     seconds=0.5, events_per_second=4.0, events=2, ignored_columns=["region"])))
    Imported 2 of 3 rows as 2 events in 0.5 s (4 events/s).
    Ignored columns: region
    Skipped 1 row:
      bad_date  1
    First errors:
      line 4: bad_date: '2025-13-01' is not an ISO date or datetime
    """
    if report.dry_run:
        head = (
            f"Checked {report.rows:,} rows in {report.seconds:.1f} s: {report.imported:,} valid,"
            f" {report.events:,} events to produce (dry run)."
        )
    elif report.target == "state":
        head = (
            f"Imported {report.imported:,} of {report.rows:,} rows as {report.events:,} events"
            f" into the state of {report.accounts:,} accounts in {report.seconds:.1f} s"
            f" ({report.events_per_second:,.0f} events/s)."
        )
    else:
        head = (
            f"Imported {report.imported:,} of {report.rows:,} rows as {report.events:,} events"
            f" in {report.seconds:.1f} s ({report.events_per_second:,.0f} events/s)."
        )
    lines = [head]
    if report.target == "state":
        if report.duplicates:
            lines.append(f"{report.duplicates:,} events were applied before (skipped).")
        total = sum(report.changes.values())
        lines.append(
            f"Segment changes emitted (per account and segment, before -> after the import):"
            f" {total:,}" + (":" if total else ".")
        )
        width = max((len(key) for key in report.changes), default=0)
        lines += [f"  {key:{width}}  {count:,}" for key, count in report.changes.items()]
        if report.cutoff_moves:
            lines.append(f"New ABC cut-offs re-evaluated {report.cutoff_moves:,} other accounts.")
    if report.ignored_columns:
        lines.append(f"Ignored columns: {', '.join(report.ignored_columns)}")
    if report.skipped:
        lines.append(f"Skipped {report.skipped:,} row{'s' if report.skipped != 1 else ''}:")
        width = max(len(reason) for reason in report.errors_by_reason)
        lines += [f"  {r:{width}}  {n:,}" for r, n in report.errors_by_reason.items()]
        if "date_too_old" in report.errors_by_reason:
            lines.append(_floor_hint(report.earliest_event_time))
        lines.append("First errors:")
        lines += [f"  {error}" for error in report.examples]
    return "\n".join(lines)
