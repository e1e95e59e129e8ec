"""A Redis Sentinel deployment on loopback for failover tests: one master, one replica, three sentinels.

The sentinels are ``redis-server <config> --sentinel`` (no redis-sentinel binary needed), each with its own
config file (Sentinel rewrites it as it learns the topology). ``down-after-milliseconds`` is short so that a
killed master is failed over within a few seconds.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import TracebackType

from dbtbus.testing.redis_server import (
    LOOPBACK,
    RedisServer,
    RedisServerError,
    find_redis_server,
    free_port,
    log_tail,
)

SERVICE = "dbtbus-master"


class SentinelProcess:
    """One ``redis-server --sentinel`` watching ``SERVICE`` on ``master_port``."""

    def __init__(
        self,
        directory: Path,
        master_port: int,
        *,
        down_after_ms: int,
        failover_timeout_ms: int,
        quorum: int = 2,
        extra: str = "",
    ) -> None:
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True)
        self.config = directory / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind {LOOPBACK}\nprotected-mode no\ndaemonize no\n"
            f"dir {directory}\nlogfile {directory / 'sentinel.log'}\n"
            f"sentinel monitor {SERVICE} {LOOPBACK} {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n{extra}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = find_redis_server()
        if exe is None:
            raise RedisServerError("redis-server not found")
        self.process = subprocess.Popen([exe, str(self.config), "--sentinel"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.cli("ping").strip():  # any reply, an auth error too, says it listens
            if time.monotonic() > deadline:
                raise RedisServerError(f"the sentinel on port {self.port} did not answer")
            time.sleep(0.02)

    def cli(self, *args: str) -> str:
        command = ["redis-cli", "-h", LOOPBACK, "-p", str(self.port), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False).stdout

    def master(self) -> dict[str, str]:
        """``SENTINEL MASTER <service>`` as a dict ({} while the sentinel does not answer)."""
        lines = self.cli("sentinel", "master", SERVICE).splitlines()
        return dict(zip(lines[::2], lines[1::2], strict=False))

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


class SentinelDeployment:
    """A master, a replica of it and three sentinels (quorum 2) on free loopback ports."""

    def __init__(self, directory: Path, *, down_after_ms: int = 1000, failover_timeout_ms: int = 3000) -> None:
        master_dir, replica_dir = directory / "master", directory / "replica"
        master_dir.mkdir(parents=True)
        replica_dir.mkdir(parents=True)
        # Without a delay the master starts the replica's full sync at once instead of waiting 5 s (Redis's
        # default) for more replicas to share one diskless transfer.
        self.master = RedisServer(directory=master_dir, extra_args=["--repl-diskless-sync-delay", "0"])
        self.replica = RedisServer(directory=replica_dir, extra_args=["--replicaof", LOOPBACK, str(self.master.port)])
        self.servers = [self.master, self.replica]
        self.sentinels = [
            SentinelProcess(directory / f"sentinel{i}", self.master.port, down_after_ms=down_after_ms,
                            failover_timeout_ms=failover_timeout_ms)
            for i in range(3)
        ]  # fmt: skip

    def url(self, *, db: int = 0, query: str = "") -> str:
        hosts = ",".join(f"{LOOPBACK}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}" + (f"?{query}" if query else "")

    def start(self) -> SentinelDeployment:
        try:
            self.master.start()
            self.replica.start()
            # A busy machine can slow the first sync well past a second; the deadline is generous and a
            # timeout says what the replica logged.
            self._wait(
                lambda: "master_link_status:up" in self.replica.cli("info", "replication", check=False),
                "the replica's sync",
                timeout=90,
                log=self.replica.log_file,
            )
            for sentinel in self.sentinels:
                sentinel.start()
            # Each sentinel must know the replica (from the master's INFO) and the two other sentinels (from
            # their hello messages, every 2 s) before a failover can be agreed and carried out.
            self._wait(
                lambda: all(
                    (m := s.master()).get("num-slaves") == "1" and m.get("num-other-sentinels") == "2"
                    for s in self.sentinels
                ),
                "the sentinels' discovery of the replica and of each other",
                timeout=90,
                log=self.sentinels[0].directory / "sentinel.log",
            )
        except BaseException:
            self.close()
            raise
        return self

    def master_port(self) -> int | None:
        """The master's port as the sentinels report it (the first that answers)."""
        for sentinel in self.sentinels:
            reply = sentinel.cli("sentinel", "get-master-addr-by-name", SERVICE).split()
            if len(reply) == 2:
                return int(reply[1])
        return None

    def wait_for_master(self, port: int, timeout: float = 60) -> None:
        """Return once the sentinels name the server on ``port`` as the master (a failover has happened)."""
        self._wait(lambda: self.master_port() == port, f"the sentinels to name port {port} master", timeout)

    def wait_for_replica(self, server: RedisServer, timeout: float = 60) -> None:
        """Return once ``server`` (a master the sentinels replaced) has been turned into a replica."""
        self._wait(lambda: "role:slave" in server.cli("info", "replication"), f"port {server.port} demoted", timeout)

    @staticmethod
    def _wait(ready: object, what: str, timeout: float = 30, log: Path | None = None) -> None:
        assert callable(ready)
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                tail = log_tail(log, 15) if log is not None else ""
                raise RedisServerError(f"timed out after {timeout:g} s waiting for {what}"
                                       + (f"; the end of {log}:\n{tail}" if tail else ""))
            time.sleep(0.05)

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.close()

    def __enter__(self) -> SentinelDeployment:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
