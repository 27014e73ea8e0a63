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
>>> import random
>>> from datetime import UTC, datetime
>>> from worker.events import decode_input
>>> rng = random.Random(42)
>>> accounts = make_accounts(20, rng)
>>> events = list(generate_events(accounts, datetime(2025, 1, 1, tzinfo=UTC), 60, rng))
>>> sorted({topic for topic, _ in events})
['account-profiles', 'campaign-events', 'loyalty-points', 'orders']
>>> all(decode_input(json.dumps(event)) for _, event in events)
True
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import math
import random
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from worker.events import MAX_CLOCK_SKEW, ContactRole

Persona = Literal["key_account", "regular", "occasional", "dormant", "new"]
EventDict = dict[str, Any]
#: ``(logical topic, event dict)``; the dict validates with ``worker.events.decode_input``.
TopicEvent = tuple[str, EventDict]

#: Logical topic name -> actual Kafka topic (``produce(..., topics=...)`` overrides it).
DEFAULT_TOPICS: dict[str, str] = {
    "orders": "orders",
    "campaign-events": "campaign-events",
    "loyalty-points": "loyalty-points",
    "account-profiles": "account-profiles",
}
#: Live stream: simulated seconds per wall-clock second (one simulated day every 10 s).
DEFAULT_SPEEDUP = 8640.0
#: Days of history ``demo_events`` backfills before going live (a bit more than 12 months,
#: so trailing-12-month features are complete and some accounts are already inactive).
DEFAULT_HISTORY_DAYS = 400

DAY = timedelta(days=1)
YEAR = timedelta(days=365)

# ------------------------------------------------------------------------------ catalogue

INDUSTRIES: dict[str, float] = {
    "manufacturing": 22,
    "construction": 15,
    "retail": 10,
    "logistics": 10,
    "it_services": 9,
    "healthcare": 8,
    "hospitality": 8,
    "public_sector": 7,
    "automotive": 6,
    "energy": 5,
}
COUNTRIES: dict[str, float] = {
    "DE": 28,
    "FR": 11,
    "GB": 9,
    "NL": 7,
    "US": 7,
    "PL": 6,
    "AT": 5,
    "IT": 5,
    "CH": 4,
    "ES": 4,
    "BE": 3,
    "SE": 2,
    "CZ": 2,
    "DK": 1.5,
    "CA": 1,
    "JP": 1,
    "SG": 1,
    "AU": 1,
}
ROLES: tuple[ContactRole, ...] = ("user", "buyer", "influencer", "decider", "gatekeeper")
#: Roles of the second and further contacts (the first contact is always a buyer).
_ROLE_WEIGHTS = (35, 10, 20, 22, 13)
#: How likely a role is to engage with marketing relative to users/buyers.
_ROLE_ENGAGEMENT: dict[str, float] = {
    "user": 1.0,
    "buyer": 1.0,
    "influencer": 0.9,
    "decider": 0.6,
    "gatekeeper": 0.3,
}
#: Category -> (SKU prefix, cheapest and dearest list price in EUR).
CATEGORIES: dict[str, tuple[str, float, float]] = {
    "tools": ("TOO", 8.0, 900.0),
    "fasteners": ("FAS", 0.04, 4.0),
    "safety": ("SAF", 2.0, 150.0),
    "electrical": ("ELE", 1.0, 400.0),
    "cleaning": ("CLE", 2.0, 90.0),
    "office": ("OFF", 0.5, 120.0),
    "packaging": ("PAC", 0.1, 40.0),
    "hvac": ("HVA", 25.0, 2500.0),
    "workwear": ("WOR", 8.0, 180.0),
    "it_hardware": ("ITH", 15.0, 1800.0),
}
#: What each industry tends to buy (relative weights; unlisted categories get 0.1).
_INDUSTRY_NEEDS: dict[str, dict[str, float]] = {
    "manufacturing": {"tools": 3, "fasteners": 3, "safety": 2, "electrical": 2, "workwear": 1.5},
    "construction": {"tools": 3, "fasteners": 3, "safety": 2.5, "workwear": 2, "hvac": 1.5},
    "healthcare": {"cleaning": 3, "safety": 2, "office": 2, "it_hardware": 1},
    "retail": {"packaging": 3, "cleaning": 2, "office": 2, "electrical": 1},
    "logistics": {"packaging": 3, "safety": 2, "tools": 1.5, "workwear": 1.5},
    "hospitality": {"cleaning": 3, "hvac": 2, "office": 1, "electrical": 1, "workwear": 1},
    "public_sector": {"office": 3, "cleaning": 2, "electrical": 1.5, "it_hardware": 1.5},
    "it_services": {"it_hardware": 3, "office": 3, "electrical": 1.5},
    "automotive": {"tools": 3, "fasteners": 2, "safety": 2, "electrical": 1.5, "cleaning": 1},
    "energy": {"electrical": 3, "safety": 2.5, "tools": 2, "hvac": 1.5, "workwear": 1.5},
}
_SKUS_PER_CATEGORY = 30
_CATALOGUE_SEED = 20_240_101

_NAME_STEMS = (
    "Albers", "Alpen", "Atlas", "Becker", "Brandt", "Delta", "Dubois", "Evans", "Fischer",
    "Hansen", "Jansen", "Keller", "Kowalski", "Lambert", "Martin", "Meyer", "Nord", "Nowak",
    "Orion", "Peters", "Rhein", "Richter", "Rossi", "Schmidt", "Smith", "Summit", "Vector",
    "Vogel", "Wagner", "Weber",
)  # fmt: skip
_INDUSTRY_WORDS: dict[str, tuple[str, ...]] = {
    "manufacturing": ("Maschinenbau", "Precision", "Metallwerk", "Industries"),
    "construction": ("Bau", "Construction", "Builders", "Hochbau"),
    "healthcare": ("Klinik", "Care", "Medical", "Health"),
    "retail": ("Retail", "Handel", "Stores", "Markt"),
    "logistics": ("Logistik", "Freight", "Spedition", "Transport"),
    "hospitality": ("Hotels", "Gastro", "Hospitality", "Catering"),
    "public_sector": ("Stadtwerke", "Services", "Verwaltung", "Agency"),
    "it_services": ("IT", "Systems", "Digital", "Software"),
    "automotive": ("Automotive", "Fahrzeugteile", "Motors", "Autoteile"),
    "energy": ("Energie", "Power", "Solar", "Netz"),
}
_LEGAL_FORMS: dict[str, str] = {
    "DE": "GmbH", "AT": "GmbH", "CH": "AG", "FR": "SAS", "GB": "Ltd", "NL": "B.V.", "BE": "NV",
    "US": "Inc.", "CA": "Inc.", "PL": "Sp. z o.o.", "IT": "S.r.l.", "ES": "S.L.", "SE": "AB",
    "CZ": "s.r.o.", "DK": "ApS", "JP": "K.K.", "SG": "Pte. Ltd.", "AU": "Pty Ltd",
}  # fmt: skip


@dataclass(frozen=True)
class _PersonaSpec:
    orders_per_year: tuple[float, float]
    wallet_share: float  # share of the account's spend potential it places with us
    extra_lines: float  # mean number of order lines beyond the first
    discount: tuple[float, float]
    responsiveness: tuple[float, float]
    loyalty_share: float
    channels: dict[str, float]


_PERSONAS: dict[str, _PersonaSpec] = {
    "key_account": _PersonaSpec(
        (100, 220), 0.9, 4.0, (0.08, 0.18), (0.4, 0.9), 0.9,
        {"edi": 5, "sales_rep": 3, "web": 2, "phone": 1},
    ),
    "regular": _PersonaSpec(
        (20, 52), 0.6, 2.0, (0.03, 0.10), (0.2, 0.7), 0.65,
        {"web": 5, "phone": 2, "sales_rep": 1, "edi": 1, "marketplace": 1},
    ),
    "occasional": _PersonaSpec(
        (3, 12), 0.3, 1.5, (0.0, 0.05), (0.05, 0.5), 0.35,
        {"web": 5, "marketplace": 3, "phone": 2},
    ),
    "dormant": _PersonaSpec(
        (8, 30), 0.4, 1.5, (0.0, 0.05), (0.0, 0.3), 0.4,
        {"web": 4, "phone": 3, "marketplace": 1},
    ),
    "new": _PersonaSpec(
        (12, 40), 0.5, 2.0, (0.0, 0.06), (0.2, 0.8), 0.5,
        {"web": 6, "phone": 2, "marketplace": 2},
    ),
}  # fmt: skip
#: Share of accounts (by spend potential) that are key accounts.
KEY_ACCOUNT_SHARE = 0.08
#: Daily probabilities of behaviour changes: persona -> (new persona, probability).
_DRIFT: dict[str, tuple[tuple[Persona, float], ...]] = {
    "key_account": (("regular", 1 / 4000),),
    "regular": (("dormant", 1 / 3000), ("key_account", 1 / 6000)),
    "occasional": (("regular", 1 / 2500), ("dormant", 1 / 3000)),
    "new": (("dormant", 1 / 3000),),
    "dormant": (("regular", 1 / 2500),),  # win-back; only once the account has stopped
}
_WEEKDAY_FACTOR = (1.34, 1.34, 1.34, 1.34, 1.34, 0.15, 0.15)
_MONTH_FACTOR = (0.9, 1.0, 1.1, 1.1, 1.05, 1.0, 0.9, 0.75, 1.1, 1.1, 1.05, 0.8)
_TIERS = ((100_000, "platinum"), (25_000, "gold"), (5_000, "silver"), (0, "bronze"))
_RETURN_PROBABILITY = 0.04


@functools.cache
def catalogue() -> dict[str, tuple[tuple[str, float], ...]]:
    """The fixed product catalogue: category -> ``((sku, list_price), ...)``.

    Independent of any seed, so SKUs and prices are the same in every run.

    >>> catalogue()["tools"][0][0]
    'TOO-0001'
    >>> all(1 <= len(items) <= 100 for items in catalogue().values())
    True
    """
    rng = random.Random(_CATALOGUE_SEED)
    result = {}
    for category, (prefix, low, high) in CATEGORIES.items():
        items = []
        for n in range(1, _SKUS_PER_CATEGORY + 1):
            price = math.exp(rng.uniform(math.log(low), math.log(high)))
            items.append((f"{prefix}-{n:04d}", round(price, 2)))
        result[category] = tuple(items)
    return result


# ------------------------------------------------------------------------------- accounts


@dataclass(frozen=True)
class SyntheticContact:
    """A person at an account with a buying-centre role.

    Only contacts with ``marketing_opt_in`` receive campaigns.
    """

    contact_id: str
    role: ContactRole
    marketing_opt_in: bool = True


@dataclass(frozen=True)
class SyntheticAccount:
    """A synthetic company and the parameters that drive its behaviour.

    ``active_from``, ``active_until`` and ``loyalty_join`` are fractions of the generated
    history (0 = its start, 1 = its end): a ``new`` account starts ordering late, a
    ``dormant`` one stops ordering early. In a live stream without history every account is
    already active and dormant accounts have already stopped.
    """

    account_id: str
    name: str
    industry: str
    employees: int
    country: str
    contacts: tuple[SyntheticContact, ...]
    persona: Persona
    annual_potential: float  # EUR per year the company spends on what we sell
    orders_per_year: float
    category_weights: tuple[tuple[str, float], ...]  # preferred categories, weights sum to 1
    campaign_responsiveness: float  # 0 (ignores everything) .. 1 (engages eagerly)
    discount: float  # negotiated discount on list prices
    loyalty_member: bool
    loyalty_join: float
    active_from: float = 0.0
    active_until: float | None = None

    @property
    def annual_revenue(self) -> float:
        """Expected yearly revenue with us while active (potential x persona wallet share)."""
        return self.annual_potential * _PERSONAS[self.persona].wallet_share


def _weighted(rng: random.Random, weights: Mapping[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _company_name(rng: random.Random, industry: str, country: str) -> str:
    stem = rng.choice(_NAME_STEMS)
    if rng.random() < 0.3:
        stem = f"{stem} & {rng.choice(_NAME_STEMS)}"
    return f"{stem} {rng.choice(_INDUSTRY_WORDS[industry])} {_LEGAL_FORMS.get(country, 'Ltd')}"


def _contacts(
    rng: random.Random, account_id: str, employees: int, persona: str
) -> tuple[SyntheticContact, ...]:
    count = 1 + int(math.log10(employees)) + rng.randint(-1, 1) + (persona == "key_account")
    count = max(1, min(6, count))
    roles: list[ContactRole] = ["buyer"]
    roles += rng.choices(ROLES, weights=_ROLE_WEIGHTS, k=count - 1)
    return tuple(
        SyntheticContact(f"{account_id}-C{n}", role, marketing_opt_in=rng.random() < 0.7)
        for n, role in enumerate(roles, 1)
    )


def _category_weights(rng: random.Random, industry: str) -> tuple[tuple[str, float], ...]:
    needs = _INDUSTRY_NEEDS[industry]
    raw = {c: needs.get(c, 0.1) * rng.gammavariate(1.0, 1.0) for c in CATEGORIES}
    total = sum(raw.values())
    kept = {c: w / total for c, w in raw.items() if w / total >= 0.04}
    kept_total = sum(kept.values())
    ranked = sorted(kept.items(), key=lambda item: (-item[1], item[0]))
    return tuple((c, round(w / kept_total, 4)) for c, w in ranked)


def _persona_for(rng: random.Random, quantile: float) -> Persona:
    if quantile >= 1 - KEY_ACCOUNT_SHARE:
        return "key_account"
    weights: dict[Persona, float] = {
        "regular": 0.15 + 0.45 * quantile,
        "occasional": 0.5 - 0.35 * quantile,
        "dormant": 0.15,
        "new": 0.12,
    }
    personas = list(weights)
    return rng.choices(personas, weights=[weights[p] for p in personas])[0]


def make_accounts(n: int, rng: random.Random) -> list[SyntheticAccount]:
    """Draw ``n`` synthetic accounts ``ACC-00001`` ... with contacts and behaviour.

    Parameters
    ----------
    n
        Number of accounts (a few hundred make a good demo; ids have five digits).
    rng
        Source of randomness; the same seed gives the same accounts.

    Returns
    -------
    list of SyntheticAccount
        Ordered by account id.

    Examples
    --------
    >>> accounts = make_accounts(3, random.Random(7))
    >>> [a.account_id for a in accounts]
    ['ACC-00001', 'ACC-00002', 'ACC-00003']
    >>> accounts[0].contacts[0].contact_id, accounts[0].contacts[0].role
    ('ACC-00001-C1', 'buyer')
    """
    firmographics = []
    for _ in range(n):
        industry = _weighted(rng, INDUSTRIES)
        country = _weighted(rng, COUNTRIES)
        employees = max(1, min(250_000, round(rng.lognormvariate(math.log(40), 1.5))))
        potential = 500.0 * employees**0.75 * rng.lognormvariate(0.0, 0.8)
        firmographics.append((industry, country, employees, potential))
    order = sorted(range(n), key=lambda i: firmographics[i][3])
    quantile = {i: rank / max(1, n) for rank, i in enumerate(order)}
    return [_make_account(rng, i + 1, *firmographics[i], quantile=quantile[i]) for i in range(n)]


def _make_account(
    rng: random.Random,
    number: int,
    industry: str,
    country: str,
    employees: int,
    potential: float,
    *,
    quantile: float,
) -> SyntheticAccount:
    account_id = f"ACC-{number:05d}"
    persona = _persona_for(rng, quantile)
    spec = _PERSONAS[persona]
    active_from = rng.uniform(0.65, 0.97) if persona == "new" else 0.0
    member = rng.random() < spec.loyalty_share
    if persona == "new":
        loyalty_join = active_from
    else:
        loyalty_join = 0.0 if rng.random() < 0.75 else rng.uniform(0.05, 0.9)
    return SyntheticAccount(
        account_id=account_id,
        name=_company_name(rng, industry, country),
        industry=industry,
        employees=employees,
        country=country,
        contacts=_contacts(rng, account_id, employees, persona),
        persona=persona,
        annual_potential=round(potential, 2),
        orders_per_year=round(rng.uniform(*spec.orders_per_year), 2),
        category_weights=_category_weights(rng, industry),
        campaign_responsiveness=round(rng.uniform(*spec.responsiveness), 3),
        discount=round(rng.uniform(*spec.discount), 3),
        loyalty_member=member,
        loyalty_join=loyalty_join,
        active_from=active_from,
        active_until=rng.uniform(0.05, 0.6) if persona == "dormant" else None,
    )


# ----------------------------------------------------------------------------- simulation


def _iso(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``.

    >>> _iso(datetime(2025, 3, 1, 9, 30, tzinfo=UTC))
    '2025-03-01T09:30:00.000Z'
    """
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method; fine for the small daily rates used here."""
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _tier(points_12m: int) -> str:
    return next(name for threshold, name in _TIERS if points_12m >= threshold)


@dataclass(frozen=True)
class _Theme:
    name: str
    roles: frozenset[str]
    open_rate: float
    converts: bool


_ALL_ROLES = frozenset(ROLES)
_NEWSLETTER = _Theme("newsletter", _ALL_ROLES, 0.25, False)
_LOYALTY_ACTION = _Theme("loyalty_action", frozenset({"buyer", "user", "decider"}), 0.35, False)
_REACTIVATION = _Theme("reactivation", frozenset({"buyer", "decider"}), 0.3, True)
_WEBINAR = _Theme("webinar", frozenset({"decider", "influencer"}), 0.2, False)
_PROMO_ROLES = frozenset({"buyer", "user", "influencer"})


@dataclass
class _AccountState:
    """Mutable simulation state of one account."""

    account: SyntheticAccount
    persona: Persona
    orders_per_year: float
    employees: int
    active_from: datetime
    active_until: datetime | None
    joined_at: datetime | None
    last_order_at: datetime | None = None
    orders: int = 0
    balance: int = 0
    ledger: deque[list[Any]] = field(default_factory=deque)  # [earned_at, remaining points]
    trailing: deque[tuple[datetime, int]] = field(default_factory=deque)
    trailing_sum: int = 0
    unsubscribed: set[str] = field(default_factory=set)

    def active(self, at: datetime) -> bool:
        return at >= self.active_from and (self.active_until is None or at < self.active_until)

    def member(self, at: datetime) -> bool:
        return self.joined_at is not None and at >= self.joined_at

    @property
    def mean_basket(self) -> float:
        spend = self.account.annual_potential * _PERSONAS[self.persona].wallet_share
        return spend / max(self.orders_per_year, 1.0)

    def tier(self, at: datetime) -> str:
        while self.trailing and self.trailing[0][0] <= at - YEAR:
            self.trailing_sum -= self.trailing.popleft()[1]
        return _tier(self.trailing_sum)

    def earn(self, at: datetime, points: int) -> None:
        self.balance += points
        self.ledger.append([at, points])
        self.trailing.append((at, points))
        self.trailing_sum += points

    def redeem(self, points: int) -> None:
        self.balance -= points
        while points > 0:
            entry = self.ledger[0]
            used = min(points, entry[1])
            entry[1] -= used
            points -= used
            if entry[1] == 0:
                self.ledger.popleft()

    def expire(self, at: datetime) -> int:
        expired = 0
        while self.ledger and self.ledger[0][0] <= at - YEAR:
            expired += self.ledger.popleft()[1]
        self.balance -= expired
        return expired


Action = Callable[[datetime], list[TopicEvent]]


class _Simulation:
    """Discrete-event simulation: a queue of timed actions that emit events and schedule more.

    State changes happen when an action runs, in event-time order, so balances, tiers and
    "last order" are consistent with the emitted stream. Days are planned lazily as the clock
    reaches them, so the same simulation serves a bounded backfill and an endless live stream.
    """

    def __init__(
        self,
        accounts: Sequence[SyntheticAccount],
        rng: random.Random,
        start: datetime,
        history_days: float | None,
        id_prefix: str | None,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.rng = rng
        self.start = start.astimezone(UTC)
        self.id_prefix = id_prefix or f"syn-{rng.getrandbits(32):08x}"
        self._queue: list[tuple[datetime, int, Action]] = []
        self._seq = itertools.count()
        self._event_numbers = itertools.count(1)
        self._campaign_numbers = itertools.count(1)
        self._next_day = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        self.states = [self._initial_state(a, history_days) for a in accounts]
        for state in self.states:
            self._schedule(self.start, functools.partial(self._profile, state))
            if state.joined_at is not None and state.joined_at > self.start:
                self._schedule(state.joined_at, functools.partial(self._welcome, state))

    def _initial_state(
        self, account: SyntheticAccount, history_days: float | None
    ) -> _AccountState:
        def at(fraction: float) -> datetime:
            if history_days is None:  # live without history: everything has already begun
                return self.start
            return self.start + timedelta(days=fraction * history_days)

        return _AccountState(
            account=account,
            persona=account.persona,
            orders_per_year=account.orders_per_year,
            employees=account.employees,
            active_from=at(account.active_from),
            active_until=None if account.active_until is None else at(account.active_until),
            joined_at=at(account.loyalty_join) if account.loyalty_member else None,
        )

    # -- queue

    def _schedule(self, at: datetime, action: Action) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), action))

    def next_time(self) -> datetime:
        """When the next action runs (or the next day is planned)."""
        return min(self._queue[0][0], self._next_day) if self._queue else self._next_day

    def run_until(self, until: datetime) -> Iterator[tuple[datetime, TopicEvent]]:
        """Run every action before ``until``; yield ``(time, (topic, event))`` in time order.

        Events get ``event_id`` here; ``occurred_at`` is left to the caller (see ``_stamped``).
        """
        while True:
            while self._next_day < until:
                self._plan_day(self._next_day)
                self._next_day += DAY
            if not self._queue or self._queue[0][0] >= until:
                return
            at, _, action = heapq.heappop(self._queue)
            for topic, event in action(at):
                event["event_id"] = f"{self.id_prefix}-{next(self._event_numbers)}"
                yield at, (topic, event)

    # -- daily plan

    def _business_time(self, day: datetime) -> datetime:
        return day + timedelta(hours=self.rng.triangular(6.0, 18.0, 10.0))

    def _plan_day(self, day: datetime) -> None:
        rng = self.rng
        self._plan_campaigns(day)
        activity = _WEEKDAY_FACTOR[day.weekday()] * _MONTH_FACTOR[day.month - 1]
        for state in self.states:
            self._drift(state, day)
            if state.active(day):
                for _ in range(_poisson(rng, state.orders_per_year / 365 * activity)):
                    self._schedule_at_or_after(
                        self._business_time(day), functools.partial(self._order, state)
                    )
            if state.joined_at is not None and state.joined_at <= day:
                self._plan_loyalty(state, day)
            if rng.random() < 1 / 700:
                self._schedule_at_or_after(
                    self._business_time(day), functools.partial(self._profile_update, state)
                )

    def _schedule_at_or_after(self, at: datetime, action: Action) -> None:
        """Schedule on a planned day; moments before the simulation's start are dropped."""
        if at >= self.start:
            self._schedule(at, action)

    def _drift(self, state: _AccountState, day: datetime) -> None:
        if day < state.active_from:
            return
        if state.persona == "dormant" and state.active(day):
            return  # not stopped yet
        for persona, probability in _DRIFT[state.persona]:
            if self.rng.random() < probability:
                self._change_persona(state, persona, day)
                return

    def _change_persona(self, state: _AccountState, persona: Persona, day: datetime) -> None:
        state.persona = persona
        state.orders_per_year = self.rng.uniform(*_PERSONAS[persona].orders_per_year)
        state.active_until = day if persona == "dormant" else None

    def _plan_loyalty(self, state: _AccountState, day: datetime) -> None:
        rng = self.rng
        responsiveness = state.account.campaign_responsiveness
        if day.day == 1:
            self._schedule_at_or_after(
                day + timedelta(hours=1), functools.partial(self._expire, state)
            )
        if rng.random() < 0.004 + 0.02 * responsiveness:
            self._schedule_at_or_after(
                self._business_time(day), functools.partial(self._redeem, state)
            )
        if rng.random() < 0.0004 * (0.5 + responsiveness):
            action = functools.partial(self._points_earned, state, 1000, "referral", None)
            self._schedule_at_or_after(self._business_time(day), action)

    def _plan_campaigns(self, day: datetime) -> None:
        if day.weekday() >= 5:
            return
        rng = self.rng
        themes: list[_Theme] = []
        if day.weekday() == 1 and day.day <= 7:
            themes.append(_NEWSLETTER)
        if rng.random() < 0.12:
            category = rng.choice(list(CATEGORIES))
            themes.append(_Theme(f"promo_{category}", _PROMO_ROLES, 0.3, True))
        if rng.random() < 0.06:
            themes.append(_LOYALTY_ACTION)
        if day.weekday() == 0 and rng.random() < 0.3:
            themes.append(_REACTIVATION)
        if rng.random() < 0.05:
            themes.append(_WEBINAR)
        for theme in themes:
            send_at = day + timedelta(hours=8, minutes=rng.uniform(0, 180))
            self._schedule_at_or_after(send_at, functools.partial(self._campaign, theme))

    # -- actions (run in event-time order)

    def _profile(self, state: _AccountState, at: datetime) -> list[TopicEvent]:
        account = state.account
        event = {
            "type": "account_profile",
            "account_id": account.account_id,
            "name": account.name,
            "industry": account.industry,
            "employees": state.employees,
            "country": account.country,
        }
        return [("account-profiles", event)]

    def _profile_update(self, state: _AccountState, at: datetime) -> list[TopicEvent]:
        growth = self.rng.lognormvariate(0.03, 0.2)
        state.employees = max(1, min(10_000_000, round(state.employees * growth)))
        return self._profile(state, at)

    def _buyer(self, state: _AccountState) -> SyntheticContact:
        ordering = [c for c in state.account.contacts if c.role in ("buyer", "user")]
        weights = [3 if c.role == "buyer" else 1 for c in ordering]
        return self.rng.choices(ordering, weights=weights)[0]

    def _lines(self, state: _AccountState, category_hint: str | None) -> list[EventDict]:
        rng = self.rng
        account = state.account
        spec = _PERSONAS[state.persona]
        basket = state.mean_basket * rng.lognormvariate(-0.18, 0.6)  # mean = mean_basket
        n_lines = 1 + min(24, int(rng.expovariate(1 / spec.extra_lines)))
        categories = [c for c, _ in account.category_weights]
        weights = [w for _, w in account.category_weights]
        picked = rng.choices(categories, weights=weights, k=n_lines)
        if category_hint is not None:
            picked[0] = category_hint
        shares = [rng.expovariate(1.0) for _ in picked]
        total_share = sum(shares)
        lines: list[EventDict] = []
        for category, share in zip(picked, shares, strict=True):
            target = basket * share / total_share
            candidates = rng.sample(catalogue()[category], 3)
            sku, list_price = next(
                (item for item in candidates if item[1] <= target),
                min(candidates, key=lambda item: item[1]),
            )
            unit_price = max(0.01, round(list_price * (1 - account.discount), 2))
            quantity = max(1, min(100_000, round(target / unit_price)))
            line = {
                "sku": sku,
                "category": category,
                "quantity": quantity,
                "unit_price": unit_price,
            }
            lines.append(line)
        return lines

    def _order(
        self,
        state: _AccountState,
        at: datetime,
        contact: SyntheticContact | None = None,
        category_hint: str | None = None,
    ) -> list[TopicEvent]:
        rng = self.rng
        if contact is None or contact.role not in ("buyer", "user"):
            contact = self._buyer(state)
        lines = self._lines(state, category_hint)
        total = round(sum(line["quantity"] * line["unit_price"] for line in lines), 2)
        state.orders += 1
        state.last_order_at = at
        order_id = f"{state.account.account_id}-O{state.orders:05d}"
        channels = _PERSONAS[state.persona].channels
        event = {
            "type": "order_placed",
            "account_id": state.account.account_id,
            "contact_id": contact.contact_id,
            "order_id": order_id,
            "currency": "EUR",
            "total": total,
            "lines": lines,
            "channel": "web" if category_hint else _weighted(rng, channels),
        }
        if state.member(at) and total >= 1:
            points = min(10_000_000, int(total))
            action = functools.partial(
                self._points_earned, state, points, "purchase", contact.contact_id
            )
            self._schedule(at + timedelta(minutes=rng.uniform(1, 30)), action)
        if rng.random() < _RETURN_PROBABILITY:
            returned = functools.partial(self._return, state, order_id, rng.choice(lines))
            self._schedule(at + timedelta(days=rng.uniform(2, 30)), returned)
        return [("orders", event)]

    def _return(
        self, state: _AccountState, order_id: str, line: EventDict, at: datetime
    ) -> list[TopicEvent]:
        rng = self.rng
        quantity = rng.randint(1, line["quantity"])
        fee = rng.choice((1.0, 1.0, 0.9))  # sometimes a restocking fee
        event = {
            "type": "order_returned",
            "account_id": state.account.account_id,
            "order_id": order_id,
            "currency": "EUR",
            "amount": round(quantity * line["unit_price"] * fee, 2),
            "category": line["category"],
        }
        return [("orders", event)]

    def _points_event(
        self,
        state: _AccountState,
        at: datetime,
        kind: str,
        points: int,
        reason: str,
        contact_id: str | None,
    ) -> TopicEvent:
        event = {
            "type": "loyalty_points",
            "account_id": state.account.account_id,
            "kind": kind,
            "points": points,
            "reason": reason,
            "tier": state.tier(at),
        }
        if contact_id is not None:
            event["contact_id"] = contact_id
        return ("loyalty-points", event)

    def _points_earned(
        self, state: _AccountState, points: int, reason: str, contact_id: str | None, at: datetime
    ) -> list[TopicEvent]:
        state.earn(at, points)
        return [self._points_event(state, at, "earned", points, reason, contact_id)]

    def _welcome(self, state: _AccountState, at: datetime) -> list[TopicEvent]:
        return self._points_earned(state, 500, "bonus", None, at)

    def _redeem(self, state: _AccountState, at: datetime) -> list[TopicEvent]:
        if state.balance < 1000:
            return []
        wanted = int(state.balance * self.rng.uniform(0.3, 1.0)) // 100 * 100
        points = max(500, min(state.balance, wanted))
        state.redeem(points)
        contact = self._buyer(state).contact_id
        return [self._points_event(state, at, "redeemed", points, "redemption", contact)]

    def _expire(self, state: _AccountState, at: datetime) -> list[TopicEvent]:
        points = state.expire(at)
        if points <= 0:
            return []
        return [self._points_event(state, at, "expired", points, "expiry", None)]

    # -- campaigns

    def _audience(self, theme: _Theme, at: datetime) -> list[_AccountState]:
        if theme is _NEWSLETTER:
            return self.states
        if theme is _LOYALTY_ACTION:
            return [s for s in self.states if s.member(at)]
        if theme is _REACTIVATION:
            cutoff = at - timedelta(days=90)
            return [s for s in self.states if s.last_order_at and s.last_order_at < cutoff]
        if theme is _WEBINAR:
            return [s for s in self.states if s.employees >= 50]
        category = theme.name.removeprefix("promo_")
        return [s for s in self.states if dict(s.account.category_weights).get(category, 0) >= 0.15]

    def _campaign(self, theme: _Theme, at: datetime) -> list[TopicEvent]:
        campaign_id = f"CMP-{next(self._campaign_numbers):04d}-{theme.name}"
        events: list[TopicEvent] = []
        for state in self._audience(theme, at):
            for contact in state.account.contacts:
                if self._reachable(state, contact, theme):
                    events.append(self._interaction(state, contact, campaign_id, "sent"))
                    self._funnel(state, contact, campaign_id, theme, at)
        return events

    @staticmethod
    def _reachable(state: _AccountState, contact: SyntheticContact, theme: _Theme) -> bool:
        return (
            contact.marketing_opt_in
            and contact.role in theme.roles
            and contact.contact_id not in state.unsubscribed
        )

    def _interaction(
        self, state: _AccountState, contact: SyntheticContact, campaign_id: str, kind: str
    ) -> TopicEvent:
        event = {
            "type": "campaign_interaction",
            "account_id": state.account.account_id,
            "campaign_id": campaign_id,
            "contact_id": contact.contact_id,
            "contact_role": contact.role,
            "kind": kind,
        }
        return ("campaign-events", event)

    def _funnel(
        self,
        state: _AccountState,
        contact: SyntheticContact,
        campaign_id: str,
        theme: _Theme,
        at: datetime,
    ) -> None:
        """Decide how far the contact gets and schedule each step."""
        rng = self.rng
        resp = state.account.campaign_responsiveness
        step = functools.partial(self._step, state, contact, campaign_id)
        if rng.random() < 0.002 + 0.006 * (1 - resp):
            self._schedule(at + timedelta(hours=rng.expovariate(1 / 12)), step("unsubscribed"))
            return
        p_open = theme.open_rate * (0.3 + 1.4 * resp) * _ROLE_ENGAGEMENT[contact.role]
        if rng.random() >= min(0.95, p_open):
            return
        at += timedelta(hours=min(72.0, rng.expovariate(1 / 5)))
        self._schedule(at, step("opened"))
        if rng.random() >= 0.15 + 0.4 * resp:
            return
        at += timedelta(minutes=rng.expovariate(1 / 3))
        self._schedule(at, step("clicked"))
        if rng.random() >= 0.1 + 0.5 * resp:
            return
        at += timedelta(hours=rng.expovariate(1.0))
        self._schedule(at, step("responded"))
        if theme is _LOYALTY_ACTION and state.member(at):
            points = rng.choice((100, 200, 250, 500, 1000))
            action = functools.partial(
                self._points_earned, state, points, "action", contact.contact_id
            )
            self._schedule(at + timedelta(minutes=rng.uniform(1, 60)), action)
        if theme.converts and rng.random() < 0.5:
            at += timedelta(hours=rng.uniform(0.5, 48))
            category = (
                theme.name.removeprefix("promo_") if theme.name.startswith("promo_") else None
            )
            convert = functools.partial(self._convert, state, contact, campaign_id, theme, category)
            self._schedule(at, convert)

    def _step(
        self, state: _AccountState, contact: SyntheticContact, campaign_id: str, kind: str
    ) -> Action:
        def action(at: datetime) -> list[TopicEvent]:
            if kind == "unsubscribed":
                state.unsubscribed.add(contact.contact_id)
            return [self._interaction(state, contact, campaign_id, kind)]

        return action

    def _convert(
        self,
        state: _AccountState,
        contact: SyntheticContact,
        campaign_id: str,
        theme: _Theme,
        category: str | None,
        at: datetime,
    ) -> list[TopicEvent]:
        if theme is _REACTIVATION and not state.active(at) and self.rng.random() < 0.6:
            self._change_persona(state, "regular", at)  # won back
        converted = self._interaction(state, contact, campaign_id, "converted")
        return [converted, *self._order(state, at, contact, category)]


def _stamped(at: datetime, topic_event: TopicEvent) -> TopicEvent:
    """Add ``occurred_at``; put the envelope fields first (easier to read in Kafka tools)."""
    topic, event = topic_event
    envelope = {
        "type": event.pop("type"),
        "event_id": event.pop("event_id"),
        "occurred_at": _iso(at),
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
    simulation = _Simulation(accounts, rng, start, days, id_prefix)
    return (_stamped(at, topic_event) for at, topic_event in simulation.run_until(end))


def utc_now() -> datetime:
    """The current wall-clock time, timezone-aware (the default clock of the live stream)."""
    return datetime.now(UTC)


def _live(
    simulation: _Simulation,
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
    >>> clock = [datetime(2026, 3, 2, 9, 30, tzinfo=UTC)]
    >>> def sleep(seconds):
    ...     clock[0] += timedelta(seconds=seconds)
    >>> stream = live_events(make_accounts(5, random.Random(1)), random.Random(2),
    ...                      now_fn=lambda: clock[0], sleep_fn=sleep)
    >>> [event["type"] for _, event in itertools.islice(stream, 6)][:5]
    ['account_profile', 'account_profile', 'account_profile', 'account_profile', 'account_profile']
    """
    origin = now_fn()
    simulation = _Simulation(accounts, rng, origin, None, id_prefix)
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
    simulation = _Simulation(accounts, rng, start, history_days, id_prefix)
    for at, topic_event in simulation.run_until(now):
        yield _stamped(at, topic_event)
    yield from _live(simulation, now, speedup, now_fn, sleep_fn, max_sleep)


# ------------------------------------------------------------------------------- producing


def encode(event: EventDict) -> bytes:
    """Compact UTF-8 JSON, as produced to Kafka.

    >>> encode({"a": 1, "b": "ü"})
    b'{"a":1,"b":"\\xc3\\xbc"}'
    """
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def produce(
    events: Iterable[TopicEvent],
    bootstrap_servers: str,
    *,
    topics: Mapping[str, str] | None = None,
    limit: int | None = None,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 1000,
    producer_config: Mapping[str, Any] | None = None,
) -> int:
    """Produce ``(logical topic, event)`` pairs to Kafka; return how many were sent.

    Keys are the ``account_id`` (so an account's events share a partition), values compact
    JSON. The producer is flushed and closed at the end, also on errors and Ctrl-C; a failed
    delivery raises the Kafka error.

    Parameters
    ----------
    events
        E.g. `generate_events`, `live_events` or `demo_events` (endless: pass ``limit`` or
        stop with Ctrl-C).
    bootstrap_servers
        ``host:port[,host:port...]``.
    topics
        Logical topic -> actual topic, default `DEFAULT_TOPICS` (tests use per-test names).
    limit
        Stop after this many events.
    rate
        At most this many events per second (on average since the start).
    on_progress
        Called with the running count every ``progress_every`` events and once at the end.
    producer_config
        Overrides of the ``KafkaProducer`` settings.
    """
    with warnings.catch_warnings():
        # kafka-python 3.0 uses the deprecated importlib.resources.read_text at import time,
        # which fails under `-W error` / pytest's `filterwarnings = error`.
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka import KafkaProducer  # here, so that generating events needs no kafka

    mapping = DEFAULT_TOPICS if topics is None else topics
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers.split(","),
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 64 * 1024,
        "client_id": "segworker-generator",
    }
    config.update(producer_config or {})
    producer = KafkaProducer(**config)
    failures: list[BaseException] = []
    count = 0
    started = time.monotonic()
    if limit is not None and limit <= 0:
        events = ()
    try:
        for topic, event in events:
            if failures:
                raise failures[0]
            try:
                actual = mapping[topic]
            except KeyError:
                raise KeyError(f"no Kafka topic configured for logical topic {topic!r}") from None
            future = producer.send(actual, value=encode(event), key=event["account_id"].encode())
            future.add_errback(failures.append)
            count += 1
            if on_progress is not None and count % progress_every == 0:
                on_progress(count)
            if limit is not None and count >= limit:
                break
            if rate is not None:
                ahead = started + count / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
        if failures:
            raise failures[0]
    finally:
        producer.close(timeout=10)
    if on_progress is not None:
        on_progress(count)
    return count
