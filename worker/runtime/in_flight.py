"""The changes this worker is delivering right now, so that it does not send them twice.

A writer of an account finds the changes an earlier writer committed but may not have
delivered yet (``BatchResult.resend``) and sends them first, so that an account's
changes never overtake each other on the topic. When that earlier writer is this same
process (the agent delivering a batch while a time sweep or a cut-off pass re-evaluates
one of its accounts, or the other way round), the copy is a duplicate: measured in the
Redis Cluster fault scenarios, whose cut-off pass runs every second, 46-133 changes
per run went out twice. The later writer waits for that delivery instead, which keeps
the order, and drops the changes it delivered; a delivery that failed leaves them to
be sent.

>>> import asyncio
>>> from types import SimpleNamespace as Change
>>> async def demo():
...     flying = InFlight()
...     a, b, c = (Change(change_id=i) for i in "abc")
...     flying.started([a, b])
...     later = asyncio.ensure_future(flying.without([a, b, c]))
...     await asyncio.sleep(0)
...     waited = not later.done()
...     flying.ended([a, b], delivered=True)
...     return waited, [c.change_id for c in await later]
>>> asyncio.run(demo())
(True, ['c'])
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Container, Iterator, Sequence
from typing import Protocol, TypeVar


class _Change(Protocol):
    @property
    def change_id(self) -> str: ...


C = TypeVar("C", bound=_Change)


class InFlight:
    """Change ids being delivered, each with the outcome of its delivery to come."""

    def __init__(self) -> None:
        self._deliveries: dict[str, asyncio.Future[bool]] = {}

    def started(self, changes: Sequence[_Change]) -> None:
        """``changes`` are committed and about to be sent by one delivery."""
        if changes:
            done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            for change in changes:
                self._deliveries[change.change_id] = done

    @contextlib.contextmanager
    def delivery(self, changes: Sequence[_Change]) -> Iterator[None]:
        """The block delivers ``changes`` (``started`` before): ``ended`` when it ends,
        delivered unless it raised."""
        delivered = False
        try:
            yield
            delivered = True
        finally:
            self.ended(changes, delivered)

    def ended(self, changes: Sequence[_Change], delivered: bool) -> None:
        """The delivery of ``changes`` ended: ``delivered`` (on the topic) or failed."""
        for change in changes:
            done = self._deliveries.pop(change.change_id, None)
            if done is not None and not done.done():
                done.set_result(delivered)

    async def without(self, resend: Sequence[C], skip: Container[str] = ()) -> list[C]:
        """``resend`` less the changes a delivery of this process has sent: waited for
        first. ``skip``: ids dropped without waiting (the agent's earlier batches,
        whose delivery ends before the agent's next one starts)."""
        # The outcomes are looked up before waiting: a delivery that ends forgets its ids.
        pending = [
            (change, self._deliveries.get(change.change_id))
            for change in resend
            if change.change_id not in skip
        ]
        left = []
        for change, done in pending:
            # shield: a waiter cancelled (a stopping timer) must not cancel the outcome
            if done is not None and await asyncio.shield(done):
                continue
            left.append(change)
        return left
