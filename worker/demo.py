"""``segworker demo``: worker + synthetic B2B traffic, segment changes live in the terminal.

The worker runs as a child process exactly as ``segworker run`` would; the
generator backfills about 400 days of history at full speed and then keeps
producing live events; the main thread consumes ``segment-changes`` and prints
them. Ctrl-C stops all three.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from worker.clients import topic_reader
from worker.generator import DEFAULT_TOPICS, TopicEvent, demo_events, make_accounts, produce
from worker.security import kafka_client_options, redacted_url
from worker.settings import Settings

#: More changes than this per second are summarised instead of printed one by one.
MAX_LINES_PER_SECOND = 25
RUN_DIRECTORY = Path(".run")


def topic_mapping(settings: Settings) -> dict[str, str]:
    """Generator logical topic names -> the topics this deployment uses."""
    actual = {
        "orders": settings.topic_orders,
        "campaign-events": settings.topic_campaign_events,
        "loyalty-points": settings.topic_loyalty_points,
        "account-profiles": settings.topic_account_profiles,
    }
    return {logical: actual[logical] for logical in DEFAULT_TOPICS}


def produce_sample(
    settings: Settings, accounts: int, days: int, seed: int, limit: int | None
) -> int:
    from datetime import UTC, datetime, timedelta

    from worker.generator import generate_events

    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=days)
    assert settings.kafka_bootstrap_servers
    return produce(
        generate_events(make_accounts(accounts, rng), start, days, rng),
        settings.kafka_bootstrap_servers,
        topics=topic_mapping(settings),
        limit=limit,
        producer_config=kafka_client_options(settings),
    )


def start_worker_process(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    assert settings.kafka_bootstrap_servers and settings.redis_url
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "REDIS_URL": settings.redis_url,
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Ctrl-C reaches the whole process group; the demo stops the worker itself.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )


def _until(stop: threading.Event, events: Iterable[TopicEvent]) -> Iterator[TopicEvent]:
    for event in events:
        if stop.is_set():
            return
        yield event


def start_generator(
    settings: Settings, args: argparse.Namespace, stop: threading.Event, console: Console
) -> threading.Thread:
    rng = random.Random(args.seed)
    accounts = make_accounts(args.accounts, rng)
    speedup = max(1.0, args.rate / 9.0 * 8640.0)  # ~9 events/s at the generator's default
    events = demo_events(accounts, rng, history_days=args.history_days, speedup=speedup)

    def run() -> None:
        assert settings.kafka_bootstrap_servers
        try:
            count = produce(
                _until(stop, events),
                settings.kafka_bootstrap_servers,
                topics=topic_mapping(settings),
                producer_config=kafka_client_options(settings),
                on_progress=lambda n: console.log(f"produced {n} events"),
                progress_every=10_000,
            )
            console.log(f"generator stopped after {count} events")
        except Exception as error:  # the demo keeps showing what it has
            console.log(f"[red]generator failed: {error}")

    thread = threading.Thread(target=run, name="generator", daemon=True)
    thread.start()
    return thread


def print_change(console: Console, change: dict[str, Any]) -> None:
    arrow = "[green]+[/green]" if change["change"] == "entered" else "[red]-[/red]"
    previous = (
        f" (from {change['previous_segment_id']})" if change.get("previous_segment_id") else ""
    )
    reason = change["reason"]
    console.print(
        f"{change['occurred_at'][:10]} {change['account_id']:10} {arrow} "
        f"[bold]{change['family']}/{change['segment_id']}[/bold]{previous}  [dim]{reason}[/dim]",
        highlight=False,
        no_wrap=True,
        overflow="ellipsis",
    )


def watch_changes(
    settings: Settings, stop: threading.Event, console: Console, deadline: float | None
) -> Counter[str]:
    consumer = topic_reader(settings, settings.topic_segment_changes, idle_ms=250)
    totals: Counter[str] = Counter()
    second, printed, suppressed = int(time.monotonic()), 0, 0
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            for message in consumer:
                change = json.loads(message.value)
                totals[f"{change['family']}/{change['change']}"] += 1
                now = int(time.monotonic())
                if now != second:
                    if suppressed:
                        console.print(f"[dim]… and {suppressed} more changes[/dim]")
                    second, printed, suppressed = now, 0, 0
                if printed < MAX_LINES_PER_SECOND:
                    print_change(console, change)
                    printed += 1
                else:
                    suppressed += 1
                if stop.is_set():
                    break
    finally:
        consumer.close()
    return totals


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    console = Console()
    stop = threading.Event()
    worker = start_worker_process(settings, RUN_DIRECTORY / "worker.log")
    console.log(
        f"worker pid {worker.pid} (log: {RUN_DIRECTORY / 'worker.log'}), "
        f"broker {settings.kafka_bootstrap_servers}, redis {redacted_url(settings.redis_url or '')}"
    )
    generator = start_generator(settings, args, stop, console)
    deadline = time.monotonic() + args.duration if args.duration else None
    totals: Counter[str] = Counter()
    try:
        totals = watch_changes(settings, stop, console, deadline)
    except KeyboardInterrupt:
        console.log("stopping …")
    finally:
        stop.set()
        generator.join(timeout=10)
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
    summary = ", ".join(f"{k}={v}" for k, v in sorted(totals.items())) or "none"
    console.log(f"segment changes seen: {sum(totals.values())} ({summary})")
    return 0 if worker.returncode in (0, -signal.SIGTERM) else 1
