"""What ``python -m worker.devtools.embedded`` prints: shell lines that set the real settings."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from worker.config.settings import Settings
from worker.devtools.embedded import shell_lines

KAFKA = "127.0.0.1:41234"
REDIS = "redis://127.0.0.1:41235/0"


def _sourced(text: str) -> dict[str, str]:
    """The environment a POSIX shell has after evaluating ``text``."""
    sh = shutil.which("sh")
    assert sh is not None
    done = subprocess.run(
        [sh, "-c", 'eval "$1" && env -0', "sh", text],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=True,
    )
    pairs = (entry.split("=", 1) for entry in done.stdout.decode().split("\0") if entry)
    return {name: value for name, value in pairs if name not in ("PATH", "PWD", "SHLVL", "_")}


def test_the_lines_set_the_connection_settings_in_a_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    exported = _sourced(shell_lines(KAFKA, REDIS, pid=4242))
    assert exported == {"KAFKA_BOOTSTRAP_SERVERS": KAFKA, "REDIS_URL": REDIS}
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    for name, value in exported.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.kafka_bootstrap_servers, settings.redis_url) == (KAFKA, REDIS)


def test_every_line_is_an_export_or_a_comment() -> None:
    lines = shell_lines(KAFKA, REDIS, pid=4242).splitlines()
    assert all(line.startswith(("export ", "# ")) for line in lines), lines
    assert any("kill 4242" in line for line in lines if line.startswith("# "))


def test_values_a_shell_would_split_stay_whole() -> None:
    url = "redis://:p w$d;x@127.0.0.1:6379/0"
    assert _sourced(shell_lines(KAFKA, url, pid=1))["REDIS_URL"] == url
