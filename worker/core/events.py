"""Event contracts: the pydantic models of every event in and out.

These models are the single source of the JSON Schemas in ``schemas/``
(``segworker schemas export`` regenerates them; a test fails when they drift).

Every input event carries a ``type`` discriminator, a producer-assigned
``event_id`` (the de-duplication key), ``occurred_at`` (event time, timezone
aware) and the ``account_id`` it is keyed by.

Examples
--------
>>> event = decode_input(b'{"type": "account_profile", "event_id": "p-1",'
...     b' "occurred_at": "2026-01-05T10:00:00Z", "account_id": "ACME",'
...     b' "industry": "manufacturing", "employees": 420, "country": "DE"}')
>>> event.size_class, event.region
('large', 'EMEA')
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

#: Bound on how far in the future an event time may lie (producer clock skew).
MAX_CLOCK_SKEW = timedelta(days=1)
#: Events before this are garbage, not history (unless the setting below moves it). The floor
#: exists to catch producers that send a zero or a default (1970-01-01, the Unix epoch;
#: 0001-01-01, year 1), not to cut off old history: long-lived B2B customers have ERP
#: records going back to the 1980s and 1990s, and an import of them must pass.
DEFAULT_EARLIEST_EVENT_TIME = datetime(1980, 1, 1, tzinfo=UTC)
#: The setting (``worker.config.settings.Settings.earliest_event_time``) that moves the floor.
EARLIEST_EVENT_TIME_SETTING = "SEGWORKER_EARLIEST_EVENT_TIME"
#: Key of the floor in the validation context (``decode_input`` passes it): the contract
#: follows the worker's setting without a module-level variable that settings would change.
EARLIEST_EVENT_TIME_CONTEXT = "earliest_event_time"
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]")

Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@/+-]+$")]
# strict: a JSON number only, not true or "100" (an integer is fine)
Money = Annotated[float, Field(strict=True, ge=0, le=1e12, allow_inf_nan=False)]

ContactRole = Literal["user", "buyer", "influencer", "decider", "gatekeeper"]
CampaignKind = Literal["sent", "opened", "clicked", "responded", "converted", "unsubscribed"]
PointsKind = Literal["earned", "redeemed", "expired"]
SizeClass = Literal["micro", "small", "medium", "large", "enterprise"]
Region = Literal["EMEA", "AMER", "APAC"]
Channel = Literal["web", "edi", "sales_rep", "phone", "marketplace"]


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputEvent(_Contract):
    """Fields shared by every input event; ``TOPIC`` is the logical topic it travels on
    (the settings map it to the real topic name)."""

    TOPIC: ClassVar[str]

    event_id: Identifier = Field(description="Producer-assigned unique id; the de-duplication key.")
    occurred_at: AwareDatetime = Field(
        description="When it happened (event time), ISO-8601 with timezone. Not before "
        f"{DEFAULT_EARLIEST_EVENT_TIME.date()} (the worker's setting "
        f"{EARLIEST_EVENT_TIME_SETTING} moves this floor) and at most "
        f"{MAX_CLOCK_SKEW.days} day in the future."
    )
    account_id: Identifier = Field(description="The account (company) the event belongs to.")

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        # Pydantic would read a number or a digit string as Unix time, in seconds or
        # milliseconds guessed by its size.
        if isinstance(value, datetime) or (isinstance(value, str) and _ISO_DATE.match(value)):
            return value
        raise ValueError("event time must be ISO-8601 text, e.g. 2026-01-05T10:00:00Z")

    @field_validator("occurred_at")
    @classmethod
    def _plausible_time(cls, value: datetime, info: ValidationInfo) -> datetime:
        floor = earliest_event_time(info.context)
        # Compare before converting: astimezone overflows at the ends of the calendar.
        if value < floor:
            raise ValueError(
                f"event time {value.isoformat()} is before {moment_text(floor)}, the earliest "
                f"the worker accepts ({EARLIEST_EVENT_TIME_SETTING})"
            )
        if value > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError(f"event time {value.isoformat()} is in the future")
        return value.astimezone(UTC)


def moment_text(moment: datetime) -> str:
    """A UTC moment for people: the date alone at midnight.

    >>> moment_text(datetime(1980, 1, 1, tzinfo=UTC))
    '1980-01-01'
    >>> moment_text(datetime(1980, 1, 1, 6, tzinfo=UTC))
    '1980-01-01T06:00:00+00:00'
    """
    moment = moment.astimezone(UTC)
    return moment.date().isoformat() if moment.time() == time() else moment.isoformat()


def epoch_text(epoch: float) -> str:
    """Epoch seconds as ISO 8601 in UTC, as the views and trigger reasons show them.

    >>> epoch_text(0)
    '1970-01-01T00:00:00+00:00'
    """
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def earliest_event_time(context: Any) -> datetime:
    """The event-time floor of a validation context; the default without one.

    >>> earliest_event_time(None).year
    1980
    >>> earliest_event_time({"earliest_event_time": datetime(2000, 1, 1, tzinfo=UTC)}).year
    2000
    """
    if isinstance(context, dict):
        floor = context.get(EARLIEST_EVENT_TIME_CONTEXT)
        if isinstance(floor, datetime):
            return floor
    return DEFAULT_EARLIEST_EVENT_TIME


class OrderLine(_Contract):
    sku: Identifier
    category: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
    quantity: Annotated[int, Field(strict=True, gt=0, le=1_000_000)]
    unit_price: Money


class OrderPlaced(InputEvent):
    """An account placed an order (topic ``orders``)."""

    TOPIC: ClassVar[str] = "orders"

    type: Literal["order_placed"] = "order_placed"
    contact_id: Identifier | None = None
    order_id: Identifier
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"
    total: Money
    lines: Annotated[list[OrderLine], Field(max_length=1000)] = Field(default_factory=list)
    channel: Channel = "web"

    @model_validator(mode="after")
    def _lines_add_up(self) -> OrderPlaced:
        if self.lines:
            summed = sum(line.unit_price * line.quantity for line in self.lines)
            # Allow rounding and order-level discounts/freight of up to 50 %.
            if not (summed * 0.5 <= self.total <= summed * 1.5 + 1):
                raise ValueError(f"total {self.total} does not match order lines ({summed})")
        return self


class OrderReturned(InputEvent):
    """Goods of an earlier order came back (topic ``orders``); revenue is reduced."""

    TOPIC: ClassVar[str] = "orders"

    type: Literal["order_returned"] = "order_returned"
    order_id: Identifier
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"
    amount: Money
    category: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")] | None = (
        None
    )


class CampaignInteraction(InputEvent):
    """A contact of the account interacted with a campaign (topic ``campaign-events``)."""

    TOPIC: ClassVar[str] = "campaign-events"

    type: Literal["campaign_interaction"] = "campaign_interaction"
    campaign_id: Identifier
    contact_id: Identifier | None = None
    contact_role: ContactRole | None = None
    kind: CampaignKind


class LoyaltyPoints(InputEvent):
    """Points were earned, redeemed or expired (topic ``loyalty-points``)."""

    TOPIC: ClassVar[str] = "loyalty-points"

    type: Literal["loyalty_points"] = "loyalty_points"
    kind: PointsKind
    points: Annotated[int, Field(strict=True, gt=0, le=10_000_000)]
    reason: Literal["purchase", "action", "referral", "bonus", "redemption", "expiry", "adjustment"]
    tier: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_]+$")] | None = None
    contact_id: Identifier | None = None


def size_class_for(employees: int) -> SizeClass:
    """EU-style size classes by head count.

    >>> [size_class_for(n) for n in (3, 10, 120, 900, 5000)]
    ['micro', 'small', 'medium', 'large', 'enterprise']
    """
    if employees < 10:
        return "micro"
    if employees < 50:
        return "small"
    if employees < 250:
        return "medium"
    if employees < 1000:
        return "large"
    return "enterprise"


_REGION_BY_COUNTRY: dict[str, Region] = {
    **dict.fromkeys(
        [
            "AT",
            "BE",
            "CH",
            "CZ",
            "DE",
            "DK",
            "ES",
            "FI",
            "FR",
            "GB",
            "IE",
            "IT",
            "NL",
            "NO",
            "PL",
            "PT",
            "SE",
            "AE",
            "SA",
            "ZA",
            "IL",
            "TR",
            "HU",
            "RO",
            "GR",
        ],
        "EMEA",
    ),
    **dict.fromkeys(["US", "CA", "MX", "BR", "AR", "CL", "CO", "PE"], "AMER"),
    **dict.fromkeys(
        ["CN", "JP", "KR", "IN", "SG", "AU", "NZ", "ID", "MY", "TH", "VN", "PH", "TW", "HK"], "APAC"
    ),
}


class AccountProfile(InputEvent):
    """Firmographic profile of an account (topic ``account-profiles``); the latest wins."""

    TOPIC: ClassVar[str] = "account-profiles"

    type: Literal["account_profile"] = "account_profile"
    name: Annotated[str, Field(max_length=200)] | None = None
    industry: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
    employees: Annotated[int, Field(strict=True, ge=1, le=10_000_000)]
    size_class: SizeClass | None = Field(
        default=None, description="Derived from employees when not given."
    )
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    region: Region | None = Field(
        default=None, description="Derived from country when not given; null if unmapped."
    )

    @model_validator(mode="after")
    def _derive(self) -> AccountProfile:
        if self.size_class is None:
            object.__setattr__(self, "size_class", size_class_for(self.employees))
        if self.region is None:
            # An unmapped country leaves the region unknown rather than guessing one.
            object.__setattr__(self, "region", _REGION_BY_COUNTRY.get(self.country))
        return self


class AccountErased(InputEvent):
    """Erase everything about an account (GDPR), topic ``account-profiles``.

    The worker emits the exits of all its memberships and then deletes its state.
    """

    TOPIC: ClassVar[str] = "account-profiles"

    type: Literal["account_erased"] = "account_erased"
    request_id: Annotated[str, Field(max_length=128)] | None = Field(
        default=None, description="The erasure request this fulfils, for the audit trail."
    )


AnyInputEvent = Annotated[
    OrderPlaced
    | OrderReturned
    | CampaignInteraction
    | LoyaltyPoints
    | AccountProfile
    | AccountErased,
    Field(discriminator="type"),
]
#: Every input event type, from the union above: a new type is one model and one entry there.
INPUT_EVENT_TYPES: tuple[type[InputEvent], ...] = get_args(get_args(AnyInputEvent)[0])
#: Logical topic -> the event types it carries (each model's ``TOPIC``), in model order.
INPUT_TOPICS: dict[str, tuple[str, ...]] = {}
for _event_type in INPUT_EVENT_TYPES:
    INPUT_TOPICS.setdefault(_event_type.TOPIC, ())
    INPUT_TOPICS[_event_type.TOPIC] += (_event_type.model_fields["type"].default,)
del _event_type
_INPUT_ADAPTER: TypeAdapter[AnyInputEvent] = TypeAdapter(AnyInputEvent)  # type: ignore[arg-type,unused-ignore]


def decode_input(
    raw: bytes | str, earliest_event_time: datetime = DEFAULT_EARLIEST_EVENT_TIME
) -> AnyInputEvent:
    """Parse and validate one input event; raises ``pydantic.ValidationError``.

    Event times before ``earliest_event_time`` are refused (the worker passes its setting).

    >>> decode_input(b'{"type": "account_erased", "event_id": "e", "account_id": "A",'
    ...     b' "occurred_at": "1997-01-14T00:00:00Z"}').occurred_at.year
    1997
    """
    return _INPUT_ADAPTER.validate_json(
        raw, context={EARLIEST_EVENT_TIME_CONTEXT: earliest_event_time}
    )


# ---------------------------------------------------------------------------- out


#: How a segment change arose: an event of the account (``event``), an imported event
#: (``import``), time passing (``time``, the sweep), new ABC cut-offs (``cutoffs``), a
#: definitions change (``recompute``), a new cluster model (``model``), an erasure.
Origin = Literal["event", "import", "time", "cutoffs", "recompute", "model", "erasure"]


class SegmentChanged(_Contract):
    """An account entered or left a segment (topic ``segment-changes``, keyed by account)."""

    type: Literal["segment_changed"] = "segment_changed"
    change_id: str = Field(
        description="Deterministic id: the same change computed twice has the same id, so "
        "consumers de-duplicate on it."
    )
    account_id: Identifier
    family: str = Field(description="Segment family, e.g. apriori, value, needs, program, cluster.")
    segment_id: str
    change: Literal["entered", "exited"]
    previous_segment_id: str | None = Field(
        default=None, description="For exclusive families: the segment the account came from."
    )
    reason: str = Field(description="Why, in words, with the feature values that decided it.")
    features: dict[str, float | int | str | bool | None] = Field(
        default_factory=dict, description="The feature values the deciding rule referenced."
    )
    occurred_at: AwareDatetime = Field(description="Stream time at which the change happened.")
    member_since: AwareDatetime | None = Field(
        default=None, description="For exits: when the account had entered the segment."
    )
    definition_version: str
    cause: str = Field(description="What triggered it: the event id, or 'time:<iso>' for sweeps.")
    origin: Origin = Field(
        default="event",
        description="How it arose: event, import (a back-filled event), time (the sweep), "
        "cutoffs (new ABC cut-offs), recompute (a definitions change), model (a new "
        "cluster model), erasure.",
    )
    live: bool = Field(
        default=False,
        description="Fresh: occurred_at lies within SEGWORKER_LIVE_WINDOW_SECONDS of the wall "
        "clock when it was emitted. History (an import, a replay) is not live.",
    )


class DeadLetter(_Contract):
    """An input that could not be processed (topic ``segment-dead-letters``)."""

    type: Literal["dead_letter"] = "dead_letter"
    reason: str
    error_kind: Literal[
        "malformed_json", "invalid_event", "unknown_type", "wrong_topic", "wrong_key", "too_large"
    ]
    source_topic: str
    source_partition: int
    source_offset: int
    raw: str = Field(
        description="The original bytes, base64-encoded; only the first 64 KiB of a larger value."
    )
    raw_bytes: int = Field(default=0, description="Size of the original value in bytes.")
    raw_truncated: bool = Field(default=False, description="Whether raw holds only a prefix.")
    received_at: AwareDatetime


class SegmentDriftAlarm(_Contract):
    """A segment's share, a feature's distribution or a cluster centroid moved too far."""

    kind: Literal["segment_share", "feature", "centroid"]
    family: str | None = None
    segment_id: str | None = None
    feature: str | None = None
    value: float
    bound: float
    before: float | None = None
    after: float | None = None
    message: str


class SegmentDrift(_Contract):
    """Segment statistics and drift alarms of one interval (topic ``segment-drift``)."""

    type: Literal["segment_drift"] = "segment_drift"
    interval_start: AwareDatetime | None = None
    interval_end: AwareDatetime
    total_accounts: int = Field(ge=0)
    sizes: dict[str, dict[str, int]] = Field(description="family -> segment -> members")
    sizes_estimated: bool = False
    inflow: dict[str, dict[str, int]] = Field(default_factory=dict)
    outflow: dict[str, dict[str, int]] = Field(default_factory=dict)
    alarms: list[SegmentDriftAlarm] = Field(default_factory=list)
    features: dict[str, float | None] = Field(
        default_factory=dict, description="Typical value per monitored feature"
    )
    centroid_shifts: dict[str, dict[str, float]] = Field(default_factory=dict)


class CampaignTriggered(_Contract):
    """A campaign trigger fired for an account (topic ``campaign-triggers``, keyed by account).

    Consumers de-duplicate on ``trigger_id``: the same trigger for the same segment change
    always has the same id. A ``holdout`` trigger belongs to the control group: it is
    recorded here so that its effect can be measured, and never delivered to a webhook.
    """

    type: Literal["campaign_triggered"] = "campaign_triggered"
    trigger_id: str = Field(description="Deterministic id of this trigger for this change.")
    trigger: str = Field(description="The trigger's id in the triggers file.")
    campaign: str
    account_id: Identifier
    contacts: dict[ContactRole, Identifier] = Field(
        default_factory=dict,
        description="The last contact seen per buying-centre role the trigger addresses.",
    )
    holdout: bool = Field(default=False, description="Control group: record, do not send.")
    change_id: str = Field(description="The SegmentChanged that caused it.")
    family: str
    segment_id: str
    change: Literal["entered", "exited"]
    change_reason: str = Field(description="Why the account entered or left the segment.")
    occurred_at: AwareDatetime = Field(description="When the segment change happened.")
    fired_at: AwareDatetime = Field(description="When the router decided (wall clock).")
    deliver_at: AwareDatetime = Field(
        description="Not before this (wall clock): later than fired_at during quiet hours."
    )
    destination: str | None = Field(default=None, description="The webhook it goes to, if any.")
    triggers_version: str = Field(description="Version of the triggers file that fired it.")


class CampaignTriggerDeadLetter(_Contract):
    """A trigger its webhook refused, or did not take after every attempt (topic
    ``campaign-trigger-dead-letters``): nothing is dropped without a trace."""

    type: Literal["campaign_trigger_dead_letter"] = "campaign_trigger_dead_letter"
    reason: str
    trigger: CampaignTriggered


OUTPUT_EVENT_TYPES: tuple[type[BaseModel], ...] = (
    SegmentChanged,
    DeadLetter,
    SegmentDrift,
    CampaignTriggered,
    CampaignTriggerDeadLetter,
)
