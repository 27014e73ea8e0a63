"""How busy the event agent has been lately, so that background work can give way.

Background re-evaluations (a new cluster model or new ABC cut-offs re-evaluate many
stored accounts) share the event loop with the agent. Measured at 1,000 events/s,
a pass taking a fixed quarter of the time on top of a 60-70 % busy agent left events
queueing for the rest of the run. ``LoadMeter`` measures the agent's share of the
recent time, and ``background_share`` scales the background's share by the square of
what the agent leaves idle: scaled linearly, a pass still took a tenth of the time next
to that agent, and p99 was 291 ms against 239 ms with the square (same bench).

Examples
--------
>>> meter = LoadMeter(window=10.0)
>>> meter.record(busy=3.0, now=100.0)
>>> meter.record(busy=4.0, now=104.0)
>>> meter.share(now=105.0)
0.7
>>> background_share(0.25, meter.share(now=105.0))  # the floor: a tenth of 0.25
0.025
>>> meter.share(now=113.5)  # the first batch left the window
0.4
>>> background_share(0.25, meter.share(now=113.5))  # 0.25 * 0.6 ** 2
0.09
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: Background work keeps at least this part of its configured share, so that a pass
#: still ends while the agent is saturated.
MINIMUM_BACKGROUND_PART = 0.1


class LoadMeter:
    """The share of the last ``window`` seconds the agent spent on batches.

    ``record`` is called when a batch ends, with how long it took (counted at its end:
    a batch longer than the window counts as a full window).
    """

    def __init__(self, window: float = 10.0) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self._batches: deque[tuple[float, float]] = deque()  # (ended, busy seconds)
        self._busy = 0.0

    def record(self, busy: float, now: float) -> None:
        self._batches.append((now, busy))
        self._busy += busy
        self._forget_before(now - self.window)

    def share(self, now: float) -> float:
        """Busy share of the window that ends ``now``, between 0 and 1."""
        self._forget_before(now - self.window)
        return min(1.0, max(0.0, self._busy / self.window))

    def _forget_before(self, start: float) -> None:
        while self._batches and self._batches[0][0] < start:
            _, busy = self._batches.popleft()
            self._busy -= busy
        if not self._batches:
            self._busy = 0.0  # no rounding drift once empty


def background_share(configured: float, agent_load: float) -> float:
    """The share of the time background work may take: ``configured`` times the square of
    the share the agent leaves idle, and at least ``MINIMUM_BACKGROUND_PART`` of it.

    >>> background_share(0.25, 0.0), background_share(0.25, 0.5), background_share(0.25, 1.0)
    (0.25, 0.0625, 0.025)
    """
    idle = 1.0 - min(1.0, max(0.0, agent_load))
    return round(configured * max(idle * idle, MINIMUM_BACKGROUND_PART), 12)


# Seconds the current task sat out an unavailable Redis or Kafka (``note_outage``).
_outage_seconds: ContextVar[list[float] | None] = ContextVar("outage_seconds", default=None)


@contextmanager
def counting_outages() -> Iterator[list[float]]:
    """Within the block, ``note_outage`` adds to the one-element list it yields.

    A background pass paces by the time its steps worked, not by an outage one of them
    sat out: next to a busy agent a pass pauses 39 times as long as a step took (the
    floor above), so a step that waited 4 s for a failed-over primary would stop the
    pass for minutes. Per task (a context variable): the agent's own retries are not
    counted into a pass running beside it.

    >>> with counting_outages() as waited:
    ...     note_outage(1.5)
    ...     note_outage(0.5)
    >>> waited
    [2.0]
    >>> note_outage(3.0)  # outside such a block: not counted anywhere
    """
    counted = [0.0]
    token = _outage_seconds.set(counted)
    try:
        yield counted
    finally:
        _outage_seconds.reset(token)


def note_outage(seconds: float) -> None:
    """Count ``seconds`` spent waiting for a service to come back (``counting_outages``)."""
    counted = _outage_seconds.get()
    if counted is not None:
        counted[0] += seconds
