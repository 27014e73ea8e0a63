"""Rule families: segments defined by conditions in the definitions file ("soft" segments).

An exclusive family places an account in the first segment whose condition holds, a
non-exclusive one in every such segment; ``min_dwell``/``exit_grace`` hold memberships
(``worker.core.membership``). Time alone changes a rule family's answer where a
condition compares a days-since feature with a constant, and where a hold ends.

Examples
--------
>>> from worker.core.definitions import load_definitions
>>> from worker.core.features import VOCABULARY, Globals
>>> definitions = load_definitions('''
... version: "1"
... families:
...   activity: {exclusive: false, segments: [{id: recent, when: recency_days <= 30}]}
... ''', VOCABULARY)
>>> (family,) = RuleFamilies(definitions).bind(Globals())
>>> family.id, sorted(family.inputs()), family.segments()
('activity', ['last_order_day'], [('recent', 'recency_days <= 30')])
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from worker.core import membership
from worker.core.definitions import Definitions, FamilyDefinition
from worker.core.events import SegmentChanged
from worker.core.families.base import Family, FamilyKind
from worker.core.features import (
    FEATURE_INPUTS,
    FUNCTION_INPUTS,
    AccountState,
    FeatureView,
    Globals,
)
from worker.core.features.catalogue import DAYS_SINCE
from worker.core.membership import Context, Membership
from worker.core.rules import Match, evaluate_family

DAY = 86400


class RuleFamily(Family):
    """One family of the definitions."""

    def __init__(self, definition: FamilyDefinition) -> None:
        self.definition = definition
        self.id = definition.id
        self._inputs = family_inputs(definition)
        #: days-since attribute -> the whole-day constants its features are compared with
        self._crossings = {
            attribute: days
            for feature, attribute in DAYS_SINCE.items()
            if (days := constants_compared_with(definition, feature))
        }

    def __repr__(self) -> str:
        return f"RuleFamily({self.id!r})"

    def evaluate(
        self, current: Mapping[str, Membership], view: FeatureView, context: Context
    ) -> tuple[dict[str, Membership], list[SegmentChanged]]:
        matches = evaluate_family(self.definition, view)
        pending = view.state.pending.get(self.id, {})
        result = membership.diff_family(self.definition, current, matches, view, context, pending)
        # Entries waiting out ``enter_after`` are the account's, kept beside its memberships.
        if pending:
            view.state.pending[self.id] = pending
        else:
            view.state.pending.pop(self.id, None)
        return result

    def explain(self, segment_id: str, entry: Membership, view: FeatureView) -> str:
        family = self.definition
        try:
            segment = family.segment(segment_id)
        except KeyError:
            return f"segment {family.id}/{segment_id} is no longer defined"
        match = Match(segment_id, segment.when, condition=segment.condition, features=view)
        if "outside_since" in entry:
            since = datetime.fromtimestamp(entry["outside_since"], UTC).date().isoformat()
            # Not "no longer matching since": in an exclusive family the hold may have begun
            # when an earlier segment started to match, while this one still did.
            status = f"held (min_dwell/exit_grace) since {since}"
        else:
            status = "matched when last evaluated"
        if not segment.condition.evaluate(view):
            return f"{status}; no longer matches: {match.reason()}"
        first = next(iter(evaluate_family(family, view)), None) if family.exclusive else None
        if first is None or first.segment_id == segment_id:
            return match.reason()
        return (
            f"{status}; {membership.comes_first(first)}; "
            f"this segment's own condition still holds: {match.reason()}"
        )

    def segments(self) -> list[tuple[str, str]]:
        return [(s.id, s.description or s.when) for s in self.definition.segments]

    def inputs(self) -> frozenset[str]:
        return self._inputs

    def fingerprint(self) -> str:
        return hashlib.sha256(self.definition.model_dump_json().encode()).hexdigest()[:12]

    def memory_seconds(self) -> float:
        # A min_dwell hold ends a fixed time after the entry, and the entry may itself
        # have waited for an earlier hold to end: a chain that can go back to the first
        # event (an account re-qualifying within each dwell). enter_after and exit_grace
        # alone wait for the account's own conditions, which reset them.
        if any(segment.min_dwell is not None for segment in self.definition.segments):
            return math.inf
        return max(
            sum(
                hold.total_seconds()
                for hold in (segment.enter_after, segment.exit_grace)
                if hold is not None
            )
            for segment in self.definition.segments
        )

    def next_due(self, state: AccountState, view: FeatureView) -> float | None:
        """The day a days-since feature crosses a constant of a condition (the day it
        reaches it and the day after: covers <, <=, >, >= and ==), or a hold ends."""
        moments = [
            float(day * DAY)
            for attribute, constants in self._crossings.items()
            if (start := getattr(state, attribute)) is not None
            for constant in constants
            for day in (start + constant, start + constant + 1)
        ]
        moments += membership.due_times(
            self.definition, state.memberships.get(self.id, {}), state.pending.get(self.id)
        )
        future = [moment for moment in moments if moment > state.clock]
        return min(future) if future else None


class RuleFamilies(FamilyKind):
    """The rule families of one definitions version, in file order."""

    def __init__(self, definitions: Definitions) -> None:
        self.definitions = definitions
        self._families = tuple(RuleFamily(family) for family in definitions.families)

    def bind(self, shared: Globals) -> Sequence[Family]:
        return self._families

    def ids(self, shared: Globals) -> tuple[str, ...]:
        return tuple(family.id for family in self._families)

    @property
    def version(self) -> str:
        return self.definitions.version

    def fingerprint(self) -> str:
        """A short digest of the definitions' content (not only their declared version)."""
        text = self.definitions.model_dump_json(exclude={"version"})
        digest = hashlib.sha256(f"{self.definitions.version}\x1f{text}".encode())
        return digest.hexdigest()[:12]


def family_inputs(family: FamilyDefinition) -> frozenset[str]:
    """Everything the family's conditions read: state attributes, globals, daily drift."""
    inputs: set[str] = set()
    for segment in family.segments:
        for name in segment.condition.names:
            inputs |= FEATURE_INPUTS[name]
        for function in segment.condition.functions:
            inputs |= FUNCTION_INPUTS[function]
    return frozenset(inputs)


def constants_compared_with(family: FamilyDefinition, feature: str) -> tuple[int, ...]:
    """Whole-day constants in any condition of ``family`` that mentions ``feature`` (the
    numbers its compiled form recorded: the condition is parsed once)."""
    return tuple(
        sorted(
            {
                int(number)
                for segment in family.segments
                if feature in segment.condition.names
                for number in segment.condition.numbers
                if 0 <= number <= 10 * 365
            }
        )
    )
