"""Drift monitoring: segment sizes, inflow and outflow, feature drift, centroid movement.

Pure: no I/O, no clocks (the caller passes the time an interval closes). A
:class:`DriftMonitor` is fed during an interval and closed at its end:

- ``observe_change(change)`` with every ``SegmentChanged``: inflow (entered) and outflow
  (exited) per segment; a change id seen in this or the previous interval is a redelivery
  and is not counted twice;
- ``observe_features(view)`` with the features of accounts as they are processed: one
  river ``ADWIN`` detector per key feature (amounts and counts are ``log1p``-transformed
  first: on raw, heavy-tailed revenue ADWIN raises false alarms);
- ``observe_snapshot(snapshot)`` with every published cluster snapshot: at the end of the
  interval the latest is compared with the one of the previous close
  (:func:`worker.core.clustering.centroid_shift`);
- ``close_interval(at, sizes, total_accounts)`` with the authoritative segment sizes (the
  member sets' cardinalities): returns a :class:`DriftReport` with the sizes, flows and
  alarms, and starts the next interval.

Alarms: a segment's share of accounts moved more than ``share_bound`` (absolute) since
the previous interval; an ADWIN detector detected a change of a feature's mean; a cluster
centroid moved more than ``centroid_bound`` standard deviations.

Examples
--------
>>> from datetime import datetime, UTC
>>> monitor = DriftMonitor(share_bound=0.05)
>>> first = monitor.close_interval(datetime(2026, 1, 1, tzinfo=UTC),
...                                sizes={("value", "a"): 20, ("value", "c1"): 80})
>>> first.alarms
()
>>> monitor.observe_change(_Change("x1", "value", "a", "entered"))
True
>>> report = monitor.close_interval(datetime(2026, 1, 2, tzinfo=UTC),
...                                 sizes={("value", "a"): 30, ("value", "c1"): 70})
>>> report.sizes.inflow
{('value', 'a'): 1}
>>> [alarm.message for alarm in report.alarms]  # doctest: +NORMALIZE_WHITESPACE
['value/a: share of accounts moved from 20.0% to 30.0% (+10.00 points; bound 5 points)',
 'value/c1: share of accounts moved from 80.0% to 70.0% (-10.00 points; bound 5 points)']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, Protocol

from river import drift

from worker.core.clustering import ClusterSnapshot, Dimension, centroid_shift

__all__ = [
    "DRIFT_FEATURES",
    "AlarmKind",
    "DriftAlarm",
    "DriftMonitor",
    "DriftReport",
    "FeatureDrift",
    "SegmentSizes",
]

AlarmKind = Literal["segment_share", "feature", "centroid"]
SegmentKey = tuple[str, str]

#: Tolerance of the bound checks against floating-point noise.
_EPSILON = 1e-9

#: The features watched for drift, and how each is prepared before its detector sees it
#: (``None`` values are skipped, not defaulted). Amounts and counts are log1p-transformed.
DRIFT_FEATURES: tuple[Dimension, ...] = (
    Dimension("revenue_365d", transform="log1p"),
    Dimension("orders_365d", transform="log1p"),
    Dimension("response_rate_365d", upper=1.0),
    Dimension("points_earned_90d", transform="log1p"),
)


class ChangeLike(Protocol):
    """What :meth:`DriftMonitor.observe_change` reads of a ``SegmentChanged``."""

    @property
    def change_id(self) -> str: ...
    @property
    def family(self) -> str: ...
    @property
    def segment_id(self) -> str: ...
    @property
    def change(self) -> str: ...


class _Change(NamedTuple):
    """A minimal change for the doctests (the worker passes ``SegmentChanged``)."""

    change_id: str
    family: str
    segment_id: str
    change: str


def _nested(counts: Mapping[SegmentKey, int]) -> dict[str, dict[str, int]]:
    """``{(family, segment): n}`` as ``{family: {segment: n}}`` (JSON object keys)."""
    result: dict[str, dict[str, int]] = {}
    for (family, segment_id), n in sorted(counts.items()):
        result.setdefault(family, {})[segment_id] = n
    return result


def _flat(nested: Mapping[str, Mapping[str, Any]]) -> dict[SegmentKey, int]:
    return {(f, s): int(n) for f, segments in nested.items() for s, n in segments.items()}


def _iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with ``Z``, as pydantic writes ``AwareDatetime`` (JSON mode)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class SegmentSizes:
    """Segment sizes at the end of an interval and the flows during it.

    ``estimated`` is True when the sizes were carried forward from the previous interval
    with the flows instead of being read from the member sets.

    >>> sizes = SegmentSizes(None, 4, {("value", "a"): 1})
    >>> sizes.share(("value", "a")), sizes.share(("value", "b"))
    (0.25, 0.0)
    """

    at: datetime | None
    total_accounts: int
    sizes: dict[SegmentKey, int]
    inflow: dict[SegmentKey, int] = field(default_factory=dict)
    outflow: dict[SegmentKey, int] = field(default_factory=dict)
    estimated: bool = False

    def share(self, key: SegmentKey) -> float:
        """The segment's share of all accounts (0 when there are none)."""
        return self.sizes.get(key, 0) / self.total_accounts if self.total_accounts else 0.0

    @property
    def families(self) -> list[str]:
        return sorted({family for family, _ in (*self.sizes, *self.inflow, *self.outflow)})


@dataclass(frozen=True)
class DriftAlarm:
    """One alarm of an interval; ``message`` says it in words.

    - ``segment_share``: the share of all accounts of ``family``'s segment ``segment_id``
      went from ``before`` to ``after``; ``value`` = after - before, whose absolute value
      exceeded ``bound``.
    - ``feature``: the ADWIN detector of ``feature`` detected a change of its mean;
      ``before`` is the typical value (original units) before the interval's first
      detection, ``after`` the one at the end of the interval, ``value`` their difference
      and ``bound`` the detector's ``delta``.
    - ``centroid``: cluster ``segment_id`` of ``family`` moved ``value`` standard
      deviations, more than ``bound``.
    """

    kind: AlarmKind
    value: float
    bound: float
    message: str
    family: str | None = None
    segment_id: str | None = None
    feature: str | None = None
    before: float | None = None
    after: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "family": self.family,
            "segment_id": self.segment_id,
            "feature": self.feature,
            "value": self.value,
            "bound": self.bound,
            "before": self.before,
            "after": self.after,
            "message": self.message,
        }


@dataclass(frozen=True)
class DriftReport:
    """What one interval ``(start, end]`` of a :class:`DriftMonitor` found.

    ``features`` holds each watched feature's typical value (its detector's window mean,
    back in original units; ``None`` before any sample); ``centroid_shifts`` the movement
    of every cluster per clustering family since the previous interval.
    """

    start: datetime | None
    end: datetime
    sizes: SegmentSizes
    alarms: tuple[DriftAlarm, ...] = ()
    features: dict[str, float | None] = field(default_factory=dict)
    centroid_shifts: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_event_dict(self) -> dict[str, Any]:
        """The ``segment_drift`` event (topic ``segment-drift``) as plain JSON types.

        >>> from datetime import datetime, UTC
        >>> end = datetime(2026, 1, 2, tzinfo=UTC)
        >>> report = DriftReport(None, end, SegmentSizes(end, 3, {("value", "a"): 2}))
        >>> report.to_event_dict()  # doctest: +NORMALIZE_WHITESPACE
        {'type': 'segment_drift', 'interval_start': None,
         'interval_end': '2026-01-02T00:00:00Z', 'total_accounts': 3,
         'sizes': {'value': {'a': 2}}, 'sizes_estimated': False, 'inflow': {},
         'outflow': {}, 'alarms': [], 'features': {}, 'centroid_shifts': {}}
        """
        return {
            "type": "segment_drift",
            "interval_start": _iso(self.start),
            "interval_end": _iso(self.end),
            "total_accounts": self.sizes.total_accounts,
            "sizes": _nested(self.sizes.sizes),
            "sizes_estimated": self.sizes.estimated,
            "inflow": _nested(self.sizes.inflow),
            "outflow": _nested(self.sizes.outflow),
            "alarms": [alarm.to_dict() for alarm in self.alarms],
            "features": dict(self.features),
            "centroid_shifts": {f: dict(s) for f, s in sorted(self.centroid_shifts.items())},
        }


class FeatureDrift:
    """One feature's ADWIN detector, in river's style: ``update``, then ``drift_detected``.

    Values are prepared by ``dimension`` (clipped, maybe ``log1p``); ``None`` and
    non-numbers are skipped. ``estimation`` is the detector's window mean in original
    units (for ``log1p`` a geometric-mean-like typical value).

    >>> import random
    >>> rng = random.Random(7)
    >>> detector = FeatureDrift(Dimension("x", lower=None))
    >>> for _ in range(1000):
    ...     detector.update(rng.gauss(0, 1))
    >>> detector.n_detections
    0
    >>> for i in range(300):
    ...     detector.update(rng.gauss(1, 1))  # the mean shifts by one standard deviation
    ...     if detector.drift_detected:
    ...         break
    >>> detector.drift_detected, i < 100
    (True, True)
    """

    def __init__(self, dimension: Dimension, delta: float = 0.002) -> None:
        self.dimension = dimension
        self.delta = delta
        self.detector = drift.ADWIN(delta=delta)
        self.drift_detected = False
        self.n_detections = 0
        self.samples = 0
        #: The typical value (original units) before the interval's first detection.
        self.before: float | None = None
        self.detections = 0

    @property
    def name(self) -> str:
        return self.dimension.name

    @property
    def estimation(self) -> float | None:
        if self.samples == 0:
            return None
        return self.dimension.original(self.detector.estimation)

    def update(self, raw: Any) -> None:
        """Feed one raw feature value; sets ``drift_detected`` for this update."""
        self.drift_detected = False
        if raw is None or isinstance(raw, bool) or not isinstance(raw, int | float):
            return
        before = self.estimation
        self.detector.update(self.dimension.value(raw))
        self.samples += 1
        if self.detector.drift_detected:
            self.drift_detected = True
            self.n_detections += 1
            self.detections += 1
            if self.before is None:
                self.before = before

    def close_interval(self) -> DriftAlarm | None:
        """The interval's alarm (None without a detection); resets the interval counters."""
        alarm = None
        if self.detections:
            before, after = self.before, self.estimation
            value = (after or 0.0) - (before or 0.0)
            alarm = DriftAlarm(
                kind="feature",
                feature=self.name,
                value=value,
                bound=self.delta,
                before=before,
                after=after,
                message=(
                    f"{self.name}: typical value moved from {_figure(before)} to "
                    f"{_figure(after)} ({self.detections} ADWIN detection"
                    f"{'' if self.detections == 1 else 's'}, delta {self.delta:g})"
                ),
            )
        self.before = None
        self.detections = 0
        return alarm


def _figure(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


class DriftMonitor:
    """Segment statistics and drift alarms per interval (see the module docstring).

    Parameters
    ----------
    share_bound
        Alarm when a segment's share of all accounts moves more than this (absolute,
        0.05 = 5 percentage points) from one interval to the next.
    centroid_bound
        Alarm when a cluster centroid moves more than this many standard deviations
        between the snapshots of two interval ends.
    features
        The features with an ADWIN detector each (names or :class:`Dimension` s).
    delta
        ADWIN's confidence parameter: smaller means fewer, surer alarms.
    start
        When the first interval starts (``None``: unknown).
    """

    def __init__(
        self,
        *,
        share_bound: float = 0.05,
        centroid_bound: float = 0.5,
        features: Iterable[Dimension | str] = DRIFT_FEATURES,
        delta: float = 0.002,
        start: datetime | None = None,
    ) -> None:
        if share_bound <= 0 or centroid_bound <= 0 or not 0 < delta < 1:
            raise ValueError("need share_bound > 0, centroid_bound > 0 and 0 < delta < 1")
        self.share_bound = share_bound
        self.centroid_bound = centroid_bound
        self.detectors = {
            d.name: FeatureDrift(d, delta)
            for d in (f if isinstance(f, Dimension) else Dimension(f, lower=None) for f in features)
        }
        self.start = start
        self.previous: SegmentSizes | None = None
        self.inflow: dict[SegmentKey, int] = {}
        self.outflow: dict[SegmentKey, int] = {}
        self._seen: set[str] = set()
        self._seen_before: set[str] = set()
        self._snapshots: dict[str, ClusterSnapshot] = {}
        self._baselines: dict[str, ClusterSnapshot] = {}

    # ------------------------------------------------------------------ feeding

    def observe_change(self, change: ChangeLike) -> bool:
        """Count one membership change; False for a change id already counted."""
        if change.change_id in self._seen or change.change_id in self._seen_before:
            return False
        self._seen.add(change.change_id)
        flows = self.inflow if change.change == "entered" else self.outflow
        key = (change.family, change.segment_id)
        flows[key] = flows.get(key, 0) + 1
        return True

    def observe_features(self, features: Mapping[str, Any]) -> list[str]:
        """Feed one account's features (a ``FeatureView`` or any mapping) to every detector.

        Returns the names of the features whose detector just detected drift.
        """
        detected = []
        for name, detector in self.detectors.items():
            detector.update(features.get(name))
            if detector.drift_detected:
                detected.append(name)
        return detected

    def observe_snapshot(self, snapshot: ClusterSnapshot, family: str = "cluster") -> None:
        """Remember the latest cluster snapshot of ``family`` (compared at the close)."""
        self._snapshots[family] = snapshot
        self._baselines.setdefault(family, snapshot)

    def restore(self, last_report: Mapping[str, Any]) -> None:
        """Continue after a restart from the last published report (``to_event_dict``).

        The next interval starts at its end and share alarms compare with its sizes.
        Feature detectors and centroid baselines start afresh.
        """
        end = datetime.fromisoformat(last_report["interval_end"])
        self.start = end
        self.previous = SegmentSizes(
            end,
            int(last_report["total_accounts"]),
            _flat(last_report.get("sizes", {})),
            estimated=bool(last_report.get("sizes_estimated", False)),
        )

    # ------------------------------------------------------------------ closing

    def close_interval(
        self,
        at: datetime,
        sizes: Mapping[SegmentKey, int] | None = None,
        total_accounts: int | None = None,
    ) -> DriftReport:
        """End the interval at ``at``: its report; the counters start over.

        ``sizes`` are the segment sizes now (e.g. ``SCARD`` of the member sets) and
        ``total_accounts`` the number of accounts; by default the number of members of
        the family with the most members, which is exact when an exclusive family has a
        catch-all segment. Without ``sizes`` they are estimated from the previous sizes
        plus inflow minus outflow (``estimated`` is then True).
        """
        if at.tzinfo is None:
            raise ValueError("close_interval needs a timezone-aware time")
        previous = self.previous
        estimated = sizes is None
        if sizes is None:
            base = dict(previous.sizes) if previous else {}
            for key, n in self.inflow.items():
                base[key] = base.get(key, 0) + n
            for key, n in self.outflow.items():
                base[key] = max(base.get(key, 0) - n, 0)
            sizes = base
        now = {key: int(n) for key, n in sizes.items() if n > 0}
        if total_accounts is None:
            total_accounts = _largest_family(now)
            if estimated and previous is not None:
                total_accounts = max(total_accounts, previous.total_accounts)
        current = SegmentSizes(
            at, total_accounts, now, dict(self.inflow), dict(self.outflow), estimated
        )
        alarms = self._share_alarms(previous, current) if previous else []
        shifts = self._centroid_shifts()
        alarms.extend(self._centroid_alarms(shifts))
        for detector in self.detectors.values():
            alarm = detector.close_interval()
            if alarm is not None:
                alarms.append(alarm)
        report = DriftReport(
            start=self.start,
            end=at,
            sizes=current,
            alarms=tuple(alarms),
            features={name: d.estimation for name, d in self.detectors.items()},
            centroid_shifts=shifts,
        )
        self.start, self.previous = at, current
        self.inflow, self.outflow = {}, {}
        self._seen_before, self._seen = self._seen, set()
        return report

    def _share_alarms(self, previous: SegmentSizes, current: SegmentSizes) -> list[DriftAlarm]:
        alarms = []
        for key in sorted({*previous.sizes, *current.sizes}):
            before, after = previous.share(key), current.share(key)
            moved = after - before
            if abs(moved) > self.share_bound + _EPSILON:  # 15/300 - 0 is not above 0.05
                family, segment_id = key
                alarms.append(
                    DriftAlarm(
                        kind="segment_share",
                        family=family,
                        segment_id=segment_id,
                        value=moved,
                        bound=self.share_bound,
                        before=before,
                        after=after,
                        message=(
                            f"{family}/{segment_id}: share of accounts moved from "
                            f"{before:.1%} to {after:.1%} ({moved * 100:+.2f} points; "
                            f"bound {self.share_bound * 100:g} points)"
                        ),
                    )
                )
        return alarms

    def _centroid_shifts(self) -> dict[str, dict[str, float]]:
        shifts = {}
        for family, latest in sorted(self._snapshots.items()):
            baseline = self._baselines[family]
            self._baselines[family] = latest
            if baseline is latest:
                continue
            try:
                shifts[family] = centroid_shift(baseline, latest)
            except ValueError:  # a different feature spec: nothing to compare with
                continue
        return shifts

    def _centroid_alarms(self, shifts: Mapping[str, Mapping[str, float]]) -> list[DriftAlarm]:
        return [
            DriftAlarm(
                kind="centroid",
                family=family,
                segment_id=cluster_id,
                value=shift,
                bound=self.centroid_bound,
                message=(
                    f"{family}/{cluster_id}: centroid moved {shift:.2f} standard deviations "
                    f"(bound {self.centroid_bound:g})"
                ),
            )
            for family, by_cluster in shifts.items()
            for cluster_id, shift in by_cluster.items()
            if shift > self.centroid_bound + _EPSILON
        ]


def _largest_family(sizes: Mapping[SegmentKey, int]) -> int:
    """Accounts counted by the family with the most members (exact for exclusive ones)."""
    per_family: dict[str, int] = {}
    for (family, _), n in sizes.items():
        per_family[family] = per_family.get(family, 0) + n
    return max(per_family.values(), default=0)
