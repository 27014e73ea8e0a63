"""The decision per segment change: cooldowns, caps, holdout, quiet hours, suppression."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.clock import TEST_NOW
from worker.core.features import VOCABULARY
from worker.core.triggers.config import QuietHours, load_triggers
from worker.core.triggers.policy import (
    Change,
    TriggerState,
    decide,
    in_holdout,
    quiet_until,
    trigger_id,
)

NOW = TEST_NOW.timestamp()
DAY = 86400.0

CONFIG = load_triggers(
    """
version: "t-1"
triggers:
  - id: develop_b1
    on: {family: value, segment: b1, change: entered}
    unless_member_of: [engagement/unsubscribed]
    when: revenue_365d >= 5000
    cooldown: 30d
    campaign: b1-development-offer
  - id: any_value_entry
    on: {family: value}
    campaign: value-news
  - id: welcome_back
    on: {family: value, segment: inactive, change: exited}
    campaign: welcome-back
    origins: [event, time, cutoffs, import]
    live_only: false
limits:
  per_account: {max: 2, per: 7d}
  suppress: [value/inactive]
""",
    VOCABULARY,
)


def change(n: int, segment: str = "b1", kind: str = "entered", **more) -> Change:
    return Change(f"c-{n}", "ACME", "value", segment, kind, **more)


def outcomes(decisions) -> dict[str, tuple[str, str]]:
    return {d.trigger: (d.outcome, d.reason) for d in decisions}


def test_every_matching_trigger_is_decided_with_a_deterministic_id() -> None:
    state = TriggerState("ACME")
    decisions = decide(change(1), CONFIG, state, {}, {"revenue_365d": 9000.0}, NOW)
    assert outcomes(decisions) == {"develop_b1": ("fired", ""), "any_value_entry": ("fired", "")}
    assert [d.trigger_id for d in decisions] == [
        trigger_id("develop_b1", "c-1"),
        trigger_id("any_value_entry", "c-1"),
    ]
    assert len({d.trigger_id for d in decisions}) == 2


def test_a_redelivered_change_decides_nothing_again() -> None:
    state = TriggerState("ACME")
    first = decide(change(1), CONFIG, state, {}, {"revenue_365d": 9000.0}, NOW)
    assert first
    assert decide(change(1), CONFIG, state, {}, {"revenue_365d": 9000.0}, NOW + 5) == []
    assert len(state.log) == len(first)


def test_condition_membership_origin_and_liveness_suppress_with_their_reason() -> None:
    state = TriggerState("ACME")
    poor = decide(change(1), CONFIG, state, {}, {"revenue_365d": 1200.0}, NOW)
    assert outcomes(poor)["develop_b1"] == (
        "suppressed",
        "condition revenue_365d >= 5000 (revenue_365d=1200.0)",
    )
    unsubscribed = {"engagement": {"unsubscribed": {"since": NOW}}}
    member = decide(change(2), CONFIG, state, unsubscribed, {"revenue_365d": 9e3}, NOW)
    assert outcomes(member)["develop_b1"] == ("suppressed", "member of engagement/unsubscribed")
    inactive = {"value": {"inactive": {"since": NOW}}}
    suppressed = decide(change(3), CONFIG, state, inactive, {"revenue_365d": 9e3}, NOW)
    assert {o for o, _ in outcomes(suppressed).values()} == {"suppressed"}
    recompute = decide(change(4, origin="recompute"), CONFIG, state, {}, {"revenue_365d": 9e3}, NOW)
    assert outcomes(recompute)["develop_b1"] == ("suppressed", "origin recompute")
    history = decide(change(5, live=False), CONFIG, state, {}, {"revenue_365d": 9e3}, NOW)
    assert outcomes(history)["develop_b1"][0] == "suppressed"
    assert "not live" in outcomes(history)["develop_b1"][1]
    assert "develop_b1" not in state.last_fired  # none of its decisions was sent


def test_a_trigger_may_include_imports_and_history() -> None:
    state = TriggerState("ACME")
    imported = change(1, segment="inactive", kind="exited", origin="import", live=False)
    assert outcomes(decide(imported, CONFIG, state, {}, {}, NOW)) == {"welcome_back": ("fired", "")}


def test_cooldown_per_account_and_trigger_runs_on_the_wall_clock() -> None:
    state = TriggerState("ACME")
    rich = {"revenue_365d": 9000.0}
    assert outcomes(decide(change(1), CONFIG, state, {}, rich, NOW))["develop_b1"][0] == "fired"
    later = decide(change(2), CONFIG, state, {}, rich, NOW + 29 * DAY)
    assert outcomes(later)["develop_b1"][0] == "suppressed"
    assert outcomes(later)["develop_b1"][1].startswith("cooldown until ")
    other = TriggerState("OTHER")  # another account is not held back
    other_change = Change("c-9", "OTHER", "value", "b1", "entered")
    assert outcomes(decide(other_change, CONFIG, other, {}, rich, NOW))["develop_b1"][0] == "fired"
    after = decide(change(3), CONFIG, state, {}, rich, NOW + 30 * DAY)
    assert outcomes(after)["develop_b1"][0] == "fired"


def test_the_cap_counts_every_trigger_in_a_sliding_window() -> None:
    state = TriggerState("ACME")
    rich = {"revenue_365d": 9000.0}
    first = decide(change(1), CONFIG, state, {}, rich, NOW)  # two triggers fire: the cap
    assert [d.outcome for d in first] == ["fired", "fired"]
    third = decide(change(2, segment="a"), CONFIG, state, {}, rich, NOW + DAY)
    assert outcomes(third) == {"any_value_entry": ("suppressed", "cap of 2 per 7d reached")}
    week_later = decide(change(3, segment="a"), CONFIG, state, {}, rich, NOW + 7 * DAY + 1)
    assert outcomes(week_later) == {"any_value_entry": ("fired", "")}


def test_quiet_hours_delay_and_never_drop() -> None:
    config = CONFIG.model_copy(
        update={
            "limits": CONFIG.limits.model_copy(
                update={
                    "quiet_hours": QuietHours.model_validate(
                        {"from": "20:00", "to": "07:00", "timezone": "Europe/Berlin"}
                    )
                }
            )
        }
    )
    evening = datetime(2026, 3, 2, 21, 30, tzinfo=UTC).timestamp()  # 22:30 in Berlin
    decisions = decide(change(1, segment="a"), config, TriggerState("ACME"), {}, {}, evening)
    (delayed,) = decisions
    assert delayed.outcome == "delayed" and delayed.sends
    assert delayed.deliver_at == datetime(2026, 3, 3, 6, 0, tzinfo=UTC).timestamp()  # 07:00 CET


def test_quiet_hours_follow_the_local_clock_across_daylight_saving() -> None:
    quiet = QuietHours.model_validate({"from": "22:00", "to": "06:00", "timezone": "Europe/Berlin"})
    # The night to Sunday 29 March 2026 is an hour shorter: 06:00 CEST is 04:00 UTC.
    night = datetime(2026, 3, 28, 23, 0, tzinfo=UTC).timestamp()
    assert quiet_until(night, quiet) == datetime(2026, 3, 29, 4, 0, tzinfo=UTC).timestamp()
    daytime = quiet.model_copy(update={"start": quiet.end, "end": quiet.start})  # 06-22
    assert quiet_until(night, daytime) is None


def test_holdout_is_per_account_recorded_and_not_counted_toward_the_cap() -> None:
    config = CONFIG.model_copy(update={"limits": CONFIG.limits.model_copy(update={"holdout": 0.5})})
    held = next(f"ACC-{n}" for n in range(100) if in_holdout(f"ACC-{n}", 0.5))
    state = TriggerState(held)
    for n in range(3):
        decisions = decide(
            Change(f"c-{n}", held, "value", "a", "entered"), config, state, {}, {}, NOW + n
        )
        assert [(d.outcome, d.sends) for d in decisions] == [("holdout", False)]
    assert state.fired == []  # three would-be triggers, none counted toward the cap of 2


def test_holdout_share_over_ten_thousand_accounts() -> None:
    held = sum(in_holdout(f"ACC-{n:05d}", 0.1) for n in range(10_000))
    assert abs(held / 10_000 - 0.1) <= 0.02
    assert in_holdout("ACC-00001", 0.1) == in_holdout("ACC-00001", 0.1)  # deterministic


@settings(max_examples=200, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    start=st.integers(0, 23),
    length=st.integers(1, 23),
)
def test_quiet_until_ends_the_period_it_is_in(moment, start, length) -> None:
    end = (start + length) % 24
    quiet = QuietHours.model_validate(
        {"from": f"{start:02d}:00", "to": f"{end:02d}:00", "timezone": "UTC"}
    )
    until = quiet_until(moment.timestamp(), quiet)
    hour = moment.hour
    inside = (start <= hour < end) if start < end else (hour >= start or hour < end)
    assert (until is not None) == inside
    if until is not None:
        release = datetime.fromtimestamp(until, UTC)
        assert release.hour == end and release.minute == 0
        assert timedelta(0) < release - moment <= timedelta(hours=length)


def test_a_state_survives_its_stored_form() -> None:
    state = TriggerState("ACME")
    decide(change(1), CONFIG, state, {}, {"revenue_365d": 9000.0}, NOW)
    again = TriggerState.from_dict(state.to_dict())
    assert again == state
    assert [d.trigger for d in again.decisions()] == ["develop_b1", "any_value_entry"]


@pytest.mark.parametrize("share", [0.0, 0.05, 0.2])
def test_holdout_share_is_close_to_the_setting(share) -> None:
    held = sum(in_holdout(f"B-{n}", share) for n in range(10_000)) / 10_000
    assert abs(held - share) <= 0.02
