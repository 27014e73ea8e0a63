"""A self-contained HTML segment report for marketing users.

:func:`render_report` turns segment profiles (:mod:`worker.core.profiles`) and the history of
drift reports (:mod:`worker.core.drift`, as objects or as ``segment_drift`` event dicts) into
ONE HTML page that works offline: plotly.js is embedded inline, there are no image or
other files. Per segment family the page shows

- the segment sizes over time (or, without history, the current sizes),
- inflow and outflow per interval,
- each segment's feature profile as an index against all accounts (100 = average),
- a table with size, share of accounts and of revenue, top categories, buying-centre
  roles and a warning for segments too small to act on, plus the plain-language
  descriptions of each cluster family's clusters (keyed by family: the cluster models
  all number their clusters c1, c2, ...),
- the drift alarms of the family;

and, when the campaign trigger router recorded decisions, a section with the triggers
fired, delayed, held out and suppressed per day, and what suppressed each trigger
(:mod:`worker.ops.report.triggers`).

Every chart is a ``<div class="chart" data-family="...">``. Every text that comes from
data (segment ids, descriptions, categories, alarm messages) is HTML-escaped, in the page
and in the charts' labels.

Examples
--------
>>> from worker.core.profiles import SegmentProfile
>>> profile = SegmentProfile("value", "a", 2, 0.5, 900.0, 0.9, {"orders_365d": 3.0})
>>> page = render_report({profile.key: profile}, [], title="Q1 <draft>",
...                      include_plotlyjs=False)
>>> page.startswith("<!DOCTYPE html>"), 'data-family="value"' in page, "Q1 &lt;draft&gt;" in page
(True, True, True)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from worker.core.profiles import ALL_ACCOUNTS, SegmentProfile
from worker.ops.report.charts import (
    current_sizes,
    feature_profile,
    features_shown,
    flows,
    sizes_over_time,
)
from worker.ops.report.format import (
    CSS,
    FEATURE_LABELS,
    NONE,
    ROLE_LABELS,
    Charts,
    ProfileLike,
    as_profile,
    escape,
    format_feature,
    history_dict,
    number,
    percent,
)
from worker.ops.report.triggers import triggers_section

if TYPE_CHECKING:  # plotly is imported when a report is rendered, not with this module
    import plotly.graph_objects as go

__all__ = ["FEATURE_LABELS", "render_report", "write_report"]


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
        categories = ", ".join(f"{escape(c)} ({s:.0%})" for c, s in p.top_categories) or NONE
        roles = (
            ", ".join(
                f"{escape(ROLE_LABELS.get(r, r))} ({n:,} account{'' if n == 1 else 's'})"
                for r, n in p.roles
            )
            or NONE
        )
        note = (
            '<span class="warn" title="Too few accounts to act on or to measure reliably">'
            "&#9888; small segment</span>"
            if p.small
            else ""
        )
        cells = [
            f"<td>{escape(p.segment_id)}</td>",
            f'<td class="num">{p.size:,}</td>',
            f'<td class="num">{percent(p.share_of_accounts)}</td>',
            f'<td class="num">{number(p.revenue_365d)}</td>',
            f'<td class="num">{percent(p.share_of_revenue)}</td>',
            f"<td>{categories}</td>",
            f"<td>{roles}</td>",
            f"<td>{note}</td>",
        ]
        if described:
            assert descriptions is not None
            cells.insert(1, f"<td>{escape(descriptions.get(p.segment_id, NONE))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    for segment_id, text in (descriptions or {}).items():
        if segment_id not in shown:
            rows.append(
                f"<tr><td>{escape(segment_id)}</td><td>{escape(text)}</td>"
                '<td class="num">0</td>' + "<td></td>" * 6 + "</tr>"
            )
    return (
        f'<table data-family="{escape(family)}"><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _means_table(profiles: Sequence[SegmentProfile], overall: SegmentProfile | None) -> str:
    names = features_shown(profiles)
    if not names:
        return ""
    head = "".join(f'<th class="num">{escape(FEATURE_LABELS.get(n, n))}</th>' for n in names)
    rows = [
        f"<tr><td>{escape(p.segment_id if p.key != ALL_ACCOUNTS else 'all accounts')}</td>"
        + "".join(f'<td class="num">{format_feature(n, p.means.get(n))}</td>' for n in names)
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
        f"<li><time>{escape(end)}</time>: {escape(alarm.get('message', ''))}</li>"
        for end, alarm in list(alarms)[-limit:]
    ]
    return f'<ul class="alarms">{"".join(reversed(items))}</ul>' if items else ""


def _family_section(
    family: str,
    profiles: Sequence[SegmentProfile],
    history: Sequence[Mapping[str, Any]],
    overall: SegmentProfile | None,
    descriptions: Mapping[str, str] | None,
    charts: Charts,
    anchor: str,
) -> str:
    parts = [
        f'<section id="{escape(anchor)}" data-family="{escape(family)}">',
        f"<h2>{escape(family)}</h2>",
    ]
    small = sum(p.small for p in profiles)
    summary = f"{len(profiles)} segment{'' if len(profiles) == 1 else 's'}"
    if small:
        summary += f", {small} of them small (too few accounts to act on reliably)"
    parts.append(f'<p class="meta">{escape(summary)}</p>')
    if profiles:
        parts.append(_table(family, profiles, descriptions))
        parts.append(_means_table(profiles, overall))
    elif descriptions:
        parts.append(_table(family, [], descriptions))
    figures: list[tuple[str, go.Figure | None]] = [
        ("sizes", sizes_over_time(family, history)),
        ("flows", flows(family, history)),
    ]
    if figures[0][1] is None and profiles:
        figures[0] = ("sizes", current_sizes(profiles))
    figures.append(("profile", feature_profile(profiles, overall)))
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
    trigger_counts: Mapping[tuple[str, str, str, str], int] | None = None,
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
        (``worker.core.clustering.describe`` of the family's model). The families' ids
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
    trigger_counts
        The campaign trigger router's decisions per ``(UTC date, trigger, outcome,
        rule)`` (``TriggerStore.daily_counts``): a triggers section when there are any.
    """
    items = profiles.values() if isinstance(profiles, Mapping) else profiles
    by_family: dict[str, list[SegmentProfile]] = {}
    for profile in map(as_profile, items):
        by_family.setdefault(profile.family, []).append(profile)
    timeline = sorted((history_dict(h) for h in history), key=lambda h: str(h["interval_end"]))
    families = set(by_family)
    for h in timeline:
        for part in ("sizes", "inflow", "outflow"):
            families.update(h.get(part, {}))
    described = {family: texts for family, texts in (cluster_descriptions or {}).items() if texts}
    families.update(described)
    reference = None if overall is None else as_profile(overall)

    charts = Charts()
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
    triggers = triggers_section(trigger_counts or {}, charts)
    links = [*anchors.items(), *([("campaign triggers", "campaign-triggers")] if triggers else [])]
    nav = " ".join(f'<a href="#{escape(a)}">{escape(f)}</a>' for f, a in links)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f"<style>{CSS}</style>",
            _plotly_script(include_plotlyjs),
            "</head>",
            "<body><main>",
            f"<header><h1>{escape(title)}</h1>",
            f'<p class="meta">{escape(" · ".join(meta))}</p>' if meta else "",
            f"<nav>{nav}</nav></header>",
            overview,
            *sections,
            triggers,
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
