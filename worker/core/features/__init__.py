"""Per-account feature state, its update per event, and the feature catalogue.

Modules: ``state`` (the state and the shared facts), ``inputs`` (how each event type
changes a state), ``windows`` (day-window sums), ``catalogue`` (every feature and what
it reads), ``view`` (the catalogue of one account at a day) and ``vocabulary`` (what
conditions may refer to).

Pure: no I/O, no clocks. ``AccountState`` is what the store persists for an
account; ``apply`` folds one input event into it (idempotently); ``FeatureView``
computes the catalogue's features lazily at a given time so that a rule only
pays for the features it reads.

Windows are exact at day granularity: the 90-day window at day ``t`` covers the
days ``t-89 .. t``. Activity older than the longest window is pruned, which keeps
the state small and bounded.

Examples
--------
>>> from datetime import datetime, UTC
>>> from worker.core.events import OrderPlaced
>>> state = AccountState("ACME")
>>> order = OrderPlaced(event_id="e1", occurred_at=datetime(2026, 3, 1, tzinfo=UTC),
...                     account_id="ACME", order_id="o1", total=250.0)
>>> apply(state, order)
True
>>> apply(state, order)  # the same event again changes nothing
False
>>> view = FeatureView(state, day_of(datetime(2026, 3, 31, tzinfo=UTC)))
>>> view["revenue_30d"], view["revenue_90d"], view["recency_days"]
(0.0, 250.0, 30)
"""

from worker.core.features.catalogue import (
    DAILY_INPUT,
    FEATURE_INPUTS,
    FEATURES,
    FUNCTION_INPUTS,
    GLOBAL_FEATURES,
    GLOBAL_INPUT,
    Feature,
    GlobalFeature,
)
from worker.core.features.inputs import APPLIERS, TOUCHES, apply
from worker.core.features.state import (
    CATEGORY_BUCKET_DAYS,
    HORIZON_DAYS,
    IMPORT_ID_PREFIX,
    NO_GLOBALS,
    RECENT_IDS_KEPT,
    ROLES,
    ROW_TABLES,
    AccountState,
    Globals,
    day_of,
    moment_of,
)
from worker.core.features.view import FeatureView
from worker.core.features.vocabulary import VOCABULARY
from worker.core.features.windows import category_shares

__all__ = [
    "APPLIERS",
    "CATEGORY_BUCKET_DAYS",
    "DAILY_INPUT",
    "FEATURES",
    "FEATURE_INPUTS",
    "FUNCTION_INPUTS",
    "GLOBAL_FEATURES",
    "GLOBAL_INPUT",
    "HORIZON_DAYS",
    "IMPORT_ID_PREFIX",
    "NO_GLOBALS",
    "RECENT_IDS_KEPT",
    "ROLES",
    "ROW_TABLES",
    "TOUCHES",
    "VOCABULARY",
    "AccountState",
    "Feature",
    "FeatureView",
    "GlobalFeature",
    "Globals",
    "apply",
    "category_shares",
    "day_of",
    "moment_of",
]
