"""What conditions may read: feature names with their kinds, whitelisted functions.

Also the error every compile problem raises (with the column it is at) and how values
are written in the language (``render_value``: ``null``, ``true``, quoted text).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

FeatureKind = Literal["number", "string", "bool"]

Features = Mapping[str, Any]
Evaluator = Callable[[Features], Any]
# Kinds of compiled expressions: the feature kinds plus the `null` literal.
Kind = Literal["number", "string", "bool", "null"]

FEATURE_KINDS: frozenset[str] = frozenset(get_args(FeatureKind))
LITERAL_NAMES: dict[str, Any] = {"true": True, "false": False, "null": None}
_VOCABULARY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
KIND_LABELS: dict[str, str] = {
    "number": "a number",
    "string": "text",
    "bool": "true/false",
    "null": "null",
}


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
    if name in LITERAL_NAMES or name in ("True", "False", "None", "and", "or", "not", "in"):
        raise ValueError(f"{what} name {name!r} is reserved")


def _check_kind(kind: str, owner: str) -> None:
    if kind not in FEATURE_KINDS:
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


def render_value(value: Any) -> str:
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
