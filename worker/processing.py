"""The pure per-event step: de-duplicate, update features, evaluate segments, diff.

Everything here is deterministic given the account state and the event, which is
what makes change ids stable across crashes and redeliveries. The time an account
is evaluated at is its own stream time (the latest event time it has seen), so a
replay of old history behaves exactly like live traffic.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from datetime import UTC, datetime
from typing import Any

from worker import clustering, features, membership
from worker.clustering import ClusterSnapshot
from worker.events import AccountErased, AnyInputEvent, SegmentChanged
from worker.features import NO_GLOBALS, AccountState, FeatureView, Globals
from worker.impact import Impact, mark_clusters
from worker.rules import Definitions, FamilyDefinition, Match, evaluate_family


def evaluate(
    state: AccountState,
    definitions: Definitions,
    cause: str,
    globals: Globals = NO_GLOBALS,
    at: float | None = None,
    only: Container[str] | None = None,
    skip: Container[str] = (),
) -> list[SegmentChanged]:
    """Re-evaluate every family for ``state`` at its stream time; update its memberships.

    ``at`` (epoch seconds) moves the account's clock forward first: a time sweep or a
    threshold change evaluates the account at the global stream time. ``only`` limits
    the evaluation to some families (a new cluster model re-assigns its family only);
    families in ``skip`` keep their memberships (``worker.impact`` knows they cannot
    have changed). The cluster families assigned (or skipped) are recorded in the
    evaluation mark with their snapshots (``impact.mark_clusters``).
    Returns the changes, in family order (exits before entries within a family).
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
    family_changes: list[SegmentChanged]
    for family in definitions.families:
        current = state.memberships.get(family.id, {})
        if family.id in skip or (only is not None and family.id not in only):
            kept, family_changes = dict(current), []
        else:
            kept, family_changes = membership.diff_family(
                family, current, evaluate_family(family, view), view, context
            )
        changes.extend(family_changes)
        if kept:
            updated[family.id] = kept
    assigned: dict[str, ClusterSnapshot] = {}
    for family_id, snapshot in globals.clusters.items():
        current = state.memberships.get(family_id, {})
        if snapshot is None or (only is not None and family_id not in only):
            kept, family_changes = dict(current), []
        elif family_id in skip:
            kept, family_changes = dict(current), []
            assigned[family_id] = snapshot
        else:
            kept, family_changes = _assign_cluster(
                family_id, snapshot, current, view, context, globals.cluster_margin
            )
            assigned[family_id] = snapshot
        changes.extend(family_changes)
        if kept:
            updated[family_id] = kept
    if assigned or len(state.evaluated) > 2:
        mark_clusters(state, assigned, globals.cluster_margin)
    for family_id, current in state.memberships.items():
        if family_id not in updated and family_id not in _families(definitions, globals):
            reason = f"segment family {family_id} is no longer defined"
            changes.extend(membership.exit_all(family_id, current, context, reason))
    state.memberships = updated
    return changes


def _families(definitions: Definitions, globals: Globals) -> set[str]:
    return {family.id for family in definitions.families} | set(globals.clusters)


def raw_sample(view: FeatureView, spec: clustering.FeatureSpec) -> dict[str, Any]:
    """The account's values of a clustering's features, untransformed (for reasons, training)."""
    return {name: view[name] for name in spec.names}


_DESCRIPTIONS: dict[int, tuple[ClusterSnapshot, dict[str, str]]] = {}


def cluster_descriptions(snapshot: ClusterSnapshot) -> dict[str, str]:
    """The clusters' descriptions, once per snapshot object.

    Keyed by identity: hashing a snapshot (a deep frozen dataclass) on every
    assignment cost more than the assignment itself.
    """
    cached = _DESCRIPTIONS.get(id(snapshot))
    if cached is not None and cached[0] is snapshot:
        return cached[1]
    if len(_DESCRIPTIONS) >= 32:
        _DESCRIPTIONS.clear()
    descriptions = clustering.describe(snapshot)
    _DESCRIPTIONS[id(snapshot)] = (snapshot, descriptions)
    return descriptions


def membership_reasons(
    state: AccountState, definitions: Definitions, globals: Globals = NO_GLOBALS
) -> dict[tuple[str, str], str]:
    """Why the account is in each of its segments now, from its current features.

    Reasons are not stored with the memberships (they were most of an account's
    state); the entry's reason at the time is in its ``SegmentChanged`` event.
    """
    view = FeatureView(state, state.now_day, globals)
    families = {family.id: family for family in definitions.families}
    reasons: dict[tuple[str, str], str] = {}
    for family_id, segments in state.memberships.items():
        for segment_id, entry in segments.items():
            family = families.get(family_id)
            if family is not None:
                reason = _rule_reason(family, segment_id, entry, view)
            elif (snapshot := globals.clusters.get(family_id)) is not None:
                reason = _cluster_reason(snapshot, segment_id, view, globals.cluster_margin)
            elif family_id in globals.clusters:
                reason = "cluster model not published yet"
            else:
                reason = f"segment family {family_id} is no longer defined"
            reasons[(family_id, segment_id)] = reason
    return reasons


def _rule_reason(
    family: FamilyDefinition, segment_id: str, entry: membership.Membership, view: FeatureView
) -> str:
    try:
        segment = family.segment(segment_id)
    except KeyError:
        return f"segment {family.id}/{segment_id} is no longer defined"
    match = Match(segment_id, segment.when, condition=segment.condition, features=view)
    if "outside_since" in entry:
        since = datetime.fromtimestamp(entry["outside_since"], UTC).date().isoformat()
        # Not "no longer matching since": in an exclusive family the hold may have begun
        # when an earlier segment started to match, while this one still did.
        status = f"held (min_dwell/exit_grace) since {since}"
    else:
        status = "matched when last evaluated"
    if not segment.condition.evaluate(view):
        return f"{status}; no longer matches: {match.reason()}"
    first = next(iter(evaluate_family(family, view)), None) if family.exclusive else None
    if first is None or first.segment_id == segment_id:
        return match.reason()
    return (
        f"{status}; {membership.comes_first(first)}; "
        f"this segment's own condition still holds: {match.reason()}"
    )


def _cluster_reason(
    snapshot: ClusterSnapshot, cluster_id: str, view: FeatureView, margin: float
) -> str:
    """Why the account is in ``cluster_id``; "nearest centroid" only when it is the nearest.

    An account stays in its cluster until another is nearer by the margin, and is
    re-assigned to a new model at its next event or by the paced background pass.
    """
    distances = snapshot.distances(view)
    nearest = min(distances, key=distances.__getitem__)
    if cluster_id == nearest:
        return _cluster_match(snapshot, cluster_id, view, distances).reason()
    model = f"{snapshot.spec.name} model v{snapshot.version}"
    if cluster_id not in distances:
        return (
            f"assigned with an earlier model; {model} has no cluster {cluster_id} "
            f"(nearest: {nearest})"
        )
    gap = f"({distances[nearest]:.3f} vs {distances[cluster_id]:.3f})"
    if clustering.assign(view, snapshot, cluster_id, margin, distances) == cluster_id:
        status = f"kept by the {margin:.0%} margin: {nearest} is nearer {gap}"
    else:
        status = f"assigned when last evaluated; {nearest} is nearer now {gap}"
    rule = f"centroid {cluster_id} of {model}: {cluster_descriptions(snapshot)[cluster_id]}"
    values = _cluster_match(snapshot, cluster_id, view, distances).values
    return f"{status}; {Match(cluster_id, rule, values).reason()}"


def _cluster_match(
    snapshot: ClusterSnapshot,
    cluster_id: str,
    view: FeatureView,
    distances: dict[str, float] | None = None,
) -> Match:
    if distances is None:
        distances = snapshot.distances(view)
    values = {**raw_sample(view, snapshot.spec)}
    if cluster_id in distances:
        values["distance"] = round(distances[cluster_id], 4)
    description = cluster_descriptions(snapshot).get(cluster_id, "")
    return Match(
        cluster_id,
        f"nearest centroid of {snapshot.spec.name} model v{snapshot.version}: {description}",
        values,
    )


def _assign_cluster(
    family_id: str,
    snapshot: ClusterSnapshot,
    current: Mapping[str, membership.Membership],
    view: FeatureView,
    context: membership.Context,
    margin: float,
) -> tuple[dict[str, membership.Membership], list[SegmentChanged]]:
    old_id = next(iter(current), None)
    distances = snapshot.distances(view)
    new_id = clustering.assign(view, snapshot, old_id, margin, distances)
    if new_id == old_id:
        return dict(current), []  # the usual case: no reason to build
    target = _cluster_match(snapshot, new_id, view, distances)
    exit_reason = (
        f"centroid {new_id} is closer ({distances[new_id]:.3f} vs "
        f"{distances.get(old_id, float('nan')):.3f} to {old_id})"
        if old_id is not None
        else ""
    )
    return membership.diff_assignment(family_id, current, target, context, exit_reason)


def process_event(
    state: AccountState,
    event: AnyInputEvent,
    definitions: Definitions,
    position: tuple[str, int] | None = None,
    globals: Globals = NO_GLOBALS,
    impact: Impact | None = None,
) -> list[SegmentChanged] | None:
    """Apply ``event`` to ``state`` and return the membership changes it causes.

    Returns None when the event was already applied (a redelivery or duplicate).
    With ``impact``, families the event cannot change (cluster families included) are
    not evaluated again.
    """
    skip = impact.unaffected(state, event, globals) if impact is not None else frozenset()
    if not features.apply(state, event, position):
        return None
    return evaluate(state, definitions, cause=event.event_id, globals=globals, skip=skip)


def erase(state: AccountState, event: AccountErased) -> list[SegmentChanged]:
    """Exits of every membership of an account being erased; the caller drops its state."""
    at = max(state.clock, event.occurred_at.timestamp())
    context = membership.Context(
        account_id=state.account_id,
        at=datetime.fromtimestamp(at, UTC),
        cause=event.event_id,
        definition_version="erasure",
    )
    reason = "account erased" + (f" (request {event.request_id})" if event.request_id else "")
    return [
        change
        for family_id, current in state.memberships.items()
        for change in membership.exit_all(family_id, current, context, reason)
    ]
