"""What the checked YAML files of the worker share (segment definitions, campaign triggers).

Durations written as ``7d``/``12h``, identifiers, text, condition text, and a YAML reader
that refuses duplicate keys (PyYAML keeps the last one silently, which would drop a whole
family or trigger without a word).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, ValidationInfo

from worker.core.conditions import Condition, Vocabulary, compile_condition, render_value

_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,63}")
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Validation context key for the vocabulary, and the internal input key that carries the
# `when` text to the compiled `condition` field. It cannot be set from YAML by accident:
# `condition:` itself is an unknown key.
VOCABULARY_CONTEXT = "vocabulary"
COMPILED_KEY = "__compiled_when__"


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
            f"invalid id {render_value(value)}: use 1 to 64 lowercase letters, digits or _, "
            "starting with a letter"
        )
    return value


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("must be text")
    return value


def as_condition_text(value: Any) -> str:
    if isinstance(value, bool):  # YAML reads `when: true` as a boolean
        return "true" if value else "false"
    if not isinstance(value, str):
        raise ValueError('must be a condition, e.g. industry == "retail"')
    return value


def compile_when(value: Any, info: ValidationInfo) -> Condition | None:
    """A ``when`` text compiled with the vocabulary of the validation context (None when
    the text itself is invalid: the ``when`` field reports that)."""
    vocabulary = (info.context or {}).get(VOCABULARY_CONTEXT)
    if not isinstance(vocabulary, Vocabulary):
        raise ValueError("validated with context={'vocabulary': Vocabulary(...)}")
    try:
        source = as_condition_text(value)
    except ValueError:
        return None  # the `when` field reports it; validation fails anyway
    return compile_condition(source, vocabulary)


Identifier = Annotated[str, BeforeValidator(_as_identifier)]
Duration = Annotated[timedelta, BeforeValidator(_as_duration)]
Text = Annotated[str, BeforeValidator(_as_text)]


def read_yaml(source: str | Path, what: str) -> Any:
    """The parsed YAML of ``source``: text, or a file.

    A ``str`` holding a newline or starting with ``version`` is YAML text; any other
    ``str`` (and every ``Path``) names a file. Raises ``ValueError`` with a message for
    the person who wrote it (``what``: how to name the file in it).
    """
    if isinstance(source, str) and (
        "\n" in source or source.startswith("version") or not source.strip()
    ):
        text = source
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read {source}: {error}") from error
    try:
        data = yaml.load(text, Loader=_UniqueKeySafeLoader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ValueError(_yaml_problem(error)) from None
    if data is None:
        raise ValueError(f"{what} are empty")
    return data


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
