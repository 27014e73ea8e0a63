"""``segworker demo`` as ``make run`` runs it: the live view shows changes and triggers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.harness import Deployment, free_port
from worker.config.settings import DEFAULT_DEFINITIONS


def test_the_demo_shows_segment_changes_and_then_live_triggers(
    kafka, redis_server, tmp_path: Path
) -> None:
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    env = {
        **os.environ,
        **deployment.env,
        "SEGWORKER_WEB_PORT": str(free_port()),
        "COLUMNS": "240",  # rich shortens lines to the terminal's width
    }
    env.pop("SEGWORKER_TRIGGERS_PATH", None)
    shown = subprocess.run(
        [sys.executable, "-m", "worker.cli", "demo", "--accounts", "100",
         "--history-days", "60", "--duration", "60"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    output = shown.stdout
    assert shown.returncode == 0, output[-3000:] + shown.stderr[-3000:]
    # The shipped triggers, without quiet hours, so that they show at any hour.
    written = (tmp_path / ".run" / "demo-triggers.yaml").read_text()
    assert "develop_b1" in written and "quiet_hours" not in written
    changes = re.findall(r" ([+-]) (\w+)/(\w+)", output)
    assert len(changes) > 100
    triggers = re.findall(r">> trigger (\w+) campaign (\S+)(.*) on (entered|exited) (\w+)/", output)
    assert triggers, output[-3000:]
    assert {name for name, *_ in triggers} <= {
        "develop_b1",
        "develop_c1",
        "welcome_a",
        "welcome_champions",
        "decider_follow_up",
    }
    fired = re.search(r"campaign triggers seen: (\d+) fired, (\d+) held out", output)
    assert fired is not None and int(fired[1]) + int(fired[2]) == len(triggers)
    # The history's changes (dated back then) came first and fired nothing: the first
    # trigger is dated later than the first change printed.
    dates = re.findall(r"^(\d{4}-\d{2}-\d{2}) \S+ +(\+|-|>>)", output, re.MULTILINE)
    first_change = next(day for day, kind in dates if kind != ">>")
    first_trigger = next(day for day, kind in dates if kind == ">>")
    assert first_change < first_trigger
