from __future__ import annotations

import gc
import socket
from pathlib import Path

import pytest

from worker.cli import main
from worker.runtime.process import YOUNG_COLLECTION_THRESHOLD, freeze_loaded_objects


def test_the_worker_freezes_what_is_loaded_and_collects_the_young_generation_less_often():
    before = gc.get_threshold()
    try:
        freeze_loaded_objects()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_import_orders_follows_the_event_time_floor_and_names_its_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("account_id,date,amount\nA,1997-01-14,0\nB,1969-07-20,10\nC,2024-02-10,5\n")
    monkeypatch.delenv("SEGWORKER_EARLIEST_EVENT_TIME", raising=False)
    assert main(["import-orders", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Checked 3 rows" in out and "2 valid, 2 events to produce" in out
    assert "'1969-07-20' is before 1980-01-01" in out
    monkeypatch.setenv("SEGWORKER_EARLIEST_EVENT_TIME", "2000-01-01")
    assert main(["import-orders", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 valid" in out and "date_too_old  2" in out
    assert "Rows dated before 2000-01-01 are refused" in out
    assert "set SEGWORKER_EARLIEST_EVENT_TIME to an earlier date" in out


def test_triggers_validate_checks_the_shipped_file_and_names_problems(tmp_path, capsys) -> None:
    assert main(["triggers", "validate"]) == 0
    assert "5 triggers" in capsys.readouterr().out
    bad = tmp_path / "triggers.yaml"
    bad.write_text(
        "triggers:\n"
        "  - {id: x, on: {family: value, segment: b9}, campaign: y, cooldown: 3d}\n"
        "  - {id: z, on: {family: value}, campaign: y, when: revenu_365d > 1}\n"
    )
    assert main(["triggers", "validate", str(bad)]) == 1
    assert "unknown feature 'revenu_365d'" in capsys.readouterr().err
    bad.write_text("triggers:\n  - {id: x, on: {family: value, segment: b9}, campaign: y}\n")
    assert main(["triggers", "validate", str(bad)]) == 1
    assert "x: on: value has no segment 'b9'" in capsys.readouterr().err


def test_import_orders_says_which_servers_it_cannot_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("account_id,date,amount\nA,2025-01-01,10\n", encoding="utf-8")
    with socket.socket() as sock:  # bound and released: nothing listens there
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{closed}/0")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{closed}")
    assert main(["import-orders", str(path)]) == 1
    err = capsys.readouterr().err
    assert "cannot reach Redis" in err and str(closed) in err and "Traceback" not in err
