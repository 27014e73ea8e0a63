"""Who the synthetic accounts are: industries, countries, roles, categories, personas."""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from worker.core.events import ContactRole

Persona = Literal["key_account", "regular", "occasional", "dormant", "new"]
EventDict = dict[str, Any]
#: ``(logical topic, event dict)``; the dict validates with ``worker.core.events.decode_input``.
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
ROLE_WEIGHTS = (35, 10, 20, 22, 13)
#: How likely a role is to engage with marketing relative to users/buyers.
ROLE_ENGAGEMENT: dict[str, float] = {
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
INDUSTRY_NEEDS: dict[str, dict[str, float]] = {
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

NAME_STEMS = (
    "Albers", "Alpen", "Atlas", "Becker", "Brandt", "Delta", "Dubois", "Evans", "Fischer",
    "Hansen", "Jansen", "Keller", "Kowalski", "Lambert", "Martin", "Meyer", "Nord", "Nowak",
    "Orion", "Peters", "Rhein", "Richter", "Rossi", "Schmidt", "Smith", "Summit", "Vector",
    "Vogel", "Wagner", "Weber",
)  # fmt: skip
INDUSTRY_WORDS: dict[str, tuple[str, ...]] = {
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
LEGAL_FORMS: dict[str, str] = {
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


PERSONAS: dict[str, _PersonaSpec] = {
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
DRIFT: dict[str, tuple[tuple[Persona, float], ...]] = {
    "key_account": (("regular", 1 / 4000),),
    "regular": (("dormant", 1 / 3000), ("key_account", 1 / 6000)),
    "occasional": (("regular", 1 / 2500), ("dormant", 1 / 3000)),
    "new": (("dormant", 1 / 3000),),
    "dormant": (("regular", 1 / 2500),),  # win-back; only once the account has stopped
}
WEEKDAY_FACTOR = (1.34, 1.34, 1.34, 1.34, 1.34, 0.15, 0.15)
MONTH_FACTOR = (0.9, 1.0, 1.1, 1.1, 1.05, 1.0, 0.9, 0.75, 1.1, 1.1, 1.05, 0.8)
TIERS = ((100_000, "platinum"), (25_000, "gold"), (5_000, "silver"), (0, "bronze"))
RETURN_PROBABILITY = 0.04


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
