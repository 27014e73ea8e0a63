"""The report's campaign triggers section: decisions per day, and per trigger why not.

The counts come from the trigger router (``TriggerStore.daily_counts``): decisions per
UTC day, trigger, outcome (fired, delayed, holdout, suppressed) and the rule that
decided (cooldown, cap, quiet_hours, suppressed_segment, ...; empty for a plain
firing). The section shows a stacked bar chart of the outcomes per day and a table per
trigger with its totals and what suppressed it.

Examples
--------
>>> from worker.ops.report.format import Charts
>>> counts = {("2026-03-02", "welcome_a", "fired", ""): 3,
...           ("2026-03-02", "welcome_a", "suppressed", "cooldown"): 2}
>>> html = triggers_section(counts, Charts())
>>> 'id="campaign-triggers"' in html, "cooldown 2" in html
(True, True)
>>> triggers_section({}, Charts())
''
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING

from worker.ops.report.format import Charts, escape, layout

if TYPE_CHECKING:  # plotly is imported when a report is rendered, not with this module
    import plotly.graph_objects as go

#: The outcomes in the order a reader follows them, with their chart colours.
OUTCOMES = {
    "fired": "#2a9d8f",
    "delayed": "#e9c46a",
    "holdout": "#8d99ae",
    "suppressed": "#e76f51",
}
#: How the rules that decided read for people.
RULE_LABELS = {
    "cooldown": "cooldown",
    "cap": "cap per account",
    "quiet_hours": "quiet hours",
    "suppressed_segment": "member of a suppressed segment",
    "condition": "condition false",
    "origin": "not an event (import, recompute, model)",
    "not_live": "not live (history)",
    "holdout": "holdout",
}

Counts = Mapping[tuple[str, str, str, str], int]


def decisions_per_day(counts: Counts) -> go.Figure:
    import plotly.graph_objects as go

    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    for (day, _trigger, outcome, _rule), count in counts.items():
        per_day[day][outcome] += count
    days = sorted(per_day)
    figure = go.Figure(
        layout=layout(
            "Trigger decisions per day",
            barmode="stack",
            yaxis={"title": "decisions"},
            xaxis={"title": "day (UTC)", "type": "category"},
        )
    )
    for outcome, colour in OUTCOMES.items():
        values = [per_day[day][outcome] for day in days]
        if any(values):
            figure.add_trace(go.Bar(x=days, y=values, name=outcome, marker_color=colour))
    return figure


def _trigger_table(counts: Counts) -> str:
    totals: dict[str, Counter[str]] = defaultdict(Counter)
    rules: dict[str, Counter[str]] = defaultdict(Counter)
    for (_day, trigger, outcome, rule), count in counts.items():
        totals[trigger][outcome] += count
        if outcome == "suppressed":
            rules[trigger][RULE_LABELS.get(rule, rule)] += count
    head = "".join(f"<th>{escape(o)}</th>" for o in OUTCOMES)
    rows = []
    for trigger in sorted(totals):
        cells = "".join(f'<td class="num">{totals[trigger][o]:,}</td>' for o in OUTCOMES)
        why = ", ".join(f"{rule} {n:,}" for rule, n in rules[trigger].most_common())
        rows.append(f"<tr><td>{escape(trigger)}</td>{cells}<td>{escape(why) or '—'}</td></tr>")
    return (
        f"<table><thead><tr><th>trigger</th>{head}<th>suppressed by</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def triggers_section(counts: Counts, charts: Charts) -> str:
    """The section, or nothing when no trigger decision was recorded."""
    if not counts:
        return ""
    days = sorted({day for day, *_ in counts})
    span = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    note = (
        "What the campaign trigger router decided, per day (UTC): fired triggers went to "
        "campaign-triggers; delayed ones wait for the end of quiet hours; holdout ones are "
        "recorded for the control group and never sent; suppressed ones did not fire. "
        "segworker triggers explain ACCOUNT shows one account's decisions with reasons."
    )
    return "\n".join(
        [
            '<section id="campaign-triggers" data-family="campaign-triggers">',
            "<h2>Campaign triggers</h2>",
            f'<p class="meta">{escape(span)} · {escape(note)}</p>',
            _trigger_table(counts),
            charts.render("campaign-triggers", "decisions", decisions_per_day(counts)),
            "</section>",
        ]
    )
