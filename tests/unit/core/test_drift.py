from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from worker.core.clustering import Cluster, ClusterSnapshot, Dimension, needs_spec
from worker.core.drift import DRIFT_FEATURES, DriftMonitor, DriftReport, FeatureDrift
from worker.core.events import SegmentChanged, SegmentDrift

T0 = datetime(2026, 3, 2, tzinfo=UTC)
DAY = timedelta(days=1)


# The output event proposed for worker/core/events.py (topic ``segment-drift``); kept here
# until it lands there, so that ``DriftReport.to_event_dict`` is checked against it.
def change(
    n: int, family: str, segment_id: str, kind: Literal["entered", "exited"]
) -> SegmentChanged:
    return SegmentChanged(
        change_id=f"chg-{n}",
        account_id=f"ACC-{n}",
        family=family,
        segment_id=segment_id,
        change=kind,
        reason="test",
        occurred_at=T0,
        definition_version="1",
        cause=f"evt-{n}",
    )


# ------------------------------------------------------------------------ features


def first_alarm_after_shift(seed: int, shift: float, n_before: int, n_after: int) -> int | None:
    rng = random.Random(seed)
    detector = FeatureDrift(Dimension("x", lower=None))
    for _ in range(n_before):
        detector.update(rng.gauss(0, 1))
        assert not detector.drift_detected
    for i in range(n_after):
        detector.update(rng.gauss(shift, 1))
        if detector.drift_detected:
            return i
    return None


@pytest.mark.parametrize("seed", range(5))
def test_adwin_detects_a_one_sigma_shift_quickly(seed: int) -> None:
    detected_after = first_alarm_after_shift(seed, shift=1.0, n_before=1000, n_after=500)
    assert detected_after is not None and detected_after < 150


@pytest.mark.parametrize("seed", range(5))
def test_adwin_stays_quiet_on_stationary_noise(seed: int) -> None:
    rng = random.Random(seed)
    monitor = DriftMonitor(features=["x"])
    for _ in range(10_000):
        assert monitor.observe_features({"x": rng.gauss(0, 1)}) == []
    report = monitor.close_interval(T0)
    assert [a for a in report.alarms if a.kind == "feature"] == []
    assert report.features["x"] == pytest.approx(0.0, abs=0.1)


def test_feature_alarm_reports_before_and_after_and_resets() -> None:
    rng = random.Random(1)
    monitor = DriftMonitor(features=["x"])
    for _ in range(1000):
        monitor.observe_features({"x": rng.gauss(0, 1)})
    hits = []
    for i in range(300):
        if monitor.observe_features({"x": rng.gauss(2, 1)}):
            hits.append(i)
    assert hits and hits[0] < 60
    (alarm,) = monitor.close_interval(T0).alarms
    assert (alarm.kind, alarm.feature, alarm.family, alarm.segment_id) == (
        "feature",
        "x",
        None,
        None,
    )
    assert alarm.before is not None and alarm.after is not None
    assert alarm.before < 1.0 < alarm.after
    assert alarm.value == pytest.approx(alarm.after - alarm.before)
    assert alarm.bound == 0.002
    assert "x: typical value moved from" in alarm.message
    # The next interval, with the same (new) mean: no alarm.
    for _ in range(1000):
        monitor.observe_features({"x": rng.gauss(2, 1)})
    assert monitor.close_interval(T0 + DAY).alarms == ()


def test_default_features_are_log_transformed_so_skewed_revenue_is_no_false_alarm() -> None:
    rng = random.Random(4)
    monitor = DriftMonitor()
    assert [d.name for d in DRIFT_FEATURES] == list(monitor.detectors)
    for _ in range(20_000):
        monitor.observe_features({"revenue_365d": rng.lognormvariate(8, 1.5)})
    assert monitor.close_interval(T0).alarms == ()
    for _ in range(500):
        monitor.observe_features({"revenue_365d": rng.lognormvariate(8, 1.5) * 5})
    alarms = monitor.close_interval(T0 + DAY).alarms
    assert [a.feature for a in alarms] == ["revenue_365d"]
    # Typical values are back in original units (geometric means): ~e^8 ≈ 2,981 before.
    assert alarms[0].before == pytest.approx(math.exp(8), rel=0.2)
    before, after = alarms[0].before, alarms[0].after
    assert before is not None and after is not None and after > 2 * before


def test_missing_feature_values_are_skipped() -> None:
    monitor = DriftMonitor()
    monitor.observe_features({"response_rate_365d": None, "orders_365d": 3})
    monitor.observe_features({})
    assert monitor.detectors["response_rate_365d"].samples == 0
    assert monitor.detectors["orders_365d"].samples == 1
    report = monitor.close_interval(T0)
    assert report.features["response_rate_365d"] is None
    assert report.features["orders_365d"] == pytest.approx(3.0)


# ----------------------------------------------------------------- sizes and flows


def test_inflow_and_outflow_are_counted_per_interval_and_deduplicated() -> None:
    monitor = DriftMonitor()
    changes = [
        change(1, "value", "a", "entered"),
        change(2, "value", "b1", "exited"),
        change(3, "value", "a", "entered"),
        change(4, "program", "champions", "entered"),
    ]
    assert [monitor.observe_change(c) for c in changes] == [True] * 4
    assert monitor.observe_change(changes[0]) is False  # a redelivery (outbox re-send)
    report = monitor.close_interval(T0, {("value", "a"): 5, ("value", "b1"): 5})
    assert report.sizes.inflow == {("value", "a"): 2, ("program", "champions"): 1}
    assert report.sizes.outflow == {("value", "b1"): 1}

    # Counters start over; a re-send of the previous interval's change is still a duplicate.
    assert monitor.observe_change(changes[1]) is False
    assert monitor.observe_change(change(5, "value", "a", "exited")) is True
    report = monitor.close_interval(T0 + DAY, {("value", "a"): 4, ("value", "b1"): 6})
    assert report.sizes.inflow == {}
    assert report.sizes.outflow == {("value", "a"): 1}
    assert report.start == T0 and report.end == T0 + DAY


def test_sizes_are_estimated_from_flows_without_member_counts() -> None:
    monitor = DriftMonitor(share_bound=0.5)
    monitor.close_interval(T0, {("value", "a"): 3, ("value", "c1"): 7}, total_accounts=10)
    monitor.observe_change(change(1, "value", "a", "entered"))
    monitor.observe_change(change(2, "value", "c1", "exited"))
    report = monitor.close_interval(T0 + DAY)
    assert report.sizes.estimated is True
    assert report.sizes.sizes == {("value", "a"): 4, ("value", "c1"): 6}
    assert report.sizes.total_accounts == 10


def test_total_accounts_defaults_to_the_largest_family() -> None:
    monitor = DriftMonitor()
    sizes = {("value", "a"): 3, ("value", "c1"): 7, ("engagement", "x"): 4}
    assert monitor.close_interval(T0, sizes).sizes.total_accounts == 10


# ------------------------------------------------------------------- share bound


def test_share_bound_alarm() -> None:
    monitor = DriftMonitor()  # share_bound 0.05
    first = monitor.close_interval(T0, {("value", "a"): 20, ("value", "c1"): 80}, 100)
    assert first.alarms == ()  # nothing to compare with yet
    quiet = monitor.close_interval(T0 + DAY, {("value", "a"): 24, ("value", "c1"): 76}, 100)
    assert quiet.alarms == ()  # 4 points: within the bound
    moved = monitor.close_interval(T0 + 2 * DAY, {("value", "a"): 30, ("value", "c1"): 70}, 100)
    assert [(a.kind, a.family, a.segment_id) for a in moved.alarms] == [
        ("segment_share", "value", "a"),
        ("segment_share", "value", "c1"),
    ]
    up = moved.alarms[0]
    assert (up.before, up.after, up.bound) == (0.24, 0.30, 0.05)
    assert up.value == pytest.approx(0.06)
    assert "value/a" in up.message and "24.0% to 30.0%" in up.message


def test_a_move_of_exactly_the_bound_is_no_alarm() -> None:
    monitor = DriftMonitor(share_bound=0.05)
    monitor.close_interval(T0, {("value", "c1"): 112, ("value", "c2"): 188}, 300)
    report = monitor.close_interval(T0 + DAY, {("value", "c1"): 97, ("value", "c2"): 203}, 300)
    assert report.alarms == ()  # 15 of 300 accounts = 5 points, in floating point a hair more


def test_share_bound_alarm_for_a_segment_that_empties() -> None:
    monitor = DriftMonitor(share_bound=0.1)
    monitor.close_interval(T0, {("needs", "tools"): 30}, 100)
    report = monitor.close_interval(T0 + DAY, {("needs", "tools"): 0}, 100)
    assert [(a.segment_id, a.after) for a in report.alarms] == [("tools", 0.0)]
    assert report.sizes.sizes == {}


# -------------------------------------------------------------------- centroids


def snapshot(version: int, c1: tuple[float, float], c2: tuple[float, float]) -> ClusterSnapshot:
    return ClusterSnapshot(
        version=version,
        spec=needs_spec(["tools", "office"]),
        means=(0.5, 0.5),
        stds=(0.4, 0.4),
        clusters=(Cluster("c1", c1, 10), Cluster("c2", c2, 10)),
        next_id=3,
        samples=20,
    )


def test_centroid_alarm_compares_the_snapshots_of_two_interval_ends() -> None:
    monitor = DriftMonitor(centroid_bound=0.5)
    monitor.observe_snapshot(snapshot(1, (1.0, -1.0), (-1.0, 1.0)))
    assert monitor.close_interval(T0).alarms == ()
    # Two small steps within one interval add up to one large movement of c1.
    monitor.observe_snapshot(snapshot(2, (1.3, -1.0), (-1.0, 1.0)))
    monitor.observe_snapshot(snapshot(3, (1.6, -1.0), (-1.1, 1.0)))
    report = monitor.close_interval(T0 + DAY)
    assert report.centroid_shifts["cluster"] == pytest.approx({"c1": 0.6, "c2": 0.1})
    (alarm,) = report.alarms
    assert (alarm.kind, alarm.family, alarm.segment_id) == ("centroid", "cluster", "c1")
    assert (alarm.value, alarm.bound) == (pytest.approx(0.6), 0.5)
    # No new snapshot: no movement, no alarm.
    assert monitor.close_interval(T0 + 2 * DAY).alarms == ()


def test_centroid_of_a_different_spec_resets_the_baseline() -> None:
    monitor = DriftMonitor()
    monitor.observe_snapshot(snapshot(1, (1.0, -1.0), (-1.0, 1.0)), family="needs")
    monitor.close_interval(T0)
    other = ClusterSnapshot(
        2, needs_spec(["hvac"]), (0.5,), (0.4,), (Cluster("c1", (3.0,), 5),), 2, 5
    )
    monitor.observe_snapshot(other, family="needs")
    report = monitor.close_interval(T0 + DAY)
    assert report.alarms == () and report.centroid_shifts == {}


# ------------------------------------------------------------------- the event


def test_report_matches_the_proposed_segment_drift_event() -> None:
    rng = random.Random(2)
    monitor = DriftMonitor(start=T0 - DAY, features=["x"])
    monitor.observe_snapshot(snapshot(1, (1.0, -1.0), (-1.0, 1.0)))
    monitor.close_interval(T0, {("value", "a"): 10, ("value", "c1"): 90}, 100)
    monitor.observe_change(change(1, "value", "a", "entered"))
    monitor.observe_snapshot(snapshot(2, (2.0, -1.0), (-1.0, 1.0)))
    for mean in (0.0, 3.0):
        for _ in range(500):
            monitor.observe_features({"x": rng.gauss(mean, 1)})
    report = monitor.close_interval(T0 + DAY, {("value", "a"): 20, ("value", "c1"): 80}, 100)
    assert {a.kind for a in report.alarms} == {"segment_share", "feature", "centroid"}

    data = report.to_event_dict()
    event = SegmentDrift.model_validate(json.loads(json.dumps(data, allow_nan=False)))
    assert event.interval_start == T0 and event.interval_end == T0 + DAY
    assert event.sizes == {"value": {"a": 20, "c1": 80}}
    assert event.inflow == {"value": {"a": 1}}
    assert len(event.alarms) == len(report.alarms)
    assert event.model_dump(mode="json") == data


def test_restore_continues_from_the_last_published_report() -> None:
    monitor = DriftMonitor()
    last = monitor.close_interval(T0, {("value", "a"): 10, ("value", "c1"): 90}, 100)
    restarted = DriftMonitor()
    restarted.restore(json.loads(json.dumps(last.to_event_dict())))
    report = restarted.close_interval(T0 + DAY, {("value", "a"): 30, ("value", "c1"): 70}, 100)
    assert report.start == T0
    assert {a.segment_id for a in report.alarms} == {"a", "c1"}


def test_first_report_has_no_start_unless_given() -> None:
    assert DriftMonitor().close_interval(T0).start is None
    report = DriftMonitor(start=T0 - DAY).close_interval(T0)
    assert isinstance(report, DriftReport) and report.start == T0 - DAY


def test_invalid_bounds_are_rejected() -> None:
    with pytest.raises(ValueError):
        DriftMonitor(share_bound=0)
    with pytest.raises(ValueError):
        DriftMonitor(delta=1.5)
    with pytest.raises(ValueError, match="timezone-aware"):
        DriftMonitor().close_interval(datetime(2026, 3, 2))
