"""The safe condition language and the segment definitions.

Marketing operations describe segments in YAML with conditions such as
``points_earned_90d >= 5000 and response_rate_365d >= 0.3``. This module

* compiles a condition into a tree of Python closures, after checking every syntax node
  against a whitelist and every operand against the kinds a :class:`Vocabulary` declares.
  There is no ``eval`` and no ``compile``: the language cannot reach Python objects,
  attributes or builtins, and evaluation does no parsing at all;
* loads and validates segment definitions, reporting every problem at once;
* evaluates one family of segments for one account's features.

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
>>> compile_condition("revenu_90d > 5", vocabulary)
Traceback (most recent call last):
...
worker.rules.ConditionError: unknown feature 'revenu_90d' (did you mean 'revenue_90d'?) at column 1
"""

from __future__ import annotations

import ast
import difflib
import io
import json
import operator
import re
import tokenize
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Self, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

__all__ = [
    "Condition",
    "ConditionError",
    "Definitions",
    "DefinitionsError",
    "FamilyDefinition",
    "FeatureKind",
    "Function",
    "Match",
    "SegmentDefinition",
    "Vocabulary",
    "compile_condition",
    "evaluate_family",
    "load_definitions",
    "parse_definitions",
    "parse_duration",
]

FeatureKind = Literal["number", "string", "bool"]

#: Longer conditions are surely a mistake, and the parser recurses on nesting.
MAX_CONDITION_LENGTH = 4000
#: Bounds the depth of the closure tree, so evaluation can never hit the recursion limit.
MAX_NESTING = 64

Features = Mapping[str, Any]
_Evaluator = Callable[[Features], Any]
# Kinds of compiled expressions: the feature kinds plus the `null` literal.
_Kind = Literal["number", "string", "bool", "null"]

_FEATURE_KINDS: frozenset[str] = frozenset(get_args(FeatureKind))
_LITERAL_NAMES: dict[str, Any] = {"true": True, "false": False, "null": None}
_VOCABULARY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_KIND_LABELS: dict[str, str] = {
    "number": "a number",
    "string": "text",
    "bool": "true/false",
    "null": "null",
}


# --------------------------------------------------------------------------------------
# Vocabulary and errors
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Function:
    """A whitelisted function: ``impl(features, *args) -> value``.

    ``impl`` must be total: it returns ``None`` rather than raising when it cannot answer,
    and it must not mutate ``features``. It is not called when an argument is missing
    (the call is then unknown, ``None``).
    """

    impl: Callable[..., Any]
    arg_kinds: tuple[FeatureKind, ...]
    result_kind: FeatureKind
    description: str = ""


@dataclass(frozen=True)
class Vocabulary:
    """The feature names (with their kinds) and functions a condition may use.

    Examples
    --------
    >>> Vocabulary({"revenue_90d": "number"}).features["revenue_90d"]
    'number'
    >>> Vocabulary({"__class__": "number"})
    Traceback (most recent call last):
    ...
    ValueError: feature name '__class__' must start with a letter (then letters, digits, _)
    """

    features: Mapping[str, FeatureKind]
    functions: Mapping[str, Function] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, kind in self.features.items():
            _check_vocabulary_name(name, "feature")
            _check_kind(kind, f"feature {name!r}")
        for name, function in self.functions.items():
            _check_vocabulary_name(name, "function")
            if name in self.features:
                raise ValueError(f"{name!r} is both a feature and a function")
            for kind in (*function.arg_kinds, function.result_kind):
                _check_kind(kind, f"function {name!r}")


def _check_vocabulary_name(name: str, what: str) -> None:
    # Names must look the same to the Python tokenizer (ASCII, so no NFKC surprises) and
    # must not shadow the literals true/false/null.
    if not _VOCABULARY_NAME.fullmatch(name):
        raise ValueError(f"{what} name {name!r} must start with a letter (then letters, digits, _)")
    if name in _LITERAL_NAMES or name in ("True", "False", "None", "and", "or", "not", "in"):
        raise ValueError(f"{what} name {name!r} is reserved")


def _check_kind(kind: str, owner: str) -> None:
    if kind not in _FEATURE_KINDS:
        raise ValueError(f"{owner} has unknown kind {kind!r}; use number, string or bool")


class ConditionError(ValueError):
    """A condition that cannot be compiled, with the (1-based) column of the problem.

    ``line`` is only above 1 for conditions written over several lines.
    """

    def __init__(self, message: str, column: int, line: int = 1) -> None:
        self.message = message
        self.column = column
        self.line = line
        where = f"column {column}" if line == 1 else f"line {line}, column {column}"
        super().__init__(f"{message} at {where}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.column, self.line))


# --------------------------------------------------------------------------------------
# Compiled conditions
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A compiled condition; immutable and safe to share between threads.

    ``names`` holds the feature names the condition reads directly (not those a function
    reads on its own) and ``functions`` the functions it calls. Build it with
    :func:`compile_condition`.
    """

    source: str
    names: frozenset[str]
    _evaluator: _Evaluator = field(repr=False, compare=False)
    _explained: tuple[tuple[str, _Evaluator], ...] = field(repr=False, compare=False)
    functions: frozenset[str] = frozenset()

    def evaluate(self, features: Features) -> bool:
        """Whether ``features`` satisfy the condition; unknown (``None``) counts as False.

        Examples
        --------
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
        >>> share = Function(lambda features, category: 0.5, ("string",), "number")
        >>> vocabulary = Vocabulary({"industry": "string"}, {"share": share})
        >>> condition = compile_condition("share('tools') > 0.4 or industry == 'x'", vocabulary)
        >>> condition.explain({"industry": "retail"})
        {'share("tools")': 0.5, 'industry': 'retail'}
        """
        return {label: evaluator(features) for label, evaluator in self._explained}


def compile_condition(source: str, vocabulary: Vocabulary) -> Condition:
    """Compile ``source`` into a :class:`Condition`, checking names, kinds and syntax.

    Raises
    ------
    ConditionError
        With a message meant for the person who wrote the condition, and its column.

    Examples
    --------
    >>> vocabulary = Vocabulary({"revenue_90d": "number", "industry": "string"})
    >>> compile_condition("1000 <= revenue_90d < 5000", vocabulary).evaluate({"revenue_90d": 10})
    False
    >>> compile_condition("industry > 5", vocabulary)
    Traceback (most recent call last):
    ...
    worker.rules.ConditionError: cannot compare industry (text) with 5 (a number) at column 1
    >>> compile_condition("industry.upper()", vocabulary)
    Traceback (most recent call last):
    ...
    worker.rules.ConditionError: attribute access (x.y) is not allowed at column 1
    """
    return _Compiler(source, vocabulary).compile()


# Evaluator builders. Each returns a closure over already compiled children; they are kept
# small and flat because they run for every event. All of them return True, False or None
# for conditions, so that three-valued logic stays exact.


def _constant(value: Any) -> _Evaluator:
    return lambda _features: value


# Features are read as ``features[name]``, a name the mapping lacks being missing (None),
# which is what ``Mapping.get`` does. Subscription reaches ``FeatureView.__missing__`` (it
# computes the feature) at C level, where ``.get`` would be one Python call more per read.
# The builders below that take a feature *name* read it themselves rather than through a
# child closure: one call less for the most common shapes (`feature >= 1000`,
# `feature in [...]`, `feature == null`).


def _feature(name: str) -> _Evaluator:
    def read(features: Features) -> Any:
        try:
            return features[name]
        except KeyError:
            return None

    return read


def _all_of(operands: tuple[_Evaluator, ...]) -> _Evaluator:
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


def _any_of(operands: tuple[_Evaluator, ...]) -> _Evaluator:
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


def _negation(operand: _Evaluator) -> _Evaluator:
    def negated(features: Features) -> bool | None:
        value = operand(features)
        return None if value is None else not value

    return negated


def _unary_arithmetic(apply: Callable[[Any], Any], operand: _Evaluator) -> _Evaluator:
    def arithmetic(features: Features) -> Any:
        value = operand(features)
        return None if value is None else apply(value)

    return arithmetic


def _binary_arithmetic(
    apply: Callable[[Any, Any], Any], left: _Evaluator, right: _Evaluator
) -> _Evaluator:
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


def _comparison(compare: Callable[[Any, Any], Any], left: _Node, right: _Node) -> _Evaluator:
    # Specialised for a constant on one side and for features read inline (the usual
    # `feature >= 1000`: one closure call and the C-level operator per evaluation).
    # Constants here are never None.
    if left.feature is not None and right.is_constant:
        return _feature_against_constant(compare, left.feature, right.value)
    if left.feature is not None and right.feature is not None:
        return _feature_against_feature(compare, left.feature, right.feature)
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


def _feature_against_constant(
    compare: Callable[[Any, Any], Any], name: str, constant: Any
) -> _Evaluator:
    def feature_against_constant(features: Features) -> bool | None:
        try:
            a = features[name]
        except KeyError:
            return None
        return None if a is None else compare(a, constant)

    return feature_against_constant


def _feature_against_feature(
    compare: Callable[[Any, Any], Any], left: str, right: str
) -> _Evaluator:
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


def _membership(left: _Node, items: frozenset[Any], negate: bool) -> _Evaluator:
    if left.feature is not None:
        return _feature_membership(left.feature, items, negate)
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


def _feature_membership(name: str, items: frozenset[Any], negate: bool) -> _Evaluator:
    def feature_in(features: Features) -> bool | None:
        try:
            value = features[name]
        except KeyError:
            return None
        if value is None:
            return None
        return value not in items if negate else value in items

    return feature_in


def _missing(operand: _Node, negate: bool) -> _Evaluator:
    if operand.feature is not None:
        return _feature_missing(operand.feature, negate)
    get = operand.evaluate
    if negate:
        return lambda features: get(features) is not None
    return lambda features: get(features) is None


def _feature_missing(name: str, negate: bool) -> _Evaluator:
    def feature_is_missing(features: Features) -> bool:
        try:
            missing = features[name] is None
        except KeyError:
            missing = True
        return missing is not negate

    return feature_is_missing


def _chain(first: _Evaluator, steps: tuple[tuple[_ValueTest, _Evaluator], ...]) -> _Evaluator:
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


def _call(impl: Callable[..., Any], arguments: tuple[_Node, ...]) -> _Evaluator:
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
_ValueTest = Callable[[Any, Any], Any]


def _null_safe(compare: Callable[[Any, Any], Any]) -> _ValueTest:
    return lambda a, b: None if a is None or b is None else compare(a, b)


def _member_test(negate: bool) -> _ValueTest:
    if negate:
        return lambda value, items: None if value is None else value not in items
    return lambda value, items: None if value is None else value in items


def _missing_test(negate: bool) -> _ValueTest:
    # One side is the null literal, so "both missing" means "the other side is missing".
    if negate:
        return lambda a, b: (a is None) is not (b is None)
    return lambda a, b: (a is None) is (b is None)


# --------------------------------------------------------------------------------------
# The compiler: AST whitelist, kind checks, closures
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    """A compiled sub-expression: its evaluator, its kind and where it came from."""

    evaluate: _Evaluator
    kind: _Kind
    syntax: ast.AST
    is_constant: bool = False
    value: Any = None
    #: the feature name when the node only reads that feature (evaluators read it inline)
    feature: str | None = None


_COMPARISONS: dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
}
_ARITHMETIC: dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.Mod: ("%", operator.mod),
}
_SIGNS: dict[type[ast.unaryop], tuple[str, Callable[[Any], Any]]] = {
    ast.USub: ("-", operator.neg),
    ast.UAdd: ("+", operator.pos),
}
_FORBIDDEN_OPERATORS: dict[type[ast.AST], str] = {
    ast.Pow: "'**' is not allowed",
    ast.FloorDiv: "'//' is not allowed; use /",
    ast.BitAnd: "'&' is not allowed; use 'and'",
    ast.BitOr: "'|' is not allowed; use 'or'",
    ast.BitXor: "'^' is not allowed",
    ast.LShift: "'<<' is not allowed",
    ast.RShift: "'>>' is not allowed",
    ast.MatMult: "'@' is not allowed",
    ast.Invert: "'~' is not allowed; use 'not'",
    ast.Is: "'is' is not allowed; use == (and == null for missing values)",
    ast.IsNot: "'is not' is not allowed; use != (and != null for present values)",
}
_FORBIDDEN_SYNTAX: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access (x.y) is not allowed",
    ast.Subscript: "indexing (x[...]) is not allowed",
    ast.Slice: "slices are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.Starred: "unpacking (*) is not allowed",
    ast.IfExp: "'... if ... else ...' is not allowed; combine conditions with and/or",
    ast.Dict: "dictionaries are not allowed",
    ast.Set: "sets are not allowed; write a list in square brackets",
    ast.List: "a list can only follow 'in' or 'not in'",
    ast.Tuple: "a list can only follow 'in' or 'not in'",
    ast.Await: "'await' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
}


class _Compiler:
    """Compiles one condition; holds what the handlers share (source, names, labels)."""

    def __init__(self, source: str, vocabulary: Vocabulary) -> None:
        self._source = source
        self._vocabulary = vocabulary
        # Carriage returns and newlines become spaces so that a condition written over
        # several YAML lines parses as one line; positions stay the same character offsets.
        flat = source.replace("\r", " ").replace("\n", " ")
        self._text = flat.lstrip()
        self._shift = len(flat) - len(self._text)  # the parser rejects leading blanks
        self._text_bytes = self._text.encode("utf-8")  # AST offsets count UTF-8 bytes
        self._names: dict[str, None] = {}  # dict for first-seen order
        self._functions: set[str] = set()
        self._explained: dict[str, _Evaluator] = {}
        self._depth = 0
        self._handlers: dict[type[ast.AST], Callable[[Any], _Node]] = {
            ast.Constant: self._constant,
            ast.Name: self._name,
            ast.BoolOp: self._bool_op,
            ast.UnaryOp: self._unary_op,
            ast.BinOp: self._bin_op,
            ast.Compare: self._compare,
            ast.Call: self._call,
        }

    def compile(self) -> Condition:
        body = self._parse()
        root = self._compile(body)
        if root.kind != "bool":
            if root.kind == "null":
                self._fail(body, "null alone is not a condition")
            self._fail(
                body,
                f"a condition must be true or false, but {self._show(root)} is "
                f"{_KIND_LABELS[root.kind]}{self._comparison_hint(root)}",
            )
        return Condition(
            source=self._source,
            names=frozenset(self._names),
            _evaluator=root.evaluate,
            _explained=tuple(self._explained.items()),
            functions=frozenset(self._functions),
        )

    # -- parsing and positions ---------------------------------------------------------

    def _parse(self) -> ast.expr:
        if not self._text.strip():
            raise ConditionError("the condition is empty", 1)
        if len(self._text) > MAX_CONDITION_LENGTH:
            raise ConditionError(
                f"the condition is too long (more than {MAX_CONDITION_LENGTH} characters)", 1
            )
        try:
            tree = ast.parse(self._text, mode="eval")
        except SyntaxError as error:
            raise self._syntax_error(error) from None
        except (ValueError, RecursionError, MemoryError):
            message = "the condition is too complex or holds invalid characters"
            raise ConditionError(message, 1) from None
        self._reject_comments()
        return tree.body

    def _syntax_error(self, error: SyntaxError) -> ConditionError:
        text = self._text
        offset = error.offset or 0  # 1-based character offset; 0 or beyond means "at the end"
        at_end = error.lineno not in (None, 1) or not 1 <= offset <= len(text)
        index = len(text.rstrip()) if at_end else offset - 1
        culprit = "" if at_end else text[index]
        message = re.sub(r"\s*\(detected at line \d+\)", "", error.msg)
        if message.startswith("unterminated string"):
            detail = "a text value is missing its closing quote"
        elif culprit == "=" and text[index - 1 : index] not in ("=", "!", "<", ">"):
            detail = "use == to compare"
        elif culprit in ("&", "|"):
            detail = "use 'and' and 'or' instead of '&&' and '||'"
        elif culprit == "!":
            detail = "use 'not' instead of '!'"
        elif at_end:
            detail = "the condition is incomplete"
        elif message.startswith("invalid syntax"):
            detail = message.removeprefix("invalid syntax").lstrip(". ")  # "Perhaps ...?"
        else:
            detail = message  # e.g. "'(' was never closed", "invalid character '…'"
        line, column = self._position(index)
        return ConditionError("syntax error" + (f": {detail}" if detail else ""), column, line)

    def _reject_comments(self) -> None:
        # After flattening, a comment would silently swallow every following line.
        try:
            for token in tokenize.generate_tokens(io.StringIO(self._text).readline):
                if token.type == tokenize.COMMENT:
                    line, column = self._position(token.start[1])
                    raise ConditionError("comments (#) are not allowed", column, line)
        except (tokenize.TokenError, SyntaxError):  # pragma: no cover - ast.parse accepted it
            pass

    def _position(self, index: int) -> tuple[int, int]:
        """(line, column), both 1-based, of character ``index`` of the parsed text."""
        index += self._shift
        line = self._source.count("\n", 0, index) + 1
        line_start = self._source.rfind("\n", 0, index) + 1
        return line, index - line_start + 1

    def _fail(self, syntax: ast.AST, message: str) -> NoReturn:
        byte_offset = getattr(syntax, "col_offset", 0)
        index = len(self._text_bytes[:byte_offset].decode("utf-8", "replace"))
        line, column = self._position(index)
        raise ConditionError(message, column, line)

    def _show(self, node: _Node) -> str:
        """The source text of a compiled node, shortened for messages."""
        if node.is_constant:
            return _render_value(node.value)
        text = ast.get_source_segment(self._text, node.syntax) or ast.unparse(node.syntax)
        return text if len(text) <= 40 else text[:37] + "..."

    # -- the whitelist -----------------------------------------------------------------

    def _compile(self, syntax: ast.expr) -> _Node:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                self._fail(syntax, f"the condition is nested too deeply (over {MAX_NESTING})")
            handler = self._handlers.get(type(syntax))
            if handler is None:
                self._fail(syntax, _FORBIDDEN_SYNTAX.get(type(syntax), "this is not allowed"))
            return handler(syntax)
        finally:
            self._depth -= 1

    def _literal(self, syntax: ast.AST, value: Any) -> _Node:
        kind: _Kind
        if isinstance(value, bool):
            kind = "bool"
        elif isinstance(value, int | float):
            kind = "number"
        elif isinstance(value, str):
            kind = "string"
        elif value is None:
            kind = "null"
        else:
            self._fail(syntax, f"{type(value).__name__} values are not allowed")
        return _Node(_constant(value), kind, syntax, is_constant=True, value=value)

    def _fold(self, node: _Node, operands: Iterable[_Node]) -> _Node:
        # Constant sub-expressions such as `12 * 1000` are computed once, here.
        if all(operand.is_constant for operand in operands):
            return _Node(
                _constant(value := node.evaluate({})),
                node.kind,
                node.syntax,
                is_constant=True,
                value=value,
            )
        return node

    def _constant(self, syntax: ast.Constant) -> _Node:
        return self._literal(syntax, syntax.value)

    def _name(self, syntax: ast.Name) -> _Node:
        name = syntax.id
        if name in _LITERAL_NAMES:
            return self._literal(syntax, _LITERAL_NAMES[name])
        self._reject_private(syntax, name)
        kind = self._vocabulary.features.get(name)
        if kind is None:
            if name in self._vocabulary.functions:
                self._fail(syntax, f"'{name}' is a function; call it, e.g. {name}(...)")
            suggestion = _closest(name, self._vocabulary.features)
            hint = f"did you mean '{suggestion}'?" if suggestion else f'text needs quotes: "{name}"'
            self._fail(syntax, f"unknown feature '{name}' ({hint})")
        evaluator = _feature(name)
        self._names.setdefault(name)
        self._explained.setdefault(name, evaluator)
        return _Node(evaluator, kind, syntax, feature=name)

    def _reject_private(self, syntax: ast.AST, name: str) -> None:
        # Names are NFKC-normalised by the parser, so this also catches look-alike
        # underscores; nothing in the language may even name a dunder.
        if name.startswith("_"):
            self._fail(syntax, f"names starting with '_' are not allowed: '{name}'")

    def _require(self, node: _Node, kind: _Kind, where: str) -> None:
        if node.kind != kind:
            wanted = "conditions (true/false)" if kind == "bool" else "numbers"
            hint = self._comparison_hint(node) if kind == "bool" else ""
            self._fail(
                node.syntax,
                f"{where} needs {wanted}, but {self._show(node)} is "
                f"{_KIND_LABELS[node.kind]}{hint}",
            )

    def _comparison_hint(self, node: _Node) -> str:
        if node.kind == "number":
            return f"; compare it, e.g. {self._show(node)} > 0"
        if node.kind == "string":
            return f'; compare it, e.g. {self._show(node)} == "..."'
        return ""

    def _bool_op(self, syntax: ast.BoolOp) -> _Node:
        word = "and" if isinstance(syntax.op, ast.And) else "or"
        operands = [self._compile(value) for value in syntax.values]
        for operand in operands:
            self._require(operand, "bool", f"'{word}'")
        evaluators = tuple(operand.evaluate for operand in operands)
        combine = _all_of if word == "and" else _any_of
        return self._fold(_Node(combine(evaluators), "bool", syntax), operands)

    def _unary_op(self, syntax: ast.UnaryOp) -> _Node:
        operand = self._compile(syntax.operand)
        if isinstance(syntax.op, ast.Not):
            self._require(operand, "bool", "'not'")
            return self._fold(_Node(_negation(operand.evaluate), "bool", syntax), [operand])
        sign = _SIGNS.get(type(syntax.op))
        if sign is None:
            self._fail(syntax, _FORBIDDEN_OPERATORS.get(type(syntax.op), "not allowed"))
        symbol, apply = sign
        self._require(operand, "number", f"'{symbol}'")
        node = _Node(_unary_arithmetic(apply, operand.evaluate), "number", syntax)
        return self._fold(node, [operand])

    def _bin_op(self, syntax: ast.BinOp) -> _Node:
        arithmetic = _ARITHMETIC.get(type(syntax.op))
        if arithmetic is None:
            self._fail(syntax, _FORBIDDEN_OPERATORS.get(type(syntax.op), "not allowed"))
        symbol, apply = arithmetic
        left, right = self._compile(syntax.left), self._compile(syntax.right)
        for operand in (left, right):
            self._require(operand, "number", f"'{symbol}'")
        if symbol in "/%" and right.is_constant and right.value == 0:
            self._fail(syntax.right, "division by zero")
        node = _Node(_binary_arithmetic(apply, left.evaluate, right.evaluate), "number", syntax)
        return self._fold(node, [left, right])

    def _compare(self, syntax: ast.Compare) -> _Node:
        """A comparison or a chain of them (``1000 <= revenue_90d < 5000``)."""
        first = left = self._compile(syntax.left)
        operands = [first]
        # Per link: a value test for the general chain, and a ready evaluator that is used
        # when there is a single link (the common case, one closure call cheaper).
        steps: list[tuple[_ValueTest, _Evaluator]] = []
        single: _Evaluator | None = None
        for index, (op, comparator) in enumerate(zip(syntax.ops, syntax.comparators, strict=True)):
            if isinstance(op, ast.In | ast.NotIn):
                if index < len(syntax.ops) - 1:
                    self._fail(comparator, "a list must end the comparison")
                negate = isinstance(op, ast.NotIn)
                items = self._list_after_in(left, comparator, "not in" if negate else "in")
                # A constant node holding the set; its kind is never looked at again.
                right = _Node(_constant(items), left.kind, comparator, True, items)
                steps.append((_member_test(negate), right.evaluate))
                single = _membership(left, items, negate)
            else:
                right = self._compile(comparator)
                test, single = self._compare_pair(left, right, op, syntax)
                steps.append((test, right.evaluate))
            operands.append(right)
            left = right
        if len(steps) > 1 or single is None:
            single = _chain(first.evaluate, tuple(steps))
        return self._fold(_Node(single, "bool", syntax), operands)

    def _compare_pair(
        self, left: _Node, right: _Node, op: ast.cmpop, syntax: ast.Compare
    ) -> tuple[_ValueTest, _Evaluator]:
        """Check one comparison; return its value test (for chains) and its evaluator."""
        comparison = _COMPARISONS.get(type(op))
        if comparison is None:
            self._fail(syntax, _FORBIDDEN_OPERATORS.get(type(op), "not allowed"))
        symbol, compare = comparison
        if "null" in (left.kind, right.kind):
            if symbol not in ("==", "!="):
                self._fail(left.syntax, f"null can only be used with == and !=, not {symbol}")
            negate = symbol == "!="
            other = right if left.kind == "null" else left
            return _missing_test(negate), _missing(other, negate)
        if left.kind != right.kind:
            self._fail(
                left.syntax,
                f"cannot compare {self._show(left)} ({_KIND_LABELS[left.kind]}) "
                f"with {self._show(right)} ({_KIND_LABELS[right.kind]})",
            )
        if left.kind == "bool" and symbol not in ("==", "!="):
            self._fail(left.syntax, f"'{symbol}' cannot order true/false values; use == or !=")
        return _null_safe(compare), _comparison(compare, left, right)

    def _list_after_in(self, left: _Node, syntax: ast.expr, word: str) -> frozenset[Any]:
        if not isinstance(syntax, ast.List | ast.Tuple):
            self._fail(syntax, f'\'{word}\' needs a list in square brackets, e.g. ["a", "b"]')
        if left.kind == "null":
            self._fail(left.syntax, f"null cannot be used with '{word}'; use == null")
        values = []
        for element in syntax.elts:
            item = self._compile(element)
            if not item.is_constant:
                self._fail(element, f"a list may only hold fixed values, not {self._show(item)}")
            if item.kind == "null":
                self._fail(element, "null cannot be in a list; test missing values with == null")
            if item.kind != left.kind:
                self._fail(
                    element,
                    f"{self._show(left)} is {_KIND_LABELS[left.kind]} but the list holds "
                    f"{self._show(item)} ({_KIND_LABELS[item.kind]})",
                )
            values.append(item.value)
        return frozenset(values)

    def _call(self, syntax: ast.Call) -> _Node:
        if not isinstance(syntax.func, ast.Name):
            self._compile(syntax.func)  # reports attribute access, lambdas, ... first
            self._fail(syntax, "only the functions of the vocabulary can be called")
        name = syntax.func.id
        self._reject_private(syntax.func, name)
        if syntax.keywords:
            self._fail(
                syntax.keywords[0], "keyword arguments are not allowed; pass values in order"
            )
        function = self._vocabulary.functions.get(name)
        if function is None:
            self._fail(syntax, self._unknown_function(name))
        arguments = tuple(self._compile(argument) for argument in syntax.args)
        expected = len(function.arg_kinds)
        if len(arguments) != expected:
            plural = "argument" if expected == 1 else "arguments"
            self._fail(
                syntax, f"{name}() takes {expected} {plural}, but {len(arguments)} were given"
            )
        for position, (argument, kind) in enumerate(
            zip(arguments, function.arg_kinds, strict=True), 1
        ):
            if argument.kind != kind:
                self._fail(
                    argument.syntax,
                    f"argument {position} of {name}() must be {_KIND_LABELS[kind]}, "
                    f"but {self._show(argument)} is {_KIND_LABELS[argument.kind]}",
                )
        evaluator = _call(function.impl, arguments)
        self._functions.add(name)
        label = f"{name}({', '.join(self._show(argument) for argument in arguments)})"
        self._explained.setdefault(label, evaluator)
        return _Node(evaluator, function.result_kind, syntax)

    def _unknown_function(self, name: str) -> str:
        if name in self._vocabulary.features or name in _LITERAL_NAMES:
            return f"'{name}' is not a function"
        suggestion = _closest(name, self._vocabulary.functions)
        if suggestion:
            return f"unknown function '{name}' (did you mean '{suggestion}'?)"
        available = ", ".join(sorted(self._vocabulary.functions)) or "none"
        return f"unknown function '{name}' (available: {available})"


def _closest(name: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def _render_value(value: Any) -> str:
    """Render a value the way the condition language writes it (for labels and reasons)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return format(value, ".10g")
    return str(value)


# --------------------------------------------------------------------------------------
# Segment definitions (YAML)
# --------------------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,63}")
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Validation context key for the vocabulary, and the internal input key that carries the
# `when` text to the compiled `condition` field. It cannot be set from YAML by accident:
# `condition:` itself is an unknown key.
_VOCABULARY = "vocabulary"
_COMPILED = "__compiled_when__"


class DefinitionsError(ValueError):
    """Invalid segment definitions; ``errors`` lists every problem found, in file order."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors = list(errors)
        count = len(self.errors)
        heading = f"{count} problem{'' if count == 1 else 's'} in the segment definitions"
        super().__init__(heading + ":\n" + "\n".join(f"  - {error}" for error in self.errors))


def parse_duration(text: str) -> timedelta:
    """Parse ``<int><unit>`` with unit s, m, h, d or w.

    Examples
    --------
    >>> parse_duration("90d"), parse_duration("12h")
    (datetime.timedelta(days=90), datetime.timedelta(seconds=43200))
    >>> parse_duration("1.5d")
    Traceback (most recent call last):
    ...
    ValueError: invalid duration '1.5d': write a whole number and a unit s, m, h, d or w, e.g. 7d
    """
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(
            f"invalid duration '{text}': write a whole number and a unit s, m, h, d or w, e.g. 7d"
        )
    try:
        return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
    except OverflowError:
        raise ValueError(f"duration '{text}' is too long") from None


def _as_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError("a duration cannot be negative")
        return value
    if not isinstance(value, str):  # a bare number would hide its unit
        raise ValueError(f"invalid duration {value!r}: write a number and a unit, e.g. 7d")
    return parse_duration(value)


def _as_identifier(value: Any) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"invalid id {_render_value(value)}: use 1 to 64 lowercase letters, digits or _, "
            "starting with a letter"
        )
    return value


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("must be text")
    return value


def _as_condition_text(value: Any) -> str:
    if isinstance(value, bool):  # YAML reads `when: true` as a boolean
        return "true" if value else "false"
    if not isinstance(value, str):
        raise ValueError('must be a condition, e.g. industry == "retail"')
    return value


def _as_version(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        # YAML turns an unquoted 2026-11-23 into a date and 2026.1 into a number.
        raise ValueError('must be text; quote it, e.g. version: "2026-11-23.1"')
    return value


def _compile_when(value: Any, info: ValidationInfo) -> Condition | None:
    vocabulary = (info.context or {}).get(_VOCABULARY)
    if not isinstance(vocabulary, Vocabulary):
        raise ValueError("definitions are validated with context={'vocabulary': Vocabulary(...)}")
    try:
        source = _as_condition_text(value)
    except ValueError:
        return None  # the `when` field reports it; validation fails anyway
    return compile_condition(source, vocabulary)


_Identifier = Annotated[str, BeforeValidator(_as_identifier)]
_Duration = Annotated[timedelta, BeforeValidator(_as_duration)]
_Text = Annotated[str, BeforeValidator(_as_text)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class SegmentDefinition(_Model):
    """One segment: an id and the condition (``when``) an account must satisfy.

    ``condition`` is compiled from ``when`` during validation (it needs the vocabulary in
    the validation context); it is not a YAML key and not part of dumps.
    """

    id: _Identifier
    when: Annotated[str, BeforeValidator(_as_condition_text)]
    description: _Text = ""
    min_dwell: _Duration | None = None
    exit_grace: _Duration | None = None
    condition: SkipJsonSchema[Annotated[Condition, PlainValidator(_compile_when)]] = Field(
        validation_alias=_COMPILED, exclude=True, repr=False
    )

    @model_validator(mode="before")
    @classmethod
    def _feed_condition(cls, data: Any) -> Any:
        # A plain attribute lookup for the hot path (private attributes cost a µs each);
        # the field is fed with the `when` text, never with user input.
        if isinstance(data, Mapping):
            return {**data, _COMPILED: data.get("when")}
        return data


class FamilyDefinition(_Model):
    """An independent dimension of segments; ``exclusive``: first match wins, in order."""

    id: _Identifier
    exclusive: StrictBool
    description: _Text = ""
    segments: tuple[SegmentDefinition, ...]

    @field_validator("segments")
    @classmethod
    def _not_empty(cls, segments: tuple[SegmentDefinition, ...]) -> tuple[SegmentDefinition, ...]:
        if not segments:
            raise ValueError("a family needs at least one segment")
        return segments

    @model_validator(mode="after")
    def _unique_segment_ids(self) -> Self:
        for duplicate in _duplicates(segment.id for segment in self.segments):
            raise ValueError(f"duplicate segment id '{duplicate}'")
        return self

    def segment(self, segment_id: str) -> SegmentDefinition:
        """The segment with this id (KeyError if there is none)."""
        for segment in self.segments:
            if segment.id == segment_id:
                return segment
        raise KeyError(f"family '{self.id}' has no segment '{segment_id}'")


class Definitions(_Model):
    """All segment families, in file order, and the version of the definitions."""

    version: Annotated[str, BeforeValidator(_as_version)]
    families: tuple[FamilyDefinition, ...]

    @field_validator("families", mode="before")
    @classmethod
    def _families_by_id(cls, value: Any) -> Any:
        # YAML gives a mapping family id -> family; the models carry the id themselves.
        if isinstance(value, list | tuple) and all(
            isinstance(item, FamilyDefinition) for item in value
        ):
            return value
        if not isinstance(value, Mapping):
            raise ValueError("families must be a mapping from family id to family")
        families = []
        for family_id, body in value.items():
            if body is None:  # a family key with nothing under it
                body = {}
            families.append({**body, "id": family_id} if isinstance(body, Mapping) else body)
        return families

    @field_validator("families")
    @classmethod
    def _unique_families(
        cls, families: tuple[FamilyDefinition, ...]
    ) -> tuple[FamilyDefinition, ...]:
        if not families:
            raise ValueError("at least one family is required")
        for duplicate in _duplicates(family.id for family in families):
            raise ValueError(f"duplicate family id '{duplicate}'")
        return families

    def family(self, family_id: str) -> FamilyDefinition:
        """The family with this id (KeyError if there is none)."""
        for family in self.families:
            if family.id == family_id:
                return family
        known = ", ".join(family.id for family in self.families)
        raise KeyError(f"no family '{family_id}' (known: {known})")


def _duplicates(values: Iterable[Any]) -> list[Any]:
    seen: set[Any] = set()
    duplicates: list[Any] = []
    for value in values:
        if value in seen and value not in duplicates:
            duplicates.append(value)
        seen.add(value)
    return duplicates


def load_definitions(source: str | Path, vocabulary: Vocabulary) -> Definitions:
    """Load definitions from YAML text or from a file.

    A ``str`` holding a newline or starting with ``version`` is YAML text; any other
    ``str`` (and every ``Path``) names a file.

    Examples
    --------
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
    >>> [segment.id for segment in definitions.family("apriori").segments]
    ['retail', 'other']
    """
    if isinstance(source, str) and (
        "\n" in source or source.startswith("version") or not source.strip()
    ):
        text = source
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise DefinitionsError([f"cannot read {source}: {error}"]) from error
    try:
        data = yaml.load(text, Loader=_UniqueKeySafeLoader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        raise DefinitionsError([_yaml_problem(error)]) from None
    if data is None:
        raise DefinitionsError(["the definitions are empty"])
    return parse_definitions(data, vocabulary)


def parse_definitions(data: Mapping[str, Any], vocabulary: Vocabulary) -> Definitions:
    """Validate already parsed definitions; raise :class:`DefinitionsError` with all problems.

    Examples
    --------
    >>> vocabulary = Vocabulary({"points_earned_90d": "number"})
    >>> family = {"exclusive": False, "segments": [{"id": "champions", "when": "points > 1"}]}
    >>> parse_definitions({"version": "1", "families": {"program": family}}, vocabulary)
    Traceback (most recent call last):
    ...
    worker.rules.DefinitionsError: 1 problem in the segment definitions:
      - program/champions: unknown feature 'points' (text needs quotes: "points") at column 1
    """
    if not isinstance(data, Mapping):
        raise DefinitionsError(["the definitions must be a mapping with 'version' and 'families'"])
    labels = _Labels(data)
    problems = labels.raw_problems()
    try:
        definitions = Definitions.model_validate(data, context={_VOCABULARY: vocabulary})
    except ValidationError as error:
        problems += [_describe(detail, labels) for detail in error.errors()]
    else:
        if not problems:
            return definitions
    problems.sort(key=lambda problem: problem[0])  # stable: file order within a segment
    raise DefinitionsError(dict.fromkeys(message for _, message in problems))


_Problem = tuple[tuple[int, int], str]  # ((family index, segment index), message)
_KEYS = {
    "definitions": ("version", "families"),
    "family": ("exclusive", "description", "segments"),
    "segment": ("id", "when", "description", "min_dwell", "exit_grace"),
}
_KEY_SYNONYMS = {"condition": "when", "rule": "when", "name": "id"}
_TYPE_MESSAGES = {
    "string_type": "must be text",
    "bool_type": "must be true or false",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
}


class _Labels:
    """Names families and segments in messages, from the raw data (ids may be invalid)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        families = data.get("families")
        self._families = list(families.items()) if isinstance(families, Mapping) else []

    def family(self, index: int) -> str:
        return str(self._families[index][0]) if index < len(self._families) else f"#{index + 1}"

    def segments(self, family_index: int) -> list[Any]:
        body = self._families[family_index][1] if family_index < len(self._families) else None
        segments = body.get("segments") if isinstance(body, Mapping) else None
        return segments if isinstance(segments, list) else []

    def segment(self, family_index: int, index: int) -> str:
        segments = self.segments(family_index)
        raw = segments[index] if index < len(segments) else None
        segment_id = raw.get("id") if isinstance(raw, Mapping) else None
        return segment_id if isinstance(segment_id, str) and segment_id else f"#{index + 1}"

    def raw_problems(self) -> list[_Problem]:
        """Problems pydantic reports only once everything else is valid, found up front."""
        problems: list[_Problem] = []
        for family_index, (family_id, body) in enumerate(self._families):
            if isinstance(body, Mapping) and "id" in body:
                problems.append(
                    ((family_index, -1), f"{family_id}: unknown key 'id' (the key above is the id)")
                )
            ids = [
                segment.get("id")
                for segment in self.segments(family_index)
                if isinstance(segment, Mapping) and isinstance(segment.get("id"), str)
            ]
            for duplicate in _duplicates(ids):
                problems.append(
                    ((family_index, -1), f"{family_id}: duplicate segment id '{duplicate}'")
                )
        return problems


def _describe(detail: Any, labels: _Labels) -> _Problem:
    """Turn one pydantic error into ``family/segment: field: message``."""
    loc = list(detail["loc"])
    key = str(loc.pop()) if detail["type"] in ("extra_forbidden", "missing") and loc else None
    family_index = segment_index = -1
    where: list[str] = []
    if len(loc) >= 2 and loc[0] == "families" and isinstance(loc[1], int):
        family_index = loc[1]
        where.append(labels.family(family_index))
        loc = loc[2:]
        if len(loc) >= 2 and loc[0] == "segments" and isinstance(loc[1], int):
            segment_index = loc[1]
            where[-1] += "/" + labels.segment(family_index, segment_index)
            loc = loc[2:]
    level = "segment" if segment_index >= 0 else "family" if family_index >= 0 else "definitions"
    cause = (detail.get("ctx") or {}).get("error")
    if detail["type"] == "extra_forbidden":
        # Key typos are near misses; a looser match would suggest 'description' for 'condition'.
        suggestion = _KEY_SYNONYMS.get(str(key)) or _closest(str(key), _KEYS[level], 0.75)
        hint = (
            f"did you mean '{suggestion}'?" if suggestion else "allowed: " + ", ".join(_KEYS[level])
        )
        message = f"unknown key '{key}' ({hint})"
    elif detail["type"] == "missing":
        message = f"'{key}' is required"
    elif isinstance(cause, ConditionError):
        message, loc = str(cause), []  # the position says which part of `when` is wrong
    elif cause is not None:
        message = str(cause)
    else:
        message = _TYPE_MESSAGES.get(detail["type"], detail["msg"])
    fields = [str(part) for part in loc if part != _COMPILED]
    return (family_index, segment_index), ": ".join([*where, *fields, message])


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    return f"invalid YAML: {error}"


class _UniqueKeySafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects duplicate keys (PyYAML keeps the last one silently,
    which would drop a whole family without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key '{key}'",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


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
        shown = ", ".join(f"{label}={_render_value(value)}" for label, value in self.values.items())
        return f"({shown})"


def evaluate_family(family: FamilyDefinition, features: Features) -> list[Match]:
    """The segments of ``family`` that ``features`` match, in file order.

    An exclusive family yields at most one match (the first); a non-exclusive family
    yields every match. ``features`` is only read.

    Examples
    --------
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
_Plan = tuple[bool, tuple[tuple[_Evaluator, str, str, Condition], ...]]
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
