"""Synthetic accounts: a firmographic profile, contacts in buying-centre roles, a persona."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

from worker.core.events import ContactRole
from worker.devtools.generator.catalogue import (
    CATEGORIES,
    COUNTRIES,
    INDUSTRIES,
    INDUSTRY_NEEDS,
    INDUSTRY_WORDS,
    KEY_ACCOUNT_SHARE,
    LEGAL_FORMS,
    NAME_STEMS,
    PERSONAS,
    ROLE_WEIGHTS,
    ROLES,
    Persona,
)


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
        return self.annual_potential * PERSONAS[self.persona].wallet_share


def weighted(rng: random.Random, weights: Mapping[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _company_name(rng: random.Random, industry: str, country: str) -> str:
    stem = rng.choice(NAME_STEMS)
    if rng.random() < 0.3:
        stem = f"{stem} & {rng.choice(NAME_STEMS)}"
    return f"{stem} {rng.choice(INDUSTRY_WORDS[industry])} {LEGAL_FORMS.get(country, 'Ltd')}"


def _contacts(
    rng: random.Random, account_id: str, employees: int, persona: str
) -> tuple[SyntheticContact, ...]:
    count = 1 + int(math.log10(employees)) + rng.randint(-1, 1) + (persona == "key_account")
    count = max(1, min(6, count))
    roles: list[ContactRole] = ["buyer"]
    roles += rng.choices(ROLES, weights=ROLE_WEIGHTS, k=count - 1)
    return tuple(
        SyntheticContact(f"{account_id}-C{n}", role, marketing_opt_in=rng.random() < 0.7)
        for n, role in enumerate(roles, 1)
    )


def _category_weights(rng: random.Random, industry: str) -> tuple[tuple[str, float], ...]:
    needs = INDUSTRY_NEEDS[industry]
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
        industry = weighted(rng, INDUSTRIES)
        country = weighted(rng, COUNTRIES)
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
    spec = PERSONAS[persona]
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
