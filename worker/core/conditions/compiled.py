"""Compiled conditions: an immutable :class:`Condition` and the closures it is made of.

Each builder returns a closure over already compiled children; they are kept small and
flat because they run for every event. All of them return True, False or None for
conditions, so that three-valued logic stays exact. ``worker.core.conditions.compiler``
builds the tree from checked syntax.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.core.conditions.vocabulary import Evaluator, Features, Kind


@dataclass(frozen=True)
class Condition:
    """A compiled condition; immutable and safe to share between threads.

    ``names`` holds the feature names the condition reads directly (not those a function
    reads on its own), ``functions`` the functions it calls and ``numbers`` the numbers
    written in it (``worker.core.schedule`` reads which days a condition compares with).
    Build it with :func:`~worker.core.conditions.compile_condition`.
    """

    source: str
    names: frozenset[str]
    _evaluator: Evaluator = field(repr=False, compare=False)
    _explained: tuple[tuple[str, Evaluator], ...] = field(repr=False, compare=False)
    functions: frozenset[str] = frozenset()
    numbers: frozenset[int | float] = frozenset()

    def evaluate(self, features: Features) -> bool:
        """Whether ``features`` satisfy the condition; unknown (``None``) counts as False.

        Examples
        --------
        >>> from worker.core.conditions import Vocabulary, compile_condition
        >>> vocabulary = Vocabulary({"recency_days": "number"})
        >>> compile_condition("recency_days > 30", vocabulary).evaluate({"recency_days": None})
        False
        >>> compile_condition("recency_days == null", vocabulary).evaluate({})
        True
        """
        return bool(self._evaluator(features))

    def explain(self, features: Features) -> dict[str, Any]:
        """The values the condition looked at: feature names and rendered function calls.

        Examples
        --------
        >>> from worker.core.conditions import Function, Vocabulary, compile_condition
        >>> share = Function(lambda features, category: 0.5, ("string",), "number")
        >>> vocabulary = Vocabulary({"industry": "string"}, {"share": share})
        >>> condition = compile_condition("share('tools') > 0.4 or industry == 'x'", vocabulary)
        >>> condition.explain({"industry": "retail"})
        {'share("tools")': 0.5, 'industry': 'retail'}
        """
        return {label: evaluator(features) for label, evaluator in self._explained}


@dataclass(frozen=True, slots=True)
class Node:
    """A compiled sub-expression: its evaluator, its kind and where it came from."""

    evaluate: Evaluator
    kind: Kind
    syntax: ast.AST
    is_constant: bool = False
    value: Any = None
    #: the feature name when the node only reads that feature (evaluators read it inline)
    feature: str | None = None


# Evaluator builders. Each returns a closure over already compiled children; they are kept
# small and flat because they run for every event. All of them return True, False or None
# for conditions, so that three-valued logic stays exact.


def constant(value: Any) -> Evaluator:
    return lambda _features: value


# Features are read as ``features[name]``, a name the mapping lacks being missing (None),
# which is what ``Mapping.get`` does. Subscription reaches ``FeatureView.__missing__`` (it
# computes the feature) at C level, where ``.get`` would be one Python call more per read.
# The builders below that take a feature *name* read it themselves rather than through a
# child closure: one call less for the most common shapes (`feature >= 1000`,
# `feature in [...]`, `feature == null`).


def feature(name: str) -> Evaluator:
    def read(features: Features) -> Any:
        try:
            return features[name]
        except KeyError:
            return None

    return read


def all_of(operands: tuple[Evaluator, ...]) -> Evaluator:
    if len(operands) == 2:
        first, second = operands

        def both(features: Features) -> bool | None:
            a = first(features)
            if a is None:
                b = second(features)
                return None if b is None or b else False
            if not a:
                return False
            b = second(features)
            return None if b is None else bool(b)

        return both

    def every(features: Features) -> bool | None:
        result: bool | None = True
        for operand in operands:
            value = operand(features)
            if value is None:
                result = None
            elif not value:
                return False
        return result

    return every


def any_of(operands: tuple[Evaluator, ...]) -> Evaluator:
    if len(operands) == 2:
        first, second = operands

        def either(features: Features) -> bool | None:
            a = first(features)
            if a is None:
                b = second(features)
                return True if b is not None and b else None
            if a:
                return True
            b = second(features)
            return None if b is None else bool(b)

        return either

    def any_(features: Features) -> bool | None:
        result: bool | None = False
        for operand in operands:
            value = operand(features)
            if value is None:
                result = None
            elif value:
                return True
        return result

    return any_


def negation(operand: Evaluator) -> Evaluator:
    def negated(features: Features) -> bool | None:
        value = operand(features)
        return None if value is None else not value

    return negated


def unary_arithmetic(apply: Callable[[Any], Any], operand: Evaluator) -> Evaluator:
    def arithmetic(features: Features) -> Any:
        value = operand(features)
        return None if value is None else apply(value)

    return arithmetic


def binary_arithmetic(
    apply: Callable[[Any, Any], Any], left: Evaluator, right: Evaluator
) -> Evaluator:
    def arithmetic(features: Features) -> Any:
        a = left(features)
        if a is None:
            return None
        b = right(features)
        if b is None:
            return None
        try:
            return apply(a, b)
        except ArithmeticError:  # x / 0, x % 0, or an int too large to become a float
            return None

    return arithmetic


def comparison(compare: Callable[[Any, Any], Any], left: Node, right: Node) -> Evaluator:
    # Specialised for a constant on one side and for features read inline (the usual
    # `feature >= 1000`: one closure call and the C-level operator per evaluation).
    # Constants here are never None.
    if left.feature is not None and right.is_constant:
        return feature_against_constant(compare, left.feature, right.value)
    if left.feature is not None and right.feature is not None:
        return feature_against_feature(compare, left.feature, right.feature)
    get_left, get_right = left.evaluate, right.evaluate
    if right.is_constant:
        constant = right.value

        def against_constant(features: Features) -> bool | None:
            a = get_left(features)
            return None if a is None else compare(a, constant)

        return against_constant
    if left.is_constant:
        constant = left.value

        def constant_against(features: Features) -> bool | None:
            b = get_right(features)
            return None if b is None else compare(constant, b)

        return constant_against

    def general(features: Features) -> bool | None:
        a = get_left(features)
        if a is None:
            return None
        b = get_right(features)
        return None if b is None else compare(a, b)

    return general


def feature_against_constant(
    compare: Callable[[Any, Any], Any], name: str, constant: Any
) -> Evaluator:
    def feature_against_constant(features: Features) -> bool | None:
        try:
            a = features[name]
        except KeyError:
            return None
        return None if a is None else compare(a, constant)

    return feature_against_constant


def feature_against_feature(compare: Callable[[Any, Any], Any], left: str, right: str) -> Evaluator:
    def feature_against_feature(features: Features) -> bool | None:
        try:
            a = features[left]
        except KeyError:
            return None
        if a is None:
            return None
        try:
            b = features[right]
        except KeyError:
            return None
        return None if b is None else compare(a, b)

    return feature_against_feature


def membership(left: Node, items: frozenset[Any], negate: bool) -> Evaluator:
    if left.feature is not None:
        return feature_membership(left.feature, items, negate)
    get_left = left.evaluate
    if negate:

        def not_in(features: Features) -> bool | None:
            value = get_left(features)
            return None if value is None else value not in items

        return not_in

    def in_(features: Features) -> bool | None:
        value = get_left(features)
        return None if value is None else value in items

    return in_


def feature_membership(name: str, items: frozenset[Any], negate: bool) -> Evaluator:
    def feature_in(features: Features) -> bool | None:
        try:
            value = features[name]
        except KeyError:
            return None
        if value is None:
            return None
        return value not in items if negate else value in items

    return feature_in


def missing(operand: Node, negate: bool) -> Evaluator:
    if operand.feature is not None:
        return feature_missing(operand.feature, negate)
    get = operand.evaluate
    if negate:
        return lambda features: get(features) is not None
    return lambda features: get(features) is None


def feature_missing(name: str, negate: bool) -> Evaluator:
    def feature_is_missing(features: Features) -> bool:
        try:
            missing = features[name] is None
        except KeyError:
            missing = True
        return missing is not negate

    return feature_is_missing


def chain(first: Evaluator, steps: tuple[tuple[ValueTest, Evaluator], ...]) -> Evaluator:
    # `a < b < c` means `a < b and b < c` (each operand evaluated once), in 3-valued logic.
    def chained(features: Features) -> bool | None:
        result: bool | None = True
        left = first(features)
        for test, get_right in steps:
            right = get_right(features)
            outcome = test(left, right)
            if outcome is None:
                result = None
            elif not outcome:
                return False
            left = right
        return result

    return chained


def call(impl: Callable[..., Any], arguments: tuple[Node, ...]) -> Evaluator:
    if all(argument.is_constant for argument in arguments):
        values = tuple(argument.value for argument in arguments)
        if len(values) == 1:  # the usual `share("tools")`: no argument tuple to unpack
            (value,) = values
            return lambda features: impl(features, value)
        return lambda features: impl(features, *values)
    evaluators = tuple(argument.evaluate for argument in arguments)

    def call(features: Features) -> Any:
        values = []
        for evaluate in evaluators:
            value = evaluate(features)
            if value is None:
                return None
            values.append(value)
        return impl(features, *values)

    return call


# Value-level tests for chained comparisons: (left value, right value) -> True/False/None.
ValueTest = Callable[[Any, Any], Any]


def null_safe(compare: Callable[[Any, Any], Any]) -> ValueTest:
    return lambda a, b: None if a is None or b is None else compare(a, b)


def member_test(negate: bool) -> ValueTest:
    if negate:
        return lambda value, items: None if value is None else value not in items
    return lambda value, items: None if value is None else value in items


def missing_test(negate: bool) -> ValueTest:
    # One side is the null literal, so "both missing" means "the other side is missing".
    if negate:
        return lambda a, b: (a is None) is not (b is None)
    return lambda a, b: (a is None) is (b is None)
