"""What segment conditions (and trigger conditions) may refer to: the catalogue's
features with their kinds, and the ``share("category")`` function."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from worker.core.conditions import Function, Vocabulary
from worker.core.features.catalogue import FEATURES, GLOBAL_FEATURES

_CATEGORY = re.compile(r"[a-z0-9_]{1,64}")


def _share(features: Mapping[str, Any], category: str) -> Any:
    key = _share_key(category)
    if key is None:
        return None
    try:  # as features.get(key), without the Python-level call of FeatureView.get
        return features[key]
    except KeyError:
        return None


@functools.lru_cache(maxsize=1024)
def _share_key(category: str) -> str | None:
    """``share.<category>``, or None for anything but a category name (a condition's text
    must address nothing else). Cached: conditions pass the same few constants."""
    return f"share.{category}" if _CATEGORY.fullmatch(category) else None


#: What segment conditions may refer to.
VOCABULARY = Vocabulary(
    features={
        **{name: feature.kind for name, feature in FEATURES.items()},
        **{name: feature.kind for name, feature in GLOBAL_FEATURES.items()},
    },
    functions={
        "share": Function(
            impl=_share,
            arg_kinds=("string",),
            result_kind="number",
            description='Share (0..1) of a category in trailing-year spend, e.g. share("tools")',
        )
    },
)
