"""Segment definitions: families of segments with their conditions, read from YAML.

Marketing operations describe segments in YAML with conditions such as
``points_earned_90d >= 5000 and response_rate_365d >= 0.3``; loading checks the whole file
against the feature vocabulary and reports every problem at once, each with its
family/segment id, and compiles every condition (``worker.core.conditions``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from worker.core.conditions import (
    Condition,
    ConditionError,
    Vocabulary,
)
from worker.core.conditions.compiler import closest
from worker.core.config_files import (
    COMPILED_KEY,
    VOCABULARY_CONTEXT,
    Duration,
    Identifier,
    Text,
    as_condition_text,
    compile_when,
    parse_duration,
    read_yaml,
)

__all__ = [
    "Definitions",
    "DefinitionsError",
    "FamilyDefinition",
    "SegmentDefinition",
    "load_definitions",
    "parse_definitions",
    "parse_duration",
]


class DefinitionsError(ValueError):
    """Invalid segment definitions; ``errors`` lists every problem found, in file order."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors = list(errors)
        count = len(self.errors)
        heading = f"{count} problem{'' if count == 1 else 's'} in the segment definitions"
        super().__init__(heading + ":\n" + "\n".join(f"  - {error}" for error in self.errors))


def _as_version(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        # YAML turns an unquoted 2026-11-23 into a date and 2026.1 into a number.
        raise ValueError('must be text; quote it, e.g. version: "2026-11-23.1"')
    return value


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class SegmentDefinition(_Model):
    """One segment: an id and the condition (``when``) an account must satisfy.

    ``condition`` is compiled from ``when`` during validation (it needs the vocabulary in
    the validation context); it is not a YAML key and not part of dumps.
    """

    id: Identifier
    when: Annotated[str, BeforeValidator(as_condition_text)]
    description: Text = ""
    min_dwell: Duration | None = None
    exit_grace: Duration | None = None
    enter_after: Duration | None = None
    condition: SkipJsonSchema[Annotated[Condition, PlainValidator(compile_when)]] = Field(
        validation_alias=COMPILED_KEY, exclude=True, repr=False
    )

    @model_validator(mode="before")
    @classmethod
    def _feed_condition(cls, data: Any) -> Any:
        # A plain attribute lookup for the hot path (private attributes cost a µs each);
        # the field is fed with the `when` text, never with user input.
        if isinstance(data, Mapping):
            return {**data, COMPILED_KEY: data.get("when")}
        return data


class FamilyDefinition(_Model):
    """An independent dimension of segments; ``exclusive``: first match wins, in order."""

    id: Identifier
    exclusive: StrictBool
    description: Text = ""
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
    try:
        data = read_yaml(source, "the definitions")
    except ValueError as error:
        raise DefinitionsError([str(error)]) from None
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
    worker.core.definitions.DefinitionsError: 1 problem in the segment definitions:
      - program/champions: unknown feature 'points' (text needs quotes: "points") at column 1
    """
    if not isinstance(data, Mapping):
        raise DefinitionsError(["the definitions must be a mapping with 'version' and 'families'"])
    labels = _Labels(data)
    problems = labels.raw_problems()
    try:
        definitions = Definitions.model_validate(data, context={VOCABULARY_CONTEXT: vocabulary})
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
    "segment": ("id", "when", "description", "min_dwell", "exit_grace", "enter_after"),
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
        suggestion = _KEY_SYNONYMS.get(str(key)) or closest(str(key), _KEYS[level], 0.75)
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
    fields = [str(part) for part in loc if part != COMPILED_KEY]
    return (family_index, segment_index), ": ".join([*where, *fields, message])
