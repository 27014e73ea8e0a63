"""The discrete-event simulation of an account base: orders, returns, campaigns, points."""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.devtools.generator.accounts import SyntheticAccount, SyntheticContact, weighted
from worker.devtools.generator.catalogue import (
    CATEGORIES,
    DAY,
    DRIFT,
    MONTH_FACTOR,
    PERSONAS,
    RETURN_PROBABILITY,
    ROLE_ENGAGEMENT,
    ROLES,
    TIERS,
    WEEKDAY_FACTOR,
    YEAR,
    EventDict,
    Persona,
    TopicEvent,
    catalogue,
)


def event_time_text(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``.

    >>> event_time_text(datetime(2025, 3, 1, 9, 30, tzinfo=UTC))
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
    return next(name for threshold, name in TIERS if points_12m >= threshold)


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
        spend = self.account.annual_potential * PERSONAS[self.persona].wallet_share
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


class Simulation:
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
        activity = WEEKDAY_FACTOR[day.weekday()] * MONTH_FACTOR[day.month - 1]
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
        for persona, probability in DRIFT[state.persona]:
            if self.rng.random() < probability:
                self._change_persona(state, persona, day)
                return

    def _change_persona(self, state: _AccountState, persona: Persona, day: datetime) -> None:
        state.persona = persona
        state.orders_per_year = self.rng.uniform(*PERSONAS[persona].orders_per_year)
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
        spec = PERSONAS[state.persona]
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
        channels = PERSONAS[state.persona].channels
        event = {
            "type": "order_placed",
            "account_id": state.account.account_id,
            "contact_id": contact.contact_id,
            "order_id": order_id,
            "currency": "EUR",
            "total": total,
            "lines": lines,
            "channel": "web" if category_hint else weighted(rng, channels),
        }
        if state.member(at) and total >= 1:
            points = min(10_000_000, int(total))
            action = functools.partial(
                self._points_earned, state, points, "purchase", contact.contact_id
            )
            self._schedule(at + timedelta(minutes=rng.uniform(1, 30)), action)
        if rng.random() < RETURN_PROBABILITY:
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
        p_open = theme.open_rate * (0.3 + 1.4 * resp) * ROLE_ENGAGEMENT[contact.role]
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
