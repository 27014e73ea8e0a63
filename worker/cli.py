"""``segworker`` commands.

run                    the worker (embedded broker and Redis unless configured)
demo                   embedded stack + worker + synthetic producer, live changes on screen
produce-sample         synthetic B2B events into a broker
schemas export         regenerate schemas/ from the pydantic models
validate-definitions   check a definitions file against the feature catalogue
explain ACCOUNT_ID     current memberships with reasons, read from Redis
recompute [--dry-run]  re-evaluate every stored account after a definitions change
import-orders FILE     back-fill from an ERP order export (CSV)
erase ACCOUNT_ID       erase an account (GDPR): exits emitted, all its state deleted
report [--output F]    HTML page: segment sizes over time, flows, profiles, clusters
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from worker.adapters.kafka_options import kafka_client_options
from worker.config.security import redacted_url
from worker.config.settings import Settings

log = logging.getLogger("segworker")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("SEGWORKER_LOG_LEVEL", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Client libraries log every connection at INFO; their warnings are what matters.
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return int(args.handler(args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segworker", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the segmentation worker")
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser("demo", help="embedded stack + worker + generator, live view")
    demo.add_argument("--accounts", type=int, default=300)
    demo.add_argument("--history-days", type=int, default=400)
    demo.add_argument("--rate", type=float, default=50.0, help="live events per second")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.set_defaults(handler=cmd_demo)

    sample = commands.add_parser("produce-sample", help="produce synthetic events")
    sample.add_argument("--accounts", type=int, default=300)
    sample.add_argument("--days", type=int, default=400)
    sample.add_argument("--seed", type=int, default=7)
    sample.add_argument("--limit", type=int, default=None)
    sample.set_defaults(handler=cmd_produce_sample)

    schemas = commands.add_parser("schemas", help="JSON Schemas of the event contracts")
    schemas_commands = schemas.add_subparsers(required=True, metavar="ACTION")
    export = schemas_commands.add_parser("export", help="write schemas/*.json")
    export.add_argument("--directory", type=Path, default=Path("schemas"))
    export.set_defaults(handler=cmd_schemas_export)

    validate = commands.add_parser("validate-definitions", help="check a definitions file")
    validate.add_argument("path", type=Path, nargs="?", default=None)
    validate.add_argument("--features", action="store_true", help="list the feature catalogue")
    validate.set_defaults(handler=cmd_validate_definitions)

    explain = commands.add_parser("explain", help="memberships of an account, with reasons")
    explain.add_argument("account_id")
    explain.set_defaults(handler=cmd_explain)

    recompute = commands.add_parser("recompute", help="re-evaluate all accounts")
    recompute.add_argument("--dry-run", action="store_true", help="show, do not write or emit")
    recompute.add_argument("--definitions", type=Path, default=None)
    recompute.add_argument(
        "--processes",
        type=int,
        default=1,
        help="split the accounts over this many processes (CPU-bound: up to the cores)",
    )
    recompute.set_defaults(handler=cmd_recompute)

    imports = commands.add_parser("import-orders", help="back-fill orders from a CSV export")
    imports.add_argument("path", type=Path)
    imports.add_argument("--dry-run", action="store_true", help="parse and report only")
    imports.add_argument(
        "--via-kafka",
        action="store_true",
        help="produce the events to the orders topic for the worker to stream (slow; emits"
        " every historical change) instead of folding them into the state store",
    )
    imports.add_argument(
        "--processes",
        type=int,
        default=min(os.cpu_count() or 1, 4),
        help="processes folding the history into the state (default: cores, at most 4)",
    )
    imports.set_defaults(handler=cmd_import_orders)

    erase = commands.add_parser("erase", help="erase an account's data (GDPR)")
    erase.add_argument("account_id")
    erase.add_argument("--request-id", default=None, help="the erasure request, for the audit")
    erase.set_defaults(handler=cmd_erase)

    triggers = commands.add_parser("triggers", help="campaign triggers: check, explain")
    triggers_commands = triggers.add_subparsers(required=True, metavar="ACTION")
    check = triggers_commands.add_parser("validate", help="check a triggers file")
    check.add_argument("path", nargs="?", type=Path, help="default: SEGWORKER_TRIGGERS_PATH")
    check.set_defaults(handler=cmd_triggers_validate)
    why = triggers_commands.add_parser("explain", help="an account's recent trigger decisions")
    why.add_argument("account_id")
    why.set_defaults(handler=cmd_triggers_explain)

    report = commands.add_parser("report", help="write the segment report (HTML)")
    report.add_argument("--output", type=Path, default=Path("segment-report.html"))
    report.set_defaults(handler=cmd_report)
    return parser


def cmd_report(args: argparse.Namespace) -> int:
    import asyncio

    from worker.core.definitions import load_definitions
    from worker.core.features import VOCABULARY
    from worker.ops.segment_report import report

    settings = _require(Settings(), "redis_url")
    definitions = load_definitions(settings.definitions_path, VOCABULARY)
    print(asyncio.run(report(settings, definitions, args.output)))
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    """Erasure goes through the worker, in order with the account's other events."""
    import uuid
    from datetime import UTC, datetime

    from worker.adapters.kafka_clients import produce
    from worker.core.events import AccountErased

    settings = _require(Settings(), "kafka_bootstrap_servers")
    _topics_ready(settings)
    event = AccountErased(
        event_id=f"erase-{uuid.uuid4()}",
        occurred_at=datetime.now(UTC),
        account_id=args.account_id,
        request_id=args.request_id,
    )
    produce(
        [("account-profiles", event.model_dump(mode="json"))],
        settings.kafka_bootstrap_servers or "",
        topics={"account-profiles": settings.topic_account_profiles},
        producer_config=kafka_client_options(settings),
    )
    print(f"erasure of {args.account_id} requested as event {event.event_id}")
    return 0


def _require(settings: Settings, *names: str) -> Settings:
    missing = [name for name in names if not getattr(settings, name)]
    if missing:
        env = {"redis_url": "REDIS_URL", "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS"}
        raise SystemExit(f"set {' and '.join(env[name] for name in missing)} for this command")
    return settings


def cmd_explain(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console
    from rich.table import Table

    from worker.core.definitions import load_definitions
    from worker.core.features import VOCABULARY
    from worker.ops.explain import explain

    settings = _require(Settings(), "redis_url")
    definitions = load_definitions(settings.definitions_path, VOCABULARY)
    found = asyncio.run(explain(settings, args.account_id, definitions))
    console = Console()
    if found is None:
        console.print(f"no state stored for account {args.account_id!r}")
        return 1
    table = Table(title=f"{found.account_id} as of {found.as_of:%Y-%m-%d %H:%M} (stream time)")
    for column in ("family", "segment", "since", "how", "reason"):
        table.add_column(column)
    for family, segment, since, how, reason in sorted(found.memberships):
        table.add_row(family, segment, f"{since:%Y-%m-%d}", how, reason)
    console.print(table)
    for family, segment, since, due in found.pending:
        when = f", enters {due:%Y-%m-%d %H:%M}" if due is not None else ""
        console.print(
            f"pending: {family}/{segment} qualifies since {since:%Y-%m-%d %H:%M}{when} "
            "if it still does then (enter_after)"
        )
    shown = {k: v for k, v in found.features.items() if v not in (None, 0, 0.0, False)}
    console.print(", ".join(f"{name}={value}" for name, value in shown.items()))
    return 0


def cmd_recompute(args: argparse.Namespace) -> int:

    from rich.console import Console
    from rich.table import Table

    from worker.core.definitions import load_definitions
    from worker.core.features import VOCABULARY
    from worker.ops.recompute import recompute_in_processes
    from worker.runtime.process import freeze_loaded_objects

    settings = Settings()
    _require(settings, "redis_url", *(() if args.dry_run else ("kafka_bootstrap_servers",)))
    source = args.definitions or settings.definitions_path
    definitions = load_definitions(source, VOCABULARY)  # invalid ones fail here, once
    if not args.dry_run:
        _topics_ready(settings)
    freeze_loaded_objects()
    report = recompute_in_processes(
        settings, source, dry_run=args.dry_run, processes=max(args.processes, 1)
    )
    verb = "would change" if args.dry_run else "changed"
    console = Console()
    console.print(
        f"recompute with {definitions.version}: {report.accounts} accounts, "
        f"{report.changes} memberships {verb}",
        soft_wrap=True,
    )
    parts = (
        (report.caused, "caused by the definitions change"),
        (report.pending, "pending without it (time since the last evaluation, a newer "
         "cluster model): the worker applies these anyway"),
    )  # fmt: skip
    for tally, what in parts:
        console.print(f"{tally.changes} {what}", soft_wrap=True)
        if not tally.changes:
            continue
        table = Table()
        for column in ("segment", "change", "accounts", "examples"):
            table.add_column(column)
        for segment, change, count, examples in tally.rows():
            table.add_row(segment, change, str(count), examples)
        console.print(table)
    return 0


def cmd_import_orders(args: argparse.Namespace) -> int:
    from rich.console import Console

    from worker.adapters.kafka_topics import TopicError
    from worker.ops.importer import ImportFileError, format_report, import_orders
    from worker.ops.importer.direct import ImportTargetError, import_into_state

    console = Console(stderr=True)
    settings = Settings()
    if not args.dry_run:
        _require(settings, "kafka_bootstrap_servers")
        if not args.via_kafka:
            _require(settings, "redis_url")
    if args.processes < 1:
        console.print("[red]--processes must be at least 1")
        return 2
    verb = "produced" if args.via_kafka else "imported"

    def progress(done: int, total: int) -> None:
        console.print(f"{done}/{total} events {verb}", highlight=False)

    try:
        if args.dry_run or args.via_kafka:
            if not args.dry_run:
                _topics_ready(settings)
            report = import_orders(
                args.path,
                settings.kafka_bootstrap_servers or "",
                settings.topic_orders,
                on_progress=progress,
                dry_run=args.dry_run,
                client_options=kafka_client_options(settings),
                earliest_event_time=settings.earliest_event_time,
            )
        else:
            report = import_into_state(
                settings, args.path, processes=args.processes, on_progress=progress
            )
    except ImportFileError as error:
        console.print(f"[red]{args.path}: {error}")
        return 2
    except (ImportTargetError, TopicError) as error:
        console.print(f"[red]{error}", highlight=False)
        return 1
    print(format_report(report))
    return 0


def cmd_validate_definitions(args: argparse.Namespace) -> int:
    from worker.core.definitions import DefinitionsError, load_definitions
    from worker.core.features import FEATURES, VOCABULARY

    path = args.path or Settings().definitions_path
    if args.features:
        for name, feature in FEATURES.items():
            print(f"{name:32} {feature.kind:7} {feature.description}")
        for name, function in VOCABULARY.functions.items():
            print(f"{name + '(…)':32} {function.result_kind:7} {function.description}")
    try:
        definitions = load_definitions(path, VOCABULARY)
    except DefinitionsError as error:
        print(f"{path}: {len(error.errors)} problem(s)", file=sys.stderr)
        for problem in error.errors:
            print(f"  {problem}", file=sys.stderr)
        return 1
    segments = sum(len(family.segments) for family in definitions.families)
    print(
        f"{path}: version {definitions.version}, "
        f"{len(definitions.families)} families, {segments} segments: OK"
    )
    return 0


def cmd_triggers_validate(args: argparse.Namespace) -> int:
    from worker.config.triggers import load_configured_triggers
    from worker.core.definitions import DefinitionsError, load_definitions
    from worker.core.features import VOCABULARY
    from worker.core.triggers.config import TriggersError

    settings = Settings()
    path = args.path or settings.triggers_path
    try:
        definitions = load_definitions(settings.definitions_path, VOCABULARY)
        config = load_configured_triggers(settings, definitions, path)
    except (DefinitionsError, TriggersError) as error:
        print(f"{path}: {len(error.errors)} problem(s)", file=sys.stderr)
        for problem in error.errors:
            print(f"  {problem}", file=sys.stderr)
        return 1
    limits = config.limits
    print(
        f"{path}: version {config.version}, {len(config.triggers)} triggers, "
        f"holdout {limits.holdout:.0%}, "
        f"{'no cap' if limits.per_account is None else f'cap {limits.per_account.max}'}, "
        f"{'no quiet hours' if limits.quiet_hours is None else 'quiet hours'}: OK"
    )
    return 0


def cmd_triggers_explain(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console
    from rich.table import Table

    from worker.adapters.factory import trigger_store
    from worker.runtime.triggers import decision_rows

    settings = _require(Settings(), "redis_url")

    async def load() -> list[dict[str, str]]:
        store = trigger_store(settings)
        try:
            return decision_rows(await store.load(args.account_id))
        finally:
            await store.close()

    rows = asyncio.run(load())
    console = Console()
    if not rows:
        console.print(f"no trigger decisions recorded for account {args.account_id!r}")
        return 0
    table = Table(title=f"trigger decisions of {args.account_id}, newest first")
    for column in ("decided (UTC)", "trigger", "outcome", "why", "deliver at"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["decided_at"][:19],
            row["trigger"],
            row["outcome"],
            row["reason"] or "fired",
            row["deliver_at"][:19] if row["deliver_at"] != row["decided_at"] else "",
        )
    console.print(table)
    return 0


def cmd_schemas_export(args: argparse.Namespace) -> int:
    from worker.ops.schemas import export_schemas

    for path in export_schemas(args.directory):
        print(path)
    return 0


@contextlib.contextmanager
def connected_settings(settings: Settings, *, redis: bool = True) -> Iterator[Settings]:
    """``settings`` with broker (and Redis) addresses, starting embedded ones when unset."""
    if settings.kafka_bootstrap_servers and (settings.redis_url or not redis):
        yield settings
        return
    from worker.devtools.embedded import start_kafka, start_redis

    with contextlib.ExitStack() as stack:
        kafka_servers, redis_url = settings.kafka_bootstrap_servers, settings.redis_url
        if not kafka_servers:
            kafka = start_kafka()
            stack.callback(kafka.stop)
            kafka_servers = kafka.bootstrap_servers
            log.info("embedded Kafka-protocol broker (Tansu) at %s", kafka_servers)
        if redis and not redis_url:
            embedded_redis = start_redis()
            stack.callback(embedded_redis.stop)
            redis_url = embedded_redis.url
            log.info("embedded Redis at %s", redacted_url(redis_url))
        yield settings.model_copy(
            update={"kafka_bootstrap_servers": kafka_servers, "redis_url": redis_url}
        )


def _topics_ready(settings: Settings) -> None:
    """Before a command produces: the worker's topics with their partition counts (unless
    SEGWORKER_CREATE_TOPICS=false). A broker that creates a missing topic on first use
    gives it its own default count (Tansu: 4), and the worker then refuses to start on
    a one-partition topic with four: found running import-orders before the first run."""
    if settings.create_topics:
        ensure_topics(settings)


def ensure_topics(settings: Settings) -> None:
    from worker.adapters.kafka_topics import create_topics

    assert settings.kafka_bootstrap_servers
    create_topics(settings.kafka_bootstrap_servers, settings.topic_partitions())


def cmd_run(args: argparse.Namespace) -> int:
    from worker.runtime.app import create_app
    from worker.runtime.process import run_worker
    from worker.runtime.views import check_binding

    settings = Settings()
    try:
        check_binding(settings)
    except ValueError as error:
        print(f"segworker run: {error}", file=sys.stderr)
        return 2
    with connected_settings(settings) as settings:
        if settings.create_topics:
            ensure_topics(settings)
        run_worker(create_app(settings), settings)
    return 0


def cmd_produce_sample(args: argparse.Namespace) -> int:
    from worker.devtools.demo import produce_sample

    settings = Settings()
    with connected_settings(settings, redis=False) as connected:
        ensure_topics(connected)
        count = produce_sample(connected, args.accounts, args.days, args.seed, args.limit)
    print(f"produced {count} events")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.devtools.demo import run_demo

    with connected_settings(Settings()) as settings:
        ensure_topics(settings)
        return run_demo(settings, args)


if __name__ == "__main__":
    raise SystemExit(main())
