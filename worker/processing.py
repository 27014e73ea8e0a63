"""The pure per-event step: de-duplicate, update features, evaluate segments, diff.

Everything here is deterministic given the account state and the event, which is
what makes change ids stable across crashes and redeliveries. The time an account
is evaluated at is its own stream time (the latest event time it has seen), so a
replay of old history behaves exactly like live traffic.
"""

from __future__ import annotations

from datetime import UTC, datetime

from worker import features, membership
from worker.events import AnyInputEvent, SegmentChanged
from worker.features import NO_GLOBALS, AccountState, FeatureView, Globals
from worker.rules import Definitions, evaluate_family


def evaluate(
    state: AccountState,
    definitions: Definitions,
    cause: str,
    globals: Globals = NO_GLOBALS,
    at: float | None = None,
) -> list[SegmentChanged]:
    """Re-evaluate every family for ``state`` at its stream time; update its memberships.

    ``at`` (epoch seconds) moves the account's clock forward first: a time sweep or a
    threshold change evaluates the account at the global stream time. Returns the
    changes, in family order (exits before entries within a family).
    """
    if at is not None:
        state.clock = max(state.clock, at)
    view = FeatureView(state, state.now_day, globals)
    context = membership.Context(
        account_id=state.account_id,
        at=datetime.fromtimestamp(state.clock, UTC),
        cause=cause,
        definition_version=definitions.version,
    )
    changes: list[SegmentChanged] = []
    updated: membership.Memberships = {}
    for family in definitions.families:
        current = state.memberships.get(family.id, {})
        kept, family_changes = membership.diff_family(
            family, current, evaluate_family(family, view), view, context
        )
        changes.extend(family_changes)
        if kept:
            updated[family.id] = kept
    defined = {family.id for family in definitions.families}
    for family_id, current in state.memberships.items():
        if family_id not in defined:
            reason = f"segment family {family_id} is no longer defined"
            changes.extend(membership.exit_all(family_id, current, context, reason))
    state.memberships = updated
    return changes


def process_event(
    state: AccountState,
    event: AnyInputEvent,
    definitions: Definitions,
    position: tuple[str, int] | None = None,
    globals: Globals = NO_GLOBALS,
) -> list[SegmentChanged] | None:
    """Apply ``event`` to ``state`` and return the membership changes it causes.

    Returns None when the event was already applied (a redelivery or duplicate).
    """
    if not features.apply(state, event, position):
        return None
    return evaluate(state, definitions, cause=event.event_id, globals=globals)
