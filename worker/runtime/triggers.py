"""The campaign trigger router: segment changes in, campaign triggers out.

``TriggerRouter.route`` takes a batch of ``SegmentChanged`` (the agent on
``segment-changes``, co-partitioned by account, so it scales with the workers), decides
each trigger (``worker.core.triggers.policy``) against the account's memberships and
features as the segmentation state holds them, and writes the trigger states together
with the triggers' outbox entries in one transaction. It then sends what may go now to
``campaign-triggers`` and clears it from the outbox; only after that does the agent ack
the changes. A crash in between leaves the triggers in the outbox, where
``send_due`` (a timer) finds them, with the same ``trigger_id``; a redelivered change
decides nothing again. Triggers that quiet hours delay wait in the outbox until then.

``WebhookDelivery`` POSTs the triggers that name a destination (never held-out ones),
within the destination's rate across all workers, retrying with back-off, and sends a
trigger the webhook refused, or did not take after every attempt, to the trigger
dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from worker.core.events import CampaignTriggered, SegmentChanged, epoch_text
from worker.core.features import AccountState, FeatureView, Globals
from worker.core.triggers.config import TriggersConfig
from worker.core.triggers.policy import Change, Decision, TriggerState, decide
from worker.ports import StateStore, TriggerSender, TriggerStore, WebhookPoster
from worker.runtime.metrics import Metrics

log = logging.getLogger(__name__)
Clock = Callable[[], float]


class TriggerRouter:
    """Decides and records the triggers of segment changes; see the module docstring."""

    def __init__(
        self,
        config: TriggersConfig,
        segmentation: StateStore,
        store: TriggerStore,
        sender: TriggerSender,
        metrics: Metrics,
        clock: Clock = time.time,
    ) -> None:
        self.config = config
        self.segmentation = segmentation
        self.store = store
        self.sender = sender
        self.metrics = metrics
        self.clock = clock

    async def route(self, changes: Sequence[SegmentChanged]) -> list[Decision]:
        """Decide, record and send the triggers of ``changes`` (in their order); returns
        the decisions made (none for changes already decided)."""
        if not changes:
            return []
        accounts = sorted({change.account_id for change in changes})
        states = await self.segmentation.load_many(accounts)
        shared = await self.segmentation.load_globals()
        now = self.clock()
        #: change index -> its decisions; the store calls ``mutate`` once per shard (with
        #: that shard's accounts) and again after a write conflict, which redoes them
        by_change: dict[int, list[Decision]] = {}

        def mutate(triggers: dict[str, TriggerState]) -> list[CampaignTriggered]:
            out = []
            for index, change in enumerate(changes):
                if change.account_id not in triggers:
                    continue  # another shard's account
                account = states.get(change.account_id)
                by_change[index] = self._decide(
                    change, triggers[change.account_id], account, shared, now
                )
                for decision in by_change[index]:
                    if decision.outcome != "suppressed":
                        out.append(self._triggered(change, decision, account))
            return out

        triggered = await self.store.update(accounts, mutate)
        decided = [decision for index in sorted(by_change) for decision in by_change[index]]
        await self._count(decided)
        # Sent now unless quiet hours delayed it. Compared as the trigger carries both
        # (datetimes of microseconds): ``deliver_at.timestamp()`` of an undelayed trigger
        # may round to just after ``now``, which left a third of them to the outbox timer.
        await self.send([t for t in triggered if t.deliver_at <= t.fired_at])
        for account in {c.account_id for c in changes if c.origin == "erasure"}:
            await self.store.erase(account)
        return decided

    def _decide(
        self,
        change: SegmentChanged,
        trigger_state: TriggerState,
        account: AccountState | None,
        shared: Globals,
        now: float,
    ) -> list[Decision]:
        view = FeatureView(account, account.now_day, shared) if account is not None else {}
        memberships = account.memberships if account is not None else {}
        return decide(
            Change(
                change.change_id,
                change.account_id,
                change.family,
                change.segment_id,
                change.change,
                change.origin,
                change.live,
                change.reason,
            ),
            self.config,
            trigger_state,
            memberships,
            view,
            now,
        )

    def _triggered(
        self, change: SegmentChanged, decision: Decision, account: AccountState | None
    ) -> CampaignTriggered:
        trigger = self.config.trigger(decision.trigger)
        known = account.contacts if account is not None else {}
        return CampaignTriggered(
            trigger_id=decision.trigger_id,
            trigger=decision.trigger,
            campaign=decision.campaign,
            account_id=change.account_id,
            contacts={role: known[role] for role in trigger.address_roles if role in known},
            holdout=decision.outcome == "holdout",
            change_id=change.change_id,
            family=change.family,
            segment_id=change.segment_id,
            change=change.change,
            change_reason=change.reason,
            occurred_at=change.occurred_at,
            fired_at=datetime.fromtimestamp(decision.decided_at, UTC),
            deliver_at=datetime.fromtimestamp(decision.deliver_at, UTC),
            destination=trigger.destination,
            triggers_version=self.config.version,
        )

    async def _count(self, decisions: Sequence[Decision]) -> None:
        """Count the decisions in the metrics and in the daily counts of the report."""
        daily: Counter[tuple[str, str, str, str]] = Counter()
        for decision in decisions:
            self.metrics.triggers.labels(decision.trigger, decision.outcome, decision.rule).inc()
            day = datetime.fromtimestamp(decision.decided_at, UTC).date().isoformat()
            daily[(day, decision.trigger, decision.outcome, decision.rule)] += 1
        await self.store.count_daily(daily)

    async def send(self, triggers: Sequence[CampaignTriggered]) -> None:
        """Send triggers to Kafka, then forget them from the outbox."""
        if not triggers:
            return
        await self.sender.send_triggers(triggers)
        await self.store.clear(triggers)

    async def send_due(self, stale_after: float) -> int:
        """Send what quiet hours held back and is due now, and what a dead sender left in
        the outbox for ``stale_after`` seconds; returns how many."""
        now = self.clock()
        due = [
            trigger
            for trigger in await self.store.due(now)
            if trigger.deliver_at > trigger.fired_at
            or trigger.fired_at.timestamp() <= now - stale_after
        ]
        await self.send(due)
        return len(due)


def decision_rows(state: TriggerState) -> list[dict[str, Any]]:
    """An account's logged trigger decisions, newest first, for people to read."""
    return [
        {
            "decided_at": epoch_text(decision.decided_at),
            "trigger": decision.trigger,
            "outcome": decision.outcome,
            "rule": decision.rule,
            "reason": decision.reason,
            "trigger_id": decision.trigger_id,
            "deliver_at": epoch_text(decision.deliver_at),
        }
        for decision in reversed(state.decisions())
    ]


class WebhookDelivery:
    """POSTs triggers to their destinations: rate-limited, retried, dead-lettered."""

    def __init__(
        self,
        config: TriggersConfig,
        client: WebhookPoster,
        store: TriggerStore,
        sender: TriggerSender,
        metrics: Metrics,
        retry_max_seconds: float = 10.0,
        clock: Clock = time.time,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.store = store
        self.sender = sender
        self.metrics = metrics
        self.retry_max_seconds = retry_max_seconds
        self.clock = clock
        env = os.environ if environ is None else environ
        self.secrets = {
            name: env[destination.secret_env].encode()
            for name, destination in config.destinations.items()
            if destination.secret_env is not None and env.get(destination.secret_env)
        }
        missing = [
            f"{name} ({destination.secret_env})"
            for name, destination in config.destinations.items()
            if destination.secret_env is not None and name not in self.secrets
        ]
        if missing:
            raise ValueError(f"the secret of webhook destination {', '.join(missing)} is not set")

    async def deliver(self, trigger: CampaignTriggered) -> bool:
        """Deliver one trigger to its destination (if it has one and is not held out);
        True when delivered or nothing was to be delivered, False when dead-lettered."""
        if trigger.destination is None or trigger.holdout:
            return True
        destination = self.config.destinations[trigger.destination]
        body = trigger.model_dump_json().encode()
        secret = self.secrets.get(trigger.destination)
        delay = 0.5
        error = ""
        for attempt in range(1, destination.max_attempts + 1):
            while (
                wait := await self.store.take_token(
                    trigger.destination, destination.rate_per_second, self.clock()
                )
            ) > 0:
                await asyncio.sleep(wait)
            result = await self.client.post(destination.url, body, trigger.trigger_id, secret)
            outcome = (
                "delivered" if result.delivered else "retry" if result.retryable else "refused"
            )
            self.metrics.webhook_requests.labels(trigger.destination, outcome).inc()
            if result.delivered:
                return True
            error = result.error
            if not result.retryable or attempt == destination.max_attempts:
                break
            log.warning(
                "webhook %s: %s (attempt %d of %d for %s)",
                trigger.destination,
                error,
                attempt,
                destination.max_attempts,
                trigger.trigger_id,
            )
            await asyncio.sleep(max(result.retry_after or 0.0, delay))
            delay = min(delay * 2, self.retry_max_seconds)
        reason = f"{trigger.destination}: {error} after {attempt} attempt(s)"
        log.error("webhook gave up on trigger %s: %s", trigger.trigger_id, reason)
        await self.sender.send_trigger_dead_letters([(trigger, reason)])
        self.metrics.webhook_requests.labels(trigger.destination, "dead_letter").inc()
        return False
