from __future__ import annotations

import pytest

from worker.runtime.pacing import MINIMUM_BACKGROUND_PART, LoadMeter, background_share


def test_an_idle_agent_has_no_load() -> None:
    assert LoadMeter(window=5.0).share(now=1000.0) == 0.0


def test_the_load_is_the_busy_share_of_the_window() -> None:
    meter = LoadMeter(window=10.0)
    for second in range(10):
        meter.record(busy=0.25, now=100.0 + second)
    assert meter.share(now=109.5) == pytest.approx(0.25)


def test_batches_older_than_the_window_no_longer_count() -> None:
    meter = LoadMeter(window=10.0)
    meter.record(busy=8.0, now=100.0)
    meter.record(busy=1.0, now=105.0)
    assert meter.share(now=109.0) == pytest.approx(0.9)
    assert meter.share(now=111.0) == pytest.approx(0.1)
    assert meter.share(now=116.0) == 0.0


def test_the_load_never_exceeds_one() -> None:
    meter = LoadMeter(window=1.0)
    meter.record(busy=30.0, now=50.0)  # one batch longer than the window
    assert meter.share(now=50.0) == 1.0


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LoadMeter(window=0)


@pytest.mark.parametrize(
    ("load", "expected"),
    [(0.0, 0.25), (0.2, 0.16), (0.6, 0.04), (0.95, 0.25 * MINIMUM_BACKGROUND_PART), (1.5, 0.025)],
)
def test_background_work_takes_what_the_agent_leaves(load: float, expected: float) -> None:
    assert background_share(0.25, load) == pytest.approx(expected)


def test_background_work_without_pauses_stays_so_on_an_idle_agent() -> None:
    assert background_share(1.0, 0.0) == 1.0
