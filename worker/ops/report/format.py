"""What the report's charts and tables share: labels, number formats, escaping, styles."""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from worker.core.profiles import SegmentProfile

if TYPE_CHECKING:  # plotly is imported when a report is rendered, not with this module
    import plotly.graph_objects as go


#: How the profile features are labelled for readers.
FEATURE_LABELS: dict[str, str] = {
    "revenue_365d": "Revenue, last 12 months",
    "orders_365d": "Orders, last 12 months",
    "recency_days": "Days since last order",
    "aov_365d": "Average order value",
    "points_earned_365d": "Loyalty points earned, 12 months",
    "response_rate_365d": "Campaign response rate",
    "momentum_90d": "Revenue momentum (90 days)",
}
ROLE_LABELS = {
    "user": "users",
    "buyer": "buyers",
    "influencer": "influencers",
    "decider": "deciders",
    "gatekeeper": "gatekeepers",
}
CHART_CONFIG = {"responsive": True, "displaylogo": False}
LAYOUT = {
    "template": "plotly_white",
    "height": 380,
    "margin": {"l": 60, "r": 20, "t": 50, "b": 60},
    "legend": {"orientation": "h", "y": -0.2},
}
ProfileLike = SegmentProfile | Mapping[str, Any]
#: Shown for a missing value (an en dash).
NONE = "\u2013"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2933;
       margin: 0; background: #f5f7fa; line-height: 1.45; }
main { max-width: 1150px; margin: 0 auto; padding: 24px; }
header { margin-bottom: 16px; }
h1 { margin: 0 0 4px; font-size: 1.7rem; }
h2 { margin-top: 0; font-size: 1.35rem; }
h3 { font-size: 1.05rem; margin: 20px 0 8px; }
.meta { color: #52606d; margin: 0; }
section { background: #fff; border-radius: 8px; padding: 20px 24px; margin-bottom: 24px;
          box-shadow: 0 1px 3px rgba(0,0,0,0.08); }
nav a { margin-right: 12px; }
table { border-collapse: collapse; width: 100%; font-size: 0.92rem; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #e4e7eb;
         vertical-align: top; }
th { background: #f0f4f8; font-weight: 600; }
td.num, th.num { text-align: right; white-space: nowrap; }
.warn { display: inline-block; background: #fff3c4; color: #8d2b0b; border-radius: 4px;
        padding: 1px 6px; font-size: 0.85rem; }
.alarms li { margin-bottom: 4px; }
.chart { min-height: 380px; margin: 8px 0 16px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 12px; }
.note { color: #52606d; font-size: 0.88rem; }
details { margin-top: 12px; }
"""


def escape(text: Any) -> str:
    """HTML-escape any value for element content and attribute values."""
    return html.escape(str(text), quote=True)


def label(text: Any) -> str:
    """Text for a plotly label: plotly renders a subset of HTML tags in labels and decodes
    entities, so escaping shows the text literally and never as markup."""
    return html.escape(str(text), quote=False)


def as_profile(item: ProfileLike) -> SegmentProfile:
    return item if isinstance(item, SegmentProfile) else SegmentProfile.from_dict(item)


def history_dict(item: Any) -> dict[str, Any]:
    if hasattr(item, "to_event_dict"):
        return dict(item.to_event_dict())
    return dict(item)


def percent(value: float | None) -> str:
    return NONE if value is None else f"{value:.1%}"


def number(value: float | None) -> str:
    if value is None:
        return NONE
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def format_feature(name: str, value: float | None) -> str:
    if value is not None and name == "response_rate_365d":
        return percent(value)
    return number(value)


class Charts:
    """Numbers the chart divs of a page and renders each with its plotly JSON."""

    def __init__(self) -> None:
        self.count = 0

    def render(self, family: str, kind: str, figure: go.Figure) -> str:
        import plotly.io as pio

        self.count += 1
        div_id = f"chart-{self.count}"
        # plotly's JSON escapes <, > and / (as \u003c ...), so it is safe inside <script>.
        spec = pio.to_json(figure, validate=True)
        return (
            f'<div class="chart" id="{div_id}" data-family="{escape(family)}" '
            f'data-chart="{escape(kind)}"></div>\n'
            f"<script>(function () {{ var figure = {spec}; "
            f'Plotly.newPlot("{div_id}", figure.data, figure.layout, '
            f"{pio.json.to_json_plotly(CHART_CONFIG)}); }})();</script>"
        )


def plot_time(moment: Any) -> str:
    """An interval end as plotly.js reads dates: UTC, without an offset."""
    parsed = moment if isinstance(moment, datetime) else datetime.fromisoformat(str(moment))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def layout(title: str, **more: Any) -> dict[str, Any]:
    return {**LAYOUT, "title": {"text": label(title)}, **more}
