"""Folding an account's imported history into its state, emitting only the net change.

Streaming a two-year export through the worker evaluates every account at each of its
events and emits every historical entry and exit, which is slow (an evaluation costs
far more than applying an event) and useless to a campaign tool: what it needs is where
each account stands once its history is in. ``fold_history`` applies an account's
imported events in event-time order and evaluates where evaluations matter:

- events older than the *memory window* before the end of the import are applied to
  the features only. A membership can depend on earlier evaluations only through its
  holds (``enter_after``, ``min_dwell``, ``exit_grace``), so the families' longest chain
  of holds (``Family.memory_seconds``, doubled: a hold in one segment of an exclusive
  family can delay the next segment's) bounds how far back the evaluation history
  matters;
- from the start of that window on, the account is evaluated as the worker would:
  once at the window's start, at each event (``processing.process_event``: the same
  features, conditions, hysteresis and ``enter_after``), and at each moment between
  them at which time alone may change a membership (``Schedule.next_due``, what the
  worker's time sweep visits), up to the end of the import, where it is evaluated once
  more.

Of the changes along the way it returns, per segment, the last one, and only where it
leaves the account on the other side of the segment than before the import. Their
causes are import event ids or the import's own cause (``imp-…``), so ``origin`` is
``import`` and the ids are the same when the same file is imported again; none is live.

Pure; ``worker.runtime.processor.BatchProcessor.import_history`` runs it inside the
store's atomic update, so a running worker and an import write each account in turn.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field

from worker.core import features
from worker.core.events import AnyInputEvent, SegmentChanged, epoch_text
from worker.core.families import Families
from worker.core.features import NO_GLOBALS, AccountState, Globals
from worker.core.impact import Impact
from worker.core.processing import evaluate
from worker.core.schedule import Schedule

DAY = 86_400.0


def memory_windows(families: Families, shared: Globals = NO_GLOBALS) -> dict[str, float]:
    """Per family, the seconds before the end of an import from which its answer is
    evaluated: twice its longest chain of holds, plus a day (see the module docstring).

    >>> from worker.core.definitions import load_definitions
    >>> from worker.core.families import worker_families
    >>> from worker.core.features import VOCABULARY
    >>> definitions = load_definitions('''
    ... version: "1"
    ... families:
    ...   program:
    ...     exclusive: true
    ...     segments:
    ...       - {id: loyal, when: "orders_90d >= 3", enter_after: 2d, exit_grace: 14d}
    ...   size:
    ...     exclusive: true
    ...     segments:
    ...       - {id: big, when: "orders_90d >= 30", min_dwell: 7d}
    ...   region:
    ...     exclusive: true
    ...     segments:
    ...       - {id: emea, when: "orders_90d >= 0"}
    ... ''', VOCABULARY)
    >>> {f: w / DAY for f, w in memory_windows(worker_families(definitions)).items()}
    {'program': 33.0, 'size': inf, 'region': 1.0}
    """
    return {family.id: 2 * family.memory_seconds() + DAY for family in families.bind(shared)}


@dataclass
class Folded:
    """What folding one account's history did: events applied, events skipped as
    already applied (a re-import), evaluations run, and the net membership changes."""

    applied: int = 0
    duplicates: int = 0
    evaluations: int = 0
    changes: list[SegmentChanged] = field(default_factory=list)
    #: the largest event time applied (0.0: none)
    clock: float = 0.0


def fold_history(
    state: AccountState,
    events: Iterable[AnyInputEvent],
    families: Families,
    *,
    end: float,
    cause: str,
    windows: Mapping[str, float],
    globals: Globals = NO_GLOBALS,
    impact: Impact | None = None,
    schedule: Schedule | None = None,
) -> Folded:
    """Apply ``events`` (one account's, in event-time order) to ``state``; return the
    net changes of its memberships.

    ``end``: the stream time the import reaches (epoch seconds: its largest event time,
    or the store's stream time if later). ``cause``: the import's own cause (``imp-``
    and a digest of the file), for the evaluations at moments without an event.
    ``windows``: per family, seconds before ``end`` from which it is evaluated
    (``memory_windows``); at ``end`` every family is. Nothing is evaluated when no
    event was applied.
    """
    schedule = schedule or Schedule(families)
    before = {
        (family, segment) for family, segments in state.memberships.items() for segment in segments
    }
    folded = Folded()
    last: dict[tuple[str, str], SegmentChanged] = {}
    # When each family's window opens, latest first: the families evaluated at a moment
    # are a prefix of this list.
    opens = sorted(((end - window, family) for family, window in windows.items()), reverse=True)
    window_start = min((moment for moment, _ in opens), default=end)
    evaluating = False

    def open_at(moment: float) -> frozenset[str]:
        return frozenset(family for start, family in opens if moment >= start)

    def keep(changes: Iterable[SegmentChanged]) -> None:
        folded.evaluations += 1
        for change in changes:
            key = (change.family, change.segment_id)
            last.pop(key, None)  # re-inserted: the dict keeps the order of last changes
            last[key] = change

    def evaluate_at(moment: float, cause: str, skip: Container[str] = ()) -> None:
        if only := open_at(moment):
            keep(evaluate(state, families, cause, globals, at=moment, only=only, skip=skip))
        else:
            state.clock = max(state.clock, moment)

    openings = sorted(start for start, _ in opens if start > window_start)

    def catch_up(until: float) -> None:
        """Evaluate at each moment before ``until`` at which time alone may change a
        membership, as the worker's sweep would, and where a family's window opens (a
        family evaluated for the first time there starts its holds)."""
        while True:
            due = schedule.next_due(state, globals, only=open_at(state.clock))
            while openings and openings[0] <= state.clock:
                openings.pop(0)
            if openings and (due is None or openings[0] < due):
                due = openings[0]
            if due is None or due >= until:
                return
            evaluate_at(due, _at(cause, due))

    for event in events:
        moment = event.occurred_at.timestamp()
        if moment >= window_start and not evaluating:
            evaluating = True
            if folded.applied:
                evaluate_at(window_start, _at(cause, window_start))
        if evaluating:
            catch_up(moment)
        skip = impact.unaffected(state, event, globals) if evaluating and impact else ()
        if not features.apply(state, event):
            folded.duplicates += 1
            continue
        folded.applied += 1
        folded.clock = max(folded.clock, moment)
        if evaluating:
            evaluate_at(state.clock, event.event_id, skip)
    if folded.applied:
        if not evaluating:
            evaluate_at(window_start, _at(cause, window_start))
        catch_up(end)
        keep(evaluate(state, families, cause, globals, at=max(end, state.clock)))
    folded.changes = [
        change for key, change in last.items() if (change.change == "entered") != (key in before)
    ]
    return folded


def _at(cause: str, moment: float) -> str:
    """The cause of an evaluation at ``moment`` within an import (a stable id part)."""
    return f"{cause}@{epoch_text(moment)}"
