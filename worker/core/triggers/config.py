"""Campaign triggers: what marketing fires from segment changes, as a checked YAML file.

A trigger names the change it fires on (family, segment, entered or exited), the
campaign, and what keeps it quiet: segments whose members never get it
(``unless_member_of``), a condition over the account's features (``when``, the
condition language of the segment definitions), a cooldown per account, and which
kinds of change it fires for (``origins``; by default only live ones). ``limits``
hold what applies across all triggers: a cap per account, quiet hours (a delay, never
a drop), a holdout share, and segments suppressed from every mailing. A trigger may
also be POSTed to a ``destination`` (a webhook).

Examples
--------
>>> from worker.core.features import VOCABULARY
>>> config = load_triggers('''
... version: "1"
... triggers:
...   - id: develop_b1
...     on: {family: value, segment: b1, change: entered}
...     unless_member_of: [engagement/unsubscribed]
...     when: revenue_365d >= 5000
...     cooldown: 30d
...     campaign: b1-development-offer
...     address_roles: [decider, buyer]
... limits:
...   per_account: {max: 2, per: 7d}
...   quiet_hours: {from: "20:00", to: "07:00", timezone: Europe/Berlin}
...   holdout: 0.1
... ''', VOCABULARY)
>>> trigger = config.triggers[0]
>>> trigger.on.segment, trigger.cooldown.days, config.limits.holdout, trigger.origins
('b1', 30, 0.1, ('event', 'time', 'cutoffs'))
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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

from worker.core.conditions import Condition, ConditionError, Vocabulary
from worker.core.config_files import (
    COMPILED_KEY,
    VOCABULARY_CONTEXT,
    Duration,
    Identifier,
    Text,
    as_condition_text,
    compile_when,
    read_yaml,
)
from worker.core.events import ContactRole, Origin

#: What a trigger fires for unless it says otherwise: changes that something happening to
#: the account (or time passing, or the ABC cut-offs moving) caused, never the re-runs.
DEFAULT_ORIGINS: tuple[Origin, ...] = ("event", "time", "cutoffs")
_CAMPAIGN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")
_SEGMENT_REF = re.compile(r"([a-z][a-z0-9_]{0,63})/([a-z0-9_]{1,64})")


class TriggersError(ValueError):
    """An invalid triggers file; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        count = len(errors)
        heading = f"{count} problem{'' if count == 1 else 's'} in the campaign triggers"
        super().__init__(heading + ":\n" + "\n".join(f"  - {error}" for error in errors))


def _segment_ref(value: Any) -> tuple[str, str]:
    if isinstance(value, str) and (match := _SEGMENT_REF.fullmatch(value)):
        return match[1], match[2]
    raise ValueError(f"{value!r} is not a segment: write family/segment, e.g. value/inactive")


def _campaign(value: Any) -> str:
    if isinstance(value, str) and _CAMPAIGN.fullmatch(value):
        return value
    raise ValueError(f"{value!r} is not a campaign id (letters, digits and _.:/-, up to 128)")


def _clock_time(value: Any) -> time:
    if isinstance(value, str) and re.fullmatch(r"\d{1,2}:\d{2}", value):
        hours, minutes = map(int, value.split(":"))
        if hours < 24 and minutes < 60:
            return time(hours, minutes)
    # YAML reads an unquoted 20:00 as the number 1200 (base 60)
    raise ValueError(f'{value!r} is not a time of day: quote it, e.g. "20:00"')


def _timezone(value: Any) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"{value!r} is not a time zone (IANA name, e.g. Europe/Berlin)") from None
    return str(value)


SegmentRef = Annotated[tuple[str, str], BeforeValidator(_segment_ref)]
Campaign = Annotated[str, BeforeValidator(_campaign)]
ClockTime = Annotated[time, BeforeValidator(_clock_time)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class On(_Model):
    """The change a trigger fires on; no ``segment``: any segment of the family."""

    family: Identifier
    segment: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")] | None = None
    change: Literal["entered", "exited"] = "entered"


class Trigger(_Model):
    """One campaign trigger (see the module docstring)."""

    id: Identifier
    on: On
    campaign: Campaign
    description: Text = ""
    unless_member_of: tuple[SegmentRef, ...] = ()
    when: Annotated[str, BeforeValidator(as_condition_text)] | None = None
    condition: SkipJsonSchema[Annotated[Condition | None, PlainValidator(compile_when)]] = Field(
        default=None, validation_alias=COMPILED_KEY, exclude=True, repr=False
    )
    cooldown: Duration | None = None
    address_roles: tuple[ContactRole, ...] = ()
    origins: tuple[Origin, ...] = DEFAULT_ORIGINS
    live_only: StrictBool = True
    destination: Identifier | None = None

    @model_validator(mode="before")
    @classmethod
    def _feed_condition(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        if True in data:  # YAML 1.1 reads the key `on` as true
            data = {("on" if key is True else key): value for key, value in data.items()}
        if data.get("when") is not None:
            return {**data, COMPILED_KEY: data.get("when")}
        return data


class Cap(_Model):
    """At most ``max`` triggers per account within any ``per`` (all triggers together)."""

    max: Annotated[int, Field(strict=True, ge=1, le=1000)]
    per: Duration


class QuietHours(_Model):
    """No trigger is delivered between ``from`` and ``to`` (local time of ``timezone``);
    one that fires then waits until ``to``. ``from`` after ``to`` spans midnight."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    start: ClockTime = Field(alias="from")
    end: ClockTime = Field(alias="to")
    timezone: Annotated[str, BeforeValidator(_timezone)] = "UTC"

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end:
            raise ValueError("quiet hours must not start and end at the same time")
        return self


class Limits(_Model):
    """What applies across all triggers."""

    per_account: Cap | None = None
    quiet_hours: QuietHours | None = None
    holdout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    #: members of these segments get no trigger at all (unsubscribed, inactive, ...)
    suppress: tuple[SegmentRef, ...] = ()


class Destination(_Model):
    """A webhook that receives the triggers naming it, signed with the secret held by the
    environment variable ``secret_env`` (never by this file)."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$")]
    secret_env: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,127}$")] | None = None
    rate_per_second: Annotated[float, Field(gt=0, le=10_000)] = 10.0
    max_attempts: Annotated[int, Field(strict=True, ge=1, le=100)] = 8


class TriggersConfig(_Model):
    """A whole triggers file."""

    version: Annotated[str, Field(min_length=1, max_length=64)] = "1"
    triggers: tuple[Trigger, ...] = ()
    limits: Limits = Limits()
    destinations: dict[Identifier, Destination] = Field(default_factory=dict)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError('must be text; quote it, e.g. version: "2026-12-01.1"')
        return value

    @model_validator(mode="after")
    def _references(self) -> Self:
        ids = [trigger.id for trigger in self.triggers]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate trigger ids: {', '.join(duplicates)}")
        for trigger in self.triggers:
            if trigger.destination is not None and trigger.destination not in self.destinations:
                raise ValueError(
                    f"trigger {trigger.id}: destination {trigger.destination!r} is not defined "
                    "under destinations"
                )
        return self

    def trigger(self, trigger_id: str) -> Trigger:
        """The trigger with this id (KeyError if there is none)."""
        for trigger in self.triggers:
            if trigger.id == trigger_id:
                return trigger
        raise KeyError(trigger_id)


def load_triggers(
    source: str | Path,
    vocabulary: Vocabulary,
    segments: Mapping[str, Set[str] | None] | None = None,
) -> TriggersConfig:
    """Load and check a triggers file (YAML text or a path); every problem at once.

    ``segments``: the known families and their segment ids (``None`` for a family whose
    segments are not known ahead, a cluster family); when given, every family and segment
    a trigger names must exist.

    Examples
    --------
    >>> from worker.core.features import VOCABULARY
    >>> text = '''
    ... version: "1"
    ... triggers:
    ...   - {id: a, on: {family: value}, campaign: x, when: revenu_365d > 1}
    ...   - {id: b, on: {family: value}, campaign: y, cooldown: 30}
    ... '''
    >>> try:
    ...     load_triggers(text, VOCABULARY)
    ... except TriggersError as error:
    ...     print(error)
    2 problems in the campaign triggers:
      - a: when: unknown feature 'revenu_365d' (did you mean 'revenue_365d'?) at column 1
      - b: cooldown: invalid duration 30: write a number and a unit, e.g. 7d
    >>> text = '''
    ... triggers: [{id: a, on: {family: value, segment: z9}, campaign: x}]
    ... '''
    >>> try:
    ...     load_triggers(text, VOCABULARY, {"value": {"a", "b1"}, "cluster": None})
    ... except TriggersError as error:
    ...     print(error)
    1 problem in the campaign triggers:
      - a: on: value has no segment 'z9'
    """
    try:
        data = read_yaml(source, "the campaign triggers")
    except ValueError as error:
        raise TriggersError([str(error)]) from None
    if not isinstance(data, Mapping):
        raise TriggersError(["the triggers file must be a mapping with 'triggers' and 'limits'"])
    problems: list[str] = []
    try:
        config = TriggersConfig.model_validate(data, context={VOCABULARY_CONTEXT: vocabulary})
    except ValidationError as error:
        problems = [_describe(detail, data) for detail in error.errors()]
        raise TriggersError(list(dict.fromkeys(problems))) from None
    if segments is not None:
        problems = _unknown_segments(config, segments)
    if problems:
        raise TriggersError(problems)
    return config


def _describe(detail: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """One pydantic error as ``<trigger id>: <field>: <message>``."""
    loc = [part for part in detail["loc"] if part != COMPILED_KEY]
    where: list[str] = []
    if len(loc) >= 2 and loc[0] == "triggers" and isinstance(loc[1], int):
        raw = data.get("triggers")
        item = raw[loc[1]] if isinstance(raw, list) and loc[1] < len(raw) else None
        label = item.get("id") if isinstance(item, Mapping) else None
        where.append(str(label) if isinstance(label, str) else f"trigger #{loc[1] + 1}")
        loc = loc[2:]
    if loc and detail["type"] in ("missing", "extra_forbidden"):
        key = loc.pop()
        message = f"'{key}' is required" if detail["type"] == "missing" else f"unknown key '{key}'"
    else:
        cause = (detail.get("ctx") or {}).get("error")
        if isinstance(cause, ConditionError):
            loc = ["when"]
        message = str(cause) if cause is not None else detail["msg"]
    fields = [str(part) for part in loc if not isinstance(part, int) or not where]
    if COMPILED_KEY in map(str, detail["loc"]):
        fields = ["when"]
    return ": ".join([*where, *fields, message])


def _unknown_segments(config: TriggersConfig, segments: Mapping[str, Set[str] | None]) -> list[str]:
    problems = []

    def check(owner: str, what: str, family: str, segment: str | None) -> None:
        if family not in segments:
            problems.append(f"{owner}: {what}: no family {family!r}")
        elif (
            segment is not None
            and (known := segments[family]) is not None
            and (segment not in known)
        ):
            problems.append(f"{owner}: {what}: {family} has no segment {segment!r}")

    for trigger in config.triggers:
        check(trigger.id, "on", trigger.on.family, trigger.on.segment)
        for family, segment in trigger.unless_member_of:
            check(trigger.id, "unless_member_of", family, segment)
    for family, segment in config.limits.suppress:
        check("limits", "suppress", family, segment)
    return problems
