"""Which segment families an event can change, so that the others are not re-evaluated.

Pure. A family's outcome depends on the features its conditions read, the time it is
evaluated at and its held memberships. Between two evaluations of an account, time
alone changes none of its memberships before its due time (see ``worker.core.schedule``;
``tests/unit/core/test_membership.py`` checks this against daily evaluation). So when an event
arrives before the due time recorded at the account's last full evaluation, a family
whose features read none of the state the event changes ends exactly as it is, and
evaluating it would only cost time.

A family that evaluates with a shared model (a cluster family: its spec's feature
vector, the model and the margin, ``Family.model_token``) gives the same answer again
while all three stay (``clustering.assign`` is idempotent, margin or not). So every
evaluation records the account's day and the model token of each such family it
evaluated with, ``state.evaluated = [fingerprint, due, day, token, ...]`` (an applied
event clears it, so an evaluation after an event writes ``[None, None, day, token, ...]``
until the mark). An event then skips such a family when it reads none of the family's
inputs, the same model token is in use, and it falls on the recorded day or before the
first day time alone may move the family's features (``schedule.stable_until``: the
next category bucket to leave the year for the needs shares; for anything reading
``recency_days`` the next day, so the behaviour clustering is only skipped within the
day). A mark of only ``[fingerprint, due]`` (older states) skips no such family.

Always evaluated: families that read the shared cut-offs (they move between events),
features that change daily with no due time (``clv_estimate``), cluster families the
record does not vouch for (another snapshot or margin, or evaluated on an earlier day
than their features allow), families reading a row table the event prunes (rows a
sweep left out of every window; ``is_member`` reads whether any points rows remain),
and every rule family of an account whose last evaluation used other definitions.

Examples
--------
>>> from datetime import UTC, datetime
>>> from worker.core.events import CampaignInteraction
>>> from worker.core.features import VOCABULARY, AccountState
>>> from worker.core.definitions import load_definitions
>>> definitions = load_definitions('''
... version: "1"
... families:
...   program:
...     exclusive: false
...     segments: [{id: active, when: points_earned_90d > 0}]
...   engagement:
...     exclusive: false
...     segments: [{id: engaged, when: campaigns_opened_90d > 0}]
... ''', VOCABULARY)
>>> impact = Impact(definitions)
>>> state = AccountState("ACME", clock=datetime(2026, 3, 1, tzinfo=UTC).timestamp())
>>> impact.mark(state, due=datetime(2026, 3, 20, tzinfo=UTC).timestamp())
>>> opened = CampaignInteraction(event_id="e1", account_id="ACME", kind="opened",
...     campaign_id="c1", occurred_at=datetime(2026, 3, 10, tzinfo=UTC))
>>> sorted(impact.unaffected(state, opened))
['program']
>>> impact.mark(state, due=datetime(2026, 3, 5, tzinfo=UTC).timestamp())  # due before it
>>> sorted(impact.unaffected(state, opened))
[]

A cluster family of needs shares, evaluated on 1 March with the model in use:

>>> from worker.core.clustering import _demo_snapshot
>>> from worker.core.features import Globals
>>> globals = Globals(clusters={"needs_cluster": _demo_snapshot()})
>>> impact.mark_models(state, globals)
>>> sorted(impact.unaffected(state, opened, globals))  # campaigns do not move shares
['needs_cluster']
>>> len(state.evaluated), state.evaluated[2] == state.now_day
(4, True)
>>> other = Globals(clusters={"needs_cluster": _demo_snapshot()}, cluster_margin=0.2)
>>> sorted(impact.unaffected(state, opened, other))  # not what it was assigned with
[]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from worker.core.definitions import Definitions
from worker.core.events import AnyInputEvent
from worker.core.families import Families, Family, as_families
from worker.core.features import (
    DAILY_INPUT,
    GLOBAL_INPUT,
    HORIZON_DAYS,
    NO_GLOBALS,
    TOUCHES,
    AccountState,
    Globals,
)
from worker.core.schedule import DAY, TABLES, stable_until

_ALWAYS = frozenset({GLOBAL_INPUT, DAILY_INPUT})


def untouched_by(inputs: frozenset[str] | None) -> frozenset[type]:
    """The event types that change none of ``inputs`` (None: unknown inputs, all do)."""
    if inputs is None:
        return frozenset()
    return frozenset(event for event, touched in TOUCHES.items() if not inputs & touched)


class Impact:
    """Decides, per event, which families keep their memberships without evaluation."""

    def __init__(self, families: Families | Definitions) -> None:
        self.families = as_families(families)
        self.fingerprint = self.families.fingerprint()
        self.family_fingerprints = self.families.family_fingerprints()
        static = self.families.static()
        self.inputs = {family.id: family.inputs() for family in static}
        self._unaffected = {
            event_type: frozenset(
                family
                for family, inputs in self.inputs.items()
                if inputs is not None and not inputs & touched and not inputs & _ALWAYS
            )
            for event_type, touched in TOUCHES.items()
        }
        #: per model family object: the event types that leave its inputs alone
        self._untouched: dict[int, tuple[Family, frozenset[type]]] = {}

    def mark(self, state: AccountState, due: float | None) -> None:
        """Record that every family of ``state`` was just evaluated; ``due``: its next due
        time. Keeps the model record that evaluation wrote (:meth:`mark_models`)."""
        state.evaluated = [self.fingerprint, due, *state.evaluated[2:]]

    def mark_models(self, state: AccountState, evaluated: Iterable[Family] | Globals) -> None:
        """Record that each of the model families ``evaluated`` (all those bound to shared
        facts, when given those) was just evaluated, or is known to give the answer such
        an evaluation gives, on the account's own day.

        Replaces the record of an earlier evaluation: a family missing here is not vouched
        for.
        """
        if isinstance(evaluated, Globals):
            evaluated = self.families.bind(evaluated)
        tokens = [
            family.model_token
            for family in evaluated
            if family.model_token is not None and family.inputs() is not None
        ]
        head = state.evaluated[:2] if state.evaluated else [None, None]
        if tokens:
            state.evaluated = [*head, state.now_day, *tokens]
        else:
            state.evaluated = head if head[0] is not None else []

    def is_marked(self, state: AccountState) -> bool:
        return bool(state.evaluated) and state.evaluated[0] == self.fingerprint

    def unaffected(
        self, state: AccountState, event: AnyInputEvent, globals: Globals = NO_GLOBALS
    ) -> frozenset[str]:
        """Families ``event`` cannot change; ask before applying it to ``state``.

        ``globals``: what the evaluation after the event will use; its model families
        are skipped when the record of the account's last evaluation vouches for them.
        """
        moment = event.occurred_at.timestamp()
        families: frozenset[str] = frozenset()
        if self.is_marked(state) and not _due(state, moment):
            families = self.untouched_by(state, event)
        if len(state.evaluated) < 4:
            return families
        return families | self._unmoved_models(state, event, moment, globals)

    def untouched_by(self, state: AccountState, event: AnyInputEvent) -> frozenset[str]:
        """Families whose inputs ``event`` leaves as they are (ask before applying it).

        Unlike :meth:`unaffected` this does not vouch for time: the caller has just
        evaluated the account at every due time up to the event
        (``worker.core.backfill``).
        """
        families = self._unaffected.get(type(event), frozenset())
        pruned = _pruned(state, event.occurred_at.timestamp())
        if pruned and families:
            families = frozenset(
                f for f in families if not (self.inputs[f] or frozenset()) & pruned
            )
        return families

    def unchanged(
        self, state: AccountState, at: float | None, previous: Mapping[str, Mapping[str, str]]
    ) -> frozenset[str]:
        """Families a re-evaluation at ``at`` (None: the account's own clock) with these
        definitions cannot change.

        ``previous`` maps a definitions fingerprint to its families' fingerprints (what
        ``family_fingerprints`` gave for the definitions the account was evaluated with).
        A family defined as it was, whose inputs are the account's own state only, keeps
        its memberships while the account's due time has not come.
        """
        if not state.evaluated:
            return frozenset()
        before = previous.get(state.evaluated[0])
        if before is None or _due(state, state.clock if at is None else at):
            return frozenset()
        return frozenset(
            family
            for family, inputs in self.inputs.items()
            if before.get(family) == self.family_fingerprints[family]
            and inputs is not None
            and not inputs & _ALWAYS
        )

    def redefined(
        self, state: AccountState, previous: Mapping[str, Mapping[str, str]]
    ) -> frozenset[str] | None:
        """Families these definitions define otherwise than the definitions the account
        was last evaluated with: changed, added and removed ones. None when that is not
        known (no evaluation mark, or its definitions were not recorded).

        ``previous`` as for :meth:`unchanged`. What an evaluation changes in the other
        families (and in model families) is what time or a newer model made pending,
        not the new definitions (``segworker recompute`` reports the two apart).
        """
        before = previous.get(state.evaluated[0]) if state.evaluated else None
        if before is None:
            return None
        now = self.family_fingerprints
        return frozenset(f for f in now if before.get(f) != now[f]) | frozenset(
            f for f in before if f not in now
        )

    def _unmoved_models(
        self, state: AccountState, event: AnyInputEvent, moment: float, shared: Globals
    ) -> frozenset[str]:
        """Model families whose answer after ``event`` is the recorded one: the event
        reads none of their inputs, their model token is the recorded one, and it is
        evaluated on the recorded day or before the first one time may move their
        features (computed from ``state`` as it was recorded: no event since, same
        clock)."""
        recorded = state.evaluated[2]
        if recorded != state.now_day:
            return frozenset()
        tokens = state.evaluated[3:]
        event_type = type(event)
        later = max(state.clock, moment) >= (recorded + 1) * DAY
        unmoved = []
        for family in self.families.bind(shared):
            token = family.model_token
            if token is None or token not in tokens:
                continue
            if event_type not in self._untouched_by(family):
                continue
            inputs = family.inputs()
            if later and inputs is not None:
                until = stable_until(state, inputs)
                if until is not None and max(state.clock, moment) >= until * DAY:
                    continue
            unmoved.append(family.id)
        return frozenset(unmoved)

    def _untouched_by(self, family: Family) -> frozenset[type]:
        cached = self._untouched.get(id(family))
        if cached is None or cached[0] is not family:
            if len(self._untouched) >= 64:
                self._untouched.clear()
            cached = self._untouched[id(family)] = (family, untouched_by(family.inputs()))
        return cached[1]


def _due(state: AccountState, moment: float) -> bool:
    """Whether time alone may have changed a membership of the marked ``state`` by
    ``moment`` (its clock at the latest): the due time of its last full evaluation."""
    due: Any = state.evaluated[1]
    return due is not None and max(state.clock, moment) >= due


def _pruned(state: AccountState, moment: float) -> frozenset[str]:
    """The row tables whose oldest row applying an event at ``moment`` prunes.

    Out of every window, so no windowed sum changes, but ``is_member`` reads whether
    there are any points rows at all. Only a clock moved without an event (a sweep)
    leaves such rows past the account's due time: the due time covers every row
    that is still in a window when the account is marked.
    """
    oldest = int(max(state.clock, moment) // DAY) - HORIZON_DAYS
    return frozenset(
        table for table in TABLES if (rows := getattr(state, table)) and rows[0][0] <= oldest
    )
