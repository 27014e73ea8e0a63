"""Which segment families an event can change, so that the others are not re-evaluated.

Pure. A family's outcome depends on the features its conditions read, the time it is
evaluated at and its held memberships. Between two evaluations of an account, time
alone changes none of its memberships before its due time (see ``worker.schedule``;
``tests/unit/test_membership.py`` checks this against daily evaluation). So when an event
arrives before the due time recorded at the account's last full evaluation, a family
whose features read none of the state the event changes ends exactly as it is, and
evaluating it would only cost time.

A cluster family (``Globals.clusters``) is assigned from its spec's feature vector, the
model snapshot and ``Globals.cluster_margin`` only, and an assignment repeated with all
three unchanged keeps the cluster it gave (``clustering.assign`` is idempotent, margin
or not). So every evaluation records the account's day and a token of each cluster
family's snapshot and margin it assigned with, ``state.evaluated = [fingerprint, due,
day, token, ...]`` (an applied event clears it, so an evaluation after an event writes
``[None, None, day, token, ...]`` until the mark). An event then skips a cluster family
when it reads none of the family's inputs, the same snapshot and margin are in use, and
it falls on the recorded day or before the first day time alone may move the family's
features (``schedule.stable_until``: the next category bucket to leave the year for
the needs shares; for anything reading ``recency_days`` the next day, so the behaviour
clustering is only skipped within the day). A mark of only ``[fingerprint, due]``
(older states) skips no cluster family.

Always evaluated: families that read the shared cut-offs (they move between events),
features that change daily with no due time (``clv_estimate``), cluster families the
record does not vouch for (another snapshot or margin, or evaluated on an earlier day
than their features allow), families reading a row table the event prunes (rows a
sweep left out of every window; ``is_member`` reads whether any points rows remain),
and every rule family of an account whose last evaluation used other definitions.

Examples
--------
>>> from datetime import UTC, datetime
>>> from worker.events import CampaignInteraction
>>> from worker.features import VOCABULARY, AccountState
>>> from worker.rules import load_definitions
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

>>> from worker.clustering import _demo_snapshot
>>> from worker.features import Globals
>>> globals = Globals(clusters={"needs_cluster": _demo_snapshot()})
>>> mark_clusters(state, globals.clusters, globals.cluster_margin)
>>> sorted(impact.unaffected(state, opened, globals))  # campaigns do not move shares
['needs_cluster']
>>> len(state.evaluated), state.evaluated[2] == state.now_day
(4, True)
>>> other = Globals(clusters={"needs_cluster": _demo_snapshot()}, cluster_margin=0.2)
>>> sorted(impact.unaffected(state, opened, other))  # not what it was assigned with
[]
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.clustering import ClusterSnapshot, FeatureSpec
from worker.events import AnyInputEvent
from worker.features import (
    DAILY_INPUT,
    FEATURE_INPUTS,
    FUNCTION_INPUTS,
    GLOBAL_INPUT,
    HORIZON_DAYS,
    NO_GLOBALS,
    TOUCHES,
    AccountState,
    Globals,
)
from worker.rules import Definitions, FamilyDefinition
from worker.schedule import DAY, TABLES, stable_until

_ALWAYS = frozenset({GLOBAL_INPUT, DAILY_INPUT})


def family_inputs(family: FamilyDefinition) -> frozenset[str]:
    """Everything the family's conditions read: state attributes, globals, daily drift."""
    inputs: set[str] = set()
    for segment in family.segments:
        for name in segment.condition.names:
            inputs |= FEATURE_INPUTS[name]
        for function in segment.condition.functions:
            inputs |= FUNCTION_INPUTS[function]
    return frozenset(inputs)


def fingerprint(definitions: Definitions) -> str:
    """A short digest of the definitions' content (not only their declared version)."""
    text = definitions.model_dump_json(exclude={"version"})
    return hashlib.sha256(f"{definitions.version}\x1f{text}".encode()).hexdigest()[:12]


def family_fingerprints(definitions: Definitions) -> dict[str, str]:
    """A short digest of each family's content: which families a new version changed."""
    return {
        family.id: hashlib.sha256(family.model_dump_json().encode()).hexdigest()[:12]
        for family in definitions.families
    }


def spec_inputs(spec: FeatureSpec) -> frozenset[str] | None:
    """Everything a cluster spec's features read; None when that includes the shared
    globals or a feature the catalogue does not declare (never skipped then).

    >>> from worker.clustering import BEHAVIOUR, NEEDS
    >>> sorted(spec_inputs(NEEDS))
    ['categories']
    >>> sorted(spec_inputs(BEHAVIOUR))
    ['campaigns', 'last_order_day', 'orders', 'points']
    """
    inputs: set[str] = set()
    for name in spec.names:
        # ``share.<category>`` is what the ``share`` function reads (see FeatureView)
        read = FUNCTION_INPUTS["share"] if name.startswith("share.") else FEATURE_INPUTS.get(name)
        if read is None or GLOBAL_INPUT in read:
            return None
        inputs |= read
    return frozenset(inputs)


@dataclass(frozen=True)
class ClusterPlan:
    """What deciding a cluster family's skip needs of its snapshot, computed once per snapshot.

    ``token``: a digest of the family, the snapshot's JSON and the margin (what an
    assignment depends on besides the features); ``inputs``: see :func:`spec_inputs`;
    ``untouched_by``: the event types that change none of them.
    """

    token: str
    inputs: frozenset[str] | None
    untouched_by: frozenset[type] = frozenset()


_PLANS: dict[tuple[str, int, float], tuple[ClusterSnapshot, ClusterPlan]] = {}


def cluster_plan(family: str, snapshot: ClusterSnapshot, margin: float) -> ClusterPlan:
    """The family's :class:`ClusterPlan`, cached by the snapshot object's identity.

    Hashing a snapshot's JSON on every event would cost more than assigning it; a worker
    keeps one snapshot object per stored model (``StateStore``), so this is once per model.
    """
    key = (family, id(snapshot), margin)
    cached = _PLANS.get(key)
    if cached is not None and cached[0] is snapshot:
        return cached[1]
    if len(_PLANS) >= 64:
        _PLANS.clear()
    text = f"{family}\x1f{margin!r}\x1f{snapshot.to_json()}"
    digest = hashlib.blake2b(text.encode(), digest_size=6).digest()
    inputs = spec_inputs(snapshot.spec)
    untouched_by = frozenset(
        event_type
        for event_type, touched in TOUCHES.items()
        if inputs is not None and not inputs & touched
    )
    plan = ClusterPlan(base64.urlsafe_b64encode(digest).decode(), inputs, untouched_by)
    _PLANS[key] = (snapshot, plan)
    return plan


def mark_clusters(
    state: AccountState, clusters: Mapping[str, ClusterSnapshot], margin: float
) -> None:
    """Record that each family of ``clusters`` was just assigned with that snapshot (or
    is known to keep the cluster such an assignment gives) on the account's own day.

    Replaces the record of an earlier evaluation: a family missing here is not vouched for.
    """
    tokens = []
    for family, snapshot in clusters.items():
        plan = cluster_plan(family, snapshot, margin)
        if plan.inputs is not None:
            tokens.append(plan.token)
    head = state.evaluated[:2] if state.evaluated else [None, None]
    if tokens:
        state.evaluated = [*head, state.now_day, *tokens]
    else:
        state.evaluated = head if head[0] is not None else []


class Impact:
    """Decides, per event, which families keep their memberships without evaluation."""

    def __init__(self, definitions: Definitions) -> None:
        self.fingerprint = fingerprint(definitions)
        self.family_fingerprints = family_fingerprints(definitions)
        self.inputs = {family.id: family_inputs(family) for family in definitions.families}
        self._unaffected = {
            event_type: frozenset(
                family
                for family, inputs in self.inputs.items()
                if not inputs & touched and not inputs & _ALWAYS
            )
            for event_type, touched in TOUCHES.items()
        }

    def mark(self, state: AccountState, due: float | None) -> None:
        """Record that every family of ``state`` was just evaluated; ``due``: its next due
        time. Keeps the cluster record that evaluation wrote (:func:`mark_clusters`)."""
        state.evaluated = [self.fingerprint, due, *state.evaluated[2:]]

    def is_marked(self, state: AccountState) -> bool:
        return bool(state.evaluated) and state.evaluated[0] == self.fingerprint

    def unaffected(
        self, state: AccountState, event: AnyInputEvent, globals: Globals = NO_GLOBALS
    ) -> frozenset[str]:
        """Families ``event`` cannot change; ask before applying it to ``state``.

        ``globals``: what the evaluation after the event will use; its cluster families
        are skipped when the record of the account's last evaluation vouches for them.
        """
        moment = event.occurred_at.timestamp()
        families: frozenset[str] = frozenset()
        if self.is_marked(state) and not _due(state, moment):
            families = self._unaffected.get(type(event), frozenset())
            pruned = _pruned(state, moment)
            if pruned and families:
                families = frozenset(f for f in families if not self.inputs[f] & pruned)
        if len(state.evaluated) < 4 or not globals.clusters:
            return families
        return families | _unmoved_clusters(state, event, moment, globals)

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
            if before.get(family) == self.family_fingerprints[family] and not inputs & _ALWAYS
        )

    def redefined(
        self, state: AccountState, previous: Mapping[str, Mapping[str, str]]
    ) -> frozenset[str] | None:
        """Rule families these definitions define otherwise than the definitions the
        account was last evaluated with: changed, added and removed ones. None when that
        is not known (no evaluation mark, or its definitions were not recorded).

        ``previous`` as for :meth:`unchanged`. What an evaluation changes in the other
        families (and in cluster families) is what time or a newer model made pending,
        not the new definitions (``segworker recompute`` reports the two apart).
        """
        before = previous.get(state.evaluated[0]) if state.evaluated else None
        if before is None:
            return None
        now = self.family_fingerprints
        return frozenset(f for f in now if before.get(f) != now[f]) | frozenset(
            f for f in before if f not in now
        )


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


def _unmoved_clusters(
    state: AccountState, event: AnyInputEvent, moment: float, globals: Globals
) -> frozenset[str]:
    """Cluster families whose assignment after ``event`` is the recorded one: the event
    reads none of their inputs, their snapshot and margin are the ones recorded, and
    it is evaluated on the recorded day or before the first one time may move their
    features (computed from ``state`` as it was recorded: no event since, same clock)."""
    recorded = state.evaluated[2]
    if recorded != state.now_day:
        return frozenset()
    tokens = state.evaluated[3:]
    event_type = type(event)
    later = max(state.clock, moment) >= (recorded + 1) * DAY
    unmoved = []
    for family, snapshot in globals.clusters.items():
        if snapshot is None:
            continue
        plan = cluster_plan(family, snapshot, globals.cluster_margin)
        if event_type not in plan.untouched_by or plan.token not in tokens:
            continue
        if later and plan.inputs is not None:
            until = stable_until(state, plan.inputs)
            if until is not None and max(state.clock, moment) >= until * DAY:
                continue
        unmoved.append(family)
    return frozenset(unmoved)
