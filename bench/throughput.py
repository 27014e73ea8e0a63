"""Throughput of the full worker against a trivial Faust agent, in one run.

Pre-produces synthetic B2B history once, then lets each consumer group read the
same topics from the start: first the trivial agent (``trivial_app.py``: batch and
ack only), then the real worker (``segworker run``: decode, Redis, rules, changes); then both
again with two processes in the group (scaling from 1 to 2 processes).
Progress is read from each group's committed offsets, the same way for both, and
the rate is measured from the first commit to the last, so group-join time is not
counted. Prints events/s of both, the ratio, and the worker's peak memory.

    .venv/bin/python bench/throughput.py [--accounts 2000] [--days 365] [--limit 100000]

Uses the embedded broker and Redis unless KAFKA_BOOTSTRAP_SERVERS / REDIS_URL are set.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import ROOT, GroupProgress, cpu_seconds, deployment, peak_rss_mib, worker_env
from rich.console import Console
from rich.table import Table

from worker.adapters.kafka_clients import produce
from worker.config.settings import Settings
from worker.devtools.generator import generate_events, make_accounts

console = Console()


def preproduce(settings: Settings, accounts: int, days: int, limit: int) -> int:
    assert settings.kafka_bootstrap_servers
    rng = random.Random(42)
    start = datetime.now(UTC) - timedelta(days=days + 1)
    events = generate_events(make_accounts(accounts, rng), start, days, rng)
    topics = settings.input_topic_names()
    return produce(events, settings.kafka_bootstrap_servers, topics=topics, limit=limit)


def measure(
    name: str,
    command: list[str],
    envs: list[dict[str, str]],
    group: str,
    settings: Settings,
    total: int,
    timeout: float,
    on_done: Callable[[], dict[str, float]] | None = None,
) -> dict[str, float]:
    """Rate from the group's first commit to its last, so group-join time is not counted.

    One process per environment in ``envs``, all in consumer group ``group``;
    ``on_done`` runs once everything is committed, before the processes stop, and adds
    its figures to the result.
    """
    progress = GroupProgress(settings, group)
    logs = Path(tempfile.mkdtemp(prefix="segworker-bench-"))
    processes = []
    for index, env in enumerate(envs):
        with (logs / f"{name}-{index}.log").open("wb") as output:
            processes.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
                )
            )
    log = logs / f"{name}-*.log"
    first: tuple[float, int] | None = None
    cpu_first = 0.0
    last: tuple[float, int] = (time.monotonic(), 0)
    peak_rss = 0.0
    deadline = time.monotonic() + timeout
    try:
        while last[1] < total:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} did not finish in {timeout}s ({last[1]}/{total}); {log}"
                )
            time.sleep(0.1)
            if any(process.poll() is not None for process in processes):
                raise RuntimeError(f"{name} exited early; see {log}")
            done = progress.committed()
            peak_rss = max(peak_rss, *(peak_rss_mib(process.pid) for process in processes))
            now = time.monotonic()
            if done > 0 and first is None:
                first = (now, done)
                cpu_first = sum(cpu_seconds(process.pid) for process in processes)
            if done != last[1]:
                last = (now, done)
        cpu_last = sum(cpu_seconds(process.pid) for process in processes)
        extra = on_done() if on_done is not None else {}
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        progress.close()
    assert first is not None
    seconds = last[0] - first[0]
    return {
        "events": total - first[1],
        "seconds": seconds,
        "rate": (total - first[1]) / seconds if seconds > 0 else float("nan"),
        "rss_mib": peak_rss,
        # the consumers' CPU over the same span as the rate (first commit to the last)
        "cpu_seconds": cpu_last - cpu_first,
        **extra,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--limit", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="run the single full worker under py-spy (pip install py-spy) and write its "
        "collapsed stacks to FILE (summarise with bench/stacks.py)",
    )
    parser.add_argument(
        "--no-scaling",
        dest="scaling",
        action="store_false",
        help="skip the runs with two processes per consumer group",
    )
    args = parser.parse_args()

    with deployment("bench") as settings:
        started = time.monotonic()
        total = preproduce(settings, args.accounts, args.days, args.limit)
        console.print(f"pre-produced {total} events in {time.monotonic() - started:.1f}s")
        results = {}
        for processes in (1, 2) if args.scaling else (1,):
            suffix = "" if processes == 1 else f"-{processes}p"
            trivial_group = f"bench-trivial{suffix}"
            results[("trivial Faust agent", processes)] = measure(
                f"trivial{suffix}",
                [sys.executable, "bench/trivial_app.py"],
                [
                    worker_env(settings, BENCH_TRIVIAL_APP_ID=trivial_group)
                    for _ in range(processes)
                ],
                trivial_group,
                settings,
                total,
                args.timeout,
            )
            # Its own consumer group and Redis keys: the run starts from empty state.
            worker_settings = settings.model_copy(
                update={
                    "app_id": f"{settings.app_id}{suffix}",
                    "redis_key_prefix": f"{settings.redis_key_prefix}{suffix}",
                }
            )
            command = [sys.executable, "-m", "worker.cli", "run"]
            if args.profile and processes == 1:
                spy = Path(sys.executable).with_name("py-spy")
                command = [
                    str(spy),
                    "record",
                    "--format",
                    "raw",
                    "-r",
                    "200",
                    "-o",
                    args.profile,
                    "--",
                    *command,
                ]
            results[("full worker", processes)] = measure(
                f"worker{suffix}",
                command,
                [worker_env(worker_settings) for _ in range(processes)],
                worker_settings.app_id,
                settings,
                total,
                args.timeout,
            )

    table = Table(
        title=f"throughput, {total} events, {args.accounts} accounts "
        f"({datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()})"
    )
    for column in ("consumer", "processes", "events measured", "seconds", "events/s"):
        table.add_column(column, justify="right")
    table.add_column("peak RSS MiB (per process)", justify="right")
    for (name, processes), result in results.items():
        table.add_row(
            name,
            str(processes),
            f"{result['events']:.0f}",
            f"{result['seconds']:.2f}",
            f"{result['rate']:,.0f}",
            f"{result['rss_mib']:.0f}",
        )
    console.print(table)
    for processes in sorted({p for _, p in results}):
        ratio = (
            results[("full worker", processes)]["rate"]
            / results[("trivial Faust agent", processes)]["rate"]
        )
        console.print(
            f"{processes} process(es): full worker / trivial agent: [bold]{ratio:.0%}[/bold]"
        )
    if args.scaling:
        for name in ("trivial Faust agent", "full worker"):
            gain = results[(name, 2)]["rate"] / results[(name, 1)]["rate"]
            console.print(f"{name}: 2 processes / 1 process: [bold]{gain:.2f}x[/bold]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
