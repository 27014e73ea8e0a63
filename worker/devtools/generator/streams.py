"""Event streams from the simulation: a history backfill, a live stream, both."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

from worker.core.events import MAX_CLOCK_SKEW
from worker.devtools.generator.accounts import SyntheticAccount
from worker.devtools.generator.catalogue import DEFAULT_HISTORY_DAYS, DEFAULT_SPEEDUP, TopicEvent
from worker.devtools.generator.simulation import Simulation, event_time_text


def _stamped(at: datetime, topic_event: TopicEvent) -> TopicEvent:
    """Add ``occurred_at``; put the envelope fields first (easier to read in Kafka tools)."""
    topic, event = topic_event
    envelope = {
        "type": event.pop("type"),
        "event_id": event.pop("event_id"),
        "occurred_at": event_time_text(at),
    }
    return topic, {**envelope, **event}


def generate_events(
    accounts: Sequence[SyntheticAccount],
    start: datetime,
    days: float,
    rng: random.Random,
    *,
    id_prefix: str | None = None,
) -> Iterator[TopicEvent]:
    """Simulate ``days`` of history from ``start``; yield ``(logical topic, event dict)``.

    First one ``account_profile`` per account at ``start`` (topic ``account-profiles``), then
    orders and returns (``orders``), campaign interactions (``campaign-events``), loyalty
    points (``loyalty-points``) and profile updates, in non-decreasing ``occurred_at`` order.
    Events scheduled past ``start + days`` (e.g. late returns) are dropped.

    Parameters
    ----------
    accounts
        From `make_accounts`.
    start
        Timezone-aware start; ``start + days`` must not lie in the future (the event
        contracts reject events more than a day ahead).
    days
        Length of the history.
    rng
        Source of randomness; the same seed (and accounts) give the same events.
    id_prefix
        Prefix of the ``event_id``\\ s (``f"{id_prefix}-{n}"``); drawn from ``rng`` if not
        given. Pass a fresh one if the same seed is replayed into a worker with old state.

    Examples
    --------
    >>> from worker.devtools.generator import make_accounts
    >>> rng = random.Random(3)
    >>> accounts = make_accounts(2, rng)
    >>> events = generate_events(accounts, datetime(2025, 6, 2, tzinfo=UTC), 30, rng)
    >>> topic, event = next(events)
    >>> topic, event["type"], event["account_id"], event["occurred_at"]
    ('account-profiles', 'account_profile', 'ACC-00001', '2025-06-02T00:00:00.000Z')
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    end = start + timedelta(days=days)
    if end > datetime.now(UTC) + MAX_CLOCK_SKEW:
        raise ValueError(f"start + days = {end.isoformat()} lies in the future")
    simulation = Simulation(accounts, rng, start, days, id_prefix)
    return (_stamped(at, topic_event) for at, topic_event in simulation.run_until(end))


def utc_now() -> datetime:
    """The current wall-clock time, timezone-aware (the default clock of the live stream)."""
    return datetime.now(UTC)


def _live(
    simulation: Simulation,
    sim_origin: datetime,
    speedup: float,
    now_fn: Callable[[], datetime],
    sleep_fn: Callable[[float], None],
    max_sleep: float,
) -> Iterator[TopicEvent]:
    """Run ``simulation`` from ``sim_origin`` at ``speedup``; stamp events with wall time."""
    if speedup <= 0:
        raise ValueError("speedup must be positive")
    wall_origin = now_fn()

    def wall_time(sim_time: datetime) -> datetime:
        return wall_origin + (sim_time - sim_origin) / speedup

    while True:
        target = sim_origin + (now_fn() - wall_origin) * speedup
        for at, topic_event in simulation.run_until(target):
            yield _stamped(wall_time(at), topic_event)
        wait = (wall_time(simulation.next_time()) - now_fn()).total_seconds()
        sleep_fn(min(max(wait, 0.001), max_sleep))


def live_events(
    accounts: Sequence[SyntheticAccount],
    rng: random.Random,
    speedup: float = DEFAULT_SPEEDUP,
    *,
    now_fn: Callable[[], datetime] = utc_now,
    sleep_fn: Callable[[float], None] = time.sleep,
    max_sleep: float = 0.5,
    id_prefix: str | None = None,
) -> Iterator[TopicEvent]:
    """An endless stream in near real time, without history (see `demo_events` for both).

    Behaviour is simulated ``speedup`` times faster than wall time (the default: one simulated
    day every 10 s), and each event's ``occurred_at`` is the wall time at which it is yielded,
    so it is never in the future. The generator sleeps (``sleep_fn``) while nothing is due.
    Starts with one profile per account; dormant accounts have already stopped ordering.

    Examples
    --------
    >>> import itertools
    >>> from worker.devtools.generator import make_accounts
    >>> clock = [datetime(2026, 3, 2, 9, 30, tzinfo=UTC)]
    >>> def sleep(seconds):
    ...     clock[0] += timedelta(seconds=seconds)
    >>> stream = live_events(make_accounts(5, random.Random(1)), random.Random(2),
    ...                      now_fn=lambda: clock[0], sleep_fn=sleep)
    >>> [event["type"] for _, event in itertools.islice(stream, 6)][:5]
    ['account_profile', 'account_profile', 'account_profile', 'account_profile', 'account_profile']
    """
    origin = now_fn()
    simulation = Simulation(accounts, rng, origin, None, id_prefix)
    return _live(simulation, origin, speedup, now_fn, sleep_fn, max_sleep)


def demo_events(
    accounts: Sequence[SyntheticAccount],
    rng: random.Random,
    *,
    history_days: float = DEFAULT_HISTORY_DAYS,
    speedup: float = DEFAULT_SPEEDUP,
    now_fn: Callable[[], datetime] = utc_now,
    sleep_fn: Callable[[float], None] = time.sleep,
    max_sleep: float = 0.5,
    id_prefix: str | None = None,
) -> Iterator[TopicEvent]:
    """What the demo produces: ``history_days`` of backfill at full speed, then live, forever.

    The backfill ends at the wall time when iteration starts; the same simulation then continues
    live (as in `live_events`), so balances, tiers, dormant accounts and pending returns carry
    over. With the backfill every trailing-12-month feature is populated from the start and
    segment changes begin with the first live events (orders moving accounts between ABC
    tiers, tier upgrades, campaign responses, churn and win-back, head-count changes).

    Examples
    --------
    >>> import itertools
    >>> from worker.devtools.generator import make_accounts
    >>> clock = [datetime(2026, 3, 2, 9, 30, tzinfo=UTC)]
    >>> def sleep(seconds):
    ...     clock[0] += timedelta(seconds=seconds)
    >>> stream = demo_events(make_accounts(10, random.Random(1)), random.Random(2),
    ...                      history_days=30, now_fn=lambda: clock[0], sleep_fn=sleep)
    >>> events = list(itertools.islice(stream, 2000))
    >>> events[0][1]["occurred_at"] < events[-1][1]["occurred_at"]
    True
    """
    now = now_fn()
    start = now - timedelta(days=history_days)
    simulation = Simulation(accounts, rng, start, history_days, id_prefix)
    for at, topic_event in simulation.run_until(now):
        yield _stamped(at, topic_event)
    yield from _live(simulation, now, speedup, now_fn, sleep_fn, max_sleep)
