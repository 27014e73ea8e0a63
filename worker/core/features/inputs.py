"""How each input event changes an account's state: one registry, event type -> applier.

``apply`` folds one event into an ``AccountState`` idempotently: an offset at or below
the last applied one of its partition is a redelivery, an event id seen recently a
producer duplicate, an import older than one applied a re-import; each is skipped.
Each event type's applier is registered with ``@applies(EventType, *attributes)``,
naming the state attributes it may change (``worker.core.impact`` reads them to know
which families an event cannot change): a new input event type is one model in
``worker.core.events`` and one applier here.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.core.events import (
    AccountProfile,
    AnyInputEvent,
    CampaignInteraction,
    LoyaltyPoints,
    OrderPlaced,
    OrderReturned,
)
from worker.core.features.state import (
    CAMPAIGN_COLUMNS,
    CATEGORY_BUCKET_DAYS,
    HORIZON_DAYS,
    IMPORT_ID_PREFIX,
    ORDER_COUNT,
    ORDER_REVENUE,
    POINTS_ACTIONS,
    POINTS_EARNED,
    POINTS_EXPIRED,
    POINTS_REDEEMED,
    RECENT_IDS_KEPT,
    ROW_TABLES,
    AccountState,
    day_of,
)
from worker.core.features.view import forget_view

ApplyFunction = Callable[[AccountState, Any], None]


@dataclass(frozen=True)
class Applier:
    """How events of one type change a state, and the state attributes they may change.

    Besides the bookkeeping of ``apply`` (clock, offsets, recent ids, import watermark,
    pruning of expired rows; of these only pruning changes a feature at a given day,
    ``is_member``, which reads whether any points rows remain: ``worker.core.impact``
    evaluates the families reading a table the event prunes).
    """

    apply: ApplyFunction
    touches: frozenset[str]


#: Every input event type's applier (filled by ``@applies`` below).
APPLIERS: dict[type, Applier] = {}


def applies(event_type: type, *touches: str) -> Callable[[ApplyFunction], ApplyFunction]:
    """Register the decorated function as the applier of ``event_type``."""

    def register(function: ApplyFunction) -> ApplyFunction:
        APPLIERS[event_type] = Applier(function, frozenset(touches))
        return function

    return register


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
    token = id_token(event.event_id)
    seen = token in state.recent_ids or event.event_id in state.recent_ids  # full ids: older states
    if seen or _imported_before(state, event):
        if position is not None:
            state.applied[position[0]] = position[1]
        return False

    APPLIERS[type(event)].apply(state, event)
    forget_view(state)
    state.evaluated = []
    day = day_of(event.occurred_at)
    moment = event.occurred_at.timestamp()
    state.clock = max(state.clock, moment)
    if event.event_id.startswith(IMPORT_ID_PREFIX):
        state.imported_until = max(state.imported_until, moment)
    if not isinstance(event, AccountProfile):
        state.last_activity_day = max(day, state.last_activity_day or day)
    _remember(state, token, position)
    prune(state)
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


def id_token(event_id: str) -> str:
    """A 48-bit digest of an event id, as 8 characters: what ``recent_ids`` keeps.

    Ids are up to 128 characters; the digest keeps the state small. A false match
    needs two of an account's 32 most recent events to collide: about 1 in 10^13.

    >>> id_token("evt-2026-000001")
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


@applies(
    OrderPlaced,
    "orders",
    "categories",
    "first_order_day",
    "last_order_day",
    "roles",
    "contacts",
    "last_activity_day",
)
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
        _touch_role(state, "buyer", day, accepted=False, contact=event.contact_id)


@applies(OrderReturned, "orders", "categories", "last_activity_day")
def _apply_return(state: AccountState, event: OrderReturned) -> None:
    # Returns reduce revenue on the day they happen: windows stay exact and a
    # return never rewrites history that segments were already based on.
    day = day_of(event.occurred_at)
    row = _day_row(state.orders, day, 3)
    row[ORDER_REVENUE] = round(row[ORDER_REVENUE] - event.amount, 2)
    if event.category is not None:
        bucket = state.categories.setdefault(str(day // CATEGORY_BUCKET_DAYS), {})
        bucket[event.category] = round(bucket.get(event.category, 0.0) - event.amount, 2)


@applies(CampaignInteraction, "campaigns", "unsubscribed", "roles", "contacts", "last_activity_day")
def _apply_campaign(state: AccountState, event: CampaignInteraction) -> None:
    day = day_of(event.occurred_at)
    unsubscribed = event.kind == "unsubscribed"
    if unsubscribed:
        state.unsubscribed = True
    else:
        row = _day_row(state.campaigns, day, 6)
        row[CAMPAIGN_COLUMNS[event.kind]] += 1
    if event.contact_role is not None and event.kind != "sent":
        accepted = event.kind in ("responded", "converted")
        contact = None if unsubscribed else event.contact_id
        _touch_role(state, event.contact_role, day, accepted=accepted, contact=contact)
    if unsubscribed and event.contact_id is not None:
        # A contact who unsubscribed is nobody's to address any more.
        state.contacts = {r: c for r, c in state.contacts.items() if c != event.contact_id}


def _touch_role(
    state: AccountState, role: str, day: int, *, accepted: bool, contact: str | None
) -> None:
    engaged, last_accepted = state.roles.get(role, [None, None])
    if contact is not None and (engaged is None or day >= engaged):
        state.contacts[role] = contact  # the latest by event time, not by arrival
    engaged = day if engaged is None else max(engaged, day)
    if accepted:
        last_accepted = day if last_accepted is None else max(last_accepted, day)
    state.roles[role] = [engaged, last_accepted]


@applies(LoyaltyPoints, "points", "points_balance", "tier", "last_activity_day")
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


@applies(AccountProfile, "profile")
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


def prune(state: AccountState) -> None:
    """Drop the rows and category buckets older than every window of the state's day."""
    oldest_day = state.now_day - HORIZON_DAYS
    for table in ROW_TABLES:
        rows = getattr(state, table)
        while rows and rows[0][0] <= oldest_day:
            del rows[0]
    oldest_bucket = oldest_day // CATEGORY_BUCKET_DAYS
    for bucket in [b for b in state.categories if int(b) < oldest_bucket]:
        del state.categories[bucket]


#: The state attributes each event type may change (see :class:`Applier`).
TOUCHES: dict[type, frozenset[str]] = {
    event: applier.touches for event, applier in APPLIERS.items()
}
