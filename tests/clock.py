"""The one fixed "now" that test data is built around.

Tests derive their event times from ``TEST_NOW`` instead of the wall clock, so the
data, and so every outcome, is the same on any day the suite runs. It lies in the
past of any day the suite may run on: the event contracts refuse event times more
than a day in the future. ``.ci/run`` runs the unit suite under faketime at other
dates, and ``tests/unit/test_clock_free.py`` fails on a wall-clock read in test data.
"""

from __future__ import annotations

from datetime import UTC, datetime

#: A Monday, mid-morning: the "now" of the tests.
TEST_NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
