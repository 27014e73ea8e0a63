"""How often memberships flap in the demo: ``segworker demo`` as a user runs it, counted.

Starts the embedded broker and Redis, runs ``segworker demo --duration SECONDS`` against
them (history backfill, then live traffic), reads every ``SegmentChanged`` from
``segment-changes`` and counts flaps: exits less than ``--window`` (default a day, as
``SEGWORKER_FLAP_WINDOW_SECONDS``) of stream time after the entry.

Prints flaps per segment, in the history and in the live part, per hour of demo and
per 1,000 accounts and simulated day. Run it on the code before and after a change to
the definitions: the figures are the README's.

    .venv/bin/python bench/demo_flaps.py --seconds 180 --accounts 300
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from worker.adapters.kafka_clients import import_kafka_python
from worker.devtools.embedded import embedded_stack

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def read_changes(bootstrap: str, topic: str) -> list[dict]:
    kafka = import_kafka_python()
    consumer = kafka.KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    try:
        return [json.loads(message.value) for message in consumer]
    finally:
        consumer.close()


def flaps(changes: list[dict], window: float, live_from: datetime) -> Counter[tuple[str, str, str]]:
    """Exits within ``window`` seconds (stream time) of their entry, by (part, family,
    segment); part is ``live`` for changes at or after ``live_from`` (when the demo's
    history ended and its live traffic began), else ``history``."""
    found: Counter[tuple[str, str, str]] = Counter()
    for change in changes:
        if change["change"] != "exited" or not change.get("member_since"):
            continue
        occurred = datetime.fromisoformat(change["occurred_at"])
        lasted = (occurred - datetime.fromisoformat(change["member_since"])).total_seconds()
        if lasted < window:
            part = "live" if occurred >= live_from else "history"
            found[(part, change["family"], change["segment_id"])] += 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--window", type=float, default=86400.0)
    parser.add_argument("--dump", type=Path, help="write every change read to this JSON file")
    args = parser.parse_args()
    with embedded_stack() as (kafka, redis):
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "REDIS_URL": redis.url,
            "PYTHONWARNINGS": "ignore",
        }
        started = time.monotonic()
        live_from = datetime.now(UTC)  # the demo's history ends here, live traffic follows
        demo = subprocess.run(
            [sys.executable, "-m", "worker.cli", "demo", "--duration", str(args.seconds),
             "--accounts", str(args.accounts), "--seed", str(args.seed)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.seconds + 300,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        if demo.returncode != 0:
            console.print(demo.stdout[-3000:], demo.stderr[-3000:])
            raise SystemExit(f"the demo failed with {demo.returncode}")
        changes = read_changes(kafka.bootstrap_servers, "segment-changes")
    if args.dump:
        args.dump.write_text(json.dumps(changes))
    counted = flaps(changes, args.window, live_from)
    days = _simulated_days(changes)
    table = Table(title=f"flaps in a {args.seconds} s demo of {args.accounts} accounts")
    for column in ("part", "segment", "flaps"):
        table.add_column(column)
    for (part, family, segment), count in sorted(counted.items(), key=lambda kv: -kv[1]):
        table.add_row(part, f"{family}/{segment}", str(count))
    console.print(table)
    total = sum(counted.values())
    live = sum(count for (part, _, _), count in counted.items() if part == "live")
    console.print(
        f"changes {len(changes)}, flaps {total} (live part {live}) in {elapsed:.0f} s of demo: "
        f"{total / elapsed * 3600:,.0f} per hour of demo, "
        f"{total / max(days, 1e-9) / args.accounts * 1000:,.1f} per 1,000 accounts and "
        f"simulated day ({days:.0f} days simulated)"
    )


def _simulated_days(changes: list[dict]) -> float:
    moments = [datetime.fromisoformat(c["occurred_at"]) for c in changes]
    return (max(moments) - min(moments)).total_seconds() / 86400 if moments else 0.0


if __name__ == "__main__":
    main()
