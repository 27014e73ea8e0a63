"""Child processes of the embedded stack: binaries, free loopback ports, spawning and stopping.

A server started here listens on 127.0.0.1 only and is stopped by :meth:`Server.stop`,
by an :mod:`atexit` hook and (on Linux, when started from the main thread) by the kernel
when the parent process dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

#: The only address the embedded servers listen on.
LOOPBACK = "127.0.0.1"


#: How many times a start is retried on a fresh port when the port was taken meanwhile.
PORT_ATTEMPTS = 5
#: Seconds a server gets to exit after SIGTERM before it is SIGKILLed.
STOP_GRACE = 10.0
ADDR_IN_USE_MARKERS = ("address in use", "addrinuse", "address already in use")


class EmbeddedError(RuntimeError):
    """An embedded server could not be started or did not become ready."""


class ServerBinaryNotFound(EmbeddedError):
    """The executable of an embedded server could not be located."""


class PortInUse(EmbeddedError):
    """The server could not bind its port (another process took it first)."""


def is_executable(path: str | os.PathLike[str]) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


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


def can_connect(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


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


_LIVE: set[Server] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(_stop_all_at_exit)


def spawn(
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


def terminate(process: subprocess.Popen[bytes], grace: float) -> None:
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


def proc_state(pid: int) -> str | None:
    """Return the Linux ``/proc`` state letter of a process (``"T"`` = stopped), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def wait_proc_state(pid: int, accept: Callable[[str], bool], timeout: float = 5.0) -> None:
    """Wait until the process state satisfies ``accept`` (no-op without ``/proc``)."""
    deadline = time.monotonic() + timeout
    while True:
        state = proc_state(pid)
        if state is None or accept(state) or time.monotonic() > deadline:
            return
        time.sleep(0.005)


def log_tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_bytes()[-limit:].decode("utf-8", "replace")
    except OSError:
        return "<no log>"
    return text.strip() or "<empty log>"


def make_workdir(workdir: Path | None, prefix: str) -> tuple[Path, bool]:
    if workdir is not None:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        return workdir, False
    return Path(tempfile.mkdtemp(prefix=prefix)), True


@dataclass(eq=False, kw_only=True)
class Server:
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
            terminate(self.process, STOP_GRACE)
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(self)
            if self.owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _signal(self, signum: int) -> None:
        if self.process.poll() is not None:
            raise EmbeddedError(f"process {self.process.pid} has already exited")
        os.kill(self.process.pid, signum)


def wait_listening(
    process: subprocess.Popen[bytes], port: int, deadline: float, log_path: Path, what: str
) -> None:
    """Wait until ``process`` itself listens on ``port`` (not some other process)."""
    while True:
        if process.poll() is not None:
            tail = log_tail(log_path)
            if any(marker in tail.lower() for marker in ADDR_IN_USE_MARKERS):
                raise PortInUse(f"{what}: port {port} was taken")
            raise EmbeddedError(
                f"{what} exited with code {process.returncode} during start; log {log_path}:\n"
                f"{tail}"
            )
        addresses = listening_addresses(process.pid)
        if addresses is None:  # no /proc: trust a successful connect
            if can_connect(port):
                return
        elif (LOOPBACK, port) in addresses:
            return
        if time.monotonic() > deadline:
            raise EmbeddedError(
                f"{what} did not listen on {LOOPBACK}:{port} in time; log {log_path}:\n"
                f"{log_tail(log_path)}"
            )
        time.sleep(0.02)


S = TypeVar("S", bound=Server)


def start_retrying(
    directory: Path,
    owned: bool,
    attempts: int,
    launch: Callable[[], tuple[S, Callable[[], None]]],
) -> S:
    """Start a server with ``launch`` (the server and a function that waits until it is
    ready) and return it once ready. A server that lost its port to another process
    (:class:`PortInUse`) is stopped and launched again, ``attempts`` times in all; any
    other failure stops it, and a work directory the caller created (``owned``) is removed.
    """
    try:
        for attempt in range(1, attempts + 1):
            server, ready = launch()
            try:
                ready()
            except PortInUse:
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
