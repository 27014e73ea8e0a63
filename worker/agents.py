"""The thin edge around the pure core: decode → load → process → save → send.

``BatchProcessor.process`` is called by the Faust agent (see ``app.py``) with one
batch of records; it returns only when the batch's state is durable in Redis and
its changes and dead letters are acknowledged by Kafka. The agent acks the
records after that, so offsets are never committed past unprocessed events.
Transient failures are retried with capped exponential back-off; reprocessing a
batch is safe because state updates are idempotent and change ids deterministic.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.decoding import Record, decode_record
from worker.events import AnyInputEvent, DeadLetter, SegmentChanged
from worker.features import AccountState
from worker.metrics import Metrics
from worker.processing import process_event
from worker.rules import Definitions
from worker.settings import Settings
from worker.store import BatchResult, StateStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class Sender(Protocol):
    """Delivers to Kafka and returns only once the broker acknowledged every message."""

    async def send_changes(self, changes: Sequence[SegmentChanged]) -> None: ...

    async def send_dead_letters(self, letters: Sequence[DeadLetter]) -> None: ...


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)


class BatchProcessor:
    def __init__(
        self,
        settings: Settings,
        definitions: Definitions,
        store: StateStore,
        sender: Sender,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.definitions = definitions
        self.store = store
        self.sender = sender
        self.metrics = metrics
        self._allowed_types = {
            topic: settings.allowed_types(topic) for topic in settings.input_topics
        }

    async def process(self, records: Sequence[Record]) -> BatchResult:
        started = time.perf_counter()
        events, letters = self._decode(records)
        if letters:
            await self._retrying("dead_letters", lambda: self.sender.send_dead_letters(letters))
        result = BatchResult()
        if events:
            result = await self._retrying(
                "redis",
                lambda: self.store.update_batch(
                    (event.account_id for event, _ in events),
                    lambda states: self._apply(states, events),
                ),
            )
            await self.deliver(result.changes)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        return result

    async def deliver(self, changes: Sequence[SegmentChanged]) -> None:
        """Send changes, then clear them from the outbox; retried until both succeed."""
        if not changes:
            return
        await self._retrying("kafka", lambda: self.sender.send_changes(changes))
        await self._retrying(
            "redis", lambda: self.store.clear_outbox([c.change_id for c in changes])
        )
        for change in changes:
            self.metrics.changes.labels(change.family, change.change).inc()

    async def resend_stale_outbox(self) -> int:
        """Deliver outbox entries whose writer died between writing and sending."""
        stale = await self.store.stale_outbox(self.settings.outbox_resend_after_seconds)
        if stale:
            log.warning("re-sending %d segment changes left in the outbox", len(stale))
            await self.deliver(stale)
            self.metrics.outbox_resent.inc(len(stale))
        return len(stale)

    def _decode(
        self, records: Sequence[Record]
    ) -> tuple[list[tuple[AnyInputEvent, Record]], list[DeadLetter]]:
        events: list[tuple[AnyInputEvent, Record]] = []
        letters: list[DeadLetter] = []
        for record in records:
            decoded = decode_record(record, self._allowed_types, self.settings.max_event_bytes)
            if isinstance(decoded, DeadLetter):
                letters.append(decoded)
                self.metrics.dead_letters.labels(decoded.error_kind).inc()
                self.metrics.events.labels("unknown", "dead_letter").inc()
                log.warning(
                    "dead letter from %s[%d]@%d: %s: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    decoded.error_kind,
                    decoded.reason,
                )
            else:
                events.append((decoded, record))
        return _interleave_by_event_time(events), letters

    def _apply(
        self,
        states: dict[str, AccountState],
        events: Sequence[tuple[AnyInputEvent, Record]],
    ) -> BatchResult:
        """Pure given ``states``: may run again on a write conflict, so count nothing here."""
        result = BatchResult()
        for event, record in events:
            state = states[event.account_id]
            changes = process_event(
                state, event, self.definitions, position=(record.source, record.offset)
            )
            if changes is None:
                continue
            result.changed_accounts.add(event.account_id)
            result.changes.extend(changes)
        return result

    async def _retrying(self, stage: str, attempt: Callable[[], Awaitable[T]]) -> T:
        delay = 0.1
        while True:
            try:
                return await attempt()
            except TRANSIENT_ERRORS as error:
                self.metrics.retries.labels(stage).inc()
                log.warning("%s unavailable (%s); retrying in %.1fs", stage, error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)


def _interleave_by_event_time(
    events: list[tuple[AnyInputEvent, Record]],
) -> list[tuple[AnyInputEvent, Record]]:
    """Merge the batch's partitions by event time, keeping each partition's own order.

    Kafka orders an account's events only within one topic; without this a batch
    could apply a day's orders before the profile that precedes them and emit
    short-lived memberships. Offsets of one partition must stay ascending, because
    the per-account offset watermark would otherwise skip the lower one.
    """
    by_partition: dict[str, list[tuple[AnyInputEvent, Record]]] = {}
    for item in events:
        by_partition.setdefault(item[1].source, []).append(item)
    if len(by_partition) < 2:
        return events
    return list(heapq.merge(*by_partition.values(), key=lambda item: item[0].occurred_at))
