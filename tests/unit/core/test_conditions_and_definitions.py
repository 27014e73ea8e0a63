"""Tests of the condition language, the segment definitions and family evaluation."""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from dataclasses import FrozenInstanceError
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from worker.core.conditions import (
    Condition,
    ConditionError,
    Function,
    Vocabulary,
    compile_condition,
)
from worker.core.definitions import (
    Definitions,
    DefinitionsError,
    FamilyDefinition,
    load_definitions,
    parse_definitions,
    parse_duration,
)
from worker.core.rules import Match, evaluate_family

# -- a small vocabulary ------------------------------------------------------------------

share_calls: list[tuple[Any, ...]] = []


def _share(features: Mapping[str, Any], category: str) -> float | None:
    share_calls.append((category,))
    shares = features.get("category_shares") or {}
    value = shares.get(category)
    return value if isinstance(value, int | float) else None


def _role_engaged(features: Mapping[str, Any], role: str) -> bool:
    return role in (features.get("engaged_roles") or ())


def _ratio(features: Mapping[str, Any], numerator: float, denominator: float) -> float | None:
    try:
        return numerator / denominator
    except (ZeroDivisionError, OverflowError):
        return None


FEATURES: dict[str, Any] = {
    "revenue_90d": "number",
    "revenue_prev_90d": "number",
    "recency_days": "number",
    "points_earned_90d": "number",
    "response_rate_365d": "number",
    "industry": "string",
    "size_class": "string",
    "is_member": "bool",
    "has_app": "bool",
}
VOCABULARY = Vocabulary(
    FEATURES,
    {
        "share": Function(_share, ("string",), "number", "share of spend in a category"),
        "role_engaged_30d": Function(_role_engaged, ("string",), "bool"),
        "ratio": Function(_ratio, ("number", "number"), "number"),
    },
)


def evaluate(source: str, **features: Any) -> bool:
    return compile_condition(source, VOCABULARY).evaluate(features)


def truth(source: str, **features: Any) -> bool | None:
    """The three-valued result: the negation tells unknown (None) apart from False."""
    if evaluate(source, **features):
        return True
    return False if evaluate(f"not ({source})", **features) else None


def error_of(source: str) -> ConditionError:
    with pytest.raises(ConditionError) as caught:
        compile_condition(source, VOCABULARY)
    return caught.value


# -- operators ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "features", "expected"),
    [
        ("revenue_90d == 100", {"revenue_90d": 100}, True),
        ("revenue_90d == 100", {"revenue_90d": 100.0}, True),
        ("revenue_90d != 100", {"revenue_90d": 100}, False),
        ("revenue_90d < 100", {"revenue_90d": 99.5}, True),
        ("revenue_90d <= 100", {"revenue_90d": 100}, True),
        ("revenue_90d > 100", {"revenue_90d": 100}, False),
        ("revenue_90d >= 100", {"revenue_90d": 100}, True),
        ("revenue_90d > revenue_prev_90d", {"revenue_90d": 2, "revenue_prev_90d": 1}, True),
        ('industry == "retail"', {"industry": "retail"}, True),
        ("industry == 'retail'", {"industry": "Retail"}, False),
        ('industry < "m"', {"industry": "automotive"}, True),
        ('industry in ["retail", "tools"]', {"industry": "tools"}, True),
        ('industry in ("retail", "tools")', {"industry": "food"}, False),
        ('industry not in ["retail", "tools"]', {"industry": "food"}, True),
        ("revenue_90d in [1, 2.5, -3]", {"revenue_90d": -3}, True),
        ("industry in []", {"industry": "x"}, False),
        ("is_member", {"is_member": True}, True),
        ("is_member", {"is_member": False}, False),
        ("is_member == true", {"is_member": True}, True),
        ("is_member == True", {"is_member": True}, True),
        ("is_member != false", {"is_member": False}, False),
        ("is_member and has_app", {"is_member": True, "has_app": False}, False),
        ("is_member or has_app", {"is_member": False, "has_app": True}, True),
        ("is_member and has_app and not false", {"is_member": True, "has_app": True}, True),
        ("is_member or has_app or false", {"is_member": False, "has_app": False}, False),
        ("not is_member", {"is_member": False}, True),
        ("revenue_90d + 10 == 20", {"revenue_90d": 10}, True),
        ("revenue_90d - 10 == 0", {"revenue_90d": 10}, True),
        ("revenue_90d * 2 == 20", {"revenue_90d": 10}, True),
        ("revenue_90d / 4 == 2.5", {"revenue_90d": 10}, True),
        ("revenue_90d % 3 == 1", {"revenue_90d": 10}, True),
        ("-revenue_90d == -10", {"revenue_90d": 10}, True),
        ("+revenue_90d == 10", {"revenue_90d": 10}, True),
        ("revenue_90d > 12 * 1000", {"revenue_90d": 12001}, True),
        ("(revenue_90d - revenue_prev_90d) / revenue_prev_90d > 0.1",
         {"revenue_90d": 120, "revenue_prev_90d": 100}, True),
        ("true", {}, True),
        ("false", {}, False),
        ("1 < 2", {}, True),
        ('share("tools") >= 0.4', {"category_shares": {"tools": 0.5}}, True),
        ("share('tools') >= 0.4", {"category_shares": {"tools": 0.1}}, False),
        ('role_engaged_30d("decider")', {"engaged_roles": ("decider",)}, True),
        ('not role_engaged_30d("decider")', {"engaged_roles": ()}, True),
        ("ratio(revenue_90d, 2) == 5", {"revenue_90d": 10}, True),
    ],
)  # fmt: skip
def test_operators(source: str, features: dict[str, Any], expected: bool) -> None:
    assert compile_condition(source, VOCABULARY).evaluate(features) is expected


@pytest.mark.parametrize(
    ("revenue", "expected"),
    [(999, False), (1000, True), (4999.99, True), (5000, False), (None, False)],
)
def test_chained_comparison(revenue: float | None, expected: bool) -> None:
    assert evaluate("1000 <= revenue_90d < 5000", revenue_90d=revenue) is expected


def test_chained_comparison_uses_three_valued_logic() -> None:
    # False anywhere in the chain makes it False, even when another link is unknown.
    assert truth("revenue_90d < recency_days < 10", revenue_90d=None, recency_days=20) is False
    assert truth("revenue_90d < recency_days < 10", revenue_90d=None, recency_days=5) is None
    assert truth("0 < revenue_90d < recency_days", revenue_90d=1, recency_days=2) is True
    assert truth("0 < revenue_90d == recency_days", revenue_90d=1, recency_days=1) is True
    assert truth("revenue_90d < 5 in [1, 2]", revenue_90d=1) is False  # 5 in [1, 2] is False


# -- missing values ----------------------------------------------------------------------

T, F, U = True, False, None


@pytest.mark.parametrize(
    ("a", "b", "conjunction", "disjunction"),
    [
        (T, T, T, T), (T, F, F, T), (T, U, U, T),
        (F, T, F, T), (F, F, F, F), (F, U, F, U),
        (U, T, U, T), (U, F, F, U), (U, U, U, U),
    ],
)  # fmt: skip
def test_and_or_use_three_valued_logic(
    a: bool | None, b: bool | None, conjunction: bool | None, disjunction: bool | None
) -> None:
    assert truth("is_member and has_app", is_member=a, has_app=b) is conjunction
    assert truth("is_member or has_app", is_member=a, has_app=b) is disjunction
    # the n-ary forms agree with the binary ones
    assert truth("is_member and has_app and true", is_member=a, has_app=b) is conjunction
    assert truth("is_member or has_app or false", is_member=a, has_app=b) is disjunction


def test_not_of_unknown_is_unknown() -> None:
    assert truth("not is_member", is_member=None) is None
    assert truth("not not is_member", is_member=None) is None


@pytest.mark.parametrize(
    "source",
    [
        "recency_days > 30",
        "recency_days == 30",
        "recency_days != 30",
        "recency_days + 1 > 0",
        "-recency_days < 0",
        "recency_days / 2 > 0",
        "recency_days in [1, 2]",
        "recency_days not in [1, 2]",
        "recency_days == revenue_90d",
        "ratio(recency_days, 2) > 0",
    ],
)
def test_missing_operand_makes_comparison_unknown(source: str) -> None:
    assert truth(source, recency_days=None, revenue_90d=None) is None


def test_missing_feature_key_counts_as_missing() -> None:
    assert truth("recency_days > 30") is None
    assert evaluate("recency_days == null") is True


@pytest.mark.parametrize(
    ("source", "value", "expected"),
    [
        ("recency_days == null", None, True),
        ("recency_days == null", 3, False),
        ("recency_days != null", None, False),
        ("recency_days != null", 0, True),
        ("null == recency_days", None, True),
        ("null != recency_days", 3, True),
        ("recency_days == None", None, True),
        ("recency_days * 2 == null", None, True),
        ("recency_days == null or recency_days > 365", None, True),
        ("recency_days == null or recency_days > 365", 400, True),
        ("recency_days == null or recency_days > 365", 10, False),
        ("null == null", None, True),
    ],
)
def test_null_comparison_tests_missingness(source: str, value: Any, expected: bool) -> None:
    assert truth(source, recency_days=value) is expected


def test_function_is_not_called_with_missing_arguments() -> None:
    share_calls.clear()
    assert truth("ratio(revenue_90d, 2) > 1", revenue_90d=None) is None
    assert truth('share("tools") > 0.1', category_shares={}) is None
    assert share_calls == [("tools",), ("tools",)]  # called: its argument is present


@pytest.mark.parametrize(
    ("source", "features"),
    [
        ("revenue_90d / revenue_prev_90d > 1", {"revenue_90d": 1, "revenue_prev_90d": 0}),
        ("revenue_90d / revenue_prev_90d > 1", {"revenue_90d": 1.5, "revenue_prev_90d": 0.0}),
        ("revenue_90d % revenue_prev_90d > 1", {"revenue_90d": 7, "revenue_prev_90d": 0}),
        ("revenue_90d * 1.5 > 1", {"revenue_90d": 10**400}),
        ("revenue_90d + 0.5 > 1", {"revenue_90d": 10**400}),
    ],
)
def test_division_by_zero_and_overflow_are_unknown(source: str, features: dict[str, Any]) -> None:
    assert truth(source, **features) is None


@pytest.mark.parametrize("source", ["revenue_90d / 0 > 1", "revenue_90d % (2 - 2) > 1"])
def test_constant_division_by_zero_is_a_compile_error(source: str) -> None:
    assert "division by zero" in error_of(source).message


# -- compile-time checks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("industry > 5", "cannot compare industry (text) with 5 (a number)"),
        ('revenue_90d == "x"', 'cannot compare revenue_90d (a number) with "x" (text)'),
        ("is_member == 1", "cannot compare is_member (true/false) with 1 (a number)"),
        ("industry + 1 == 2", "'+' needs numbers, but industry is text"),
        ('industry + "x" == "y"', "'+' needs numbers"),
        ("-industry == 1", "'-' needs numbers"),
        ("is_member * 2 > 1", "'*' needs numbers, but is_member is true/false"),
        ("industry in [1, 2]", "industry is text but the list holds 1 (a number)"),
        ('revenue_90d in [1, "2"]', 'the list holds "2" (text)'),
        ("is_member in [1]", "the list holds 1 (a number)"),
        ("industry in ['a', revenue_90d]", "a list may only hold fixed values"),
        ("industry in ['a', null]", "null cannot be in a list"),
        ("null in [1]", "null cannot be used with 'in'"),
        ("industry in industry", "'in' needs a list in square brackets"),
        ("revenue_90d < null", "null can only be used with == and !="),
        ("recency_days == null < 5", "null can only be used with == and !="),
        ("is_member > false", "cannot order true/false values"),
        ("revenue_90d and is_member", "'and' needs conditions (true/false), but revenue_90d"),
        ("is_member or industry", "'or' needs conditions"),
        ("not revenue_90d", "'not' needs conditions"),
        ("revenue_90d", "a condition must be true or false, but revenue_90d is a number"),
        ('"retail"', "a condition must be true or false"),
        ("null", "null alone is not a condition"),
        ("share(1) > 0", "argument 1 of share() must be text, but 1 is a number"),
        ('share("a", "b") > 0', "share() takes 1 argument, but 2 were given"),
        ("ratio(1) > 0", "ratio() takes 2 arguments, but 1 were given"),
        ('share("a") == "b"', 'cannot compare share("a") (a number) with "b" (text)'),
        ('role_engaged_30d("x") > 1', "cannot compare"),
        ("share(null) > 0", "argument 1 of share() must be text, but null is null"),
    ],
)
def test_kind_errors(source: str, message: str) -> None:
    assert message in error_of(source).message


@pytest.mark.parametrize(
    ("source", "message", "column"),
    [
        ("revenu_90d > 5", "unknown feature 'revenu_90d' (did you mean 'revenue_90d'?)", 1),
        ("is_member and points_earned_9d > 1",
         "unknown feature 'points_earned_9d' (did you mean 'points_earned_90d'?)", 15),
        ("industry == retail", "unknown feature 'retail' (text needs quotes: \"retail\")", 13),
        ('shares("x") > 1', "unknown function 'shares' (did you mean 'share'?)", 1),
        ("open('x') == 1",
         "unknown function 'open' (available: ratio, role_engaged_30d, share)", 1),
        ("industry('x') == 1", "'industry' is not a function", 1),
        ("share > 1", "'share' is a function; call it, e.g. share(...)", 1),
    ],
)  # fmt: skip
def test_unknown_names(source: str, message: str, column: int) -> None:
    error = error_of(source)
    assert (error.message, error.column) == (message, column)
    assert str(error) == f"{message} at column {column}"


# -- security: the language cannot reach Python --------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("__import__('os')", "names starting with '_' are not allowed"),
        ("__import__('os').system('true')", "attribute access"),
        ("__builtins__", "names starting with '_' are not allowed"),
        ("_private == 1", "names starting with '_' are not allowed"),
        ("__\uff49mport__('os')", "names starting with '_' are not allowed"),  # NFKC look-alike
        ("().__class__", "attribute access (x.y) is not allowed"),
        ("().__class__.__bases__[0].__subclasses__()", "attribute access"),
        ("industry.upper() == 'X'", "attribute access"),
        ("industry.__class__ == 1", "attribute access"),
        ('share("x").__class__ == 1', "attribute access"),
        ("share.__globals__ == 1", "attribute access"),
        ("(lambda: 1)() == 1", "lambda is not allowed"),
        ("lambda: 1", "lambda is not allowed"),
        ("open('x')", "unknown function 'open'"),
        ("eval('1') == 1", "unknown function 'eval'"),
        ("exec('1') == 1", "unknown function 'exec'"),
        ("getattr(industry, 'upper') == 1", "unknown function 'getattr'"),
        ("globals() == 1", "unknown function 'globals'"),
        ("[x for x in industry]", "comprehensions are not allowed"),
        ("industry in [x for x in 'ab']", "'in' needs a list in square brackets"),
        ("any(x for x in [1])", "unknown function 'any'"),
        ("{x for x in [1]} == 1", "comprehensions are not allowed"),
        ("{x: 1 for x in [1]} == 1", "comprehensions are not allowed"),
        ("f'{industry}' == 'x'", "f-strings are not allowed"),
        ("f'{industry.__class__}' == 'x'", "f-strings are not allowed"),
        ("(x := 1) == 1", "assignment (:=) is not allowed"),
        ("share(*['a']) > 1", "unpacking (*) is not allowed"),
        ("share(category='a') > 1", "keyword arguments are not allowed"),
        ("share(**{'category': 'a'}) > 1", "keyword arguments are not allowed"),
        ("revenue_90d ** 2 > 1", "'**' is not allowed"),
        ("revenue_90d // 2 > 1", "'//' is not allowed"),
        ("revenue_90d & 1 == 1", "'&' is not allowed"),
        ("revenue_90d | 1 == 1", "'|' is not allowed"),
        ("revenue_90d ^ 1 == 1", "'^' is not allowed"),
        ("revenue_90d << 1 == 1", "'<<' is not allowed"),
        ("revenue_90d >> 1 == 1", "'>>' is not allowed"),
        ("revenue_90d @ 1 == 1", "'@' is not allowed"),
        ("~revenue_90d == 1", "'~' is not allowed"),
        ("is_member is true", "'is' is not allowed"),
        ("is_member is not null", "'is not' is not allowed"),
        ("industry[0] == 'x'", "indexing (x[...]) is not allowed"),
        ("industry[0:1] == 'x'", "indexing (x[...]) is not allowed"),
        ("{'a': 1} == 1", "dictionaries are not allowed"),
        ("industry in {'a'}", "'in' needs a list in square brackets"),
        ("{'a'} == 1", "sets are not allowed"),
        ("[1, 2] == 1", "a list can only follow 'in' or 'not in'"),
        ("is_member if has_app else false", "'... if ... else ...' is not allowed"),
        ("b'x' == industry", "bytes values are not allowed"),
        ("1j == revenue_90d", "complex values are not allowed"),
        ("... == revenue_90d", "ellipsis values are not allowed"),
        ("await is_member", "'await' is not allowed"),
        ("(yield is_member)", "'yield' is not allowed"),
        ("share('a')('b') > 1", "only the functions of the vocabulary can be called"),
        ("is_member # or true", "comments (#) are not allowed"),
    ],
)
def test_forbidden_constructs(source: str, message: str) -> None:
    assert message in error_of(source).message


def test_dunder_text_is_only_data() -> None:
    # A string literal is inert: comparing with "__class__" is just comparing text.
    assert evaluate('industry == "__class__"', industry="__class__") is True


# -- syntax errors and positions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message", "column"),
    [
        ("revenue_90d >= >= 5", "syntax error", 16),
        ("industry = 'x'", "syntax error: use == to compare", 10),
        ("is_member && has_app", "syntax error: use 'and' and 'or' instead of '&&' and '||'", 12),
        ("!is_member", "syntax error: use 'not' instead of '!'", 1),
        ("is_member and", "syntax error: the condition is incomplete", 14),
        ("(is_member", "syntax error: '(' was never closed", 1),
        ("is_member)", "syntax error: unmatched ')'", 10),
        ("industry == 'x", "syntax error: a text value is missing its closing quote", 13),
        ("industry == 'é' and )", "syntax error: unmatched ')'", 21),  # columns count characters
        ("   is_member and )", "syntax error: unmatched ')'", 18),
    ],
)  # fmt: skip
def test_syntax_errors_carry_a_column(source: str, message: str, column: int) -> None:
    error = error_of(source)
    assert (error.message, error.column, error.line) == (message, column, 1)
    assert str(error) == f"{message} at column {column}"


def test_error_columns_count_characters_not_bytes() -> None:
    assert error_of("industry == 'ü' and revenue_90d > 'x'").column == 21


@pytest.mark.parametrize("source", ["", "   ", "\n"])
def test_empty_condition(source: str) -> None:
    assert error_of(source).message == "the condition is empty"


def test_multi_line_conditions_parse_and_errors_give_the_line() -> None:
    assert evaluate("is_member\n  and revenue_90d > 5\n", is_member=True, revenue_90d=6)
    error = error_of('industry == "a" and\n  revenue_90d > "x"')
    assert (error.line, error.column) == (2, 3)
    assert str(error).endswith("at line 2, column 3")


@pytest.mark.parametrize(
    "source",
    ["-" * 3000 + "revenue_90d > 1", "(" * 300 + "true" + ")" * 300, "1 + " * 80 + "1 > 0"],
)
def test_pathological_nesting_is_rejected(source: str) -> None:
    error_of(source)


def test_overlong_condition_is_rejected() -> None:
    assert "too long" in error_of("is_member or " * 500 + "true").message


def test_condition_error_pickles() -> None:
    error = error_of("revenu_90d > 1")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.column, copy.line, str(copy)) == (
        error.message,
        error.column,
        error.line,
        str(error),
    )


# -- the compiled condition ---------------------------------------------------------------


def test_names_and_explain() -> None:
    condition = compile_condition(
        "revenue_90d >= 1000 and industry in ['a', 'b'] and share('tools') > 0.4"
        " and revenue_90d < 99999 and ratio(revenue_90d, 2) > 1",
        VOCABULARY,
    )
    assert condition.names == frozenset({"revenue_90d", "industry"})
    features = {"revenue_90d": 2000, "industry": "a", "category_shares": {"tools": 0.5}}
    assert condition.explain(features) == {
        "revenue_90d": 2000,
        "industry": "a",
        'share("tools")': 0.5,
        "ratio(revenue_90d, 2)": 1000.0,
    }
    assert list(condition.explain({})) == [
        "revenue_90d",
        "industry",
        'share("tools")',
        "ratio(revenue_90d, 2)",
    ]
    assert condition.explain({}) == dict.fromkeys(condition.explain({}))


def test_condition_is_immutable_and_compares_by_source() -> None:
    condition = compile_condition("is_member", VOCABULARY)
    with pytest.raises(FrozenInstanceError):
        condition.source = "true"  # type: ignore[misc]
    assert condition == compile_condition("is_member", VOCABULARY)
    assert isinstance(condition, Condition) and condition.source == "is_member"


def test_literals_are_folded_and_python_constants_accepted() -> None:
    assert evaluate("revenue_90d > 2 * 6 / 4 - 1 % 3", revenue_90d=2.5) is True
    assert evaluate("True and not False", revenue_90d=1) is True
    assert evaluate("recency_days == None", recency_days=None) is True


def test_vocabulary_is_validated() -> None:
    with pytest.raises(ValueError, match="must start with a letter"):
        Vocabulary({"__class__": "number"})
    with pytest.raises(ValueError, match="reserved"):
        Vocabulary({"null": "number"})
    with pytest.raises(ValueError, match="unknown kind"):
        Vocabulary({"x": "date"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="both a feature and a function"):
        Vocabulary({"x": "number"}, {"x": Function(_share, ("string",), "number")})
    with pytest.raises(ValueError, match="unknown kind"):
        Vocabulary({}, {"f": Function(_share, ("text",), "number")})  # type: ignore[arg-type]


# -- properties ----------------------------------------------------------------------------

numbers = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),  # includes nan and infinities
    st.integers(min_value=10**308, max_value=10**400),  # too large to become a float
)
feature_values = {
    "number": numbers,
    "string": st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["a", "retail"])),
    "bool": st.one_of(st.none(), st.booleans()),
}
feature_dicts = st.fixed_dictionaries(
    {},
    optional={
        **{name: feature_values[kind] for name, kind in FEATURES.items()},
        "category_shares": st.dictionaries(st.sampled_from(["tools", "a"]), numbers),
        "engaged_roles": st.lists(st.sampled_from(["decider", "buyer"])).map(tuple),
    },
)


def _literal_text(value: str) -> str:
    return json.dumps(value)


number_leaves = st.one_of(
    st.sampled_from([n for n, k in FEATURES.items() if k == "number"]),
    st.integers(-1000, 1000).map(str),
    st.floats(-1e6, 1e6).map(repr),
    st.just('share("tools")'),
)
number_expressions = st.recursive(
    number_leaves,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from("+-*/%"), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda e: f"-{e}"),
        st.tuples(inner, inner).map(lambda t: f"ratio({t[0]}, {t[1]})"),
    ),
    max_leaves=8,
)
string_leaves = st.one_of(
    st.sampled_from(["industry", "size_class"]),
    st.text(st.characters(codec="utf-8"), max_size=4).map(_literal_text),
)
comparisons = st.one_of(
    st.tuples(number_expressions, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
              number_expressions).map(" ".join),
    st.tuples(number_expressions, st.sampled_from(["<", "<="]), number_expressions,
              st.sampled_from(["<", "<="]), number_expressions).map(" ".join),
    st.tuples(string_leaves, st.sampled_from(["==", "!=", "<"]), string_leaves).map(" ".join),
    st.tuples(string_leaves, st.sampled_from(["in", "not in"]),
              st.lists(string_leaves.filter(lambda s: s.startswith('"')), max_size=3))
    .map(lambda t: f"{t[0]} {t[1]} [{', '.join(t[2])}]"),
    st.tuples(number_expressions, st.sampled_from(["== null", "!= null"])).map(" ".join),
    st.sampled_from(["is_member", "has_app", "true", "false", 'role_engaged_30d("decider")']),
)  # fmt: skip
conditions = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda t: f"({' '.join(t)})"),
        inner.map(lambda e: f"not {e}"),
    ),
    max_leaves=6,
)


@settings(database=None, max_examples=300, deadline=None)
@given(source=conditions, features=feature_dicts)
def test_evaluation_never_raises_returns_bool_and_does_not_mutate(
    source: str, features: dict[str, Any]
) -> None:
    try:
        condition = compile_condition(source, VOCABULARY)
    except ConditionError as error:
        # The only legitimate rejection of a well-kinded expression: a constant divisor of 0,
        # or a generated float literal that folds into a too-deep tree.
        assume(error.message in ("division by zero",) or "nested too deeply" in error.message)
        return
    snapshot = {key: (value.copy() if isinstance(value, dict) else value)
                for key, value in features.items()}  # fmt: skip
    frozen = MappingProxyType(features)  # any write attempt would raise
    assert type(condition.evaluate(frozen)) is bool
    assert set(condition.explain(frozen)) >= condition.names
    assert features == snapshot


@settings(database=None, max_examples=300, deadline=None)
@given(
    source=st.one_of(
        st.text(max_size=40),
        st.lists(
            st.sampled_from(
                ["revenue_90d", "industry", "is_member", "share", "(", ")", "[", "]", ",", ".",
                 "and", "or", "not", "in", "==", "<", "+", "/", "*", "**", "1", "0", '"x"',
                 "null", "__class__", "lambda", ":", "for", "if", "else", "=", "#", "\n"]
            ),
            max_size=12,
        ).map(" ".join),
    )
)  # fmt: skip
def test_compiling_any_text_raises_only_condition_error(source: str) -> None:
    try:
        compile_condition(source, VOCABULARY)
    except ConditionError as error:
        assert error.column >= 1 and error.line >= 1


# -- segment definitions ----------------------------------------------------------------------

DEFINITIONS = """
version: "2026-11-23.1"
families:
  apriori:
    exclusive: true
    description: Firmographic segments
    segments:
      - id: manufacturing_enterprise
        description: Large manufacturers
        when: industry == "manufacturing" and size_class in ["large", "enterprise"]
      - id: manufacturing
        when: industry == "manufacturing"
      - id: other
        when: true
  program:
    exclusive: false
    segments:
      - id: champions
        when: points_earned_90d >= 5000 and response_rate_365d >= 0.3
        min_dwell: 7d
        exit_grace: 2d
      - id: members
        when: >-
          is_member
          and points_earned_90d > 0
      - id: app_users
        when: has_app
"""


def test_load_definitions_from_text() -> None:
    definitions = load_definitions(DEFINITIONS, VOCABULARY)
    assert isinstance(definitions, Definitions)
    assert definitions.version == "2026-11-23.1"
    assert [family.id for family in definitions.families] == ["apriori", "program"]
    apriori = definitions.family("apriori")
    assert apriori.exclusive and apriori.description == "Firmographic segments"
    assert [segment.id for segment in apriori.segments] == [
        "manufacturing_enterprise",
        "manufacturing",
        "other",
    ]
    assert apriori.segments[2].when == "true"  # YAML reads `true` as a boolean
    champions = definitions.family("program").segment("champions")
    assert champions.min_dwell == timedelta(days=7)
    assert champions.exit_grace == timedelta(days=2)
    assert champions.condition.names == {"points_earned_90d", "response_rate_365d"}
    assert apriori.segments[0].min_dwell is None and apriori.segments[0].description
    assert "condition" not in champions.model_dump()


def test_load_definitions_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "segments.yaml"
    path.write_text(DEFINITIONS, encoding="utf-8")
    assert load_definitions(path, VOCABULARY) == load_definitions(str(path), VOCABULARY)
    with pytest.raises(DefinitionsError, match="cannot read"):
        load_definitions(tmp_path / "missing.yaml", VOCABULARY)


def test_family_lookup_fails_clearly() -> None:
    definitions = load_definitions(DEFINITIONS, VOCABULARY)
    with pytest.raises(KeyError, match="known: apriori, program"):
        definitions.family("value")
    with pytest.raises(KeyError, match="no segment 'x'"):
        definitions.family("program").segment("x")


def test_all_errors_are_reported_with_family_and_segment() -> None:
    text = """
version: "1"
families:
  apriori:
    exclusive: true
    segments:
      - id: Manufacturing
        when: industri == "x"
        min_dwell: 7x
        exitgrace: 2d
      - id: other
        when: 5
  program:
    exclusive: maybe
    segments:
      - id: champions
        when: points_earned_9d >= 5000
      - id: champions
        when: true
        condition: true
      - when: true
  empty:
    exclusive: false
    segments: []
"""
    with pytest.raises(DefinitionsError) as caught:
        load_definitions(text, VOCABULARY)
    errors = caught.value.errors
    assert errors == [
        'apriori/Manufacturing: id: invalid id "Manufacturing": use 1 to 64 lowercase letters,'
        " digits or _, starting with a letter",
        "apriori/Manufacturing: min_dwell: invalid duration '7x': write a whole number and a unit"
        " s, m, h, d or w, e.g. 7d",
        "apriori/Manufacturing: unknown feature 'industri' (did you mean 'industry'?) at column 1",
        "apriori/Manufacturing: unknown key 'exitgrace' (did you mean 'exit_grace'?)",
        'apriori/other: when: must be a condition, e.g. industry == "retail"',
        "program: duplicate segment id 'champions'",
        "program: exclusive: must be true or false",
        "program/champions: unknown feature 'points_earned_9d' (did you mean"
        " 'points_earned_90d'?) at column 1",
        "program/champions: unknown key 'condition' (did you mean 'when'?)",
        "program/#3: 'id' is required",
        "empty: segments: a family needs at least one segment",
    ]
    message = str(caught.value)
    assert message.startswith("11 problems in the segment definitions:\n")
    assert all(f"  - {error}" in message for error in errors)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"families": {}}, "'version' is required"),
        ({"version": 2026.1, "families": {}}, 'version: must be text; quote it'),
        ({"version": "1", "families": {}}, "families: at least one family is required"),
        ({"version": "1", "families": [{"id": "a"}]}, "families: families must be a mapping"),
        ({"version": "1", "families": {"a": None}}, "a: 'exclusive' is required"),
        ({"version": "1", "families": {"a": [1]}}, "a: must be a mapping"),
        ({"version": "1", "families": {"Bad-Id": {"exclusive": True, "segments": [
            {"id": "x", "when": "true"}]}}}, 'Bad-Id: id: invalid id "Bad-Id"'),
        ({"version": "1", "families": {"a": {"id": "b", "exclusive": True, "segments": [
            {"id": "x", "when": "true"}]}}}, "a: unknown key 'id'"),
        ({"version": "1", "families": {"a": {"exclusive": True, "segments": [
            {"id": "x", "when": "true", "min_dwell": 7}]}}}, "a/x: min_dwell: invalid duration 7"),
        ({"version": "1", "families": {"a": {"exclusive": "true", "segments": [
            {"id": "x", "when": "true"}]}}}, "a: exclusive: must be true or false"),
        ({"version": "1", "families": {"a": {"exclusive": True, "segments": {"x": 1}}}},
         "a: segments: must be a list"),
        ({"version": "1", "families": {"a": {"exclusive": True, "segments": [
            {"id": "x" * 65, "when": "true"}]}}}, "invalid id"),
        ({"version": "1", "extra": 1, "families": {"a": {"exclusive": True, "segments": [
            {"id": "x", "when": "true"}]}}}, "unknown key 'extra' (allowed: version, families)"),
    ],
)  # fmt: skip
def test_definition_errors(data: dict[str, Any], error: str) -> None:
    with pytest.raises(DefinitionsError) as caught:
        parse_definitions(data, VOCABULARY)
    assert any(error in message for message in caught.value.errors), caught.value.errors


def test_duplicate_family_keys_are_rejected() -> None:
    text = DEFINITIONS + "  apriori:\n    exclusive: false\n    segments: [{id: x, when: 'true'}]\n"
    with pytest.raises(DefinitionsError, match="line 28, column 3: duplicate key 'apriori'"):
        load_definitions(text, VOCABULARY)


def test_yaml_syntax_errors_give_the_line() -> None:
    with pytest.raises(DefinitionsError) as caught:
        load_definitions('version: "1"\nfamilies:\n  a: [1, 2\n  b: 3\n', VOCABULARY)
    (error,) = caught.value.errors
    assert error.startswith("invalid YAML at line 4")


@pytest.mark.parametrize("text", ["", "version: '1'\n", "- a\n"])
def test_incomplete_documents(text: str) -> None:
    with pytest.raises(DefinitionsError):
        load_definitions(text, VOCABULARY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("90d", timedelta(days=90)),
        ("2w", timedelta(weeks=2)),
        ("0d", timedelta(0)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["7x", "1.5d", "-1d", "d", "7", "7 days", "", "99999999999999w"])
def test_invalid_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_validation_without_vocabulary_is_refused() -> None:
    family = {"exclusive": True, "segments": [{"id": "x", "when": "true"}]}
    with pytest.raises(ValueError, match="vocabulary"):
        Definitions.model_validate({"version": "1", "families": {"a": family}})


# -- evaluation of a family ---------------------------------------------------------------------


def test_exclusive_family_takes_the_first_match() -> None:
    apriori = load_definitions(DEFINITIONS, VOCABULARY).family("apriori")
    features = {"industry": "manufacturing", "size_class": "large"}
    (match,) = evaluate_family(apriori, features)
    assert match == Match(
        "manufacturing_enterprise",
        'industry == "manufacturing" and size_class in ["large", "enterprise"]',
        {"industry": "manufacturing", "size_class": "large"},
    )
    assert match.reason() == (
        'industry == "manufacturing" and size_class in ["large", "enterprise"]'
        ' (industry="manufacturing", size_class="large")'
    )
    assert [m.segment_id for m in evaluate_family(apriori, {"industry": "food"})] == ["other"]
    assert evaluate_family(apriori, {"industry": "food"})[0].reason() == "true"


def test_exclusive_family_without_catch_all_can_match_nothing() -> None:
    family = FamilyDefinition.model_validate(
        {"id": "f", "exclusive": True, "segments": [{"id": "a", "when": "is_member"}]},
        context={"vocabulary": VOCABULARY},
    )
    assert evaluate_family(family, {"is_member": None}) == []


def test_non_exclusive_family_returns_every_match_in_order() -> None:
    program = load_definitions(DEFINITIONS, VOCABULARY).family("program")
    features = {
        "points_earned_90d": 6000,
        "response_rate_365d": 0.25,
        "is_member": True,
        "has_app": True,
    }
    assert [m.segment_id for m in evaluate_family(program, features)] == ["members", "app_users"]
    features["response_rate_365d"] = 0.5
    matches = evaluate_family(program, features)
    assert [m.segment_id for m in matches] == ["champions", "members", "app_users"]
    assert matches[0].values == {"points_earned_90d": 6000, "response_rate_365d": 0.5}
    assert matches[1].reason() == (
        "is_member and points_earned_90d > 0 (is_member=true, points_earned_90d=6000)"
    )
    assert evaluate_family(program, {}) == []


@settings(database=None, max_examples=100, deadline=None)
@given(features=feature_dicts)
def test_family_evaluation_does_not_mutate_features(features: dict[str, Any]) -> None:
    definitions = load_definitions(DEFINITIONS, VOCABULARY)
    before = dict(features)
    for family in definitions.families:
        matches = evaluate_family(family, MappingProxyType(features))
        assert len(matches) <= 1 or not family.exclusive
        for match in matches:
            assert isinstance(match.reason(), str)
    assert features == before


@settings(database=None, max_examples=100, deadline=None)
@given(features=feature_dicts)
def test_family_evaluation_agrees_with_each_condition(features: dict[str, Any]) -> None:
    # evaluate_family runs the compiled closures it collected once per family object;
    # a family loaded again (another object) must give the same matches.
    for definitions in (
        load_definitions(DEFINITIONS, VOCABULARY),
        load_definitions(DEFINITIONS, VOCABULARY),
    ):
        for family in definitions.families:
            matching = [s.id for s in family.segments if s.condition.evaluate(features)]
            expected = matching[:1] if family.exclusive else matching
            assert [m.segment_id for m in evaluate_family(family, features)] == expected


class _ComputingMapping(dict[str, Any]):
    """Computes a feature on a miss, as FeatureView does; `.get` is the Python override."""

    def __missing__(self, name: str) -> Any:
        if name == "revenue_90d":
            self[name] = 2500.0
            return 2500.0
        raise KeyError(name)

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("revenue_90d >= 1000", True),
        ("revenue_90d >= recency_days", None),  # recency_days is absent: unknown
        ("recency_days >= revenue_90d", None),
        ("revenue_90d == null", False),
        ("recency_days == null", True),
        ("recency_days != null", False),
        ("industry in ['a']", None),
        ("industry not in ['a']", None),
        ("revenue_90d in [2500]", True),
        ("revenue_90d not in [2500]", False),
        ("1000 < revenue_90d", True),
        ("revenue_90d + 0 > 1000", True),
    ],
)
def test_features_are_read_through_missing_and_absent_ones_are_unknown(
    source: str, expected: bool | None
) -> None:
    # Inline feature reads subscribe, so a mapping that computes on a miss is asked, and a
    # name it cannot give (KeyError) is missing, exactly as .get would have it.
    condition = compile_condition(source, VOCABULARY)
    negated = compile_condition(f"not ({source})", VOCABULARY)
    for features in (_ComputingMapping(), MappingProxyType({"revenue_90d": 2500.0})):
        assert condition.evaluate(features) is (expected is True)
        assert negated.evaluate(features) is (expected is False)  # unknown: neither holds
