"""The space a clustering lives in: named dimensions, how each is prepared, the shipped specs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Transform = Literal["identity", "log1p"]
#: How :func:`describe` words a dimension: an adjective before the spec's noun
#: ("high-value buyers"), a clause after it ("strong campaign response"), or one of the
#: things the cluster is "focused on" (only high values are mentioned).
Style = Literal["adjective", "clause", "focus"]


@dataclass(frozen=True)
class Dimension:
    """One coordinate of a feature vector: where it comes from and how it is prepared.

    A missing, ``None`` or non-finite feature becomes ``default`` (original units); the value
    is then clipped to ``[lower, upper]`` and transformed (``log1p`` for skewed amounts).
    ``high`` / ``low`` / ``none`` / ``figure`` are only used by :func:`describe` (an empty
    phrase is never mentioned); ``{very}`` in a phrase becomes "very " for a pronounced
    deviation, and "" otherwise; ``{name}`` becomes the dimension's name. ``none`` (a
    clause) replaces ``low`` when the cluster's typical value is nil: a group without
    orders is not "occasional" buyers.

    >>> Dimension("revenue_365d", transform="log1p").value(None)
    0.0
    >>> round(Dimension("revenue_365d", transform="log1p").value(-50.0), 6)  # net returns
    0.0
    >>> Dimension("recency_days", default=400, upper=400).value(900)
    400.0
    """

    name: str
    default: float = 0.0
    transform: Transform = "identity"
    lower: float | None = 0.0
    upper: float | None = None
    style: Style = "clause"
    high: str = "{very}high {name}"
    low: str = "{very}low {name}"
    figure: str = "{:.3g} " + "{name}"
    none: str = ""

    def __post_init__(self) -> None:
        if self.transform not in ("identity", "log1p"):
            raise ValueError(f"{self.name}: unknown transform {self.transform!r}")
        if self.transform == "log1p" and (self.lower is None or self.lower <= -1):
            raise ValueError(f"{self.name}: log1p needs lower > -1")
        if self.style not in ("adjective", "clause", "focus"):
            raise ValueError(f"{self.name}: unknown style {self.style!r}")

    def value(self, raw: Any) -> float:
        """The prepared coordinate of the raw feature value ``raw``."""
        x = float(self.default if raw is None else raw)
        if not math.isfinite(x):  # NaN or inf: as good as missing
            x = float(self.default)
        if self.lower is not None and x < self.lower:
            x = float(self.lower)
        if self.upper is not None and x > self.upper:
            x = float(self.upper)
        return math.log1p(x) if self.transform == "log1p" else x

    def original(self, value: float) -> float:
        """Back from the prepared coordinate to original units (inverse transform, clipped)."""
        x = math.expm1(value) if self.transform == "log1p" else value
        if self.lower is not None and x < self.lower:
            x = float(self.lower)
        if self.upper is not None and x > self.upper:
            x = float(self.upper)
        return x

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class FeatureSpec:
    """A named, ordered, fixed list of dimensions: the space one clustering lives in."""

    name: str
    dimensions: tuple[Dimension, ...]
    noun: str = "accounts"

    def __post_init__(self) -> None:
        names = self.names
        if not names or len(set(names)) != len(names):
            raise ValueError(f"spec {self.name!r}: dimension names must be non-empty, unique")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "noun": self.noun,
            "dimensions": [d.to_dict() for d in self.dimensions],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        dimensions = tuple(Dimension(**d) for d in data["dimensions"])
        return cls(name=data["name"], dimensions=dimensions, noun=data.get("noun", "accounts"))


#: Recency of an account that never ordered (or not within a long time): past the horizon.
RECENCY_NEVER = 400.0

#: Behaviour ("hard" segmentation): recency, monetary, frequency, points, campaign response.
#: Amounts are skewed, so they are log1p-transformed; a response rate of ``None`` (no
#: campaign sent) counts as no response.
BEHAVIOUR = FeatureSpec(
    name="behaviour",
    noun="buyers",
    dimensions=(
        Dimension(
            "recency_days", RECENCY_NEVER, "log1p", upper=RECENCY_NEVER, style="adjective",
            high="lapsed", low="{very}recent", figure="last order {:.0f} days ago",
        ),
        Dimension(
            "revenue_365d", 0.0, "log1p", style="adjective",
            high="{very}high-value", low="low-value", figure="{:,.0f} revenue/yr",
        ),
        Dimension(
            "orders_365d", 0.0, "log1p", style="adjective",
            high="{very}frequent", low="occasional", figure="{:.0f} orders/yr",
            none="no orders in the year",
        ),
        Dimension(
            "points_earned_365d", 0.0, "log1p",
            high="collect {very}many points", low="rarely collect points",
            figure="{:,.0f} points/yr",
        ),
        Dimension(
            "response_rate_365d", 0.0, upper=1.0,
            high="{very}strong campaign response", low="weak campaign response",
            figure="{:.0%} campaign response",
        ),
    ),
)  # fmt: skip

#: The product categories of the needs clustering (those of the demo generator).
DEFAULT_CATEGORIES: tuple[str, ...] = (
    "tools", "fasteners", "safety", "electrical", "cleaning",
    "office", "packaging", "hvac", "workwear", "it_hardware",
)  # fmt: skip


def needs_spec(categories: Iterable[str] = DEFAULT_CATEGORIES) -> FeatureSpec:
    """The needs space: each category's share (0..1) of trailing-year spend.

    >>> needs_spec(["tools", "office"]).names
    ('share.tools', 'share.office')
    """
    return FeatureSpec(
        name="needs",
        dimensions=tuple(
            Dimension(
                f"share.{c}", 0.0, upper=1.0, style="focus",
                high=c.replace("_", " "), low="", figure="{:.0%} " + c.replace("_", " "),
            )
            for c in categories
        ),
    )  # fmt: skip


#: Needs: category spend mix over :data:`DEFAULT_CATEGORIES`.
NEEDS = needs_spec()


def prepared_values(features: Mapping[str, Any], spec: FeatureSpec) -> list[float]:
    return [d.value(features.get(d.name)) for d in spec.dimensions]


def vectorize(features: Mapping[str, Any], spec: FeatureSpec) -> dict[str, float]:
    """The full, fixed feature vector of ``spec``: every dimension, always, in order.

    >>> vectorize({"orders_365d": 12, "response_rate_365d": None}, BEHAVIOUR)
    ... # doctest: +NORMALIZE_WHITESPACE
    {'recency_days': 5.993961427306569, 'revenue_365d': 0.0,
     'orders_365d': 2.5649493574615367, 'points_earned_365d': 0.0, 'response_rate_365d': 0.0}
    """
    return dict(zip(spec.names, prepared_values(features, spec), strict=True))
