"""The bench that needs neither a broker nor Redis runs on a small input, so a change
that breaks it (an attribute renamed, a module moved) fails here rather than on the
day someone measures; the others start the embedded stack and are run by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_profile_core_runs_and_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, "bench/profile_core.py", "--accounts", "50", "--days", "60",
         "--limit", "2000", "--batch", "100"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for stage in ("decode", "load", "apply+evaluate+index", "encode", "total"):
        assert stage in done.stdout, done.stdout
