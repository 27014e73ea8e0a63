"""Folding an account's imported history into its state, emitting only the net change.

Streaming a two-year export through the worker evaluates every account at each of its
events and emits every historical entry and exit, which is slow (an evaluation costs
far more than applying an event) and useless to a campaign tool: what it needs is where
each account stands once its history is in. ``AccountFold`` applies an account's
imported events in event-time order (``features.apply``, as the worker does) and
evaluates each family only where its answer at the end can still depend on it
(``memory_windows``): a membership depends on earlier evaluations only through its
holds (``enter_after``, ``min_dwell``, ``exit_grace``). Inside a family's window it is
evaluated as the worker would: where the window opens, at each event that touches what
it reads, and at each moment between them at which time alone may change it
(``Schedule.next_due``, what the worker's time sweep visits). At the end of the import
every family is evaluated once more, with the shared facts (ABC cut-offs, cluster
models) the import leads to. The result is what the worker would hold had its sweep
visited the account at each of its due times (``tests/unit/core/test_backfill.py``).

Of the changes along the way it returns, per segment, the last one, and only where it
leaves the account on the other side of the segment than before the import. Their
causes are import event ids or the import's own cause (``imp-…``), so ``origin`` is
``import`` and the ids are the same when the same file is imported again; none is live.

Pure; ``worker.runtime.history.HistoryWriter`` finishes the folds inside the store's
atomic update, so a running worker and an import write each account in turn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
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
    evaluated (see the module docstring):

    - none (0) for a family without holds: its answer at the end follows from the
      features then, so the evaluation at the end is all it needs;
    - all of the history (``inf``) for one whose holds chain back to the first event
      (``min_dwell``);
    - for the others one shared window: twice the longest of their chains of holds,
      plus a day. Shared, because where a window opens each of its families is
      evaluated once, and one such evaluation is cheaper than one per family.

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
    ...   profiled:
    ...     exclusive: true
    ...     segments:
    ...       - {id: known, when: "orders_90d >= 1", enter_after: 1h}
    ... ''', VOCABULARY)
    >>> {f: w / DAY for f, w in memory_windows(worker_families(definitions)).items()}
    {'program': 33.0, 'size': inf, 'region': 0.0, 'profiled': 33.0}
    """
    memory = {family.id: family.memory_seconds() for family in families.bind(shared)}
    bounded = [seconds for seconds in memory.values() if 0 < seconds < math.inf]
    shared_window = 2 * max(bounded) + DAY if bounded else 0.0
    return {
        family: seconds if seconds in (0, math.inf) else shared_window
        for family, seconds in memory.items()
    }


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
    fold = AccountFold(state, families, end, cause, windows, impact, schedule)
    fold.apply(events, globals)
    return fold.finish(globals)


class AccountFold:
    """One account's fold in two steps (``fold_history`` does both).

    ``apply`` folds the events in, evaluating the families whose window is open, up to
    the end of the import; ``finish`` evaluates every family at the end and returns the
    net changes. Only ``finish`` reads the shared facts a family without holds depends on
    (ABC cut-offs, cluster models: their windows are empty), so an import can apply
    every account's history, compute the cut-offs it leads to, and then finish.
    """

    def __init__(
        self,
        state: AccountState,
        families: Families,
        end: float,
        cause: str,
        windows: Mapping[str, float],
        impact: Impact | None = None,
        schedule: Schedule | None = None,
    ) -> None:
        self.state, self.families, self.end, self.cause = state, families, end, cause
        self.impact = impact or Impact(families)
        self.schedule = schedule or Schedule(families)
        self.globals = NO_GLOBALS
        self.before = {(f, s) for f, segments in state.memberships.items() for s in segments}
        self.folded = Folded()
        #: per segment, its last change so far (the dict keeps the order of last changes)
        self.last: dict[tuple[str, str], SegmentChanged] = {}
        #: families evaluated since their window opened
        self.started: set[str] = set()
        #: ``(families, their next due time)`` while neither an evaluation nor an event
        #: touching what they read has changed it (``next_due`` is a third of the cost)
        self.due: tuple[frozenset[str], float | None] | None = None
        #: when each family's window opens, latest first
        self.opens = sorted(((end - w, family) for family, w in windows.items()), reverse=True)
        self.window_start = min((moment for moment, _ in self.opens), default=end)
        self.openings = sorted(start for start, _ in self.opens if start > self.window_start)

    def apply(self, events: Iterable[AnyInputEvent], globals: Globals = NO_GLOBALS) -> None:
        """Fold ``events`` (in event-time order) in, up to the end of the import."""
        state, folded, cause, window_start = self.state, self.folded, self.cause, self.window_start
        self.globals = globals
        evaluating = False
        for event in events:
            moment = event.occurred_at.timestamp()
            if moment >= window_start and not evaluating:
                evaluating = True
                if folded.applied:
                    self.evaluate_at(window_start, _at(cause, window_start))
            if evaluating and state.clock:  # the account exists: the sweep would visit it
                self.catch_up(moment)
            untouched = self.impact.untouched_by(state, event) if evaluating else frozenset()
            if not features.apply(state, event):
                folded.duplicates += 1
                continue
            folded.applied += 1
            folded.clock = max(folded.clock, moment)
            if evaluating:
                if self.due is not None and not self.due[0] <= untouched:
                    self.due = None
                self.evaluate_at(state.clock, event.event_id, untouched)
        if folded.applied:
            if not evaluating:
                self.evaluate_at(window_start, _at(cause, window_start))
            self.catch_up(self.end)

    def finish(self, globals: Globals = NO_GLOBALS) -> Folded:
        """Evaluate every family at the end with ``globals``; the net changes."""
        state, folded = self.state, self.folded
        if folded.applied:
            at = max(self.end, state.clock)
            self.keep(evaluate(state, self.families, self.cause, globals, at=at))
        folded.changes = [
            change
            for key, change in self.last.items()
            if (change.change == "entered") != (key in self.before)
        ]
        return folded

    def open_at(self, moment: float) -> frozenset[str]:
        return frozenset(family for start, family in self.opens if moment >= start)

    def keep(self, changes: Iterable[SegmentChanged]) -> None:
        self.folded.evaluations += 1
        for change in changes:
            key = (change.family, change.segment_id)
            self.last.pop(key, None)  # re-inserted: last in the order of last changes
            self.last[key] = change

    def evaluate_at(
        self, moment: float, cause: str, untouched: frozenset[str] = frozenset()
    ) -> None:
        only = self.open_at(moment)
        skip = untouched & self.started  # evaluated once before it can be skipped
        if only - skip:
            self.keep(
                evaluate(
                    self.state, self.families, cause, self.globals, at=moment, only=only, skip=skip
                )
            )
            self.started.update(only)
            self.due = None
        else:
            self.state.clock = max(self.state.clock, moment)

    def next_due(self) -> float | None:
        only = self.open_at(self.state.clock)
        if self.due is None or self.due[0] != only:
            self.due = (only, self.schedule.next_due(self.state, self.globals, only=only))
        return self.due[1]

    def catch_up(self, until: float) -> None:
        """Evaluate at each moment before ``until`` at which time alone may change a
        membership, as the worker's sweep would, and where a family's window opens (a
        family evaluated for the first time there starts its holds)."""
        openings = self.openings
        while True:
            due = self.next_due()
            while openings and openings[0] <= self.state.clock:
                openings.pop(0)
            if openings and (due is None or openings[0] < due):
                due = openings[0]
            if due is None or due >= until:
                return
            self.evaluate_at(due, _at(self.cause, due))


def _at(cause: str, moment: float) -> str:
    """The cause of an evaluation at ``moment`` within an import (a stable id part)."""
    return f"{cause}@{epoch_text(moment)}"
