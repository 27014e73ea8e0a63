"""``segworker demo``: worker + synthetic B2B traffic, segment changes live in the terminal.

The worker runs as a child process exactly as ``segworker run`` would, with the
campaign trigger router on; the generator backfills about 400 days of history at full
speed and then keeps producing live events; the main thread consumes
``segment-changes`` and ``campaign-triggers`` and prints them. The history's changes
are not live, so triggers fire only once the live events start. Unless
``SEGWORKER_TRIGGERS_PATH`` names a file, the demo uses the shipped triggers without
their quiet hours, so that they show at any hour. Ctrl-C stops all three.
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

import yaml
from rich.console import Console

from worker.adapters.kafka_clients import produce, topic_reader
from worker.adapters.kafka_options import kafka_client_options
from worker.config.security import redacted_url
from worker.config.settings import Settings
from worker.devtools.generator import DEFAULT_TOPICS, TopicEvent, demo_events, make_accounts

#: More changes than this per second are summarised instead of printed one by one.
MAX_LINES_PER_SECOND = 25
RUN_DIRECTORY = Path(".run")


def topic_mapping(settings: Settings) -> dict[str, str]:
    """Generator logical topic names -> the topics this deployment uses."""
    actual = settings.input_topic_names()
    return {logical: actual[logical] for logical in DEFAULT_TOPICS}


def produce_sample(
    settings: Settings, accounts: int, days: int, seed: int, limit: int | None
) -> int:
    from datetime import UTC, datetime, timedelta

    from worker.devtools.generator import generate_events

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


def demo_triggers_file(settings: Settings, directory: Path) -> Path:
    """The triggers the demo runs: ``SEGWORKER_TRIGGERS_PATH`` if set, else the shipped
    ones without quiet hours (written to ``directory``)."""
    if "SEGWORKER_TRIGGERS_PATH" in os.environ:
        return settings.triggers_path
    config = yaml.safe_load(settings.triggers_path.read_text())
    config.get("limits", {}).pop("quiet_hours", None)
    path = directory / "demo-triggers.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# The shipped triggers without quiet hours: written by segworker demo.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    return path


def start_worker_process(
    settings: Settings, log_path: Path, triggers: Path
) -> subprocess.Popen[bytes]:
    assert settings.kafka_bootstrap_servers and settings.redis_url
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "REDIS_URL": settings.redis_url,
        "SEGWORKER_TRIGGERS_ENABLED": os.environ.get("SEGWORKER_TRIGGERS_ENABLED", "true"),
        "SEGWORKER_TRIGGERS_PATH": str(triggers),
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


def print_trigger(console: Console, trigger: dict[str, Any]) -> None:
    contacts = ", ".join(f"{role} {contact}" for role, contact in trigger["contacts"].items())
    held = " [yellow](holdout: recorded, not sent)[/yellow]" if trigger["holdout"] else ""
    console.print(
        f"{trigger['fired_at'][:10]} {trigger['account_id']:10} [magenta]>> trigger "
        f"{trigger['trigger']}[/magenta] campaign [bold]{trigger['campaign']}[/bold]"
        f"{held} to {contacts or 'no known contact'}  [dim]on {trigger['change']} "
        f"{trigger['family']}/{trigger['segment_id']}: {trigger['change_reason']}[/dim]",
        highlight=False,
        no_wrap=True,
        overflow="ellipsis",
    )


def watch_changes(
    settings: Settings, stop: threading.Event, console: Console, deadline: float | None
) -> Counter[str]:
    consumer = topic_reader(
        settings, settings.topic_segment_changes, 250, settings.topic_campaign_triggers
    )
    totals: Counter[str] = Counter()
    second, printed, suppressed = int(time.monotonic()), 0, 0
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            for message in consumer:
                if message.topic == settings.topic_campaign_triggers:
                    trigger = json.loads(message.value)
                    totals["triggers/holdout" if trigger["holdout"] else "triggers/fired"] += 1
                    print_trigger(console, trigger)  # always: they are few, and the point
                    continue
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
    triggers = demo_triggers_file(settings, RUN_DIRECTORY)
    worker = start_worker_process(settings, RUN_DIRECTORY / "worker.log", triggers)
    console.log(
        f"worker pid {worker.pid} (log: {RUN_DIRECTORY / 'worker.log'}), "
        f"broker {settings.kafka_bootstrap_servers}, redis {redacted_url(settings.redis_url or '')}"
    )
    console.log(
        f"campaign triggers from {triggers}: they fire for live changes only, so once the "
        "history backfill is done"
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
    fired = {k: v for k, v in totals.items() if k.startswith("triggers/")}
    changes = {k: v for k, v in totals.items() if k not in fired}
    summary = ", ".join(f"{k}={v}" for k, v in sorted(changes.items())) or "none"
    console.log(f"segment changes seen: {sum(changes.values())} ({summary})")
    console.log(
        f"campaign triggers seen: {fired.get('triggers/fired', 0)} fired, "
        f"{fired.get('triggers/holdout', 0)} held out (segworker triggers explain ACCOUNT "
        "says why others did not fire)"
    )
    return 0 if worker.returncode in (0, -signal.SIGTERM) else 1
