"""Per-account feature state, its update per event, and the feature catalogue.

Pure: no I/O, no clocks. ``AccountState`` is what the store persists for an
account; ``apply`` folds one input event into it (idempotently); ``FeatureView``
computes the catalogue's features lazily at a given time so that a rule only
pays for the features it reads.

Windows are exact at day granularity: the 90-day window at day ``t`` covers the
days ``t-89 .. t``. Activity older than the longest window is pruned, which keeps
the state small and bounded.

Examples
--------
>>> from datetime import datetime, UTC
>>> from worker.events import OrderPlaced
>>> state = AccountState("ACME")
>>> order = OrderPlaced(event_id="e1", occurred_at=datetime(2026, 3, 1, tzinfo=UTC),
...                     account_id="ACME", order_id="o1", total=250.0)
>>> apply(state, order)
True
>>> apply(state, order)  # the same event again changes nothing
False
>>> view = FeatureView(state, day_of(datetime(2026, 3, 31, tzinfo=UTC)))
>>> view["revenue_30d"], view["revenue_90d"], view["recency_days"]
(0.0, 250.0, 30)
"""

from __future__ import annotations

import base64
import bisect
import functools
import hashlib
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker.clustering import DEFAULT_CATEGORIES, ClusterSnapshot
from worker.events import (
    AccountProfile,
    AnyInputEvent,
    CampaignInteraction,
    ContactRole,
    LoyaltyPoints,
    OrderPlaced,
    OrderReturned,
)
from worker.rules import FeatureKind, Function, Vocabulary
from worker.value import clv_estimate

WINDOWS = (30, 90, 180, 365)
#: Activity older than this many days cannot influence any feature and is pruned.
HORIZON_DAYS = 365
#: Category spend is kept per 30-day bucket for the trailing year.
CATEGORY_BUCKET_DAYS = 30
#: How many recent event ids an account remembers to drop producer duplicates.
RECENT_IDS_KEPT = 32
#: Event ids of ``segworker import-orders``; imports arrive in time order per account.
IMPORT_ID_PREFIX = "imp-"
ROLES: tuple[ContactRole, ...] = ("user", "buyer", "influencer", "decider", "gatekeeper")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MISSING = object()

# Column positions inside the per-day rows; rows are plain lists so the state is
# compact JSON and cheap to load.
ORDER_REVENUE, ORDER_COUNT = 1, 2
POINTS_EARNED, POINTS_REDEEMED, POINTS_EXPIRED, POINTS_ACTIONS = 1, 2, 3, 4
CAMPAIGN_COLUMNS = {"sent": 1, "opened": 2, "clicked": 3, "responded": 4, "converted": 5}


def day_of(moment: datetime) -> int:
    """Days since 1970-01-01 (UTC) of a timezone-aware moment.

    >>> day_of(datetime(1970, 1, 2, 12, tzinfo=UTC))
    1
    """
    return (moment.astimezone(UTC) - _EPOCH).days


def moment_of(day: int) -> datetime:
    """The UTC midnight that starts ``day``."""
    return datetime.fromtimestamp(day * 86400, UTC)


@dataclass(frozen=True)
class Globals:
    """Facts shared by all accounts (from the store), that some features depend on.

    ``value_a_min``/``value_b_min`` are the current ABC cut-offs on trailing-year
    revenue (see ``worker.value``); None until they were first computed.
    """

    value_a_min: float | None = None
    value_b_min: float | None = None
    thresholds_version: str = ""
    #: cluster family -> the latest published model (None: configured, none trained yet)
    clusters: Mapping[str, ClusterSnapshot | None] = field(default_factory=dict)
    #: switch cluster only when the nearest centroid is this much (relative) closer
    cluster_margin: float = 0.1

    @classmethod
    def from_thresholds(
        cls,
        thresholds: Mapping[str, Any] | None,
        clusters: Mapping[str, ClusterSnapshot | None] | None = None,
        cluster_margin: float = 0.1,
    ) -> Globals:
        """From the stored cut-offs (``worker.value.thresholds_to_dict``); None: none yet."""
        thresholds = thresholds or {"a_min": None, "b_min": None, "version": ""}
        return cls(
            value_a_min=thresholds["a_min"],
            value_b_min=thresholds["b_min"],
            thresholds_version=thresholds["version"],
            clusters=dict(clusters or {}),
            cluster_margin=cluster_margin,
        )


NO_GLOBALS = Globals()


@dataclass
class AccountState:
    """Everything the worker remembers about one account.

    ``orders``, ``points`` and ``campaigns`` are per-day rows ``[day, ...]`` sorted by day;
    ``categories`` maps a 30-day bucket index to category spend; ``roles`` maps a
    buying-centre role to ``[last engaged day, last accepted day]``.
    ``applied`` holds the last applied offset per ``topic:partition`` and ``recent_ids``
    digests of the last event ids, which together make ``apply`` idempotent under
    redelivery and producer duplicates.
    ``memberships`` maps family -> segment -> ``{"since": epoch s}`` (plus
    ``"outside_since"`` while held by hysteresis).
    """

    account_id: str
    clock: float = 0.0
    profile: dict[str, Any] = field(default_factory=dict)
    orders: list[list[float]] = field(default_factory=list)
    categories: dict[str, dict[str, float]] = field(default_factory=dict)
    first_order_day: int | None = None
    last_order_day: int | None = None
    points: list[list[int]] = field(default_factory=list)
    points_balance: int = 0
    tier: str | None = None
    campaigns: list[list[int]] = field(default_factory=list)
    unsubscribed: bool = False
    roles: dict[str, list[int | None]] = field(default_factory=dict)
    last_activity_day: int | None = None
    applied: dict[str, int] = field(default_factory=dict)
    recent_ids: list[str] = field(default_factory=list)
    imported_until: float = 0.0
    sampled_day: int | None = None
    memberships: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: ``[definitions fingerprint, next due time, day, cluster model token, ...]`` of the
    #: last full evaluation, cleared by every applied event until it is evaluated: which
    #: rule and cluster families the next event may skip (see ``worker.impact``)
    evaluated: list[Any] = field(default_factory=list)
    #: ids of the changes the last write of this account put in the outbox; the next
    #: writer delivers those still there before its own (``worker.store``)
    unsent: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AccountState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def now_day(self) -> int:
        """The account's own stream-time day: the latest event time it has seen."""
        return int(self.clock // 86400)


# ------------------------------------------------------------------------- update


def apply(
    state: AccountState, event: AnyInputEvent, position: tuple[str, int] | None = None
) -> bool:
    """Fold ``event`` into ``state``; return False when it was already applied.

    ``position`` is ``("topic:partition", offset)`` of the Kafka record. An offset at
    or below the last applied one is a redelivery; an event id seen recently is a
    producer duplicate. Either is skipped, so applying twice equals applying once.
    """
    if position is not None:
        source, offset = position
        if offset <= state.applied.get(source, -1):
            return False
    token = _id_token(event.event_id)
    seen = token in state.recent_ids or event.event_id in state.recent_ids  # full ids: older states
    if seen or _imported_before(state, event):
        if position is not None:
            state.applied[position[0]] = position[1]
        return False

    _APPLIERS[type(event)](state, event)
    state.evaluated = []
    day = day_of(event.occurred_at)
    moment = event.occurred_at.timestamp()
    state.clock = max(state.clock, moment)
    if event.event_id.startswith(IMPORT_ID_PREFIX):
        state.imported_until = max(state.imported_until, moment)
    if not isinstance(event, AccountProfile):
        state.last_activity_day = max(day, state.last_activity_day or day)
    _remember(state, token, position)
    _prune(state)
    return True


def _imported_before(state: AccountState, event: AnyInputEvent) -> bool:
    """A history import older than one already applied: a re-import of the same file.

    Imports are produced in event-time order, so everything before the account's
    import watermark was seen; events at the watermark itself are caught by
    ``recent_ids``. The consequence: an earlier period must be imported first.
    """
    return (
        event.event_id.startswith(IMPORT_ID_PREFIX)
        and event.occurred_at.timestamp() < state.imported_until
    )


def _id_token(event_id: str) -> str:
    """A 48-bit digest of an event id, as 8 characters: what ``recent_ids`` keeps.

    Ids are up to 128 characters; the digest keeps the state small. A false match
    needs two of an account's 32 most recent events to collide: about 1 in 10^13.

    >>> _id_token("evt-2026-000001")
    'rcQCJOQB'
    """
    digest = hashlib.blake2b(event_id.encode(), digest_size=6).digest()
    return base64.urlsafe_b64encode(digest).decode()


def _remember(state: AccountState, token: str, position: tuple[str, int] | None) -> None:
    state.recent_ids.append(token)
    del state.recent_ids[:-RECENT_IDS_KEPT]
    if position is not None:
        state.applied[position[0]] = position[1]


def _day_row(rows: list[list[Any]], day: int, width: int) -> list[Any]:
    """The row for ``day`` in day-sorted ``rows``, created with zeros when missing."""
    if rows and rows[-1][0] == day:  # the common case: events arrive in time order
        return rows[-1]
    index = bisect.bisect_left(rows, day, key=lambda row: row[0])
    if index < len(rows) and rows[index][0] == day:
        return rows[index]
    row: list[Any] = [day] + [0] * (width - 1)
    rows.insert(index, row)
    return row


def _apply_order(state: AccountState, event: OrderPlaced) -> None:
    day = day_of(event.occurred_at)
    row = _day_row(state.orders, day, 3)
    row[ORDER_REVENUE] = round(row[ORDER_REVENUE] + event.total, 2)
    row[ORDER_COUNT] += 1
    state.first_order_day = min(
        day, state.first_order_day if state.first_order_day is not None else day
    )
    state.last_order_day = max(
        day, state.last_order_day if state.last_order_day is not None else day
    )
    bucket = state.categories.setdefault(str(day // CATEGORY_BUCKET_DAYS), {})
    for line in event.lines:
        spend = line.unit_price * line.quantity
        bucket[line.category] = round(bucket.get(line.category, 0.0) + spend, 2)
    if event.contact_id is not None:
        _touch_role(state, "buyer", day, accepted=False)


def _apply_return(state: AccountState, event: OrderReturned) -> None:
    # Returns reduce revenue on the day they happen: windows stay exact and a
    # return never rewrites history that segments were already based on.
    day = day_of(event.occurred_at)
    row = _day_row(state.orders, day, 3)
    row[ORDER_REVENUE] = round(row[ORDER_REVENUE] - event.amount, 2)
    if event.category is not None:
        bucket = state.categories.setdefault(str(day // CATEGORY_BUCKET_DAYS), {})
        bucket[event.category] = round(bucket.get(event.category, 0.0) - event.amount, 2)


def _apply_campaign(state: AccountState, event: CampaignInteraction) -> None:
    day = day_of(event.occurred_at)
    if event.kind == "unsubscribed":
        state.unsubscribed = True
    else:
        row = _day_row(state.campaigns, day, 6)
        row[CAMPAIGN_COLUMNS[event.kind]] += 1
    if event.contact_role is not None and event.kind != "sent":
        accepted = event.kind in ("responded", "converted")
        _touch_role(state, event.contact_role, day, accepted=accepted)


def _touch_role(state: AccountState, role: str, day: int, *, accepted: bool) -> None:
    engaged, last_accepted = state.roles.get(role, [None, None])
    engaged = day if engaged is None else max(engaged, day)
    if accepted:
        last_accepted = day if last_accepted is None else max(last_accepted, day)
    state.roles[role] = [engaged, last_accepted]


def _apply_points(state: AccountState, event: LoyaltyPoints) -> None:
    row = _day_row(state.points, day_of(event.occurred_at), 5)
    if event.kind == "earned":
        row[POINTS_EARNED] += event.points
        state.points_balance += event.points
        if event.reason == "action":
            row[POINTS_ACTIONS] += 1
    elif event.kind == "redeemed":
        row[POINTS_REDEEMED] += event.points
        state.points_balance -= event.points
    else:
        row[POINTS_EXPIRED] += event.points
        state.points_balance -= event.points
    if event.tier is not None:
        state.tier = event.tier


def _apply_profile(state: AccountState, event: AccountProfile) -> None:
    # The latest profile by event time wins, so a late, older profile is ignored.
    if event.occurred_at.timestamp() < state.profile.get("as_of", 0.0):
        return
    state.profile = {
        "as_of": event.occurred_at.timestamp(),
        "name": event.name,
        "industry": event.industry,
        "employees": event.employees,
        "size_class": event.size_class,
        "country": event.country,
        "region": event.region,
    }


#: The state attributes each event type's applier may change (besides the bookkeeping
#: of ``apply``: clock, offsets, recent ids, import watermark, pruning of expired rows;
#: of these only pruning changes a feature at a given day, ``is_member``, which reads
#: whether any points rows remain: ``worker.impact`` evaluates the families reading a
#: table the event prunes).
TOUCHES: dict[type, frozenset[str]] = {
    OrderPlaced: frozenset(
        {"orders", "categories", "first_order_day", "last_order_day", "roles", "last_activity_day"}
    ),
    OrderReturned: frozenset({"orders", "categories", "last_activity_day"}),
    CampaignInteraction: frozenset({"campaigns", "unsubscribed", "roles", "last_activity_day"}),
    LoyaltyPoints: frozenset({"points", "points_balance", "tier", "last_activity_day"}),
    AccountProfile: frozenset({"profile"}),
}

_APPLIERS: dict[type, Callable[[AccountState, Any], None]] = {
    OrderPlaced: _apply_order,
    OrderReturned: _apply_return,
    CampaignInteraction: _apply_campaign,
    LoyaltyPoints: _apply_points,
    AccountProfile: _apply_profile,
}


def _prune(state: AccountState) -> None:
    oldest_day = state.now_day - HORIZON_DAYS
    for rows in (state.orders, state.points, state.campaigns):
        while rows and rows[0][0] <= oldest_day:
            del rows[0]
    oldest_bucket = oldest_day // CATEGORY_BUCKET_DAYS
    for bucket in [b for b in state.categories if int(b) < oldest_bucket]:
        del state.categories[bucket]


# ----------------------------------------------------------------------- features


def _window_sums(rows: list[list[Any]], now_day: int, column: int, days: int) -> float:
    total = 0.0
    for row in reversed(rows):
        age = now_day - row[0]
        if age >= days:
            break
        if age >= 0:
            total += row[column]
    return total


def _window_totals(
    rows: list[list[Any]], now_day: int, column: int, days: tuple[int, ...]
) -> list[float]:
    """``_window_sums`` of several windows (``days`` ascending) from one newest-first pass.

    Each total adds the same rows in the same order as a pass of its own would, so
    the values are identical to calling ``_window_sums`` once per window.
    """
    totals: list[float] = []
    count = len(days)
    limit = days[0]
    total = 0.0
    for row in reversed(rows):
        age = now_day - row[0]
        if age >= limit:  # the row is outside one or more windows: they are complete
            while age >= days[len(totals)]:
                totals.append(total)
                if len(totals) == count:
                    return totals
            limit = days[len(totals)]
        if age >= 0:
            total += row[column]
    totals.extend([total] * (count - len(totals)))
    return totals


class FeatureView(dict[str, Any]):
    """The feature catalogue of one account at day ``now_day``, computed on demand.

    A dict of the features computed so far: a rule reads a cached value at C speed
    and only a miss computes it. The windows of one column (``revenue_30d`` ...
    ``revenue_365d``) are summed in one pass. ``share.<category>`` reads the
    category's share of trailing-year spend. Iterate over :data:`FEATURES` (and
    :data:`GLOBAL_FEATURES`) to read the whole catalogue.
    """

    __slots__ = ("_category_shares", "globals", "now_day", "state")

    def __init__(self, state: AccountState, now_day: int, globals: Globals = NO_GLOBALS) -> None:
        super().__init__()
        self.state = state
        self.now_day = now_day
        self.globals = globals
        self._category_shares: dict[str, float] | None = None

    def __missing__(self, name: str) -> Any:
        # One lookup for every catalogue name (see _VIEW_COMPUTE); a miss costs little more
        # than the computation itself.
        compute = _VIEW_COMPUTE.get(name)
        if compute is not None:
            value = compute(self)
        elif name.startswith("share."):
            value = self._shares().get(name[6:], 0.0)  # no spend in the category
        else:
            raise KeyError(name)
        self[name] = value
        return value

    def get(self, name: str, default: Any = None) -> Any:
        # dict.get would skip __missing__; clustering, drift and profiles read through here.
        try:
            return self[name]
        except KeyError:
            return default

    def _shares(self) -> dict[str, float]:
        """All category shares, computed once per view.

        Each is also stored as ``share.<category>``, and so is 0.0 for the known
        categories without spend, so that the next category read (the needs model reads
        all of them, conditions a few) is a plain dict hit rather than another miss.
        """
        shares = self._category_shares
        if shares is None:
            shares = self._category_shares = category_shares(self.state, self.now_day)
            self.update(_NO_SHARES)
            self.update({"share." + category: share for category, share in shares.items()})
        return shares


#: ``share.<category>`` of the known categories (the needs space) for an account without spend.
_NO_SHARES: dict[str, float] = {f"share.{category}": 0.0 for category in DEFAULT_CATEGORIES}


@dataclass(frozen=True)
class Feature:
    """One catalogue entry: its kind for the condition language and how to compute it."""

    kind: FeatureKind
    description: str
    compute: Callable[[AccountState, int], Any]

    @property
    def window(self) -> Window | None:
        return self.compute if isinstance(self.compute, Window) else None


@dataclass(frozen=True)
class Window:
    """A windowed sum: column ``column`` of the per-day rows ``attribute``, last ``days``."""

    attribute: str
    column: int
    days: int

    def __call__(self, state: AccountState, now_day: int) -> float:
        rows = getattr(state, self.attribute)
        return round(_window_sums(rows, now_day, self.column, self.days), 2)


def _windowed(attribute: str, column: int, days: int) -> Window:
    return Window(attribute, column, days)


@dataclass(frozen=True)
class Ratio:
    """Feature ``numerator`` / feature ``denominator``, rounded; None when the latter is 0."""

    numerator: str
    denominator: str

    def __call__(self, state: AccountState, now_day: int) -> float | None:
        below = FEATURES[self.denominator].compute(state, now_day)
        if not below:
            return None
        return round(FEATURES[self.numerator].compute(state, now_day) / below, 4)

    def in_view(self, view: FeatureView) -> float | None:
        """The same from ``view``'s values: they equal what ``__call__`` computes, and the
        view usually holds them already (``campaigns_sent_365d`` is read just before)."""
        below = view[self.denominator]
        if not below:
            return None
        return round(view[self.numerator] / below, 4)


def _ratio(numerator: str, denominator: str) -> Ratio:
    return Ratio(numerator, denominator)


def _days_since(attribute: str) -> Callable[[AccountState, int], int | None]:
    def compute(state: AccountState, now_day: int) -> int | None:
        day = getattr(state, attribute)
        return None if day is None else now_day - day

    return compute


def _profile(key: str) -> Callable[[AccountState, int], Any]:
    return lambda state, _now_day: state.profile.get(key)


def _last_and_previous_90d(state: AccountState, now_day: int) -> tuple[float, float]:
    """Revenue of the last 90 days (unrounded) and of the 90 before (rounded), one pass."""
    last_90, last_180 = _window_totals(state.orders, now_day, ORDER_REVENUE, (90, 180))
    return last_90, round(last_180 - last_90, 2)


def _revenue_prev_90d(state: AccountState, now_day: int) -> float:
    return _last_and_previous_90d(state, now_day)[1]


def _momentum(state: AccountState, now_day: int) -> float | None:
    """Revenue of the last 90 days relative to the 90 before (1.0 = flat)."""
    last_90, before = _last_and_previous_90d(state, now_day)
    if before <= 0:
        return None
    return round(last_90 / before, 4)


def category_shares(state: AccountState, now_day: int) -> dict[str, float]:
    """Each category's share of positive trailing-year category spend."""
    oldest_bucket = (now_day - HORIZON_DAYS) // CATEGORY_BUCKET_DAYS
    spend: dict[str, float] = {}
    for bucket, categories in state.categories.items():
        if int(bucket) > oldest_bucket:
            for category, amount in categories.items():
                spend[category] = spend.get(category, 0.0) + amount
    total = sum(amount for amount in spend.values() if amount > 0)
    if total <= 0:
        return {}
    return {c: round(max(a, 0.0) / total, 4) for c, a in spend.items()}


def _top_category(state: AccountState, now_day: int) -> str | None:
    return _top_of(category_shares(state, now_day))


def _top_category_in_view(view: FeatureView) -> str | None:
    return _top_of(view._shares())  # the shares the view already computed for share.*


def _top_of(shares: dict[str, float]) -> str | None:
    return max(shares, key=lambda c: (shares[c], c)) if shares else None


def _role_engaged(role: str, days: int, column: int) -> Callable[[AccountState, int], bool]:
    def compute(state: AccountState, now_day: int) -> bool:
        day = state.roles.get(role, [None, None])[column]
        return day is not None and 0 <= now_day - day < days

    return compute


def _catalogue() -> dict[str, Feature]:
    orders, points, campaigns = "orders", "points", "campaigns"
    features: dict[str, Feature] = {}
    for days in WINDOWS:
        features[f"revenue_{days}d"] = Feature(
            "number",
            f"Order revenue net of returns, last {days} days",
            _windowed(orders, ORDER_REVENUE, days),
        )
        features[f"orders_{days}d"] = Feature(
            "number", f"Number of orders, last {days} days", _windowed(orders, ORDER_COUNT, days)
        )
    for days in (30, 90, 365):
        features[f"points_earned_{days}d"] = Feature(
            "number",
            f"Loyalty points earned, last {days} days",
            _windowed(points, POINTS_EARNED, days),
        )
        features[f"points_redeemed_{days}d"] = Feature(
            "number",
            f"Loyalty points redeemed, last {days} days",
            _windowed(points, POINTS_REDEEMED, days),
        )
        features[f"actions_{days}d"] = Feature(
            "number",
            f"Loyalty actions taken part in, last {days} days",
            _windowed(points, POINTS_ACTIONS, days),
        )
    features["points_expired_365d"] = Feature(
        "number", "Loyalty points expired, last 365 days", _windowed(points, POINTS_EXPIRED, 365)
    )
    for kind, column in CAMPAIGN_COLUMNS.items():
        for days in (90, 365):
            features[f"campaigns_{kind}_{days}d"] = Feature(
                "number",
                f"Campaign interactions '{kind}', last {days} days",
                _windowed(campaigns, column, days),
            )
    features.update(
        {
            "revenue_prev_90d": Feature(
                "number", "Revenue of the 90 days before the last 90", _revenue_prev_90d
            ),
            "momentum_90d": Feature("number", "Revenue last 90 days / the 90 before", _momentum),
            "aov_365d": Feature(
                "number",
                "Average order value, last 365 days",
                _ratio("revenue_365d", "orders_365d"),
            ),
            "recency_days": Feature(
                "number", "Days since the last order", _days_since("last_order_day")
            ),
            "tenure_days": Feature(
                "number", "Days since the first order", _days_since("first_order_day")
            ),
            "days_since_activity": Feature(
                "number", "Days since any activity", _days_since("last_activity_day")
            ),
            "response_rate_365d": Feature(
                "number",
                "Campaign responses and conversions per campaign sent, last 365 days",
                _ratio("campaign_acceptances_365d", "campaigns_sent_365d"),
            ),
            "campaign_acceptances_365d": Feature(
                "number",
                "Campaign responses plus conversions, last 365 days",
                lambda s, d: (
                    _window_sums(s.campaigns, d, 4, 365) + _window_sums(s.campaigns, d, 5, 365)
                ),
            ),
            "points_balance": Feature(
                "number", "Current loyalty points balance", lambda s, _d: s.points_balance
            ),
            "tier": Feature("string", "Loyalty tier", lambda s, _d: s.tier),
            "is_member": Feature(
                "bool",
                "Has ever earned or redeemed points, or has a tier",
                lambda s, _d: bool(s.points) or s.tier is not None or s.points_balance != 0,
            ),
            "unsubscribed": Feature(
                "bool", "A contact unsubscribed from campaigns", lambda s, _d: s.unsubscribed
            ),
            "top_category": Feature(
                "string", "Category with the largest trailing-year spend", _top_category
            ),
            "industry": Feature("string", "Industry (profile)", _profile("industry")),
            "employees": Feature("number", "Head count (profile)", _profile("employees")),
            "size_class": Feature(
                "string", "micro/small/medium/large/enterprise (profile)", _profile("size_class")
            ),
            "country": Feature("string", "ISO country code (profile)", _profile("country")),
            "region": Feature("string", "EMEA/AMER/APAC (profile)", _profile("region")),
        }
    )
    for role in ROLES:
        features[f"{role}_engaged_30d"] = Feature(
            "bool", f"A {role} contact interacted in the last 30 days", _role_engaged(role, 30, 0)
        )
        features[f"{role}_accepted_90d"] = Feature(
            "bool",
            f"A {role} contact responded to or converted on a campaign in the last 90 days",
            _role_engaged(role, 90, 1),
        )
    return features


#: The feature catalogue: name -> kind, description and how it is computed.
FEATURES: dict[str, Feature] = _catalogue()
#: The windowed features, and per (rows, column) their windows shortest first.
WINDOWED: dict[str, Window] = {
    name: window for name, feature in FEATURES.items() if (window := feature.window) is not None
}
WINDOWS_OF: dict[tuple[str, int], list[tuple[int, str]]] = {}
for _name, _window in WINDOWED.items():
    WINDOWS_OF.setdefault((_window.attribute, _window.column), []).append((_window.days, _name))
for _windows in WINDOWS_OF.values():
    _windows.sort()
del _name, _window, _windows


@dataclass(frozen=True)
class GlobalFeature:
    """A feature that also depends on facts shared by all accounts (``Globals``)."""

    kind: FeatureKind
    description: str
    compute: Callable[[FeatureView], Any]


def _abc_class(view: FeatureView) -> str | None:
    a_min, b_min = view.globals.value_a_min, view.globals.value_b_min
    revenue = view["revenue_365d"]
    if a_min is None or b_min is None or revenue <= 0:
        return None
    return "A" if revenue >= a_min else "B" if revenue >= b_min else "C"


def _clv(view: FeatureView) -> float | None:
    return clv_estimate(
        view["revenue_365d"], view["orders_365d"], view["tenure_days"], view["recency_days"]
    )


GLOBAL_FEATURES: dict[str, GlobalFeature] = {
    "value_a_min": GlobalFeature(
        "number",
        "Smallest trailing-year revenue of an A account (global ABC cut-off)",
        lambda view: view.globals.value_a_min,
    ),
    "value_b_min": GlobalFeature(
        "number",
        "Smallest trailing-year revenue of a B account (global ABC cut-off)",
        lambda view: view.globals.value_b_min,
    ),
    "abc_class": GlobalFeature(
        "string",
        "A, B or C by the Pareto analysis of trailing-year revenue (null: no revenue)",
        _abc_class,
    ),
    "clv_estimate": GlobalFeature(
        "number", "Customer lifetime value estimate (see worker.value.clv_estimate)", _clv
    ),
}


def _view_computer(name: str, feature: Feature) -> Callable[[FeatureView], Any]:
    """How ``FeatureView`` computes a catalogue feature: from what it already holds where
    that gives the identical value, else from the state at the view's day."""
    compute = feature.compute
    if isinstance(compute, Window):
        return _column_windows(name, compute)
    if isinstance(compute, Ratio):
        return compute.in_view
    if compute is _top_category:
        return _top_category_in_view
    return lambda view: compute(view.state, view.now_day)


def _column_windows(name: str, window: Window) -> Callable[[FeatureView], Any]:
    """Computes ``name`` and stores every other catalogued window of its column in the
    view as well: one pass over the rows for all of them."""
    rows_of = operator.attrgetter(window.attribute)
    column = window.column
    windows = WINDOWS_OF[(window.attribute, window.column)]  # (days, name), shortest first
    days = tuple(length for length, _ in windows)
    names = tuple(window_name for _, window_name in windows)
    position = names.index(name)

    def compute(view: FeatureView) -> float:
        totals = _window_totals(rows_of(view.state), view.now_day, column, days)
        values = [round(total, 2) for total in totals]
        view.update(zip(names, values, strict=True))
        return values[position]

    return compute


#: What ``FeatureView.__missing__`` calls for each name of the catalogue.
_VIEW_COMPUTE: dict[str, Callable[[FeatureView], Any]] = {
    **{name: _view_computer(name, feature) for name, feature in FEATURES.items()},
    **{name: feature.compute for name, feature in GLOBAL_FEATURES.items()},
}


#: Input of the features that also depend on the shared ``Globals``.
GLOBAL_INPUT = "globals"
#: Input of the features that change every day in a way no due time predicts.
DAILY_INPUT = "daily"


def _inputs() -> dict[str, frozenset[str]]:
    inputs: dict[str, frozenset[str]] = {
        name: frozenset({window.attribute}) for name, window in WINDOWED.items()
    }
    inputs.update(
        {
            "revenue_prev_90d": frozenset({"orders"}),
            "momentum_90d": frozenset({"orders"}),
            "aov_365d": frozenset({"orders"}),
            "recency_days": frozenset({"last_order_day"}),
            "tenure_days": frozenset({"first_order_day"}),
            "days_since_activity": frozenset({"last_activity_day"}),
            "response_rate_365d": frozenset({"campaigns"}),
            "campaign_acceptances_365d": frozenset({"campaigns"}),
            "points_balance": frozenset({"points_balance"}),
            "tier": frozenset({"tier"}),
            "is_member": frozenset({"points", "tier", "points_balance"}),
            "unsubscribed": frozenset({"unsubscribed"}),
            "top_category": frozenset({"categories"}),
            **{key: frozenset({"profile"}) for key in _PROFILE_FEATURES},
            **{f"{role}_engaged_30d": frozenset({"roles"}) for role in ROLES},
            **{f"{role}_accepted_90d": frozenset({"roles"}) for role in ROLES},
            "value_a_min": frozenset({GLOBAL_INPUT}),
            "value_b_min": frozenset({GLOBAL_INPUT}),
            "abc_class": frozenset({"orders", GLOBAL_INPUT}),
            # grows with tenure and recency every day; the schedule has no due time for it
            "clv_estimate": frozenset({"orders", "first_order_day", "last_order_day", DAILY_INPUT}),
        }
    )
    return inputs


_PROFILE_FEATURES = ("industry", "employees", "size_class", "country", "region")
#: What each feature reads: state attributes, or GLOBAL_INPUT / DAILY_INPUT.
FEATURE_INPUTS: dict[str, frozenset[str]] = _inputs()
#: What each condition-language function reads.
FUNCTION_INPUTS: dict[str, frozenset[str]] = {"share": frozenset({"categories"})}

_CATEGORY = re.compile(r"[a-z0-9_]{1,64}")


def _share(features: Mapping[str, Any], category: str) -> Any:
    key = _share_key(category)
    if key is None:
        return None
    try:  # as features.get(key), without the Python-level call of FeatureView.get
        return features[key]
    except KeyError:
        return None


@functools.lru_cache(maxsize=1024)
def _share_key(category: str) -> str | None:
    """``share.<category>``, or None for anything but a category name (a condition's text
    must address nothing else). Cached: conditions pass the same few constants."""
    return f"share.{category}" if _CATEGORY.fullmatch(category) else None


#: What segment conditions may refer to.
VOCABULARY = Vocabulary(
    features={
        **{name: feature.kind for name, feature in FEATURES.items()},
        **{name: feature.kind for name, feature in GLOBAL_FEATURES.items()},
    },
    functions={
        "share": Function(
            impl=_share,
            arg_kinds=("string",),
            result_kind="number",
            description='Share (0..1) of a category in trailing-year spend, e.g. share("tools")',
        )
    },
)
