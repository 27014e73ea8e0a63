"""What the worker remembers about an account, and the facts all accounts share.

Pure data: ``AccountState`` is what the store persists per account (per-day rows of
orders, points and campaigns, category spend, roles, profile, memberships and the
bookkeeping that makes applying events idempotent); ``Globals`` are the facts shared
by all accounts that some features and families read (ABC cut-offs, cluster models).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker.core.clustering import ClusterSnapshot
from worker.core.events import ContactRole

#: Activity older than this many days cannot influence any feature and is pruned.
HORIZON_DAYS = 365
#: Category spend is kept per 30-day bucket for the trailing year.
CATEGORY_BUCKET_DAYS = 30
#: How many recent event ids an account remembers to drop producer duplicates.
RECENT_IDS_KEPT = 32
#: Event ids of ``segworker import-orders``; imports arrive in time order per account.
IMPORT_ID_PREFIX = "imp-"
ROLES: tuple[ContactRole, ...] = ("user", "buyer", "influencer", "decider", "gatekeeper")
#: The per-day row tables of an ``AccountState`` (``[day, ...]`` sorted by day): what the
#: windowed features sum over, and what pruning and the schedule walk.
ROW_TABLES = ("orders", "points", "campaigns")

# Column positions inside the per-day rows; rows are plain lists so the state is
# compact JSON and cheap to load.
ORDER_REVENUE, ORDER_COUNT = 1, 2
POINTS_EARNED, POINTS_REDEEMED, POINTS_EXPIRED, POINTS_ACTIONS = 1, 2, 3, 4
CAMPAIGN_COLUMNS = {"sent": 1, "opened": 2, "clicked": 3, "responded": 4, "converted": 5}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    revenue (see ``worker.core.value``); None until they were first computed.
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
        """From the stored cut-offs (``worker.core.value.thresholds_to_dict``); None: none yet."""
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
    #: buying-centre role -> the contact last seen in it (whom a campaign trigger addresses)
    contacts: dict[str, str] = field(default_factory=dict)
    last_activity_day: int | None = None
    applied: dict[str, int] = field(default_factory=dict)
    recent_ids: list[str] = field(default_factory=list)
    imported_until: float = 0.0
    sampled_day: int | None = None
    memberships: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: family -> segment -> since when the account qualifies: entries waiting out their
    #: ``enter_after`` (it is not a member yet)
    pending: dict[str, dict[str, float]] = field(default_factory=dict)
    #: ``[definitions fingerprint, next due time, day, cluster model token, ...]`` of the
    #: last full evaluation, cleared by every applied event until it is evaluated: which
    #: rule and cluster families the next event may skip (see ``worker.core.impact``)
    evaluated: list[Any] = field(default_factory=list)
    #: ids of the changes the last write of this account put in the outbox; the next
    #: writer delivers those still there before its own (``worker.adapters.redis_store``)
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
