"""The thin edge around the pure core: decode → load → process → save → send.

``BatchProcessor.commit`` is called by the Faust agent (see ``app.py``) with one
batch of records; it returns when the batch's state and its changes' outbox entries
are durable in Redis (and its dead letters acknowledged by Kafka). ``finish`` then
delivers the changes; the agent acks the records only after that, so offsets are
never committed past unprocessed or undelivered events. ``process`` is both.
Transient failures are retried with capped exponential back-off; reprocessing a
batch is safe because state updates are idempotent and change ids deterministic.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Container,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime
from typing import Any, TypeVar

from worker.adapters.factory import TRANSIENT_ERRORS
from worker.config.clusterings import clusterings
from worker.config.settings import Settings
from worker.core import value
from worker.core.decoding import Record, decode_record
from worker.core.definitions import Definitions
from worker.core.events import AccountErased, AnyInputEvent, DeadLetter, SegmentChanged
from worker.core.families import Families, as_families, raw_sample
from worker.core.features import AccountState, FeatureView, Globals, day_of
from worker.core.impact import Impact
from worker.core.processing import erase, evaluate, process_event
from worker.core.schedule import Schedule
from worker.ports import BatchResult, Sender, StateStore
from worker.runtime.in_flight import InFlight
from worker.runtime.metrics import Metrics
from worker.runtime.pacing import LoadMeter, background_share, counting_outages, note_outage

log = logging.getLogger(__name__)
T = TypeVar("T")


class BatchProcessor:
    def __init__(
        self,
        settings: Settings,
        families: Families | Definitions,
        store: StateStore,
        sender: Sender,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.families = as_families(families)
        #: the wall clock: which changes are live (``SegmentChanged.live``)
        self.clock = clock
        self.store = store
        self.sender = sender
        self.metrics = metrics
        self._allowed_types = {
            topic: settings.allowed_types(topic) for topic in settings.input_topics
        }
        self.schedule = Schedule(self.families)
        self.impact = Impact(self.families)
        self.clusterings = clusterings(settings)
        self._sample_sends: set[asyncio.Future[None]] = set()
        #: ids of committed changes whose delivery (``finish``) has not completed yet
        self._delivering: set[str] = set()
        #: every delivery of this process under way (batches and passes): not resent
        self.in_flight = InFlight()
        #: how busy ``commit`` kept the event loop lately (background work gives way)
        self.load = LoadMeter()

    async def process(self, records: Sequence[Record]) -> BatchResult:
        """Apply one batch; return once its state is durable and its changes delivered."""
        result = await self.commit(records)
        await self.finish(result)
        return result

    async def commit(self, records: Sequence[Record]) -> BatchResult:
        """Decode, apply and store one batch (its dead letters delivered); return once
        its state and its changes' outbox entries are durable in Redis.

        ``finish`` delivers the changes. The agent overlaps one batch's ``finish`` with
        the next batch's ``commit`` (see ``app.py``), so the broker's acknowledgement
        of the changes does not hold up the next batch.
        """
        started = time.perf_counter()
        events, letters = self._decode(records)
        if letters:
            await self.retrying("dead_letters", lambda: self.sender.send_dead_letters(letters))
        result = BatchResult()
        if events:
            result = await self.retrying(
                "redis",
                lambda: self.store.update_batch(
                    (event.account_id for event, _ in events),
                    lambda states, globals: self._apply(states, globals, events),
                ),
            )
            # Changes of an earlier batch of ours still being delivered are in the
            # outbox too; that delivery finishes before this batch's starts (``finish``
            # is called in batch order), so they need no second copy.
            # A pass of ours may be delivering others: those are waited for.
            result.resend = await self.in_flight.without(result.resend, skip=self._delivering)
            self._delivering.update(c.change_id for c in result.changes)
            self.in_flight.started(result.changes)
        result.started = started
        ended = time.perf_counter()
        self.load.record(ended - started, ended)
        return result

    async def finish(self, result: BatchResult) -> None:
        """Deliver a committed batch's changes (after any earlier batch's: call in order)."""
        try:
            with self.in_flight.delivery(result.changes):
                await self.deliver(result.changes, result.resend)
        finally:
            self._delivering.difference_update(c.change_id for c in result.changes)
        self.send_samples_later(result.samples)
        for (event_type, outcome), count in result.outcomes.items():
            self.metrics.events.labels(event_type, outcome).inc(count)
        if result.started is not None:
            self.metrics.batch_seconds.observe(time.perf_counter() - result.started)

    async def record_definitions(self) -> None:
        """Store what each family of these definitions is (see ``reevaluate``'s ``previous``)."""
        impact = self.impact
        await self.retrying(
            "redis",
            lambda: self.store.save_family_fingerprints(
                impact.fingerprint, impact.family_fingerprints
            ),
        )

    def live_since(self) -> float:
        """Changes at or after this moment (epoch seconds) are live: the wall clock less
        the live window. Read once per batch, before its (possibly repeated) mutation."""
        return self.clock() - self.settings.live_window_seconds

    async def now(self) -> float | None:
        """Current time for sweeps: stream time (largest event time seen) or wall clock."""
        if self.settings.time_mode == "wall":
            return time.time()
        return await self.store.stream_time()

    async def sweep_due(self) -> int:
        """Re-evaluate accounts whose memberships may have changed with time alone."""
        now = await self.now()
        if now is None:
            return 0
        accounts = await self.store.due_accounts(now, self.settings.sweep_batch_size)
        if accounts:
            cause = f"time:{datetime.fromtimestamp(now, UTC).date().isoformat()}"
            await self.reevaluate(
                accounts, cause, at=now, step=self.settings.cluster_reassign_batch_size
            )
        return len(accounts)

    async def refresh_thresholds(
        self,
        revenues: Mapping[str, float] | None = None,
        *,
        paced: bool = True,
        skip: Container[str] = (),
        apply: bool = True,
    ) -> int:
        """Recompute the ABC cut-offs, store them if they moved, and (``apply``) re-evaluate
        the accounts they move (``apply_thresholds``). Returns the accounts re-evaluated.

        ``revenues``: account -> trailing-year revenue to compute them from, when the
        caller knows better than the store's index (an import about to write its
        accounts: ``worker.ops.importer.direct``), whose accounts in ``skip`` are left
        to the caller; ``paced=False``: re-evaluate at full speed (no event agent to
        give way to). A worker that does not run the passes (``apply=False``) only
        stores the cut-offs: the one that does finds them waiting.
        """
        stored = await self.store.load_thresholds()
        if revenues is None:
            revenues = await self.store.revenues()
        computed = value.compute_thresholds(
            revenues.values(), self.settings.value_a_share, self.settings.value_b_share
        )
        new = value.thresholds_to_dict(computed)
        moved = stored is None or not value.same_cutoffs(stored, new)
        if moved and await self.store.replace_thresholds(stored, new):
            log.info("ABC cut-offs now A >= %.2f, B >= %.2f", computed.a_min, computed.b_min)
        return await self.apply_thresholds(paced=paced, skip=skip) if apply else 0

    async def apply_thresholds(self, *, paced: bool = True, skip: Container[str] = ()) -> int:
        """Re-evaluate the accounts whose tier the stored cut-offs moved since those the
        stored tiers agree with, and record that they now agree; the number of accounts
        re-evaluated. A pass cut short (a worker killed, a failover) is taken up again
        by the next call, here or in another worker: where it stands is stored
        (``StateStore.thresholds_to_apply``)."""
        pending = await self.store.thresholds_to_apply()
        if pending is None:
            return 0
        applied, current = pending
        # The batches read the shards' copies: they must hold these cut-offs first.
        await self.store.copy_thresholds()
        old = value.thresholds_from_dict(applied) if applied is not None else None
        new = value.thresholds_from_dict(current)
        moved = 0
        step = self.settings.cluster_reassign_batch_size
        cause = f"thresholds:{new.version}"
        for low, high in value.affected_revenue_range(old, new):
            accounts = [
                account
                for account in await self.store.accounts_with_revenue_between(low, high)
                if account not in skip
            ]
            chunks = [accounts[i : i + step] for i in range(0, len(accounts), step)]
            if paced:
                await self._paced(chunks, cause)
            else:
                for chunk in chunks:
                    await self.reevaluate(chunk, cause)
            moved += len(accounts)
        if await self.store.record_thresholds_applied(applied, current):
            log.info(
                "ABC cut-offs A >= %.2f, B >= %.2f applied: %d accounts re-evaluated",
                new.a_min,
                new.b_min,
                moved,
            )
        return moved

    async def reassign_clusters(self, versions: dict[str, int]) -> int:
        """After new models (``{family: version}``): every stored account's cluster again.

        One pass for all the families given; only real moves are emitted, with the cause
        ``cluster:<family>:v<version>`` (families joined by ``+``). Returns their number.
        The pass must not starve the event agent: it goes ``cluster_reassign_batch_size``
        accounts at a time (a step's CPU does not yield, so its size bounds how long an
        event waits behind it) and pauses after each step (see ``_paced``).
        """
        if not versions:
            return 0
        cause = "cluster:" + "+".join(f"{f}:v{v}" for f, v in sorted(versions.items()))
        chunks = self.store.account_ids(self.settings.cluster_reassign_batch_size)
        return await self._paced(chunks, cause, only=frozenset(versions))

    async def _paced(
        self,
        chunks: AsyncIterable[Sequence[str]] | Iterable[Sequence[str]],
        cause: str,
        only: Container[str] | None = None,
    ) -> int:
        """Re-evaluate chunk by chunk; returns the number of changes.

        After each step it pauses so that the pass takes at most ``cluster_reassign_share``
        of the time, scaled by the square of the share the event agent left idle lately
        (at least a tenth of it: ``worker.runtime.pacing``). Steps are measured on the
        clock, Redis round trips included, so the agent's turns in between count against
        the pass too; time spent waiting out an unavailable Redis or Kafka does not
        (``worker.runtime.pacing.counting_outages``).
        """
        moved = 0
        with counting_outages() as waited:
            async for accounts in _aiter(chunks):
                started, outages = time.perf_counter(), waited[0]
                result = await self.reevaluate(accounts, cause, only=only)
                moved += len(result.changes)
                ended = time.perf_counter()
                worked = max(0.0, ended - started - (waited[0] - outages))
                await asyncio.sleep(self.background_pause(worked, ended))
        return moved

    def background_pause(self, step_seconds: float, now: float) -> float:
        """How long a background pass pauses after a step of ``step_seconds`` (see
        ``_paced``), given the agent's load up to ``now`` (``time.perf_counter()``)."""
        share = background_share(self.settings.cluster_reassign_share, self.load.share(now))
        return step_seconds * (1.0 / share - 1.0)

    async def reevaluate(
        self,
        accounts: Sequence[str],
        cause: str,
        at: float | None = None,
        only: Container[str] | None = None,
        previous: Mapping[str, Mapping[str, str]] | None = None,
        step: int | None = None,
    ) -> BatchResult:
        """Evaluate stored accounts again (time passed, cut-offs moved) and deliver changes.

        ``step``: accounts per Redis transaction (default ``sweep_batch_size``); its CPU
        runs without yielding, so in a running worker it bounds how long a batch of
        events waits behind this.
        ``previous``: family fingerprints of earlier definitions versions
        (``StateStore.load_family_fingerprints``); with it, families defined as when the
        account was last evaluated are not evaluated again unless time may have changed
        them (a recompute after a definitions change evaluates the changed families).
        """
        total = BatchResult()
        size = step or self.settings.sweep_batch_size
        for start in range(0, len(accounts), size):
            chunk = accounts[start : start + size]
            result = await self.retrying(
                "redis",
                lambda chunk=chunk: self.store.update_batch(  # type: ignore[misc]
                    chunk,
                    lambda states, globals: self._reevaluate(
                        states, globals, cause, at, only, previous
                    ),
                ),
            )
            # Changes the agent (or another pass) of ours is delivering: waited for, not
            # sent twice.
            resend = await self.in_flight.without(result.resend)
            self.in_flight.started(result.changes)
            with self.in_flight.delivery(result.changes):
                await self.deliver(result.changes, resend)
            self.send_samples_later(result.samples)
            total.changes.extend(result.changes)
            total.redefined.update(result.redefined)
        return total

    async def deliver(
        self, changes: Sequence[SegmentChanged], resend: Sequence[SegmentChanged] = ()
    ) -> None:
        """Send changes, then clear them from the outbox; retried until both succeed.

        ``resend``: an earlier writer's undelivered changes of the same accounts (a sweep
        of another worker, say); sent first, so the topic never has a newer change of an
        account before an older one. The other writer's own copies come later, with the
        same ids.
        """
        if not changes and not resend:
            return
        outgoing = [*resend, *changes]
        if resend:
            self.metrics.outbox_resent.inc(len(resend))
        await self.retrying("kafka", lambda: self.sender.send_changes(outgoing))
        await self.retrying("redis", lambda: self.store.clear_outbox(outgoing))
        for change in changes:
            self.metrics.changes.labels(change.family, change.change).inc()
            if change.change == "exited" and change.member_since is not None:
                lasted = (change.occurred_at - change.member_since).total_seconds()
                if lasted < self.settings.flap_window_seconds:
                    self.metrics.flaps.labels(change.family, change.segment_id).inc()

    async def drain_outbox(self) -> None:
        """Deliver every pending outbox entry, in write order; retried until done.

        Done before the first batch after a start or a rebalance (and before a timer
        emits changes then), so a dead writer's changes reach Kafka before any newer
        change of the same accounts.
        """
        while await self.retrying("redis", lambda: self.resend_stale_outbox(older_than=0)):
            pass

    async def resend_stale_outbox(self, older_than: float | None = None) -> int:
        """Deliver outbox entries whose writer died between writing and sending.

        ``older_than=0`` sends every pending entry: done before the first batch after a
        start or a rebalance, so a dead writer's changes reach Kafka before any newer
        change of the same accounts.
        """
        if older_than is None:
            older_than = self.settings.outbox_resend_after_seconds
        # Ours, still being delivered (a delivery retrying through an outage outlives
        # the resend age): waited for, not sent twice.
        stale = await self.in_flight.without(await self.store.stale_outbox(older_than))
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
            decoded = decode_record(
                record,
                self._allowed_types,
                self.settings.max_event_bytes,
                earliest_event_time=self.settings.earliest_event_time,
            )
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
        globals: Globals,
        events: Sequence[tuple[AnyInputEvent, Record]],
    ) -> BatchResult:
        """Pure given ``states``: may run again on a write conflict, so count nothing here."""
        result = BatchResult()
        live_since = self.live_since()
        for event, record in events:
            state = states.get(event.account_id)
            if state is None:
                continue  # another shard's account: applied in that shard's transaction
            if isinstance(event, AccountErased):
                result.changes.extend(erase(state, event, live_since))
                states[event.account_id] = AccountState(event.account_id)
                result.erased.add(event.account_id)
                result.changed_accounts.discard(event.account_id)
                result.count(event.type, "applied")
                continue
            changes = process_event(
                state,
                event,
                self.families,
                (record.source, record.offset),
                globals,
                self.impact,
                live_since,
            )
            if changes is None:
                result.count(event.type, "duplicate")
                continue
            result.count(event.type, "applied")
            if state.sampled_day is not None and day_of(event.occurred_at) < state.sampled_day:
                # The last training sample was taken ahead of this event (a sweep at a
                # stream time another partition had reached): it misses the event.
                state.sampled_day = None
            result.changed_accounts.add(event.account_id)
            result.erased.discard(event.account_id)  # new data after an erasure in the batch
            result.changes.extend(changes)
            result.clock = max(result.clock, event.occurred_at.timestamp())
        self.index(states, globals, result, complete=True)
        return result

    def _reevaluate(
        self,
        states: dict[str, AccountState],
        globals: Globals,
        cause: str,
        at: float | None,
        only: Container[str] | None = None,
        previous: Mapping[str, Mapping[str, str]] | None = None,
    ) -> BatchResult:
        result = BatchResult()
        live_since = self.live_since()
        for account, state in states.items():
            if not state.clock:  # not stored (erased meanwhile): nothing to evaluate
                continue
            before = (state.memberships, state.sampled_day)
            skip: Container[str] = ()
            if previous is not None and only is None:
                skip = self.impact.unchanged(state, at, previous)
                result.redefined[account] = self.impact.redefined(state, previous)
            result.changes.extend(
                evaluate(
                    state,
                    self.families,
                    cause,
                    globals,
                    at,
                    only,
                    skip=skip,
                    live_since=live_since,
                )
            )
            self.index(states, globals, result, complete=only is None, accounts=(account,))
            # Stored only when it changed; the due time and revenue index are refreshed
            # anyway. An evaluation mark left old only costs the next event a full one.
            if (state.memberships, state.sampled_day) != before:
                result.changed_accounts.add(account)
        return result

    def index(
        self,
        states: dict[str, AccountState],
        globals: Globals,
        result: BatchResult,
        complete: bool,
        accounts: Iterable[str] | None = None,
    ) -> None:
        """When each changed account is due for a sweep, its revenue for the ABC, and a
        training sample for the cluster models when the last one is old enough.

        ``complete``: every family was evaluated (or known unchanged), which the
        account's evaluation mark records together with the due time (every family's,
        the first day another centroid may win the account included).
        """
        for account in result.changed_accounts if accounts is None else accounts:
            state = states[account]
            view = FeatureView.of(state, globals)
            due = result.due[account] = self.schedule.next_due(state, globals, view)
            if complete:
                self.impact.mark(state, due)
            result.revenue[account] = view["revenue_365d"]
            last = state.sampled_day
            if last is None or state.now_day - last >= self.settings.cluster_sample_days:
                state.sampled_day = state.now_day
                result.samples.extend(
                    {
                        "family": c.family,
                        "account_id": account,
                        "day": state.now_day,
                        "features": raw_sample(view, c.spec),
                    }
                    for c in self.clusterings
                )

    def send_samples_later(self, samples: Sequence[dict[str, Any]]) -> None:
        """Send training samples without holding up the batch for the broker's ack."""
        if samples:
            task = asyncio.ensure_future(self._send_samples(samples))
            self._sample_sends.add(task)  # a reference until done, or it may be collected
            task.add_done_callback(self._sample_sends.discard)

    async def samples_sent(self) -> None:
        """Wait for the training samples on their way (before a command exits)."""
        await asyncio.gather(*self._sample_sends)

    async def _send_samples(self, samples: Sequence[dict[str, Any]]) -> None:
        # Training samples are best effort: a lost one only makes the model learn less.
        if not samples:
            return
        try:
            await self.sender.send_samples(samples)
        except Exception as error:
            self.metrics.retries.labels("samples_dropped").inc()
            log.warning("dropped %d cluster training samples: %s", len(samples), error)

    async def retrying(self, stage: str, attempt: Callable[[], Awaitable[T]]) -> T:
        delay = 0.1
        outage_began: float | None = None
        while True:
            began = time.perf_counter()
            try:
                result = await attempt()
            except TRANSIENT_ERRORS as error:
                self.metrics.retries.labels(stage).inc()
                log.warning("%s unavailable (%s); retrying in %.1fs", stage, error, delay)
                outage_began = began if outage_began is None else outage_began
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)
                continue
            if outage_began is not None:
                note_outage(began - outage_began)  # the failed attempts and the waits
            return result


async def _aiter(items: AsyncIterable[T] | Iterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


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
