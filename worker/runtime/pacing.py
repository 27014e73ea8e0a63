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
