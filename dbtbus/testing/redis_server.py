"""Throw-away ``redis-server`` processes for tests and benchmarks.

Pure standard library (no redis-py): :class:`RedisServer` starts one server on a free loopback port in a
temporary directory — optionally with append-only persistence, an ACL file, TLS or cluster mode — and can
stop and restart it on the same port and data directory (to prove a client survives a restart).
:class:`RedisClusterServers` starts three masters and joins them with ``redis-cli --cluster create``.
:func:`make_tls_files` writes a throw-away CA and server certificate with the ``openssl`` CLI.
:func:`redis_url_from_env` returns ``$REDIS_URL`` for runs against an existing server.

Typical use::

    with RedisServer(appendonly=True) as server:
        url = server.url          # redis://127.0.0.1:<port>/0
        server.restart()          # same port, same data
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "RedisClusterServers",
    "RedisServer",
    "RedisServerError",
    "TLSFiles",
    "find_redis_server",
    "free_port",
    "log_tail",
    "make_tls_files",
    "redis_url_from_env",
]

LOOPBACK = "127.0.0.1"


class RedisServerError(RuntimeError):
    """A throw-away server could not be started, reached or configured."""


def redis_url_from_env(var: str = "REDIS_URL") -> str | None:
    """The URL of an existing Redis server to test against (``$REDIS_URL``), or ``None`` when unset/empty."""
    value = os.environ.get(var, "").strip()
    return value or None


def find_redis_server() -> str | None:
    """The path of ``redis-server`` on ``PATH`` (or ``$REDIS_SERVER``), or ``None``."""
    explicit = os.environ.get("REDIS_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("redis-server")


def _find_redis_cli(server: str) -> str:
    sibling = Path(server).with_name("redis-cli")
    found = str(sibling) if sibling.exists() else shutil.which("redis-cli")
    if found is None:
        raise RedisServerError("redis-cli not found (needed for cluster setup)")
    return found


def log_tail(path: str | os.PathLike[str], lines: int = 10) -> str:
    """The last ``lines`` lines of a server's log file, for an error message ("" when it cannot be read)."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port(*, with_bus: bool = False) -> int:
    """A TCP port on loopback that is free right now (and, ``with_bus``, so is port + 10000)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if not with_bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus, contextlib.suppress(OSError):
            bus.bind((LOOPBACK, port + 10000))
            return port
    raise RedisServerError("no free port found")


@dataclass(frozen=True)
class TLSFiles:
    """A CA certificate and a server (also usable as client) certificate signed by it, for 127.0.0.1."""

    ca_cert: Path
    cert: Path
    key: Path


def make_tls_files(directory: str | os.PathLike[str]) -> TLSFiles:
    """Write a throw-away CA and a certificate for ``127.0.0.1`` / ``localhost`` into ``directory``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RedisServerError("openssl not found: cannot generate TLS certificates")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert, key, csr, cert = (
        d / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    )
    ext = d / "server.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )

    def run(*args: str) -> None:
        proc = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RedisServerError(f"openssl {args[0]} failed: {proc.stderr.strip()}")

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2", "-keyout", str(ca_key),
        "-out", str(ca_cert), "-subj", "/CN=dbtbus test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return TLSFiles(ca_cert=ca_cert, cert=cert, key=key)


class RedisServer:
    """One throw-away ``redis-server`` on a free loopback port, in its own temporary directory.

    ``appendonly``: persist every write (``appendfsync always``) so a restart loses nothing.
    ``acl_file``: path of an ACL file (``user ... on >pass ~pattern +@all``) to load.
    ``password``: ``requirepass`` for the default user (the URL then carries it).
    ``tls``: serve TLS only (``--port 0 --tls-port``), with certificates from :func:`make_tls_files`.
    ``cluster``: ``--cluster-enabled yes`` (the cluster bus port, port + 10000, is kept free too).
    ``extra_args``: further ``--option value`` pairs.
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        acl_file: str | os.PathLike[str] | None = None,
        password: str | None = None,
        tls: TLSFiles | None = None,
        cluster: bool = False,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        directory: str | os.PathLike[str] | None = None,
        executable: str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        exe = executable or find_redis_server()
        if exe is None:
            raise RedisServerError("redis-server not found on PATH (set REDIS_SERVER or REDIS_URL)")
        self.executable = exe
        self.appendonly = appendonly
        self.acl_file = Path(acl_file) if acl_file is not None else None
        self.password = password
        self.tls = tls
        self.cluster = cluster
        self.extra_args = list(extra_args)
        self.port = port or free_port(with_bus=cluster)
        self._own_dir = directory is None
        self.directory = (
            Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="dbtbus-redis-"))
        )
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------------------------------ URLs

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:<port>/0`` (``rediss://`` with TLS, no query string)."""
        scheme = "rediss" if self.tls else "redis"
        auth = f":{self.password}@" if self.password else ""
        return (
            f"{scheme}://{auth}{LOOPBACK}:{self.port}/0"
            if not self.cluster
            else f"{scheme}://{auth}{LOOPBACK}:{self.port}"
        )

    @property
    def log_file(self) -> Path:
        return self.directory / "redis.log"

    # ------------------------------------------------------------------------------------------ process

    def _args(self) -> list[str]:
        args = [
            self.executable,
            "--bind", LOOPBACK,
            "--dir", str(self.directory),
            "--logfile", str(self.log_file),
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--maxclients", "20000",
        ]  # fmt: skip
        if self.tls is not None:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.cert),
                     "--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca_cert),
                     "--tls-auth-clients", "no"]  # fmt: skip
            if self.cluster:
                args += ["--tls-cluster", "yes"]
        else:
            args += ["--port", str(self.port)]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        if self.acl_file is not None:
            args += ["--aclfile", str(self.acl_file)]
        if self.password:
            args += ["--requirepass", self.password]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.directory / "nodes.conf"),
                     "--cluster-node-timeout", "5000"]  # fmt: skip
        return args + self.extra_args

    def start(self) -> RedisServer:
        """Start the server (on the same port and directory as before, after :meth:`stop`) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RedisServerError(
                    f"redis-server exited with {self.process.returncode}: {stderr}{self._log_tail()}"
                )
            if self.ping():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RedisServerError(
                    f"redis-server on port {self.port} did not answer within {self.startup_timeout} s"
                )
            time.sleep(0.02)

    def _log_tail(self) -> str:
        tail = log_tail(self.log_file)
        return "\n" + tail if tail else ""

    def ping(self) -> bool:
        """True once the server answers a command (an auth error counts; still loading data does not)."""
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as raw:
                sock: socket.socket = raw
                if self.tls is not None:
                    context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
                    sock = context.wrap_socket(raw, server_hostname=LOOPBACK)
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return bool(reply) and not reply.startswith(b"-LOADING")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM flushes its append-only file; ``kill``: SIGKILL). Keeps the data."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def restart(self, *, down_for: float = 0.0, kill: bool = False) -> None:
        """Stop, stay down ``down_for`` seconds, start again on the same port with the same data."""
        self.stop(kill=kill)
        if down_for:
            time.sleep(down_for)
        self.start()

    def cli(self, *args: str, check: bool = True) -> str:
        """Run ``redis-cli`` against this server and return its output."""
        command = [_find_redis_cli(self.executable), "-h", LOOPBACK, "-p", str(self.port)]
        if self.tls is not None:
            command += ["--tls", "--cacert", str(self.tls.ca_cert)]
        if self.password:
            command += ["--no-auth-warning", "-a", self.password]
        proc = subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, check=False)
        if check and proc.returncode != 0:
            raise RedisServerError(
                f"redis-cli {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc.stdout

    def close(self) -> None:
        """Stop the server and remove its directory (if this object created it)."""
        self.stop(kill=True)
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class RedisClusterServers:
    """Three (``size``) cluster-enabled masters on loopback, joined with ``redis-cli --cluster create``."""

    def __init__(
        self, size: int = 3, *, executable: str | None = None, startup_timeout: float = 30.0
    ) -> None:
        if size < 3:
            raise ValueError("a Redis Cluster needs at least 3 masters")
        self.nodes = [RedisServer(cluster=True, executable=executable) for _ in range(size)]
        self.startup_timeout = startup_timeout

    @property
    def url(self) -> str:
        """A startup node's URL (``redis://127.0.0.1:<port>``); add ``?cluster=true`` for dbtbus."""
        return self.nodes[0].url

    def start(self) -> RedisClusterServers:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"{LOOPBACK}:{node.port}" for node in self.nodes]
            self.nodes[0].cli("--cluster", "create", *addresses, "--cluster-yes")
            deadline = time.monotonic() + self.startup_timeout
            while not all("cluster_state:ok" in node.cli("cluster", "info") for node in self.nodes):
                if time.monotonic() > deadline:
                    raise RedisServerError("the cluster did not reach cluster_state:ok")
                time.sleep(0.1)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
