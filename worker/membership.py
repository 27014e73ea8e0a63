"""Membership diff: from old memberships and new rule matches to ``SegmentChanged`` events.

Pure. Change ids are deterministic: the same change computed again, after a crash
or a redelivery, gets the same id, so downstream consumers can de-duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from worker.events import SegmentChanged
from worker.rules import FamilyDefinition, Match

#: family -> segment id -> {"since": iso time, "reason": rule and values when entered}
Memberships = dict[str, dict[str, dict[str, Any]]]


def change_id(account_id: str, family: str, segment_id: str, change: str, cause: str) -> str:
    """A stable 32-hex-digit id of one membership change.

    >>> len(change_id("ACME", "program", "champions", "entered", "evt-1"))
    32
    >>> change_id("A", "f", "s", "entered", "e") == change_id("A", "f", "s", "entered", "e")
    True
    """
    key = "\x1f".join((account_id, family, segment_id, change, cause))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Context:
    """What every change of one evaluation shares."""

    account_id: str
    at: datetime
    cause: str
    definition_version: str


def diff_family(
    family: FamilyDefinition,
    current: Mapping[str, Mapping[str, Any]],
    matches: list[Match],
    features: Mapping[str, Any],
    context: Context,
) -> tuple[dict[str, dict[str, Any]], list[SegmentChanged]]:
    """New memberships of one family and the changes that lead there.

    For an exclusive family a move is an exit from the old segment followed by an
    entry into the new one that names the old as ``previous_segment_id``.
    """
    matched = {match.segment_id: match for match in matches}
    changes: list[SegmentChanged] = []
    kept: dict[str, dict[str, Any]] = {}
    entered_exclusive = matches[0].segment_id if family.exclusive and matches else None
    for segment_id, membership in current.items():
        if segment_id in matched:
            kept[segment_id] = dict(membership)
            continue
        failed = _failed_match(family, segment_id, features)
        reason = (
            f"no longer matches: {failed.reason()}"
            if failed
            else (f"segment {family.id}/{segment_id} is no longer defined")
        )
        if entered_exclusive is not None:
            reason = f"moved to {entered_exclusive}: {reason}"
        values = failed.values if failed else {}
        changes.append(_change(context, family.id, segment_id, "exited", reason, values))
    previous = next(iter(current), None) if family.exclusive else None
    for segment_id, match in matched.items():
        if segment_id in current:
            continue
        changes.append(
            _change(
                context,
                family.id,
                segment_id,
                "entered",
                match.reason(),
                match.values,
                previous_segment_id=previous if previous not in matched else None,
            )
        )
        kept[segment_id] = {"since": context.at.isoformat(), "reason": match.reason()}
    return kept, changes


def exit_all(
    family_id: str,
    current: Mapping[str, Mapping[str, Any]],
    context: Context,
    reason: str,
) -> list[SegmentChanged]:
    """Exits for every membership of a family or segments that no longer exist."""
    return [_change(context, family_id, segment_id, "exited", reason, {}) for segment_id in current]


def _failed_match(
    family: FamilyDefinition, segment_id: str, features: Mapping[str, Any]
) -> Match | None:
    """The rule an account no longer meets, with the values that failed it."""
    segment = next((s for s in family.segments if s.id == segment_id), None)
    if segment is None:
        return None
    return Match(segment_id, segment.when, segment.condition.explain(features))


def _change(
    context: Context,
    family_id: str,
    segment_id: str,
    change: Literal["entered", "exited"],
    reason: str,
    values: Mapping[str, Any],
    previous_segment_id: str | None = None,
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
        definition_version=context.definition_version,
        cause=context.cause,
    )


def _plain(value: Any) -> float | int | str | bool | None:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
