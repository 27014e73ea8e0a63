"""Writing folded history into the store: the write path of ``segworker import-orders``.

``HistoryWriter.write`` finishes the folds of ``worker.core.backfill`` for a few hundred
accounts inside the store's watched update, as a batch of the worker's is written
(states, indexes, outbox; then the changes to Kafka and the outbox cleared), through a
``BatchProcessor``'s store, sender and indexing. ``worker.ops.importer.direct`` drives it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from worker.adapters.state_codec import encode_state
from worker.core.backfill import AccountFold, memory_windows
from worker.core.events import AnyInputEvent
from worker.core.features import AccountState, Globals
from worker.ports import BatchResult
from worker.runtime.processor import BatchProcessor


class HistoryWriter:
    """Folds imported history into stored states with a processor's store and sender."""

    def __init__(self, processor: BatchProcessor) -> None:
        self.processor = processor

    async def write(
        self,
        history: Mapping[str, Sequence[AnyInputEvent]],
        end: float,
        cause: str,
        prepared: Mapping[str, tuple[bytes, AccountFold]] | None = None,
    ) -> BatchResult:
        """Fold imported history straight into the states of its accounts, in one atomic
        update (``worker.core.backfill``), and deliver the net changes.

        ``history``: account -> its imported events in event-time order; ``end``: the
        stream time the import reaches; ``cause``: the import's (``imp-`` + digest).
        ``prepared``: account -> (the stored form of the state it started from, its fold
        applied but not finished), from a first pass; used where the stored state is
        still that one, folded again from the fresh state where not. The update watches
        the accounts' states like a batch of the worker's, so a running worker and an
        import write an account in turn, and events applied already are skipped (a
        re-import, or a partly finished one, applies only the rest).
        """
        folds = prepared or {}
        tried: set[str] = set()

        def mutate(states: dict[str, AccountState], globals: Globals) -> BatchResult:
            # A prepared fold is finished once: not again on a retry (of its shard).
            ready = {a: folds[a] for a in states if a in folds and a not in tried}
            tried.update(states)
            return self._fold(states, globals, history, end, cause, ready)

        processor = self.processor
        result = await processor.retrying(
            "redis", lambda: processor.store.update_batch(history, mutate)
        )
        await processor.deliver(result.changes, result.resend)
        processor.send_samples_later(result.samples)
        return result

    def _fold(
        self,
        states: dict[str, AccountState],
        globals: Globals,
        history: Mapping[str, Sequence[AnyInputEvent]],
        end: float,
        cause: str,
        prepared: Mapping[str, tuple[bytes, AccountFold]] | None,
    ) -> BatchResult:
        result = BatchResult()
        processor = self.processor
        windows = memory_windows(processor.families, globals)
        for account, events in history.items():
            if account not in states:
                continue  # another shard's account: folded in that shard's transaction
            before, fold = (prepared or {}).get(account, (b"", None))
            if fold is not None and encode_state(states[account]) == before:
                states[account] = fold.state
            else:
                fold = AccountFold(
                    states[account],
                    processor.families,
                    end,
                    cause,
                    windows,
                    processor.impact,
                    processor.schedule,
                )
                fold.apply(events, globals)
            folded = fold.finish(globals)
            result.count("import", "duplicate", folded.duplicates)
            result.count("import", "applied", folded.applied)
            if folded.applied:
                result.changed_accounts.add(account)
                result.changes.extend(folded.changes)
                result.clock = max(result.clock, folded.clock)
        processor.index(states, globals, result, complete=True)
        return result
