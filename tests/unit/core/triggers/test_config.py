"""The triggers file: what it accepts, and every problem reported at once."""

from __future__ import annotations

from datetime import time, timedelta

import pytest

from worker.core.features import VOCABULARY
from worker.core.triggers.config import TriggersError, load_triggers

GOOD = """
version: "2026-12-01.1"
triggers:
  - id: develop_b1
    on: {family: value, segment: b1, change: entered}
    unless_member_of: [engagement/unsubscribed, value/inactive]
    when: revenue_365d >= 5000
    cooldown: 30d
    campaign: b1-development-offer
    address_roles: [decider, buyer]
    destination: crm
limits:
  per_account: {max: 2, per: 7d}
  quiet_hours: {from: "20:00", to: "07:00", timezone: Europe/Berlin}
  holdout: 0.1
  suppress: [engagement/unsubscribed]
destinations:
  crm: {url: "https://crm.example/hooks/segments", secret_env: SEGWORKER_WEBHOOK_SECRET_CRM}
"""


def problems(text: str, segments=None) -> list[str]:
    with pytest.raises(TriggersError) as caught:
        load_triggers(text, VOCABULARY, segments)
    return caught.value.errors


def test_a_full_file_loads() -> None:
    config = load_triggers(GOOD, VOCABULARY, {"value": {"b1", "inactive"}, "engagement": None})
    trigger = config.trigger("develop_b1")
    assert trigger.unless_member_of == (("engagement", "unsubscribed"), ("value", "inactive"))
    assert trigger.cooldown == timedelta(days=30)
    assert trigger.address_roles == ("decider", "buyer")
    assert trigger.condition is not None and trigger.condition.evaluate({"revenue_365d": 6000})
    quiet = config.limits.quiet_hours
    assert quiet is not None and (quiet.start, quiet.end) == (time(20), time(7))
    assert config.destinations["crm"].max_attempts == 8


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("cooldown: 30d", "cooldown: 30", "invalid duration 30"),
        ("when: revenue_365d >= 5000", "when: industry > 5", "cannot compare industry"),
        ("campaign: b1-development-offer", "campaign: 'no spaces'", "is not a campaign id"),
        ("[decider, buyer]", "[decider, cfo]", "address_roles"),
        ("destination: crm", "destination: erp", "destination 'erp' is not defined"),
        ('from: "20:00"', "from: 20:00", "is not a time of day"),
        ("timezone: Europe/Berlin", "timezone: Mars/Olympus", "is not a time zone"),
        ("holdout: 0.1", "holdout: 1.5", "holdout"),
        ("[engagement/unsubscribed, value", "[unsubscribed, value", "family/segment"),
        ("    cooldown: 30d\n", "    cooldown: 30d\n    coldown: 3d\n", "unknown key 'coldown'"),
    ],
)
def test_each_mistake_is_named(before: str, after: str, expected: str) -> None:
    text = GOOD.replace(before, after)
    assert text != GOOD
    found = problems(text)
    assert any(expected in problem for problem in found), found


def test_every_problem_at_once_with_the_trigger_named() -> None:
    text = """
triggers:
  - {id: a, on: {family: value}, campaign: x, cooldown: 3}
  - {id: a, on: {family: value}, campaign: y}
  - {id: c, campaign: z, when: revenu_365d > 1}
"""
    found = problems(text)
    assert any(p.startswith("a: cooldown:") for p in found), found
    assert any(p.startswith("c: 'on' is required") for p in found), found
    assert any(p.startswith("c: when: unknown feature 'revenu_365d'") for p in found), found


def test_unknown_families_and_segments() -> None:
    found = problems(GOOD, {"value": {"a", "b1"}, "cluster": None})
    assert "develop_b1: unless_member_of: no family 'engagement'" in found
    assert "develop_b1: unless_member_of: value has no segment 'inactive'" in found
    assert "limits: suppress: no family 'engagement'" in found


def test_duplicate_keys_and_empty_files_are_refused() -> None:
    assert (
        "duplicate key 'campaign'"
        in problems("triggers:\n  - {id: a, on: {family: v}, campaign: x, campaign: y}\n")[0]
    )
    assert problems("\n") == ["the campaign triggers are empty"]
