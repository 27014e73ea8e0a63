"""Membership diff: from old memberships and new rule matches to ``SegmentChanged`` events.

Pure. Change ids are deterministic: the same change computed again, after a crash
or a redelivery, gets the same id, so downstream consumers can de-duplicate.

Hysteresis keeps segments from flapping. Per segment definition:

- ``min_dwell``: once entered, stay at least this long;
- ``exit_grace``: leave only after the account has not belonged for this long.

While either holds an account, it stays where it is; in an exclusive family it
also does not enter the segment it would move to, so every exit is paired with
the entry into the next segment, and no account is ever in two.

An exit says why: in an exclusive family the old segment's condition may still hold
while a segment earlier in file order now matches; the exit then names that segment
and its values, and "no longer matches" is only said of a condition that is false.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from worker.core.definitions import FamilyDefinition
from worker.core.events import Origin, SegmentChanged
from worker.core.features.state import IMPORT_ID_PREFIX
from worker.core.rules import Match

#: family -> segment id -> {"since": epoch s, "origin": how the entry arose, "live": whether
#: it was live[, "outside_since": epoch s]}; the reason of an
#: entry is in its SegmentChanged event, not stored (``processing.membership_reasons``
#: explains a membership from the current features)
Memberships = dict[str, dict[str, dict[str, Any]]]
Membership = dict[str, Any]


def change_id(account_id: str, family: str, segment_id: str, change: str, cause: str) -> str:
    """A stable 32-hex-digit id of one membership change.

    >>> change_id("ACME", "program", "champions", "entered", "evt-1")
    '5464dda45c87cbb06b6563d747e440aa'
    """
    key = "\x1f".join((account_id, family, segment_id, change, cause))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


#: How a cause (``SegmentChanged.cause``) says where a change came from, by its prefix;
#: any other cause is an event id (``import`` for the ids of ``segworker import-orders``).
_ORIGIN_OF_PREFIX: dict[str, Origin] = {
    "time:": "time",
    "thresholds:": "cutoffs",
    "cluster:": "model",
    "recompute:": "recompute",
    IMPORT_ID_PREFIX: "import",
}


def origin_of(cause: str) -> Origin:
    """How a change with this cause arose (``SegmentChanged.origin``).

    >>> [origin_of(c) for c in ("time:2026-03-02", "cluster:cluster:v3", "imp-9f", "erp-1")]
    ['time', 'model', 'import', 'event']
    """
    for prefix, origin in _ORIGIN_OF_PREFIX.items():
        if cause.startswith(prefix):
            return origin
    return "event"


@dataclass(frozen=True)
class Context:
    """What every change of one evaluation shares.

    ``origin`` defaults to what the cause says (:func:`origin_of`); ``live``: whether the
    evaluation's moment is fresh (the caller knows the wall clock, the core does not).
    """

    account_id: str
    at: datetime
    cause: str
    definition_version: str
    origin: Origin | None = None
    live: bool = False

    @property
    def timestamp(self) -> float:
        return self.at.timestamp()


def diff_family(
    family: FamilyDefinition,
    current: Mapping[str, Membership],
    matches: list[Match],
    features: Mapping[str, Any],
    context: Context,
    pending: dict[str, float] | None = None,
) -> tuple[dict[str, Membership], list[SegmentChanged]]:
    """New memberships of one family and the changes that lead there.

    For an exclusive family a move is an exit from the old segment followed by an
    entry into the new one that names the old as ``previous_segment_id``.
    ``pending``: the family's entries waiting out ``enter_after`` (segment -> since
    when the account qualifies), updated in place; an entry waits while the account
    qualifies for less than that, and it stays where it is meanwhile.
    """
    waiting = {} if pending is None else pending
    if family.exclusive:
        target = matches[0] if matches else None
        return _diff_exclusive(family, current, target, features, context, waiting)
    matched = {match.segment_id: match for match in matches}
    for segment_id in [s for s in waiting if s not in matched or s in current]:
        del waiting[segment_id]  # stopped qualifying, or entered meanwhile
    kept: dict[str, Membership] = {}
    changes: list[SegmentChanged] = []
    for segment_id, membership in current.items():
        if segment_id in matched:
            kept[segment_id] = _inside(membership)
        elif (held := _held(family, segment_id, membership, context)) is not None:
            kept[segment_id] = held
        else:
            changes.append(_exit(family, segment_id, membership, features, context, None))
    for segment_id, match in matched.items():
        if segment_id not in current and not _waits(family, match, waiting, context):
            changes.append(_enter(family.id, match, context, None, waiting.pop(segment_id, None)))
            kept[segment_id] = _new_membership(match, context)
    return kept, changes


def _diff_exclusive(
    family: FamilyDefinition,
    current: Mapping[str, Membership],
    target: Match | None,
    features: Mapping[str, Any],
    context: Context,
    pending: dict[str, float],
) -> tuple[dict[str, Membership], list[SegmentChanged]]:
    old_id, old = next(iter(current.items()), (None, None))
    if target is not None and target.segment_id == old_id:
        assert old is not None
        pending.clear()
        return {old_id: _inside(old)}, []
    if target is not None and _waits(family, target, pending, context):
        # The entry waits: the account stays where it is, so it holds one segment still.
        return ({old_id: dict(old)} if old_id is not None and old is not None else {}), []
    qualified_since = pending.pop(target.segment_id, None) if target is not None else None
    pending.clear()
    if old_id is not None and old is not None:
        held = _held(family, old_id, old, context)
        if held is not None:
            return {old_id: held}, []
    changes: list[SegmentChanged] = []
    if old_id is not None and old is not None:
        changes.append(_exit(family, old_id, old, features, context, target))
    if target is None:
        return {}, changes
    changes.append(_enter(family.id, target, context, old_id, qualified_since))
    return {target.segment_id: _new_membership(target, context)}, changes


def _waits(
    family: FamilyDefinition, match: Match, pending: dict[str, float], context: Context
) -> bool:
    """Whether the entry into ``match``'s segment must wait out its ``enter_after``; if
    so, it is (or stays) pending since the account first qualified."""
    segment = _segment(family, match.segment_id)
    if segment is None or segment.enter_after is None:
        return False
    now = context.timestamp
    since = pending.get(match.segment_id, now)
    if now - since >= segment.enter_after.total_seconds():
        return False
    if family.exclusive:
        pending.clear()  # only the segment the account would move to waits
    pending[match.segment_id] = since
    return True


def diff_assignment(
    family_id: str,
    current: Mapping[str, Membership],
    target: Match,
    context: Context,
    exit_reason: str,
) -> tuple[dict[str, Membership], list[SegmentChanged]]:
    """An exclusive family whose segment is computed (a cluster), not matched by rules."""
    old_id, old = next(iter(current.items()), (None, None))
    if old_id == target.segment_id and old is not None:
        return {old_id: dict(old)}, []
    changes = []
    if old_id is not None and old is not None:
        reason = f"moved to {target.segment_id}: {exit_reason}"
        changes.append(
            _change(context, family_id, old_id, "exited", reason, target.values, None, old)
        )
    changes.append(_enter(family_id, target, context, old_id))
    return {target.segment_id: _new_membership(target, context)}, changes


def exit_all(
    family_id: str,
    current: Mapping[str, Membership],
    context: Context,
    reason: str,
) -> list[SegmentChanged]:
    """Exits for every membership of a family that is no longer defined."""
    return [
        _change(context, family_id, segment_id, "exited", reason, {}, None, membership)
        for segment_id, membership in current.items()
    ]


def due_times(
    family: FamilyDefinition,
    memberships: Mapping[str, Membership],
    pending: Mapping[str, float] | None = None,
) -> list[float]:
    """Epoch seconds at which a held membership may end, or a pending entry complete,
    without a new event."""
    due: list[float] = []
    for segment_id, since in (pending or {}).items():
        segment = _segment(family, segment_id)
        if segment is not None and segment.enter_after is not None:
            due.append(since + segment.enter_after.total_seconds())
    for segment_id, membership in memberships.items():
        if "outside_since" not in membership:
            continue
        segment = _segment(family, segment_id)
        if segment is None:
            continue
        if segment.min_dwell is not None:
            due.append(membership["since"] + segment.min_dwell.total_seconds())
        if segment.exit_grace is not None:
            due.append(membership["outside_since"] + segment.exit_grace.total_seconds())
    return due


def _segment(family: FamilyDefinition, segment_id: str) -> Any:
    return next((s for s in family.segments if s.id == segment_id), None)


def _held(
    family: FamilyDefinition, segment_id: str, membership: Membership, context: Context
) -> Membership | None:
    """The membership kept by ``min_dwell``/``exit_grace``, or None when it may end now."""
    segment = _segment(family, segment_id)
    if segment is None:
        return None
    now = context.timestamp
    outside_since = membership.get("outside_since", now)
    dwelling = segment.min_dwell is not None and now < (
        membership["since"] + segment.min_dwell.total_seconds()
    )
    in_grace = segment.exit_grace is not None and now < (
        outside_since + segment.exit_grace.total_seconds()
    )
    if dwelling or in_grace:
        return {**membership, "outside_since": outside_since}
    return None


def _inside(membership: Membership) -> Membership:
    if "outside_since" in membership:
        return {k: v for k, v in membership.items() if k != "outside_since"}
    return dict(membership)


def _new_membership(match: Match, context: Context) -> Membership:
    # How the entry arose and whether it was live, as its SegmentChanged said: the HTTP
    # view and explain show them next to ``since``.
    return {
        "since": context.timestamp,
        "origin": context.origin or origin_of(context.cause),
        "live": context.live,
    }


def _enter(
    family_id: str,
    match: Match,
    context: Context,
    previous: str | None,
    qualified_since: float | None = None,
) -> SegmentChanged:
    reason = match.reason()
    if qualified_since is not None:
        since = datetime.fromtimestamp(qualified_since, context.at.tzinfo).isoformat()
        reason = f"{reason}; qualified continuously since {since} (enter_after)"
    return _change(context, family_id, match.segment_id, "entered", reason, match.values, previous)


def comes_first(match: Match, lead: str = "") -> str:
    """Why an account leaves a segment whose condition still holds: ``match`` is earlier.

    >>> comes_first(Match("champions", "points >= 2000", {"points": 2053}))
    'champions comes first and now matches (points=2053)'
    >>> comes_first(Match("champions", "points >= 2000", {"points": 2053}), "moved to ")
    'moved to champions, which comes first and now matches (points=2053)'
    """
    which = ", which comes" if lead else " comes"
    text = f"{lead}{match.segment_id}{which} first and now matches"
    shown = match.shown_values()
    return f"{text} {shown}" if shown else text


def _exit(
    family: FamilyDefinition,
    segment_id: str,
    membership: Membership,
    features: Mapping[str, Any],
    context: Context,
    moved_to: Match | None,
) -> SegmentChanged:
    """The exit from ``segment_id``; ``moved_to``: the segment an exclusive family moves to.

    Only built for a real change: the old condition is evaluated again here, not on
    every evaluation.
    """
    segment = _segment(family, segment_id)
    if segment is None:
        reason, values = f"segment {family.id}/{segment_id} is no longer defined", {}
    elif moved_to is not None and segment.condition.evaluate(features):
        # Still true: the account leaves because an earlier segment took it over.
        reason = comes_first(moved_to, "moved to ")
        return _change(
            context, family.id, segment_id, "exited", reason, moved_to.values, None, membership
        )
    else:
        failed = Match(segment_id, segment.when, segment.condition.explain(features))
        reason, values = f"no longer matches: {failed.reason()}", failed.values
    if moved_to is not None:
        reason = f"moved to {moved_to.segment_id}: {reason}"
    return _change(context, family.id, segment_id, "exited", reason, values, None, membership)


def _change(
    context: Context,
    family_id: str,
    segment_id: str,
    change: Literal["entered", "exited"],
    reason: str,
    values: Mapping[str, Any],
    previous_segment_id: str | None,
    membership: Membership | None = None,
) -> SegmentChanged:
    return SegmentChanged(
        change_id=change_id(context.account_id, family_id, segment_id, change, context.cause),
        account_id=context.account_id,
        family=family_id,
        segment_id=segment_id,
        change=change,
        previous_segment_id=previous_segment_id,
        reason=reason,
        features={name: _plain(value) for name, value in values.items()},
        occurred_at=context.at,
        member_since=(
            datetime.fromtimestamp(membership["since"], context.at.tzinfo) if membership else None
        ),
        definition_version=context.definition_version,
        cause=context.cause,
        origin=context.origin or origin_of(context.cause),
        live=context.live,
    )


def _plain(value: Any) -> float | int | str | bool | None:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
