"""The pure per-event step: de-duplicate, update features, evaluate segments, diff.

Everything here is deterministic given the account state and the event, which is
what makes change ids stable across crashes and redeliveries. The time an account
is evaluated at is its own stream time (the latest event time it has seen), so a
replay of old history behaves exactly like live traffic.
"""

from __future__ import annotations

from collections.abc import Container
from datetime import UTC, datetime

from worker.core import features, membership
from worker.core.definitions import Definitions
from worker.core.events import AccountErased, AnyInputEvent, SegmentChanged
from worker.core.families import Families, Family, as_families
from worker.core.features import NO_GLOBALS, AccountState, FeatureView, Globals
from worker.core.impact import Impact


def evaluate(
    state: AccountState,
    families: Families | Definitions,
    cause: str,
    globals: Globals = NO_GLOBALS,
    at: float | None = None,
    only: Container[str] | None = None,
    skip: Container[str] = (),
    live_since: float | None = None,
) -> list[SegmentChanged]:
    """Re-evaluate every family for ``state`` at its stream time; update its memberships.

    ``families``: what the worker runs (the definitions stand for their rule families
    and a cluster family per model in ``globals``). ``at`` (epoch seconds) moves the
    account's clock forward first: a time sweep or a threshold change evaluates the
    account at the global stream time. ``only`` limits the evaluation to some families
    (a new cluster model re-assigns its family only); families in ``skip`` keep their
    memberships (``worker.core.impact`` knows they cannot have changed). The model
    families evaluated (or skipped) are recorded in the evaluation mark
    (``Impact.mark_models``). Changes at or after ``live_since`` (epoch seconds: the
    caller's wall clock less the live window) are ``live``.
    Returns the changes, in family order (exits before entries within a family).
    """
    families = as_families(families)
    if at is not None:
        state.clock = max(state.clock, at)
    view = FeatureView.of(state, globals)
    context = membership.Context(
        account_id=state.account_id,
        at=datetime.fromtimestamp(state.clock, UTC),
        cause=cause,
        definition_version=families.version,
        live=live_since is not None and state.clock >= live_since,
    )
    changes: list[SegmentChanged] = []
    updated: membership.Memberships = {}
    evaluated: list[Family] = []  # model families evaluated (or known unchanged) now
    family_changes: list[SegmentChanged]
    bound = families.bind(globals)
    for family in bound:
        current = state.memberships.get(family.id, {})
        if only is not None and family.id not in only:
            kept, family_changes = dict(current), []
        else:
            if family.model_token is not None:
                evaluated.append(family)
            if family.id in skip:
                kept, family_changes = dict(current), []
            else:
                kept, family_changes = family.evaluate(current, view, context)
        changes.extend(family_changes)
        if kept:
            updated[family.id] = kept
    if evaluated or len(state.evaluated) > 2:
        _impact(families).mark_models(state, evaluated)
    bound_ids = {family.id for family in bound}
    waiting = set(families.ids(globals)) - bound_ids
    for family_id, current in state.memberships.items():
        if family_id in bound_ids:
            continue
        if family_id in waiting:
            updated[family_id] = current  # no model yet: its members stay where they are
            continue
        reason = f"segment family {family_id} is no longer defined"
        changes.extend(membership.exit_all(family_id, current, context, reason))
    state.memberships = updated
    return changes


def _impact(families: Families) -> Impact:
    cached = _IMPACTS.get(id(families))
    if cached is None or cached[0] is not families:
        if len(_IMPACTS) >= 64:
            _IMPACTS.clear()
        cached = _IMPACTS[id(families)] = (families, Impact(families))
    return cached[1]


_IMPACTS: dict[int, tuple[Families, Impact]] = {}


def membership_reasons(
    state: AccountState, families: Families | Definitions, globals: Globals = NO_GLOBALS
) -> dict[tuple[str, str], str]:
    """Why the account is in each of its segments now, from its current features.

    Reasons are not stored with the memberships (they were most of an account's
    state); the entry's reason at the time is in its ``SegmentChanged`` event.
    """
    families = as_families(families)
    view = FeatureView(state, state.now_day, globals)
    bound = {family.id: family for family in families.bind(globals)}
    known = set(families.ids(globals))
    reasons: dict[tuple[str, str], str] = {}
    for family_id, segments in state.memberships.items():
        for segment_id, entry in segments.items():
            family = bound.get(family_id)
            if family is not None:
                reason = family.explain(segment_id, entry, view)
            elif family_id in known:
                reason = "cluster model not published yet"
            else:
                reason = f"segment family {family_id} is no longer defined"
            reasons[(family_id, segment_id)] = reason
    return reasons


def process_event(
    state: AccountState,
    event: AnyInputEvent,
    families: Families | Definitions,
    position: tuple[str, int] | None = None,
    globals: Globals = NO_GLOBALS,
    impact: Impact | None = None,
    live_since: float | None = None,
) -> list[SegmentChanged] | None:
    """Apply ``event`` to ``state`` and return the membership changes it causes.

    Returns None when the event was already applied (a redelivery or duplicate).
    With ``impact``, families the event cannot change (cluster families included) are
    not evaluated again.
    """
    skip = impact.unaffected(state, event, globals) if impact is not None else frozenset()
    if not features.apply(state, event, position):
        return None
    return evaluate(state, families, event.event_id, globals, skip=skip, live_since=live_since)


def erase(
    state: AccountState, event: AccountErased, live_since: float | None = None
) -> list[SegmentChanged]:
    """Exits of every membership of an account being erased; the caller drops its state."""
    at = max(state.clock, event.occurred_at.timestamp())
    context = membership.Context(
        account_id=state.account_id,
        at=datetime.fromtimestamp(at, UTC),
        cause=event.event_id,
        definition_version="erasure",
        origin="erasure",
        live=live_since is not None and at >= live_since,
    )
    reason = "account erased" + (f" (request {event.request_id})" if event.request_id else "")
    return [
        change
        for family_id, current in state.memberships.items()
        for change in membership.exit_all(family_id, current, context, reason)
    ]
