"""A Redis Cluster of three masters with one replica each, on loopback, for failover tests."""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from dbtbus.testing.redis_server import LOOPBACK, RedisServer, RedisServerError


class ReplicatedCluster:
    """Six cluster-enabled servers (``--cluster-replicas 1``), a short node timeout so failover is quick."""

    def __init__(self, directory: Path, *, node_timeout_ms: int = 1000) -> None:
        self.servers = []
        for i in range(6):
            node_dir = directory / f"node{i}"
            node_dir.mkdir(parents=True)
            self.servers.append(
                RedisServer(
                    cluster=True, appendonly=True, directory=node_dir,
                    extra_args=["--cluster-node-timeout", str(node_timeout_ms)],
                )
            )  # fmt: skip

    @property
    def url(self) -> str:
        # A replica as the clients' only seed node: the test kills a master, and a URL naming just that master
        # would leave a client that must (re)connect before learning the other nodes nowhere to go. A URL may
        # name several seeds (test_cluster_seeds.py); this one keeps the single-seed form under test.
        return self.servers[-1].url

    def start(self) -> ReplicatedCluster:
        try:
            for server in self.servers:
                server.start()
            addresses = [f"{LOOPBACK}:{server.port}" for server in self.servers]
            self.servers[0].cli("--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes")
            self.wait_ok(self.servers)
            self.wait_replicas_synced()
        except BaseException:
            self.close()
            raise
        return self

    def wait_ok(self, servers: list[RedisServer], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not all("cluster_state:ok" in s.cli("cluster", "info") for s in servers):
            if time.monotonic() > deadline:
                raise RedisServerError("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def wait_replicas_synced(self, timeout: float = 60) -> None:
        """Every replica has finished its first sync with its master. A replica that never synced does not
        fail over (its data counts as older than cluster-replica-validity-factor allows), so a test that
        kills a master before that — a loaded machine, seconds after the cluster was created — sees no
        failover at all."""
        deadline = time.monotonic() + timeout
        while True:
            infos = [s.cli("info", "replication") for s in self.servers]
            replicas = [info for info in infos if "role:slave" in info]
            if len(replicas) == len(self.servers) // 2 and all("master_link_status:up" in i for i in replicas):
                return
            if time.monotonic() > deadline:
                raise RedisServerError("the cluster's replicas did not finish their first sync")
            time.sleep(0.1)

    def master_of(self, key: str) -> RedisServer:
        """The server that is master of ``key``'s slot now."""
        slot = int(self.alive()[0].cli("cluster", "keyslot", key).strip())
        for line in self.alive()[0].cli("cluster", "nodes").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    return next(s for s in self.servers if s.port == port)
        raise RedisServerError(f"no master serves slot {slot}")

    def alive(self) -> list[RedisServer]:
        return [s for s in self.servers if s.process is not None and s.process.poll() is None]

    def close(self) -> None:
        for server in self.servers:
            server.close()

    def __enter__(self) -> ReplicatedCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
