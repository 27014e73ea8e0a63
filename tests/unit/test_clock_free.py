"""Test data never comes from the wall clock.

Data built from ``datetime.now()`` changes with the calendar day, and so can the
outcome: a suite that passes today fails next month. Tests take their dates from
``tests.clock.TEST_NOW``; a line whose subject really is the wall clock (a
certificate that must be valid now, a start date that must lie in the future) says
so with a ``# wall clock:`` comment on that line or the one before. Doctests in the
package use literal dates. ``.ci/run`` also runs the unit suite under faketime at two
other dates.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import worker

ROOT = Path(__file__).resolve().parents[2]
#: Calls that read the wall clock.
WALL_CLOCK = re.compile(r"\b(?:now|utcnow|today)\(|\btime\.time\(|\btime_ns\(")
ALLOWED = "# wall clock:"


def wall_clock_reads(text: str) -> list[str]:
    """Lines of ``text`` that read the wall clock without saying why.

    >>> wall_clock_reads("start = datetime.now(UTC)\\nx = 1")
    ['start = datetime.now(UTC)']
    >>> wall_clock_reads("ok = datetime.now(UTC)  # wall clock: the certificate must be valid now")
    []
    >>> wall_clock_reads("# wall clock: must lie in the future\\nstart = datetime.now(UTC)")
    []
    >>> wall_clock_reads("start = TEST_NOW - timedelta(days=3)")
    []
    """
    lines = text.splitlines()
    return [
        line.strip()
        for number, line in enumerate(lines)
        if WALL_CLOCK.search(line)
        and ALLOWED not in line
        and not (number and ALLOWED in lines[number - 1])
    ]


def test_tests_take_their_dates_from_the_shared_constant() -> None:
    found = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path.name != Path(__file__).name and (lines := wall_clock_reads(path.read_text()))
    }
    assert not found, f"use tests.clock.TEST_NOW instead of the wall clock: {found}"


def test_doctests_use_literal_dates() -> None:
    finder = doctest.DocTestFinder()
    found: dict[str, list[str]] = {}
    for module_info in pkgutil.walk_packages(worker.__path__, "worker."):
        module = importlib.import_module(module_info.name)
        for test in finder.find(module):
            source = "\n".join(example.source for example in test.examples)
            if lines := wall_clock_reads(source):
                found[test.name] = lines
    assert not found, f"doctests must not build data from the wall clock: {found}"
