"""Whether a segment change fires a campaign trigger, waits, is held out or suppressed.

Pure: the router hands in the change, the account's trigger state, its memberships and
features, and the wall clock (cooldowns, caps and quiet hours are about people receiving
messages, so they run on the wall clock, which the caller injects); ``decide`` returns
one decision per trigger the change matches and updates the state. In order:

1. ``origin`` not among the trigger's ``origins`` (by default no import, recompute,
   model or erasure) or, with ``live_only``, a change that is not live: suppressed;
2. a member of a suppressed segment (``limits.suppress``, ``unless_member_of``):
   suppressed;
3. ``when`` false for the account's features: suppressed;
4. within the trigger's ``cooldown`` for this account: suppressed;
5. an account of the holdout (deterministic by account id, across all triggers): held
   out, recorded, never sent, and not counted toward the cap;
6. the cap per account reached (``limits.per_account``): suppressed;
7. within quiet hours: delayed until they end, never dropped; otherwise fired.

A change already decided (a redelivery) decides nothing again, and every decision has a
deterministic ``trigger_id``, so a crash and a replay never give one trigger two ids.

Examples
--------
>>> from worker.core.features import VOCABULARY
>>> from worker.core.triggers.config import load_triggers
>>> config = load_triggers('''
... triggers:
...   - {id: welcome_a, on: {family: value, segment: a}, campaign: welcome, cooldown: 30d}
... ''', VOCABULARY)
>>> change = Change("c-1", "ACME", "value", "a", "entered", origin="event", live=True)
>>> state = TriggerState("ACME")
>>> [d.outcome for d in decide(change, config, state, {}, {}, now=1_000_000.0)]
['fired']
>>> again = Change("c-2", "ACME", "value", "a", "entered", origin="event", live=True)
>>> [(d.outcome, d.reason) for d in decide(again, config, state, {}, {}, now=1_086_400.0)]
[('suppressed', 'cooldown until 1970-02-11T13:46:40+00:00')]
>>> decide(change, config, state, {}, {}, now=1_000_000.0)  # a redelivery
[]
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from worker.core.events import epoch_text
from worker.core.triggers.config import QuietHours, Trigger, TriggersConfig

Outcome = Literal["fired", "delayed", "holdout", "suppressed"]
#: How many decided change ids an account remembers (a redelivery comes within a batch
#: or two of the first delivery).
CHANGES_KEPT = 64
#: How many decisions an account keeps for ``segworker triggers explain``.
LOG_KEPT = 50


@dataclass(frozen=True)
class Change:
    """What a decision needs of a ``SegmentChanged``."""

    change_id: str
    account_id: str
    family: str
    segment_id: str
    change: str
    origin: str = "event"
    live: bool = True
    reason: str = ""


@dataclass(frozen=True)
class Decision:
    """What became of one trigger for one change; times are wall-clock epoch seconds."""

    trigger_id: str
    trigger: str
    campaign: str
    outcome: Outcome
    reason: str
    decided_at: float
    deliver_at: float
    #: what decided it, for counting: "" (fired), quiet_hours, holdout, origin, not_live,
    #: suppressed_segment, condition, cooldown or cap
    rule: str = ""

    @property
    def sends(self) -> bool:
        """Whether it goes to the campaign tools (held-out ones are only recorded)."""
        return self.outcome in ("fired", "delayed")


@dataclass
class TriggerState:
    """What the router remembers about one account (stored with its own key).

    ``last_fired``: trigger -> when it last fired or was held out (the cooldown);
    ``fired``: when triggers were sent lately (the cap, newest last); ``changes``: the
    last change ids decided; ``log``: the last decisions, newest last, as
    ``[decided_at, trigger, outcome, reason, change_id, trigger_id, deliver_at, rule]``.
    """

    account_id: str
    last_fired: dict[str, float] = field(default_factory=dict)
    fired: list[float] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    log: list[list[Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TriggerState:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def decisions(self) -> list[Decision]:
        """The logged decisions, newest last."""
        return [
            Decision(entry[5], entry[1], "", entry[2], entry[3], entry[0], entry[6], entry[7])
            for entry in self.log
        ]


def trigger_id(trigger: str, change_id: str) -> str:
    """The deterministic id of what ``trigger`` made of the change ``change_id``.

    >>> trigger_id("welcome_a", "5c0e")
    '2d3e11075ac5ac3bd4117f143c7410b3'
    """
    return hashlib.sha256(f"{trigger}\x1f{change_id}".encode()).hexdigest()[:32]


def in_holdout(account_id: str, share: float, salt: str = "holdout") -> bool:
    """Whether the account belongs to the holdout: a deterministic hash of its id, the same
    for every trigger and on every worker.

    >>> sum(in_holdout(f"ACC-{n}", 0.1) for n in range(10_000))
    1000
    """
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"{salt}\x1f{account_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def quiet_until(at: float, quiet: QuietHours) -> float | None:
    """When the quiet hours around the wall-clock moment ``at`` end; None outside them.

    >>> from worker.core.triggers.config import QuietHours
    >>> quiet = QuietHours.model_validate({"from": "20:00", "to": "07:00", "timezone": "UTC"})
    >>> ten_pm = datetime(2026, 3, 2, 22, tzinfo=UTC).timestamp()
    >>> datetime.fromtimestamp(quiet_until(ten_pm, quiet), UTC).isoformat()
    '2026-03-03T07:00:00+00:00'
    >>> quiet_until(datetime(2026, 3, 2, 12, tzinfo=UTC).timestamp(), quiet) is None
    True
    """
    zone = ZoneInfo(quiet.timezone)
    local = datetime.fromtimestamp(at, zone)
    clock = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        inside = quiet.start <= clock < quiet.end
        end_day = local.date()
    else:  # spans midnight
        inside = clock >= quiet.start or clock < quiet.end
        end_day = local.date() + timedelta(days=1 if clock >= quiet.start else 0)
    if not inside:
        return None
    end = datetime.combine(end_day, quiet.end, zone)
    return end.astimezone(UTC).timestamp()


def matches(trigger: Trigger, change: Change) -> bool:
    """Whether ``trigger`` is about this change (family, segment, entered or exited)."""
    on = trigger.on
    return (
        on.family == change.family
        and (on.segment is None or on.segment == change.segment_id)
        and on.change == change.change
    )


def decide(
    change: Change,
    config: TriggersConfig,
    state: TriggerState,
    memberships: Mapping[str, Mapping[str, Any]],
    features: Mapping[str, Any],
    now: float,
) -> list[Decision]:
    """The decisions for ``change``, one per matching trigger; ``state`` records them.

    ``memberships``: the account's memberships (family -> segment -> membership);
    ``features``: its features (a ``FeatureView``) for the ``when`` conditions; ``now``:
    the wall clock, epoch seconds.
    """
    if change.change_id in state.changes:
        return []
    state.changes.append(change.change_id)
    del state.changes[:-CHANGES_KEPT]
    limits = config.limits
    held_out = in_holdout(change.account_id, limits.holdout)
    decisions = []
    for trigger in config.triggers:
        if not matches(trigger, change):
            continue
        outcome, rule, reason, deliver_at = _outcome(
            trigger, change, config, state, memberships, features, now, held_out
        )
        decision = Decision(
            trigger_id(trigger.id, change.change_id),
            trigger.id,
            trigger.campaign,
            outcome,
            reason,
            now,
            deliver_at,
            rule,
        )
        _record(state, decision, change.change_id, config)
        decisions.append(decision)
    return decisions


def _outcome(
    trigger: Trigger,
    change: Change,
    config: TriggersConfig,
    state: TriggerState,
    memberships: Mapping[str, Mapping[str, Any]],
    features: Mapping[str, Any],
    now: float,
    held_out: bool,
) -> tuple[Outcome, str, str, float]:
    """``(outcome, rule, reason, deliver_at)`` of one trigger for one change."""
    if change.origin not in trigger.origins:
        return "suppressed", "origin", f"origin {change.origin}", now
    if trigger.live_only and not change.live:
        return "suppressed", "not_live", "not live (history or a late event)", now
    for family, segment in (*config.limits.suppress, *trigger.unless_member_of):
        if segment in memberships.get(family, {}):
            return "suppressed", "suppressed_segment", f"member of {family}/{segment}", now
    condition = trigger.condition
    if condition is not None and not condition.evaluate(features):
        shown = ", ".join(f"{k}={v!r}" for k, v in condition.explain(features).items())
        return "suppressed", "condition", f"condition {trigger.when} ({shown})", now
    last = state.last_fired.get(trigger.id)
    if trigger.cooldown is not None and last is not None:
        until = last + trigger.cooldown.total_seconds()
        if now < until:
            return "suppressed", "cooldown", f"cooldown until {epoch_text(until)}", now
    if held_out:
        return "holdout", "holdout", f"holdout ({config.limits.holdout:.0%} of accounts)", now
    cap = config.limits.per_account
    if cap is not None:
        recent = [at for at in state.fired if at > now - cap.per.total_seconds()]
        if len(recent) >= cap.max:
            return "suppressed", "cap", f"cap of {cap.max} per {_duration(cap.per)} reached", now
    quiet = config.limits.quiet_hours
    quiet_end = quiet_until(now, quiet) if quiet is not None else None
    if quiet_end is not None:
        return "delayed", "quiet_hours", f"quiet hours until {epoch_text(quiet_end)}", quiet_end
    return "fired", "", "", now


def _record(
    state: TriggerState, decision: Decision, change_id: str, config: TriggersConfig
) -> None:
    if decision.outcome in ("fired", "delayed", "holdout"):
        state.last_fired[decision.trigger] = decision.decided_at
    if decision.sends:
        state.fired.append(decision.decided_at)
        cap = config.limits.per_account
        keep = cap.max if cap is not None else 1
        del state.fired[:-keep]
    state.log.append(
        [
            decision.decided_at,
            decision.trigger,
            decision.outcome,
            decision.reason,
            change_id,
            decision.trigger_id,
            decision.deliver_at,
            decision.rule,
        ]
    )
    del state.log[:-LOG_KEPT]


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
