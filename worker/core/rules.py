"""Evaluating a family of rule segments for one account: which segments match, and why.

A :class:`Match` carries the rule and the values it looked at, explained only when a
reason is needed (most matches only confirm a membership).
"""

from __future__ import annotations

from typing import Any

from worker.core.conditions import Condition, render_value
from worker.core.conditions.vocabulary import Evaluator, Features
from worker.core.definitions import FamilyDefinition

__all__ = ["Match", "evaluate_family"]


class Match:
    """A segment an account matched, with the rule and the values that made it match.

    ``values`` may be left to be explained on first use from ``condition`` and
    ``features``: most matches only confirm a membership and never need them.
    """

    __slots__ = ("_condition", "_features", "_values", "rule", "segment_id")

    def __init__(
        self,
        segment_id: str,
        rule: str,
        values: dict[str, Any] | None = None,
        *,
        condition: Condition | None = None,
        features: Features | None = None,
    ) -> None:
        self.segment_id = segment_id
        self.rule = rule
        self._values = values
        self._condition = condition
        self._features = features

    @property
    def values(self) -> dict[str, Any]:
        if self._values is None:
            explained = (
                self._condition.explain(self._features)
                if self._condition is not None and self._features is not None
                else {}
            )
            self._values, self._condition, self._features = explained, None, None
        return self._values

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Match):
            return NotImplemented
        return (self.segment_id, self.rule, self.values) == (
            other.segment_id,
            other.rule,
            other.values,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Match(segment_id={self.segment_id!r}, rule={self.rule!r}, values={self.values!r})"

    def reason(self) -> str:
        """The rule followed by the values it looked at.

        Examples
        --------
        >>> Match("champions", "points >= 5000", {"points": 7200}).reason()
        'points >= 5000 (points=7200)'
        """
        shown = self.shown_values()
        return f"{self.rule} {shown}" if shown else self.rule

    def shown_values(self) -> str:
        """The values the rule looked at, in parentheses; empty when it looked at none.

        Examples
        --------
        >>> Match("champions", "points >= 5000", {"points": 7200, "tier": "gold"}).shown_values()
        '(points=7200, tier="gold")'
        >>> Match("rest", "true", {}).shown_values()
        ''
        """
        if not self.values:
            return ""
        shown = ", ".join(f"{label}={render_value(value)}" for label, value in self.values.items())
        return f"({shown})"


def evaluate_family(family: FamilyDefinition, features: Features) -> list[Match]:
    """The segments of ``family`` that ``features`` match, in file order.

    An exclusive family yields at most one match (the first); a non-exclusive family
    yields every match. ``features`` is only read.

    Examples
    --------
    >>> from worker.core.conditions import Vocabulary
    >>> from worker.core.definitions import load_definitions
    >>> vocabulary = Vocabulary({"industry": "string"})
    >>> definitions = load_definitions('''
    ... version: "1"
    ... families:
    ...   apriori:
    ...     exclusive: true
    ...     segments:
    ...       - {id: retail, when: industry == "retail"}
    ...       - {id: other, when: true}
    ... ''', vocabulary)
    >>> [m.reason() for m in evaluate_family(definitions.family("apriori"), {"industry": "x"})]
    ['true']
    """
    exclusive, segments = _plan(family)
    matches: list[Match] = []
    for evaluator, segment_id, rule, condition in segments:
        # None (unknown) is false here, just as bool() makes it in Condition.evaluate.
        if evaluator(features):
            matches.append(Match(segment_id, rule, condition=condition, features=features))
            if exclusive:
                break
    return matches


# What evaluating a family reads of its (frozen) models, once per family object: the
# attribute lookups and the Condition.evaluate call per segment were a fifth of the cost
# of evaluating a family whose features are computed. Keyed by identity, as hashing a
# family would cost more than evaluating it; the entry holds the family, so its id
# cannot be reused while cached.
_Plan = tuple[bool, tuple[tuple[Evaluator, str, str, Condition], ...]]
_PLANS: dict[int, tuple[FamilyDefinition, _Plan]] = {}


def _plan(family: FamilyDefinition) -> _Plan:
    cached = _PLANS.get(id(family))
    if cached is not None and cached[0] is family:
        return cached[1]
    if len(_PLANS) >= 256:  # definitions were reloaded many times: drop the old ones
        _PLANS.clear()
    plan = (
        family.exclusive,
        tuple(
            (segment.condition._evaluator, segment.id, segment.when, segment.condition)
            for segment in family.segments
        ),
    )
    _PLANS[id(family)] = (family, plan)
    return plan
