"""The report's charts (plotly): sizes over time, inflow and outflow, feature profiles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from worker.core.profiles import PROFILE_FEATURES, SegmentProfile
from worker.ops.report.format import (
    FEATURE_LABELS,
    format_feature,
    label,
    layout,
    percent,
    plot_time,
)

if TYPE_CHECKING:  # plotly is imported when a report is rendered, not with this module
    import plotly.graph_objects as go


def sizes_over_time(family: str, history: Sequence[Mapping[str, Any]]) -> go.Figure | None:
    import plotly.graph_objects as go

    points = [(plot_time(h["interval_end"]), h.get("sizes", {}).get(family)) for h in history]
    points = [(end, sizes) for end, sizes in points if sizes is not None]
    if not points:
        return None
    segments = sorted({s for _, sizes in points for s in sizes})
    figure = go.Figure(
        layout=layout(
            "Segment sizes over time",
            yaxis={"title": "accounts"},
            xaxis={"title": "end of interval (UTC)"},
        )
    )
    for segment in segments:
        figure.add_trace(
            go.Scatter(
                x=[end for end, _ in points],
                y=[sizes.get(segment, 0) for _, sizes in points],
                mode="lines+markers",
                name=label(segment),
            )
        )
    return figure


def flows(family: str, history: Sequence[Mapping[str, Any]]) -> go.Figure | None:
    import plotly.graph_objects as go

    ends = [plot_time(h["interval_end"]) for h in history]
    inflow = [h.get("inflow", {}).get(family, {}) for h in history]
    outflow = [h.get("outflow", {}).get(family, {}) for h in history]
    segments = sorted({s for flows in (*inflow, *outflow) for s in flows})
    if not segments:
        return None
    figure = go.Figure(
        layout=layout(
            "Inflow (up) and outflow (down) per interval",
            barmode="relative",
            yaxis={"title": "accounts"},
            xaxis={"title": "end of interval (UTC)"},
        )
    )
    import plotly.io as pio

    colors = pio.templates["plotly_white"].layout.colorway or ("#636efa",)
    for index, segment in enumerate(segments):
        color = colors[index % len(colors)]
        figure.add_trace(
            go.Bar(
                x=ends,
                y=[flows.get(segment, 0) for flows in inflow],
                name=label(f"{segment} in"),
                legendgroup=label(segment),
                marker_color=color,
            )
        )
        figure.add_trace(
            go.Bar(
                x=ends,
                y=[-flows.get(segment, 0) for flows in outflow],
                name=label(f"{segment} out"),
                legendgroup=label(segment),
                marker_color=color,
                opacity=0.55,
            )
        )
    return figure


def current_sizes(profiles: Sequence[SegmentProfile]) -> go.Figure:
    import plotly.graph_objects as go

    figure = go.Figure(layout=layout("Segment sizes now", yaxis={"title": "accounts"}))
    figure.add_trace(
        go.Bar(
            x=[label(p.segment_id) for p in profiles],
            y=[p.size for p in profiles],
            text=[percent(p.share_of_accounts) for p in profiles],
            name="accounts",
        )
    )
    return figure


def _references(
    profiles: Sequence[SegmentProfile], overall: SegmentProfile | None
) -> dict[str, float]:
    """Per feature the value that indexes to 100: all accounts' mean, or without it the
    size-weighted mean of the segments' means."""
    references: dict[str, float] = {}
    for name in features_shown(profiles):
        if overall is not None:
            value = overall.means.get(name)
        else:
            weighted = [(m, p.size) for p in profiles if (m := p.means.get(name)) is not None]
            total = sum(size for _, size in weighted)
            value = sum(m * size for m, size in weighted) / total if total else None
        if value is not None and value != 0:
            references[name] = value
    return references


def features_shown(profiles: Sequence[SegmentProfile]) -> list[str]:
    names = dict.fromkeys(n for n in PROFILE_FEATURES if any(n in p.means for p in profiles))
    for p in profiles:
        names.update(dict.fromkeys(p.means))
    return list(names)


def feature_profile(
    profiles: Sequence[SegmentProfile], overall: SegmentProfile | None
) -> go.Figure | None:
    import plotly.graph_objects as go

    references = _references(profiles, overall)
    if not references or not profiles:
        return None
    names = list(references)
    reference = "all accounts" if overall is not None else "the family's average"
    figure = go.Figure(
        layout=layout(
            f"Feature profile: index against {reference} (100 = average)",
            barmode="group",
            yaxis={"title": "index"},
            shapes=[
                {
                    "type": "line",
                    "xref": "paper",
                    "x0": 0,
                    "x1": 1,
                    "y0": 100,
                    "y1": 100,
                    "line": {"dash": "dot", "color": "#7b8794"},
                }
            ],
        )
    )
    labels = [label(FEATURE_LABELS.get(n, n)) for n in names]
    for p in profiles:
        values = [p.means.get(n) for n in names]
        figure.add_trace(
            go.Bar(
                x=labels,
                y=[None if v is None else round(100 * v / references[n], 1) for n, v in
                   zip(names, values, strict=True)],
                customdata=[label(format_feature(n, v)) for n, v in
                            zip(names, values, strict=True)],
                hovertemplate="%{x}: index %{y} (mean %{customdata})",
                name=label(p.segment_id),
            )
        )  # fmt: skip
    return figure
