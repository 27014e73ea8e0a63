"""``segworker explain``: an account's memberships with why, and its feature values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker.adapters.factory import open_state_store
from worker.config.families import configured_families
from worker.config.settings import Settings
from worker.core.definitions import Definitions
from worker.core.features import FEATURES, AccountState, FeatureView
from worker.core.processing import membership_reasons


@dataclass
class Explanation:
    account_id: str
    as_of: datetime
    #: family, segment, since, how it arose (``entry_origin``), why it holds now
    memberships: list[tuple[str, str, datetime, str, str]]
    features: dict[str, Any]
    #: entries waiting out ``enter_after``: family, segment, qualifying since, due
    pending: list[tuple[str, str, datetime, datetime | None]] = field(default_factory=list)


def entry_origin(entry: Mapping[str, Any]) -> str:
    """How a membership arose, as its ``SegmentChanged`` said (``origin``, live or not).

    >>> entry_origin({"since": 0.0, "origin": "event", "live": True})
    'event, live'
    >>> entry_origin({"since": 0.0, "origin": "import", "live": False})
    'import'
    >>> entry_origin({"since": 0.0})  # entered before memberships recorded it
    'not recorded'
    """
    origin = entry.get("origin")
    if origin is None:
        return "not recorded"
    return f"{origin}, live" if entry.get("live") else str(origin)


def pending_entries(
    state: AccountState, definitions: Definitions
) -> list[tuple[str, str, datetime, datetime | None]]:
    """The account's entries waiting out ``enter_after``, with when each completes."""
    delays = {
        (family.id, segment.id): segment.enter_after
        for family in definitions.families
        for segment in family.segments
    }
    waiting = []
    for family_id, segments in sorted(state.pending.items()):
        for segment_id, since in sorted(segments.items()):
            delay = delays.get((family_id, segment_id))
            start = datetime.fromtimestamp(since, UTC)
            waiting.append((family_id, segment_id, start, None if delay is None else start + delay))
    return waiting


async def explain(
    settings: Settings, account_id: str, definitions: Definitions
) -> Explanation | None:
    """The account's current memberships with their reasons, and its feature values."""
    async with open_state_store(settings) as store:
        state = await store.load(account_id)
        if state is None:
            return None
        globals = await store.load_globals()
    view = FeatureView(state, state.now_day, globals)
    reasons = membership_reasons(state, configured_families(settings, definitions), globals)
    memberships = [
        (
            family,
            segment,
            datetime.fromtimestamp(entry["since"], UTC),
            entry_origin(entry),
            reasons[(family, segment)],
        )
        for family, segments in state.memberships.items()
        for segment, entry in segments.items()
    ]
    features = {name: view[name] for name in FEATURES}
    features["abc_class"] = view["abc_class"]
    features["clv_estimate"] = view["clv_estimate"]
    return Explanation(
        account_id,
        datetime.fromtimestamp(state.clock, UTC),
        memberships,
        features,
        pending_entries(state, definitions),
    )
