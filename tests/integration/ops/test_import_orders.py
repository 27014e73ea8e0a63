"""An ERP export as it comes (history since 1997, free orders) through the user's commands:
``segworker import-orders`` into a running worker, then ``explain`` and ``report``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.harness import ROOT, Deployment, WorkerProcess
from worker.config.settings import DEFAULT_DEFINITIONS

#: Chronological, ';' separated, columns the importer ignores, several date forms, orders
#: of several rows, a return, and free goods (amount 0) as some customers' only orders.
EXPORT = """\
account_id;Customer;date;amount;category;currency;order_id
H-1001;Müller GmbH;1997-01-14;1180.50;Tools;EUR;SO-970114
H-1001;Müller GmbH;1997-01-14;220.00;Safety & PPE;EUR;SO-970114
H-1002;Dubois S.A.;1997-03-02;0.00;Samples;EUR;SO-970302
H-1003;"Rossi; S.r.l.";1997-08-15 10:30;0;Promotion;;SO-970815
H-1001;Müller GmbH;1998-11-20;-120.00;Tools;EUR;SO-970114
H-1004;Nowak Sp. z o.o.;1999-01-05;450.00;Fasteners;EUR;SO-990105
H-1005;Jansen B.V.;2024-03-01T09:15:00+01:00;0.00;HVAC Parts;EUR;
H-1001;Müller GmbH;2024-02-10;2400.00;Tools;EUR;SO-240210
H-1004;Nowak Sp. z o.o.;2024-05-01;89.90;Fasteners;EUR;SO-240501
"""
ACCOUNTS = ("H-1001", "H-1002", "H-1003", "H-1004", "H-1005")


def segworker(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``segworker`` command of this environment, configured like the worker."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        cwd=ROOT, env={**os.environ, **deployment.env}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


def test_an_export_since_1997_with_free_orders_gives_every_customer_state(
    kafka, redis_server, tmp_path: Path
) -> None:
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    worker = WorkerProcess(deployment, tmp_path / "worker.log")
    try:
        export = tmp_path / "erp-export.csv"
        export.write_text(EXPORT, encoding="utf-8")
        imported = segworker(deployment, "import-orders", str(export))
        assert imported.returncode == 0, imported.stderr
        assert imported.stdout.startswith("Imported 9 of 9 rows as 8 events"), imported.stdout

        # Stream time is the latest order (2024-05-01): the free order of 2024-03-01 is
        # 61 days old, the one of 1997-03-02 has made a customer for 27 years. An account
        # whose own events are old reaches that time when the time sweep gets to it.
        expected = {account: "tenure_days=" for account in ACCOUNTS}
        expected["H-1005"] = "recency_days=61"
        expected["H-1002"] = "tenure_days=9922"
        explained: dict[str, str] = {}
        deadline = time.monotonic() + 90
        while len(explained) < len(ACCOUNTS) and time.monotonic() < deadline:
            for account in set(ACCOUNTS) - set(explained):
                shown = segworker(deployment, "explain", account)
                if shown.returncode == 0 and expected[account] in shown.stdout.replace("\n", ""):
                    explained[account] = shown.stdout
            time.sleep(0.5)
        missing = {
            a: segworker(deployment, "explain", a).stdout for a in ACCOUNTS if a not in explained
        }
        assert not missing, (missing, worker.log_tail())

        report = tmp_path / "r.html"
        written = segworker(deployment, "report", "--output", str(report))
        assert written.returncode == 0, written.stderr
        assert report.stat().st_size > 0
    finally:
        assert worker.stop() == 0, worker.log_tail()
