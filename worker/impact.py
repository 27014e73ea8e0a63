"""Which segment families an event can change, so that the others are not re-evaluated.

Pure. A family's outcome depends on the features its conditions read, the time it is
evaluated at and its held memberships. Between two evaluations of an account, time
alone changes none of its memberships before its due time (see ``worker.schedule``;
``tests/unit/test_membership.py`` checks this against daily evaluation). So when an event
arrives before the due time recorded at the account's last full evaluation, a family
whose features read none of the state the event changes ends exactly as it is, and
evaluating it would only cost time.

Always evaluated: families that read the shared cut-offs (they move between events),
features that change daily with no due time (``clv_estimate``), cluster families,
and every family of an account whose last evaluation used other definitions.

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
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from worker.events import AnyInputEvent
from worker.features import (
    DAILY_INPUT,
    FEATURE_INPUTS,
    FUNCTION_INPUTS,
    GLOBAL_INPUT,
    TOUCHES,
    AccountState,
)
from worker.rules import Definitions, FamilyDefinition

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
        """Record that every family of ``state`` was just evaluated; ``due``: its next due time."""
        state.evaluated = [self.fingerprint, due]

    def is_marked(self, state: AccountState) -> bool:
        return bool(state.evaluated) and state.evaluated[0] == self.fingerprint

    def unaffected(self, state: AccountState, event: AnyInputEvent) -> frozenset[str]:
        """Families ``event`` cannot change; ask before applying it to ``state``."""
        if not self.is_marked(state) or _due(state, event.occurred_at.timestamp()):
            return frozenset()
        return self._unaffected.get(type(event), frozenset())

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


def _due(state: AccountState, moment: float) -> bool:
    """Whether time alone may have changed a membership of the marked ``state`` by
    ``moment`` (its clock at the latest): the due time of its last full evaluation."""
    due: Any = state.evaluated[1]
    return due is not None and max(state.clock, moment) >= due
