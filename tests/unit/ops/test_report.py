from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from worker.core.drift import DriftMonitor, DriftReport
from worker.core.profiles import SegmentProfile, profiles_to_dicts
from worker.ops.report import render_report, write_report

T0 = datetime(2026, 3, 2, tzinfo=UTC)
XSS_SEGMENT = "<script>alert('segment')</script>"
XSS_DESCRIPTION = '<img src=x onerror="alert(1)"> big spenders & friends'
VOID = {"meta", "link", "br", "img", "input", "hr", "col", "area", "base", "source", "wbr"}


class Page(HTMLParser):
    """Collects what the tests look at and checks that elements are properly nested."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.charts: list[dict[str, str | None]] = []
        self.scripts: list[str] = []
        self.script_srcs: list[str | None] = []
        self.cells: list[str] = []
        self.text: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "div" and attributes.get("class") == "chart":
            self.charts.append(attributes)
        if tag == "script":
            self.script_srcs.append(attributes.get("src"))
            self.scripts.append("")
        self._in = tag

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        self._in = None

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "script":
            self.scripts[-1] += data
        elif self.stack and self.stack[-1] == "td":
            self.cells.append(data)
        self.text.append(data)


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    assert parser.stack == [], f"unclosed elements: {parser.stack}"
    return parser


def profile(family: str, segment_id: str, size: int, **more: Any) -> SegmentProfile:
    means = {"revenue_365d": 1000.0 * size, "orders_365d": 2.0, "recency_days": None}
    return SegmentProfile(
        family=family,
        segment_id=segment_id,
        size=size,
        share_of_accounts=size / 100,
        revenue_365d=1000.0 * size * size,
        share_of_revenue=size / 100,
        means=more.pop("means", means),
        top_categories=(("tools", 0.5), ("office", 0.25)),
        roles=(("buyer", size), ("decider", 1)),
        **more,
    )


PROFILES = {
    p.key: p
    for p in [
        profile("value", "a", 20),
        profile("value", "c1", 78),
        profile("value", "b1", 2, small=True),
        profile("program", "champions", 10),
        profile("cluster", "c1", 60),
        profile("cluster", "c2", 40),
        profile("needs_cluster", "c1", 30),
        profile("needs_cluster", "c2", 70),
    ]
}
#: Per family and cluster id: the two cluster families number their clusters alike.
DESCRIPTIONS = {
    "cluster": {"c1": "very recent high-value buyers", "c2": "lapsed occasional buyers"},
    "needs_cluster": {
        "c1": "accounts focused on tools, electrical and cleaning",
        "c2": "accounts focused on office supplies",
    },
}


def history() -> list[DriftReport]:
    monitor = DriftMonitor()
    reports = []
    rng = random.Random(0)
    for i in range(4):
        a = 20 + rng.randrange(-3, 4) + (10 if i == 3 else 0)
        reports.append(
            monitor.close_interval(
                T0 + timedelta(days=7 * i),
                {("value", "a"): a, ("value", "c1"): 100 - a, ("program", "champions"): 10},
                100,
            )
        )
        monitor.observe_change(_Change(f"x{i}", "value", "a", "entered"))
        monitor.observe_change(_Change(f"y{i}", "value", "c1", "exited"))
    return reports


class _Change:
    def __init__(self, change_id: str, family: str, segment_id: str, change: str) -> None:
        self.change_id, self.family, self.segment_id, self.change = (
            change_id,
            family,
            segment_id,
            change,
        )


def render(**options: Any) -> str:
    arguments: dict[str, Any] = {
        "profiles": PROFILES,
        "history": history(),
        "cluster_descriptions": DESCRIPTIONS,
        "title": "Segments",
        "include_plotlyjs": False,
    }
    arguments.update(options)
    return render_report(**arguments)


def test_page_parses_and_has_a_chart_per_family() -> None:
    page = parse(render())
    families = {p.family for p in PROFILES.values()}
    charted = {chart["data-family"] for chart in page.charts}
    assert families <= charted
    ids = [chart["id"] for chart in page.charts]
    assert len(ids) == len(set(ids))
    for chart in page.charts:  # each chart div is drawn by a script naming its id
        assert any(f'Plotly.newPlot("{chart["id"]}"' in script for script in page.scripts)
    kinds = {(c["data-family"], c["data-chart"]) for c in page.charts}
    assert {("value", "sizes"), ("value", "flows"), ("value", "profile")} <= kinds
    # cluster has no history: its sizes chart shows the current sizes.
    assert ("cluster", "sizes") in kinds


def test_every_family_gets_a_chart_without_history_or_features() -> None:
    bare = {p.key: p for p in [profile("needs", "tools_buyers", 5, means={})]}
    page = parse(render_report(bare, [], None, "Bare", include_plotlyjs=False))
    assert [c["data-family"] for c in page.charts] == ["needs"]


def test_table_shows_sizes_shares_categories_roles_and_small_warning() -> None:
    page = render()
    cells = parse(page).cells
    roles = "buyers (20 accounts), deciders (1 account)"
    for expected in ("20", "20.0%", "400,000", "tools (50%), office (25%)", roles):
        assert expected in cells
    assert page.count("small segment") == 1  # only value/b1


def section(page: str, family: str) -> str:
    start = page.index(f'data-family="{family}">')
    return page[start : page.index("</section>", start)]


class Rows(HTMLParser):
    """The text of every cell, row by row, of the first table fed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._done:
            return
        if tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        self._done = self._done or tag == "table"

    def handle_data(self, data: str) -> None:
        if not self._done and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data


def description_cells(page: str, family: str) -> dict[str, str]:
    """Segment id -> description, from the family's table."""
    rows = Rows()
    rows.feed(section(page, family))
    return {cells[0]: cells[1] for cells in rows.rows if cells}


def test_cluster_descriptions_are_shown_for_the_cluster_families_only() -> None:
    page = render()
    assert "<th>Description</th>" in section(page, "cluster")
    assert "<th>Description</th>" in section(page, "needs_cluster")
    assert "<th>Description</th>" not in section(page, "value")


def test_each_cluster_family_shows_its_own_descriptions_of_the_same_ids() -> None:
    page = render()
    assert description_cells(page, "cluster") == DESCRIPTIONS["cluster"]
    assert description_cells(page, "needs_cluster") == DESCRIPTIONS["needs_cluster"]


def test_a_described_cluster_without_accounts_is_listed_in_its_own_family() -> None:
    described = {"cluster": {**DESCRIPTIONS["cluster"], "c3": "new buyers"}}
    page = render(cluster_descriptions=described)
    assert description_cells(page, "cluster")["c3"] == "new buyers"
    assert "new buyers" not in section(page, "needs_cluster")


def test_data_is_escaped_everywhere() -> None:
    hostile = {
        p.key: p
        for p in [
            profile("value", XSS_SEGMENT, 10),
            profile('fam"ily<b>', "x", 5),
            profile("cluster", "c1", 5),
        ]
    }
    page = render_report(
        hostile,
        [],
        {"cluster": {"c1": XSS_DESCRIPTION, XSS_SEGMENT: "x"}},
        title="</title><script>alert(2)</script>",
        include_plotlyjs=False,
    )
    parsed = parse(page)
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert "<b>" not in page
    assert XSS_DESCRIPTION in parsed.cells  # shown literally, as text
    assert XSS_SEGMENT in parsed.cells
    assert 'fam"ily<b>' in {c["data-family"] for c in parsed.charts}
    # Chart specs are JSON with <, > and / escaped: nothing in them can end the script.
    for script in parsed.scripts:
        assert "<" not in script
    # Labels inside the charts are escaped too: plotly renders some tags in labels.
    assert "&lt;script&gt;alert('segment')" in "".join(parsed.scripts)


def test_history_as_event_dicts_renders_like_drift_reports() -> None:
    as_dicts = [json.loads(json.dumps(r.to_event_dict())) for r in history()]
    assert render(history=as_dicts) == render()
    profile_dicts = profiles_to_dicts(PROFILES)
    assert render(profiles=profile_dicts) == render()


def test_drift_alarms_are_listed_with_their_family() -> None:
    page = render()
    assert "Drift alarms" in page
    assert "value/a: share of accounts moved" in page


def test_inline_plotly_makes_the_page_self_contained(tmp_path: Path) -> None:
    path = write_report(
        tmp_path / "out" / "report.html",
        PROFILES,
        history(),
        DESCRIPTIONS,
        "Segments",
        generated_at=T0,
    )
    page = path.read_text(encoding="utf-8")
    parsed = parse(page)
    assert parsed.script_srcs == [None] * len(parsed.scripts)  # nothing loaded from outside
    assert max(len(s) for s in parsed.scripts) > 1_000_000  # plotly.js itself
    assert "Generated 2026-03-02" in page
    assert list(tmp_path.joinpath("out").iterdir()) == [path]


@pytest.mark.parametrize("mode", ["cdn", False])
def test_plotly_can_be_left_out_or_loaded_from_the_cdn(mode: Any) -> None:
    page = render(include_plotlyjs=mode)
    assert len(page) < 1_000_000
    assert ("cdn.plot.ly" in page) is (mode == "cdn")


TRIGGER_COUNTS = {
    ("2026-03-02", "welcome_a", "fired", ""): 4,
    ("2026-03-02", "welcome_a", "holdout", "holdout"): 1,
    ("2026-03-02", "welcome_a", "suppressed", "cooldown"): 2,
    ("2026-03-03", "welcome_a", "suppressed", "suppressed_segment"): 3,
    ("2026-03-03", "<b>develop_b1</b>", "delayed", "quiet_hours"): 5,
}


def test_triggers_section_counts_outcomes_per_trigger_and_what_suppressed_them() -> None:
    page = parse(render(trigger_counts=TRIGGER_COUNTS))
    kinds = {(c["data-family"], c["data-chart"]) for c in page.charts}
    assert ("campaign-triggers", "decisions") in kinds
    cells = page.cells
    row = cells[cells.index("welcome_a") :][:6]  # trigger, fired, delayed, holdout, suppressed
    assert row == ["welcome_a", "4", "0", "1", "5", "member of a suppressed segment 3, cooldown 2"]
    assert "<b>develop_b1</b>" in cells  # escaped, shown as text
    chart = next(s for s in page.scripts if '"name":"suppressed"' in s)
    assert '"2026-03-02","2026-03-03"' in chart  # one bar per day


def test_no_trigger_decisions_no_triggers_section() -> None:
    page = render(trigger_counts={})
    assert 'id="campaign-triggers"' not in page
    assert 'id="campaign-triggers"' not in render()
