"""The safe condition language of segment definitions and campaign triggers.

A condition such as ``points_earned_90d >= 5000 and response_rate_365d >= 0.3`` is
compiled into a tree of Python closures (``compiler``), after checking every syntax node
against a whitelist and every operand against the kinds a :class:`Vocabulary` declares
(``vocabulary``). There is no ``eval`` and no ``compile``: the language cannot reach
Python objects, attributes or builtins, and evaluation does no parsing at all
(``compiled``).

Missing values (``None``, e.g. the recency of an account that never ordered) follow SQL:
comparisons, arithmetic, ``in`` and function calls with a missing operand are *unknown*
(``None``), ``and``/``or``/``not`` use three-valued logic, and a condition that ends up
unknown does not match. ``x == null`` and ``x != null`` test for missing values explicitly.

Examples
--------
>>> vocabulary = Vocabulary({"revenue_90d": "number", "industry": "string"})
>>> condition = compile_condition(
...     'revenue_90d >= 1000 and industry in ["retail", "wholesale"]', vocabulary
... )
>>> condition.evaluate({"revenue_90d": 2500.0, "industry": "retail"})
True
>>> condition.evaluate({"revenue_90d": None, "industry": "retail"})  # unknown: no match
False
>>> try:
...     compile_condition("revenu_90d > 5", vocabulary)
... except ConditionError as error:
...     print(error)
unknown feature 'revenu_90d' (did you mean 'revenue_90d'?) at column 1
"""

from worker.core.conditions.compiled import Condition
from worker.core.conditions.compiler import compile_condition
from worker.core.conditions.vocabulary import (
    ConditionError,
    FeatureKind,
    Function,
    Vocabulary,
    render_value,
)

__all__ = [
    "Condition",
    "ConditionError",
    "FeatureKind",
    "Function",
    "Vocabulary",
    "compile_condition",
    "render_value",
]
