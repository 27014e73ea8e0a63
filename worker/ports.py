"""The ports: what the runtime and the operator commands need of storage and of Kafka.

Protocols only, over the core's types, so that the batch processor, the views, the
monitor and the commands are written against these and never against a client
library. The adapters behind them (``worker.adapters``: Redis, Kafka through Faust
or aiokafka) are built from the settings in one place, ``worker.adapters.factory``.
Another state store is one new adapter that satisfies :class:`StateStore`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.core.clustering import ClusterSnapshot
from worker.core.events import CampaignTriggered, DeadLetter, SegmentChanged, SegmentDrift
from worker.core.features import AccountState, Globals
from worker.core.triggers.policy import TriggerState


@dataclass
class BatchResult:
    """What one batch mutation produced (``StateStore.update_batch``).

    ``changed_accounts`` are written back; ``due`` and ``revenue`` update the sweep and
    value indexes of those accounts; ``clock`` is the largest event time applied.
    """

    changed_accounts: set[str] = field(default_factory=set)
    changes: list[SegmentChanged] = field(default_factory=list)
    due: dict[str, float | None] = field(default_factory=dict)
    revenue: dict[str, float] = field(default_factory=dict)
    clock: float = 0.0
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    erased: set[str] = field(default_factory=set)
    #: changes an earlier writer of these accounts committed and may not have delivered
    #: yet: sent before ``changes``, so a second writer never overtakes the first
    resend: list[SegmentChanged] = field(default_factory=list)
    #: ``time.perf_counter()`` when the batch's processing started (for its duration)
    started: float | None = None
    #: per re-evaluated account, the rule families a definitions change redefined for it
    #: (``Impact.redefined``; None: not known); only when asked (``segworker recompute``)
    redefined: dict[str, frozenset[str] | None] = field(default_factory=dict)

    def count(self, event_type: str, outcome: str, events: int = 1) -> None:
        key = (event_type, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + events

    @classmethod
    def merged(cls, results: Sequence[BatchResult]) -> BatchResult:
        """One result of a batch the store wrote in parts (one per shard)."""
        merged = cls()
        for result in results:
            merged.changed_accounts |= result.changed_accounts
            merged.changes += result.changes
            merged.due.update(result.due)
            merged.revenue.update(result.revenue)
            merged.clock = max(merged.clock, result.clock)
            for (event_type, outcome), count in result.outcomes.items():
                merged.count(event_type, outcome, count)
            merged.samples += result.samples
            merged.erased |= result.erased
            merged.resend += result.resend
            merged.redefined.update(result.redefined)
        return merged


Mutation = Callable[[dict[str, AccountState], Globals], BatchResult]


class StateStore(Protocol):
    """Account states, segment members, the change outbox and the shared facts.

    ``update_batch`` is the one write path of the segmentation: it loads the states of
    some accounts with the shared facts, lets a pure ``mutate`` change them, and
    writes states, member sets, outbox entries and indexes atomically; on a conflict
    with another writer it calls ``mutate`` again with fresh states. A store that keeps
    accounts in shards calls ``mutate`` once per shard with that shard's accounts, so a
    mutation touches only the accounts in the states it is given.
    """

    async def ping(self) -> bool: ...

    async def prepare(self) -> None: ...

    async def update_batch(self, account_ids: Iterable[str], mutate: Mutation) -> BatchResult: ...

    async def load(self, account_id: str) -> AccountState | None: ...

    async def load_many(self, account_ids: Sequence[str]) -> dict[str, AccountState]: ...

    def account_ids(self, batch: int = 1000) -> AsyncIterator[list[str]]: ...

    async def load_globals(self) -> Globals: ...

    async def stream_time(self) -> float | None: ...

    async def due_accounts(self, until: float, limit: int) -> list[str]: ...

    # change outbox
    async def clear_outbox(self, changes: Sequence[SegmentChanged]) -> None: ...

    async def stale_outbox(
        self, older_than_seconds: float, limit: int = 1000
    ) -> list[SegmentChanged]: ...

    # segments
    async def members(self, family: str, segment_id: str) -> set[str]: ...

    async def members_page(
        self, family: str, segment_id: str, cursor: int, count: int
    ) -> tuple[int, list[str]]: ...

    async def segment_sizes(self, segments: Sequence[tuple[str, str]]) -> list[int]: ...

    async def take_flows(self) -> dict[tuple[str, str, str], int]: ...

    async def load_profiles(self) -> dict[str, Any]: ...

    async def save_profiles(self, profiles: dict[str, Any]) -> None: ...

    # value (ABC cut-offs): stored by compare-and-set, then applied to the accounts they
    # move by a pass whose progress is stored (``worker.adapters.redis_shared``)
    async def revenues(self) -> dict[str, float]: ...

    async def accounts_with_revenue_between(self, low: float, high: float) -> list[str]: ...

    async def load_thresholds(self) -> dict[str, Any] | None: ...

    async def replace_thresholds(
        self, expected: dict[str, Any] | None, new: dict[str, Any]
    ) -> bool: ...

    async def thresholds_to_apply(
        self,
    ) -> tuple[dict[str, Any] | None, dict[str, Any]] | None: ...

    async def copy_thresholds(self) -> None: ...

    async def record_thresholds_applied(
        self, applied: dict[str, Any] | None, current: dict[str, Any]
    ) -> bool: ...

    # cluster models
    async def load_snapshot(self, family: str) -> ClusterSnapshot | None: ...

    async def publish_snapshot(self, family: str, snapshot: ClusterSnapshot) -> bool: ...

    # definitions versions (which families a new version changed)
    async def save_family_fingerprints(
        self, definitions_fingerprint: str, families: Mapping[str, str]
    ) -> None: ...

    async def load_family_fingerprints(self) -> dict[str, dict[str, str]]: ...

    async def close(self) -> None: ...


class ChangeSender(Protocol):
    """Delivers segment changes; returns only once the broker acknowledged every one."""

    async def send_changes(self, changes: Sequence[SegmentChanged]) -> None: ...


class Sender(ChangeSender, Protocol):
    """What the batch processor delivers: changes, dead letters and training samples."""

    async def send_dead_letters(self, letters: Sequence[DeadLetter]) -> None: ...

    async def send_samples(self, samples: Sequence[dict[str, Any]]) -> None: ...


class DriftSender(Protocol):
    """Delivers the statistics of a drift interval."""

    async def send_drift(self, event: SegmentDrift) -> None: ...


class TriggerStore(Protocol):
    """The trigger router's per-account state and its outbox of triggers."""

    async def close(self) -> None: ...

    async def load(self, account_id: str) -> TriggerState: ...

    async def update(
        self,
        account_ids: Iterable[str],
        mutate: Callable[[dict[str, TriggerState]], Sequence[CampaignTriggered]],
    ) -> list[CampaignTriggered]: ...

    async def clear(self, triggers: Sequence[CampaignTriggered]) -> None: ...

    async def due(self, until: float, limit: int = 500) -> list[CampaignTriggered]: ...

    async def pending(self) -> int: ...

    async def take_token(self, destination: str, per_second: float, now: float) -> float: ...

    async def erase(self, account_id: str) -> None: ...

    async def count_daily(self, counts: Mapping[tuple[str, str, str, str], int]) -> None:
        """Add decisions per ``(UTC date, trigger, outcome, rule)``."""

    async def daily_counts(self) -> dict[tuple[str, str, str, str], int]:
        """Decisions per ``(UTC date, trigger, outcome, rule)`` so far (for the report)."""


class TriggerSender(Protocol):
    """Delivers campaign triggers (and those a webhook refused) to Kafka, acknowledged."""

    async def send_triggers(self, triggers: Sequence[CampaignTriggered]) -> None: ...

    async def send_trigger_dead_letters(
        self, letters: Sequence[tuple[CampaignTriggered, str]]
    ) -> None: ...


@dataclass(frozen=True)
class WebhookResult:
    """The outcome of one webhook attempt: delivered, or why not and whether to retry."""

    delivered: bool
    retryable: bool = False
    status: int | None = None
    error: str = ""
    #: seconds the receiver asked to wait (Retry-After), if it said so
    retry_after: float | None = None


class WebhookPoster(Protocol):
    """POSTs one request and says how it went (never raises for network trouble)."""

    async def post(
        self, url: str, body: bytes, idempotency_key: str, secret: bytes | None
    ) -> WebhookResult: ...
