"""Synthetic B2B loyalty events: accounts, a history backfill, a live stream, a producer.

Used by ``make run`` (the demo), benchmarks and tests. Everything is deterministic given a
``random.Random`` (no global random state); generation is pure and separate from producing.

The model in brief: accounts (companies) with a firmographic profile and 1-6 contacts in
buying-centre roles; a *persona* (key account, regular, occasional, dormant, new) drives order
frequency and basket size; a log-normal spend potential makes revenue Pareto-like (the top
~20 % of accounts make roughly 80 % of revenue). A discrete-event simulation then produces
orders (with lines), returns, campaign funnels (sent → opened → clicked → responded →
converted, rare unsubscribes), loyalty points (earned per EUR and for actions, redeemed,
expired after 12 months, tiers) and occasional profile updates and behaviour changes (churn,
win-back, growth), all in event-time order.

Examples
--------
>>> import json
>>> import random
>>> from datetime import UTC, datetime
>>> from worker.core.events import decode_input
>>> rng = random.Random(42)
>>> accounts = make_accounts(20, rng)
>>> events = list(generate_events(accounts, datetime(2025, 1, 1, tzinfo=UTC), 60, rng))
>>> sorted({topic for topic, _ in events})
['account-profiles', 'campaign-events', 'loyalty-points', 'orders']
>>> all(decode_input(json.dumps(event)) for _, event in events)
True
"""

from worker.devtools.generator.accounts import SyntheticAccount, SyntheticContact, make_accounts
from worker.devtools.generator.catalogue import (
    CATEGORIES,
    DEFAULT_HISTORY_DAYS,
    DEFAULT_SPEEDUP,
    DEFAULT_TOPICS,
    ROLES,
    EventDict,
    Persona,
    TopicEvent,
    catalogue,
)
from worker.devtools.generator.streams import (
    demo_events,
    generate_events,
    live_events,
    utc_now,
)

__all__ = [
    "CATEGORIES",
    "DEFAULT_HISTORY_DAYS",
    "DEFAULT_SPEEDUP",
    "DEFAULT_TOPICS",
    "ROLES",
    "EventDict",
    "Persona",
    "SyntheticAccount",
    "SyntheticContact",
    "TopicEvent",
    "catalogue",
    "demo_events",
    "generate_events",
    "live_events",
    "make_accounts",
    "utc_now",
]
