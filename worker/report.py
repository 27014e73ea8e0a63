"""A self-contained HTML segment report for marketing users.

:func:`render_report` turns segment profiles (:mod:`worker.profiles`) and the history of
drift reports (:mod:`worker.drift`, as objects or as ``segment_drift`` event dicts) into
ONE HTML page that works offline: plotly.js is embedded inline, there are no image or
other files. Per segment family the page shows

- the segment sizes over time (or, without history, the current sizes),
- inflow and outflow per interval,
- each segment's feature profile as an index against all accounts (100 = average),
- a table with size, share of accounts and of revenue, top categories, buying-centre
  roles and a warning for segments too small to act on, plus the plain-language
  descriptions of each cluster family's clusters (keyed by family: the cluster models
  all number their clusters c1, c2, ...),
- the drift alarms of the family.

Every chart is a ``<div class="chart" data-family="...">``. Every text that comes from
data (segment ids, descriptions, categories, alarm messages) is HTML-escaped, in the page
and in the charts' labels.

Examples
--------
>>> from worker.profiles import SegmentProfile
>>> profile = SegmentProfile("value", "a", 2, 0.5, 900.0, 0.9, {"orders_365d": 3.0})
>>> page = render_report({profile.key: profile}, [], title="Q1 <draft>",
...                      include_plotlyjs=False)
>>> page.startswith("<!DOCTYPE html>"), 'data-family="value"' in page, "Q1 &lt;draft&gt;" in page
(True, True, True)
"""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from worker.profiles import ALL_ACCOUNTS, PROFILE_FEATURES, SegmentProfile

if TYPE_CHECKING:  # plotly is imported when a report is rendered, not with this module
    import plotly.graph_objects as go

__all__ = ["FEATURE_LABELS", "render_report", "write_report"]

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
_CHART_CONFIG = {"responsive": True, "displaylogo": False}
_LAYOUT = {
    "template": "plotly_white",
    "height": 380,
    "margin": {"l": 60, "r": 20, "t": 50, "b": 60},
    "legend": {"orientation": "h", "y": -0.2},
}
ProfileLike = SegmentProfile | Mapping[str, Any]
#: Shown for a missing value (an en dash).
_NONE = "\u2013"

_CSS = """
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


def _e(text: Any) -> str:
    """HTML-escape any value for element content and attribute values."""
    return html.escape(str(text), quote=True)


def _label(text: Any) -> str:
    """Text for a plotly label: plotly renders a subset of HTML tags in labels and decodes
    entities, so escaping shows the text literally and never as markup."""
    return html.escape(str(text), quote=False)


def _profile(item: ProfileLike) -> SegmentProfile:
    return item if isinstance(item, SegmentProfile) else SegmentProfile.from_dict(item)


def _history_dict(item: Any) -> dict[str, Any]:
    if hasattr(item, "to_event_dict"):
        return dict(item.to_event_dict())
    return dict(item)


def _percent(value: float | None) -> str:
    return _NONE if value is None else f"{value:.1%}"


def _number(value: float | None) -> str:
    if value is None:
        return _NONE
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def _format_feature(name: str, value: float | None) -> str:
    if value is not None and name == "response_rate_365d":
        return _percent(value)
    return _number(value)


class _Charts:
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
            f'<div class="chart" id="{div_id}" data-family="{_e(family)}" '
            f'data-chart="{_e(kind)}"></div>\n'
            f"<script>(function () {{ var figure = {spec}; "
            f'Plotly.newPlot("{div_id}", figure.data, figure.layout, '
            f"{pio.json.to_json_plotly(_CHART_CONFIG)}); }})();</script>"
        )


def _plot_time(moment: Any) -> str:
    """An interval end as plotly.js reads dates: UTC, without an offset."""
    parsed = moment if isinstance(moment, datetime) else datetime.fromisoformat(str(moment))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def _layout(title: str, **more: Any) -> dict[str, Any]:
    return {**_LAYOUT, "title": {"text": _label(title)}, **more}


# ------------------------------------------------------------------------------ charts


def _sizes_over_time(family: str, history: Sequence[Mapping[str, Any]]) -> go.Figure | None:
    import plotly.graph_objects as go

    points = [(_plot_time(h["interval_end"]), h.get("sizes", {}).get(family)) for h in history]
    points = [(end, sizes) for end, sizes in points if sizes is not None]
    if not points:
        return None
    segments = sorted({s for _, sizes in points for s in sizes})
    figure = go.Figure(
        layout=_layout(
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
                name=_label(segment),
            )
        )
    return figure


def _flows(family: str, history: Sequence[Mapping[str, Any]]) -> go.Figure | None:
    import plotly.graph_objects as go

    ends = [_plot_time(h["interval_end"]) for h in history]
    inflow = [h.get("inflow", {}).get(family, {}) for h in history]
    outflow = [h.get("outflow", {}).get(family, {}) for h in history]
    segments = sorted({s for flows in (*inflow, *outflow) for s in flows})
    if not segments:
        return None
    figure = go.Figure(
        layout=_layout(
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
                name=_label(f"{segment} in"),
                legendgroup=_label(segment),
                marker_color=color,
            )
        )
        figure.add_trace(
            go.Bar(
                x=ends,
                y=[-flows.get(segment, 0) for flows in outflow],
                name=_label(f"{segment} out"),
                legendgroup=_label(segment),
                marker_color=color,
                opacity=0.55,
            )
        )
    return figure


def _current_sizes(profiles: Sequence[SegmentProfile]) -> go.Figure:
    import plotly.graph_objects as go

    figure = go.Figure(layout=_layout("Segment sizes now", yaxis={"title": "accounts"}))
    figure.add_trace(
        go.Bar(
            x=[_label(p.segment_id) for p in profiles],
            y=[p.size for p in profiles],
            text=[_percent(p.share_of_accounts) for p in profiles],
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
    for name in _features(profiles):
        if overall is not None:
            value = overall.means.get(name)
        else:
            weighted = [(m, p.size) for p in profiles if (m := p.means.get(name)) is not None]
            total = sum(size for _, size in weighted)
            value = sum(m * size for m, size in weighted) / total if total else None
        if value is not None and value != 0:
            references[name] = value
    return references


def _features(profiles: Sequence[SegmentProfile]) -> list[str]:
    names = dict.fromkeys(n for n in PROFILE_FEATURES if any(n in p.means for p in profiles))
    for p in profiles:
        names.update(dict.fromkeys(p.means))
    return list(names)


def _feature_profile(
    profiles: Sequence[SegmentProfile], overall: SegmentProfile | None
) -> go.Figure | None:
    import plotly.graph_objects as go

    references = _references(profiles, overall)
    if not references or not profiles:
        return None
    names = list(references)
    reference = "all accounts" if overall is not None else "the family's average"
    figure = go.Figure(
        layout=_layout(
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
    labels = [_label(FEATURE_LABELS.get(n, n)) for n in names]
    for p in profiles:
        values = [p.means.get(n) for n in names]
        figure.add_trace(
            go.Bar(
                x=labels,
                y=[None if v is None else round(100 * v / references[n], 1) for n, v in
                   zip(names, values, strict=True)],
                customdata=[_label(_format_feature(n, v)) for n, v in
                            zip(names, values, strict=True)],
                hovertemplate="%{x}: index %{y} (mean %{customdata})",
                name=_label(p.segment_id),
            )
        )  # fmt: skip
    return figure


# ------------------------------------------------------------------------------- HTML


def _table(
    family: str,
    profiles: Sequence[SegmentProfile],
    descriptions: Mapping[str, str] | None,
) -> str:
    described = descriptions is not None
    head = [
        "<th>Segment</th>",
        '<th class="num">Accounts</th>',
        '<th class="num">Share of accounts</th>',
        '<th class="num">Revenue, 12 months</th>',
        '<th class="num">Share of revenue</th>',
        "<th>Top categories (share of spend)</th>",
        "<th>Engaged buying-centre roles, 90 days</th>",
        "<th>Note</th>",
    ]
    if described:
        head.insert(1, "<th>Description</th>")
    rows = []
    shown = set()
    for p in profiles:
        shown.add(p.segment_id)
        categories = ", ".join(f"{_e(c)} ({s:.0%})" for c, s in p.top_categories) or _NONE
        roles = (
            ", ".join(
                f"{_e(ROLE_LABELS.get(r, r))} ({n:,} account{'' if n == 1 else 's'})"
                for r, n in p.roles
            )
            or _NONE
        )
        note = (
            '<span class="warn" title="Too few accounts to act on or to measure reliably">'
            "&#9888; small segment</span>"
            if p.small
            else ""
        )
        cells = [
            f"<td>{_e(p.segment_id)}</td>",
            f'<td class="num">{p.size:,}</td>',
            f'<td class="num">{_percent(p.share_of_accounts)}</td>',
            f'<td class="num">{_number(p.revenue_365d)}</td>',
            f'<td class="num">{_percent(p.share_of_revenue)}</td>',
            f"<td>{categories}</td>",
            f"<td>{roles}</td>",
            f"<td>{note}</td>",
        ]
        if described:
            assert descriptions is not None
            cells.insert(1, f"<td>{_e(descriptions.get(p.segment_id, _NONE))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    for segment_id, text in (descriptions or {}).items():
        if segment_id not in shown:
            rows.append(
                f"<tr><td>{_e(segment_id)}</td><td>{_e(text)}</td>"
                '<td class="num">0</td>' + "<td></td>" * 6 + "</tr>"
            )
    return (
        f'<table data-family="{_e(family)}"><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _means_table(profiles: Sequence[SegmentProfile], overall: SegmentProfile | None) -> str:
    names = _features(profiles)
    if not names:
        return ""
    head = "".join(f'<th class="num">{_e(FEATURE_LABELS.get(n, n))}</th>' for n in names)
    rows = [
        f"<tr><td>{_e(p.segment_id if p.key != ALL_ACCOUNTS else 'all accounts')}</td>"
        + "".join(f'<td class="num">{_format_feature(n, p.means.get(n))}</td>' for n in names)
        + "</tr>"
        for p in [*profiles, *([overall] if overall is not None else [])]
    ]
    return (
        "<details><summary>Feature averages per segment</summary>"
        f"<table><thead><tr><th>Segment</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        '<p class="note">Averages over the accounts that have a value (e.g. the response '
        "rate only over accounts that were sent a campaign).</p></details>"
    )


def _alarm_list(alarms: Iterable[tuple[str, Mapping[str, Any]]], limit: int = 20) -> str:
    items = [
        f"<li><time>{_e(end)}</time>: {_e(alarm.get('message', ''))}</li>"
        for end, alarm in list(alarms)[-limit:]
    ]
    return f'<ul class="alarms">{"".join(reversed(items))}</ul>' if items else ""


def _family_section(
    family: str,
    profiles: Sequence[SegmentProfile],
    history: Sequence[Mapping[str, Any]],
    overall: SegmentProfile | None,
    descriptions: Mapping[str, str] | None,
    charts: _Charts,
    anchor: str,
) -> str:
    parts = [f'<section id="{_e(anchor)}" data-family="{_e(family)}">', f"<h2>{_e(family)}</h2>"]
    small = sum(p.small for p in profiles)
    summary = f"{len(profiles)} segment{'' if len(profiles) == 1 else 's'}"
    if small:
        summary += f", {small} of them small (too few accounts to act on reliably)"
    parts.append(f'<p class="meta">{_e(summary)}</p>')
    if profiles:
        parts.append(_table(family, profiles, descriptions))
        parts.append(_means_table(profiles, overall))
    elif descriptions:
        parts.append(_table(family, [], descriptions))
    figures: list[tuple[str, go.Figure | None]] = [
        ("sizes", _sizes_over_time(family, history)),
        ("flows", _flows(family, history)),
    ]
    if figures[0][1] is None and profiles:
        figures[0] = ("sizes", _current_sizes(profiles))
    figures.append(("profile", _feature_profile(profiles, overall)))
    rendered = [charts.render(family, kind, fig) for kind, fig in figures if fig is not None]
    if rendered:
        parts.append('<div class="grid">' + "".join(rendered[:2]) + "</div>")
        parts.extend(rendered[2:])
    alarms = _alarm_list(
        (h["interval_end"], a) for h in history for a in h.get("alarms", ())
        if a.get("family") == family
    )  # fmt: skip
    if alarms:
        parts.append(f"<h3>Drift alarms</h3>{alarms}")
    parts.append("</section>")
    return "\n".join(parts)


def _plotly_script(include_plotlyjs: bool | Literal["cdn"]) -> str:
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    if include_plotlyjs == "cdn":
        src = f"https://cdn.plot.ly/plotly-{get_plotlyjs_version()}.min.js"
        return f'<script src="{src}" charset="utf-8"></script>'
    if include_plotlyjs:
        return f'<script type="text/javascript">{get_plotlyjs()}</script>'
    return ""


def render_report(
    profiles: Mapping[Any, ProfileLike] | Iterable[ProfileLike],
    history: Sequence[Any] = (),
    cluster_descriptions: Mapping[str, Mapping[str, str]] | None = None,
    title: str = "Segment report",
    *,
    overall: ProfileLike | None = None,
    generated_at: datetime | None = None,
    include_plotlyjs: bool | Literal["cdn"] = True,
) -> str:
    """One self-contained HTML page about every segment family.

    Parameters
    ----------
    profiles
        Segment profiles (``ProfileBuilder.build()``, or their ``to_dict`` dicts), as a
        mapping or any iterable.
    history
        Drift reports in time order: ``DriftReport`` objects or ``segment_drift`` event dicts.
    cluster_descriptions
        Per cluster family, the plain-language description of each cluster id
        (``worker.clustering.describe`` of the family's model). The families' ids
        overlap, so a description is only ever looked up within its family.
    title
        Page title.
    overall
        The profile of all accounts (``ProfileBuilder.overall()``): the reference of the
        feature index; without it, the size-weighted average of the family's segments.
    generated_at
        Shown under the title.
    include_plotlyjs
        ``True``: plotly.js inline (works offline, ~4.8 MB); ``"cdn"``: a script tag;
        ``False``: none (the caller provides it).
    """
    items = profiles.values() if isinstance(profiles, Mapping) else profiles
    by_family: dict[str, list[SegmentProfile]] = {}
    for profile in map(_profile, items):
        by_family.setdefault(profile.family, []).append(profile)
    timeline = sorted((_history_dict(h) for h in history), key=lambda h: str(h["interval_end"]))
    families = set(by_family)
    for h in timeline:
        for part in ("sizes", "inflow", "outflow"):
            families.update(h.get(part, {}))
    described = {family: texts for family, texts in (cluster_descriptions or {}).items() if texts}
    families.update(described)
    reference = None if overall is None else _profile(overall)

    charts = _Charts()
    sections = []
    anchors = {family: f"family-{index}" for index, family in enumerate(sorted(families))}
    for family, anchor in anchors.items():
        sections.append(
            _family_section(
                family,
                by_family.get(family, []),
                timeline,
                reference,
                described.get(family),
                charts,
                anchor,
            )
        )

    meta = []
    if generated_at is not None:
        meta.append(f"Generated {generated_at:%Y-%m-%d %H:%M %Z}".strip())
    if reference is not None:
        meta.append(f"{reference.size:,} accounts")
    if timeline:
        start = timeline[0].get("interval_start") or timeline[0]["interval_end"]
        meta.append(f"history {start} to {timeline[-1]['interval_end']}")
    overview = ""
    if timeline:
        latest = timeline[-1]
        unassigned = [a for a in latest.get("alarms", ()) if not a.get("family")]
        alarms = _alarm_list((latest["interval_end"], a) for a in unassigned)
        if alarms:
            overview = (
                '<section id="feature-drift"><h2>Feature drift, latest interval</h2>'
                f"{alarms}</section>"
            )
    nav = " ".join(f'<a href="#{_e(a)}">{_e(f)}</a>' for f, a in anchors.items())
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title>",
            f"<style>{_CSS}</style>",
            _plotly_script(include_plotlyjs),
            "</head>",
            "<body><main>",
            f"<header><h1>{_e(title)}</h1>",
            f'<p class="meta">{_e(" · ".join(meta))}</p>' if meta else "",
            f"<nav>{nav}</nav></header>",
            overview,
            *sections,
            "</main></body>",
            "</html>",
        ]
    )


def write_report(path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Path:
    """Render the report (same arguments as :func:`render_report`) and write it to
    ``path`` atomically (a temporary file renamed into place). Returns the path."""
    target = Path(path)
    page = render_report(*args, **kwargs)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(page)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
