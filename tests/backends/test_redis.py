"""The Redis Streams backend against real redis-server processes.

A session-wide throw-away server serves the contract suite (or ``$REDIS_URL`` when set); tests that restart
or reconfigure a server start their own. Without ``redis-server`` (and no ``REDIS_URL``) these tests are
skipped — except under ``CI``, where they fail: CI must never silently lose its Redis coverage.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import subprocess
import sys
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import dbtbus
from dbtbus import BackendError, BackendUnavailable, ConfigurationError
from dbtbus._exceptions import AuthenticationFailed, BackendRejected, PermissionDenied
from dbtbus.backends import backend_from_url
from dbtbus.backends.base import Append, Backend
from dbtbus.events import NodeResult, NodeStarted, NodeStatus, RunFinished
from dbtbus.testing.backend_contract import BackendContract

from .._records import result, started

try:
    import redis  # noqa: F401
except ImportError:  # pragma: no cover - the test extra installs it
    if os.environ.get("CI"):
        raise
    pytest.skip("redis-py is not installed (pip install 'dbtbus[redis]')", allow_module_level=True)

from dbtbus.backends.redis import ACL_COMMANDS, RedisBackend, acl_rule
from dbtbus.testing.redis_server import (
    RedisClusterServers,
    RedisServer,
    find_redis_server,
    make_tls_files,
    redis_url_from_env,
)

pytestmark = pytest.mark.redis


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client runs on asyncio only


def _missing(what: str) -> None:
    message = f"{what}: install redis-server (or set REDIS_URL) to run the Redis backend tests"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_session() -> Iterator[tuple[str, RedisServer | None]]:
    """(URL, server or None) of the Redis the contract runs against."""
    url = redis_url_from_env()
    if url is not None:
        yield url, None
        return
    if find_redis_server() is None:
        _missing("redis-server is not on PATH and REDIS_URL is unset")
    server = RedisServer(extra_args=["--unixsocket", "redis.sock", "--unixsocketperm", "700"])
    with server:
        yield server.url, server


@pytest.fixture(scope="session")
def redis_url(redis_session: tuple[str, RedisServer | None]) -> str:
    return redis_session[0]


@pytest.fixture
def own_server_available() -> None:
    if find_redis_server() is None:
        _missing("this test starts its own redis-server, which is not on PATH")


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


async def _open(url: str, **options: Any) -> RedisBackend:
    backend = backend_from_url(url, **options)
    assert isinstance(backend, RedisBackend)
    await backend.open()
    return backend


async def _cleanup(backend: Backend) -> None:
    with anyio.CancelScope(shield=True):
        try:
            for run_id in await backend.list_runs():
                await backend.delete_run(run_id)
        finally:
            await backend.aclose()


async def _raw(url: str) -> Any:
    import redis.asyncio

    return redis.asyncio.Redis.from_url(url.split("?")[0])


# ---------------------------------------------------------------------------------------------- contract


class TestRedisBackendContract(BackendContract):
    blocking_slack = 0.3

    @pytest.fixture
    async def backend(self, redis_url: str) -> AsyncIterator[Backend]:
        backend = await _open(redis_url, prefix=_prefix())
        try:
            yield backend
        finally:
            await _cleanup(backend)


# ---------------------------------------------------------------------------------------------- URLs


def test_import_dbtbus_does_not_import_redis() -> None:
    code = "import sys, dbtbus, dbtbus.backends; assert 'redis' not in sys.modules, 'redis imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_url_options() -> None:
    backend = RedisBackend.from_url(
        "redis://user:s3cret@db.example:6380/2?prefix=acme:&maxlen=500&block_ms=250&socket_timeout=3",
        retries=1,
    )
    assert backend.prefix == "acme:"
    assert backend.maxlen == 500
    assert backend.block_ms == 250
    assert backend.settings.socket_timeout == 3
    assert backend.settings.retries == 1
    assert backend.max_record_bytes == 8 * 1024 * 1024
    assert RedisBackend.from_url("redis://h?max_record_bytes=1000").max_record_bytes == 1000
    assert "s3cret" not in repr(backend)
    assert "s3cret" not in backend.settings.display_url
    assert backend.log_key("r1") == "acme:{r1}:log"
    assert backend.nodes_key("r1") == "acme:{r1}:nodes"
    assert backend.lease_key("r1") == "acme:{r1}:lease"
    # keyword options override the URL's
    assert RedisBackend.from_url("redis://h?prefix=a:", prefix="b:").prefix == "b:"
    tls = RedisBackend.from_url(
        "rediss://h:1/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required&ssl_check_hostname=false"
    )
    assert tls.settings.client == {
        "ssl_ca_certs": "/ca.pem",
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": False,
    }
    assert RedisBackend.from_url("redis://h:7000?cluster=true").cluster
    assert RedisBackend.from_url("unix:///tmp/redis.sock?db=3").settings.client == {"db": 3}
    # Tombstones: 7 days by default, in seconds, 0 for none (a backend option, not redis-py's).
    assert backend.tombstones and backend.tombstone_period == 7 * 24 * 3600
    assert RedisBackend.from_url("redis://h?tombstone_period=60").tombstone_period == 60
    assert RedisBackend.from_url("redis://h", tombstone_period=0).tombstone_period == 0


@pytest.mark.parametrize(
    "url",
    ["unix:///tmp/redis.sock?db=3", "UNIX:///tmp/redis.sock", "redis://:pw@h:6380/2?prefix=a:", "rediss://h/0"],
)
def test_the_url_handed_to_redis_py_is_one_it_accepts(url: str) -> None:
    # redis-py 8.2 refuses "unix:/path" (what urlunsplit makes of unix:///path): the URL must keep its "//".
    from redis.asyncio.connection import parse_url

    settings = RedisBackend.from_url(url).settings
    assert "?" not in settings.url
    assert settings.url.startswith(f"{settings.scheme}://")
    parse_url(settings.url)


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("redis://h/0?bogus=1", {}),
        ("redis://h/0", {"bogus": 1}),
        ("redis://h/0?maxlen=-1", {}),
        ("redis://h/0?retention=60", {}),  # removed: the producer takes retention, not the URL
        ("redis://h/0?coalesce=true", {}),  # removed with the write coalescer
        ("redis://h/0?max_record_bytes=0", {}),
        ("redis://h/0?tombstone_period=-1", {}),
        ("redis://h/0?tombstone_period=inf", {}),
        ("redis://h/0?tombstone_period=week", {}),
        ("redis://h/0?block_ms=0", {}),
        ("redis://h/0?cluster=maybe", {}),
        ("redis://h/0?prefix={x}:", {}),
        ("redis://h/0?ssl_ca_certs=/ca.pem", {}),  # TLS options need rediss://
        ("redis://h/0?socket_timeout=never", {}),
        ("redis://h/3?cluster=true", {}),
        ("redis://h/0?prefix=a&prefix=b", {}),
        ("unix://", {}),
        ("redis://a:7000,b:7001/0", {}),  # several hosts are a cluster's seeds: cluster=true
        ("redis://a:7000,,b:7001/0?cluster=true", {}),
        ("redis://a:7000,b:port/0?cluster=true", {}),
        ("redis://a:7000,b:7001/2?cluster=true", {}),
    ],
)
def test_bad_urls_raise_configuration_error(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RedisBackend.from_url(url, **options)


def test_a_cluster_url_names_several_seed_nodes() -> None:
    """``redis://a:7000,b:7001/0?cluster=true``: redis-py's ``startup_nodes``, credentials shared by all."""
    settings = RedisBackend.from_url("redis://u:s3cret@a:7000,[::1]:7001,c/0?cluster=true&prefix=x:").settings
    assert settings.url == "redis://u:s3cret@a:7000/0"  # the first seed, as redis-py parses it
    assert settings.seeds == (("::1", 7001), ("c", 6379))
    assert settings.display_url == "redis://u:***@a:7000,[::1]:7001,c/0?cluster=true&prefix=x:"
    assert settings.prefix == "x:" and settings.cluster
    assert RedisBackend.from_url("redis://a:7000/0?cluster=true").settings.seeds == ()
    client = RedisBackend.from_url("redis://a:7000,b:7001/0?cluster=true")._new_client(blocking=False)
    assert sorted(client.nodes_manager.startup_nodes) == ["a:7000", "b:7001"]


def test_a_cursor_says_when_redis_stored_its_entry() -> None:
    """A stream id's first part is the server's clock (ms) at XADD: readers measure producers' skew by it."""
    backend = RedisBackend.from_url("redis://h/0")
    assert backend.stored_at("1796558100964-3") == pytest.approx(1796558100.964)
    assert backend.stored_at("junk") is None


def test_connect_builds_a_redis_bus() -> None:
    bus = dbtbus.connect("redis://localhost:6379/0?prefix=x:", read_block=0.5)
    assert isinstance(bus.backend, RedisBackend)
    assert bus.read_block == 0.5


@pytest.mark.anyio
async def test_unix_socket(redis_session: tuple[str, RedisServer | None]) -> None:
    server = redis_session[1]
    if server is None:
        pytest.skip("REDIS_URL given: no unix socket known")
    prefix = _prefix()
    url = f"unix://{server.directory / 'redis.sock'}?db=0&prefix={prefix}"
    backend = await _open(url)
    try:
        await backend.append("r", [Append(b"via unix", node="n")])
        assert await backend.get_node("r", "n") == b"via unix"
        # the CLI opens the same URL (it printed a traceback under redis-py 8.2)
        proc = await anyio.run_process([sys.executable, "-m", "dbtbus", "runs", "--bus", url], check=False)
        assert proc.returncode == 0, proc.stderr
        assert b"Traceback" not in proc.stderr
    finally:
        await _cleanup(backend)


# ---------------------------------------------------------------------------------------------- layout


@pytest.mark.anyio
async def test_key_layout_hash_tag_retention_and_maxlen(redis_url: str) -> None:
    prefix = _prefix()
    backend = await _open(redis_url, prefix=prefix, maxlen=100)
    raw = await _raw(redis_url)
    try:
        run = "run{7}"
        await backend.append(run, [Append(f"{i}".encode(), node=f"model.m{i}") for i in range(1000)])
        await backend.renew_lease(run, "p", 60)
        keys = sorted(k.decode() for k in await raw.keys(f"{prefix}*"))
        tagged = f"{prefix}{{run%7B7%7D}}"
        assert keys == sorted([f"{tagged}:log", f"{tagged}:nodes", f"{tagged}:lease", f"{prefix}runs"])
        assert await raw.type(f"{tagged}:log") == b"stream"
        assert await raw.hlen(f"{tagged}:nodes") == 1000  # every node record, not trimmed
        assert 100 <= await raw.xlen(f"{tagged}:log") < 400  # MAXLEN ~ 100
        # a cursor trimmed away resumes at the oldest entry still stored
        entries = await backend.read(run, "0-1", limit=5000)
        assert entries[-1].data == b"999"
        assert await raw.ttl(f"{tagged}:log") == -1
        await backend.expire_run(run, 3600)
        assert 3590 < await raw.ttl(f"{tagged}:log") <= 3600
        assert 3590 < await raw.ttl(f"{tagged}:nodes") <= 3600
        assert await raw.ttl(f"{tagged}:lease") <= 60  # the lease keeps its shorter expiry
        await backend.append(run, [Append(b"more")])
        assert await raw.ttl(f"{tagged}:log") == -1
        assert await raw.ttl(f"{tagged}:nodes") == -1
    finally:
        await raw.aclose()
        await _cleanup(backend)


@pytest.mark.anyio
async def test_a_claim_is_kept_or_expires_as_the_producers_appends_say(redis_url: str) -> None:
    """The claim is its own key: the producer's claim, taken when the run may have no record yet (or after an
    append, which finds no claim to expire), carries the appends' expiry; without one it is kept, as before."""
    prefix = _prefix()
    backend = await _open(redis_url, prefix=prefix)
    raw = await _raw(redis_url)
    try:
        await backend.acquire_lease("claimed-first", "p", 60, expire_after=3600)
        assert 3590 < await raw.ttl(f"{prefix}{{claimed-first}}:claim") <= 3600
        await backend.append("appended-first", [Append(b"a", expire_after=3600)])
        await backend.acquire_lease("appended-first", "p", 60, expire_after=3600)
        assert 3590 < await raw.ttl(f"{prefix}{{appended-first}}:claim") <= 3600
        await backend.acquire_lease("appended-first", "p", 60)  # a run without retention: kept for ever
        assert await raw.ttl(f"{prefix}{{appended-first}}:claim") == -1
    finally:
        await raw.aclose()
        await _cleanup(backend)


# ------------------------------------------------------------------------------------ the bus on Redis


def _graph(n: int) -> dict[str, list[str]]:
    spec: dict[str, list[str]] = {"seed.s": []}
    for i in range(n - 1):
        spec[f"model.m{i}"] = ["seed.s"] if i < 10 else [f"model.m{i // 10 - 1}"]
    return spec


async def _publish_retrying(bus: dbtbus.Bus, records: list[Any], deadline: float = 30.0) -> None:
    """What the producer does: retry a batch while the backend is unavailable."""
    with anyio.fail_after(deadline):
        while True:
            try:
                await bus.publish(records)
                return
            except BackendUnavailable:
                await anyio.sleep(0.1)


@pytest.mark.anyio
async def test_whole_run_with_5000_nodes(redis_url: str) -> None:
    run = f"big-{uuid.uuid4().hex[:6]}"
    spec = _graph(5000)
    uids = list(spec)
    async with dbtbus.connect(redis_url, prefix=_prefix()) as bus:
        try:
            outcomes: dict[str, Any] = {}

            async def waiter() -> None:
                outcomes.update(await bus.wait_many(run, uids, timeout=60, return_exceptions=True))

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await bus.renew_lease(run, "producer", 60)
                await bus.publish(started(spec, run_id=run))
                for start in range(0, len(uids), 250):
                    chunk = uids[start : start + 250]
                    await bus.publish([NodeStarted(run_id=run, unique_id=uid) for uid in chunk])
                    await bus.publish([result(uid, run_id=run) for uid in chunk])
                await bus.publish(RunFinished(run_id=run, success=True))
            assert len(outcomes) == 5000
            assert all(
                isinstance(o, NodeResult) and o.status is NodeStatus.SUCCESS for o in outcomes.values()
            )
            # a late waiter: one key lookup
            late = await bus.wait(run, "model.m4321", timeout=5)
            assert late.unique_id == "model.m4321"
            state = await bus.run_state(run)
            assert state.ending is not None
        finally:
            await _cleanup(bus.backend)


@pytest.mark.anyio
async def test_10000_waiters_on_one_run_share_one_blocking_connection(redis_url: str) -> None:
    run = f"wide-{uuid.uuid4().hex[:6]}"
    uids = [f"model.m{i}" for i in range(1000)]
    spec = {uid: [] for uid in uids}
    async with dbtbus.connect(redis_url, prefix=_prefix()) as bus:
        backend = bus.backend
        assert isinstance(backend, RedisBackend)
        try:
            await bus.renew_lease(run, "producer", 60)
            await bus.publish(started(spec, run_id=run))  # waiters join the reader (no late probes)
            got: list[NodeResult] = []

            async def waiter(uid: str) -> None:
                got.append(await bus.wait(run, uid, timeout=60))

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for i in range(10_000):
                        tg.start_soon(waiter, uids[i % len(uids)])
                    await anyio.sleep(0.5)
                    for start in range(0, len(uids), 100):
                        await bus.publish([result(uid, run_id=run) for uid in uids[start : start + 100]])
            assert len(got) == 10_000
            pool = backend._blocking.connection_pool
            assert len(pool._in_use_connections) + len(pool._available_connections) == 1
        finally:
            await _cleanup(backend)


# ---------------------------------------------------------------------------------------------- failures


@pytest.mark.anyio
@pytest.mark.usefixtures("own_server_available")
async def test_server_restart_mid_run_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    run = "restart-run"
    uids = [f"model.m{i}" for i in range(200)]
    spec = {uid: [] for uid in uids}
    with RedisServer(appendonly=True, directory=tmp_path) as server:
        async with dbtbus.connect(server.url, read_block=0.5, retries=1) as bus:
            outcomes: dict[str, Any] = {}
            seen: list[str] = []

            async def waiter(uid: str) -> None:
                outcomes[uid] = await bus.wait(run, uid, timeout=60)

            async def subscriber() -> None:
                # Bus.subscribe surfaces backend errors; a consumer resumes from its last cursor.
                while True:
                    try:
                        async for entry in bus.subscribe(run, seen[-1] if seen else None):
                            seen.append(entry.cursor)
                        return
                    except BackendError:
                        await anyio.sleep(0.1)

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    await bus.renew_lease(run, "producer", 60)
                    await bus.publish(started(spec, run_id=run, heartbeat_interval=30))
                    for uid in uids:
                        tg.start_soon(waiter, uid)
                    tg.start_soon(subscriber)
                    await anyio.sleep(0.3)
                    await bus.publish([result(uid, run_id=run) for uid in uids[:100]])
                    await anyio.sleep(0.3)
                    assert len(outcomes) == 100
                    await anyio.to_thread.run_sync(lambda: server.restart(down_for=1.0))
                    # the first half survived the restart (appendonly)
                    assert len(await bus.backend.read(run, None, limit=1000)) == 101
                    await _publish_retrying(bus, [result(uid, run_id=run) for uid in uids[100:]])
                    await _publish_retrying(bus, [RunFinished(run_id=run, success=True)])
            assert sorted(outcomes) == sorted(uids)
            assert all(o.status is NodeStatus.SUCCESS for o in outcomes.values())
            assert len(seen) == len(set(seen)) == 1 + 200 + 1  # every record once, in order
            assert seen == sorted(seen, key=lambda c: tuple(map(int, c.split("-"))))


@pytest.mark.anyio
@pytest.mark.usefixtures("own_server_available")
async def test_readers_ride_out_an_outage(tmp_path: Path) -> None:
    with RedisServer(appendonly=True, directory=tmp_path) as server:
        backend = await _open(server.url, retries=1)
        try:
            cursor = (await backend.append("r", [Append(b"a")]))[0]
            got: list[bytes] = []

            async def reader() -> None:  # what the bus's reader does: retry from the same cursor
                while True:
                    try:
                        entries = await backend.read("r", cursor, timeout=0.5)
                    except BackendError:
                        await anyio.sleep(0.1)
                        continue
                    if entries:
                        got.extend(e.data for e in entries)
                        return

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(reader)
                    await anyio.sleep(0.2)
                    await anyio.to_thread.run_sync(server.stop)
                    await anyio.sleep(1.0)
                    await anyio.to_thread.run_sync(server.start)
                    await backend.append("r", [Append(b"b")])
            assert got == [b"b"]
        finally:
            await backend.aclose()


@pytest.mark.anyio
@pytest.mark.usefixtures("own_server_available")
async def test_unreachable_server_raises_backend_unavailable_promptly(tmp_path: Path) -> None:
    server = RedisServer(directory=tmp_path)
    url = server.url  # a free port nobody listens on
    backend = await _open(url, retries=2, socket_connect_timeout=0.5)
    try:
        for call in (
            lambda: backend.append("r", [Append(b"x")]),
            lambda: backend.read("r", None, timeout=1),
            lambda: backend.get_node("r", "n"),
            lambda: backend.renew_lease("r", "p", 5),
        ):
            start = anyio.current_time()
            with pytest.raises(BackendUnavailable) as info:
                await call()
            assert anyio.current_time() - start < 3
            assert "127.0.0.1" in str(info.value)
    finally:
        await backend.aclose()


# ---------------------------------------------------------------------------------------------- security


@pytest.mark.anyio
@pytest.mark.usefixtures("own_server_available")
async def test_acl_user_limited_to_its_prefix(tmp_path: Path) -> None:
    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default on nopass ~* &* +@all\n"
        "user tenant on >t-secret resetkeys ~tenant:* resetchannels +@all -@admin -@dangerous\n"
    )
    with RedisServer(acl_file=acl, directory=tmp_path) as server:
        url = f"redis://tenant:t-secret@127.0.0.1:{server.port}/0"
        async with dbtbus.connect(f"{url}?prefix=tenant:") as bus:
            assert "t-secret" not in repr(bus.backend)
            await bus.renew_lease("r1", "p", 5)
            await bus.publish([started({"model.a": []}, run_id="r1"), result("model.a", run_id="r1")])
            assert (await bus.wait("r1", "model.a", timeout=5)).status is NodeStatus.SUCCESS
            assert await bus.list_runs() == ["r1"]
            await bus.expire_run("r1", 60)
            await bus.delete_run("r1")
        other = await _open(f"{url}?prefix=other:")
        try:
            with pytest.raises(BackendError, match=r"NOPERM|permission"):
                await other.append("r1", [Append(b"x")])
            with pytest.raises(BackendError, match=r"NOPERM|permission"):
                await other.read("r1", None)
        finally:
            await other.aclose()
        wrong = await _open(f"redis://tenant:wrong@127.0.0.1:{server.port}/0?prefix=tenant:")
        try:
            with pytest.raises(BackendError) as info:
                await wrong.append("r1", [Append(b"x")])
            assert "wrong" not in str(info.value)
        finally:
            await wrong.aclose()


@pytest.mark.anyio
@pytest.mark.usefixtures("own_server_available")
async def test_tls(tmp_path: Path) -> None:
    try:
        tls = make_tls_files(tmp_path / "tls")
    except Exception as exc:  # pragma: no cover - depends on the machine
        _missing(f"cannot generate TLS certificates ({exc})")
        return
    with RedisServer(tls=tls, directory=tmp_path) as server:
        url = f"{server.url}?ssl_ca_certs={tls.ca_cert}&ssl_cert_reqs=required&prefix={_prefix()}"
        assert url.startswith("rediss://")
        async with dbtbus.connect(url) as bus:
            await bus.renew_lease("tls-run", "p", 5)
            await bus.publish(
                [started({"model.a": []}, run_id="tls-run"), result("model.a", run_id="tls-run")]
            )
            assert (await bus.wait("tls-run", "model.a", timeout=5)).status is NodeStatus.SUCCESS
            await _cleanup(bus.backend)
        # plain text against the TLS port fails; so does TLS without trusting the CA
        for bad in (
            f"redis://127.0.0.1:{server.port}/0",
            f"rediss://127.0.0.1:{server.port}/0?ssl_cert_reqs=required",
        ):
            backend = await _open(bad, retries=0, socket_timeout=1, socket_connect_timeout=1)
            try:
                with pytest.raises(BackendError):
                    await backend.get_node("tls-run", "model.a")
            finally:
                await backend.aclose()


@pytest.mark.anyio
@pytest.mark.usefixtures("own_server_available")
async def test_cluster_runs_a_whole_run() -> None:
    run = "cluster-run"
    spec = {"seed.s": [], "model.a": ["seed.s"], "model.b": ["model.a"], "model.c": []}
    with RedisClusterServers(3) as cluster:
        url = f"{cluster.url}?cluster=true&prefix=c:"
        async with dbtbus.connect(url, read_block=0.5) as bus:
            backend = bus.backend
            assert isinstance(backend, RedisBackend)
            outcomes: dict[str, Any] = {}

            async def waiter(uid: str) -> None:
                outcomes[uid] = await bus.wait(run, uid, timeout=20)

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    for uid in spec:
                        tg.start_soon(waiter, uid)
                    await anyio.sleep(0.2)
                    await bus.renew_lease(run, "p", 10)
                    await bus.publish(started(spec, run_id=run))
                    for uid in spec:
                        await bus.publish(result(uid, run_id=run))
                    await bus.publish(RunFinished(run_id=run, success=True))
            assert {uid: o.status for uid, o in outcomes.items()} == dict.fromkeys(spec, NodeStatus.SUCCESS)
            # every key of the run on one slot, whatever the run id
            slots = {
                int(cluster.nodes[0].cli("cluster", "keyslot", key).strip()) for key in backend._run_keys(run)
            }
            assert len(slots) == 1
            lease = await backend.get_lease(run)
            assert lease is not None
            assert lease.holder == "p"
            assert math.isfinite(lease.remaining)
            # fenced appends on a cluster: the claim is read in the append script (same slot); a refused stale
            # append leaves the run index alone too (its statement runs on another slot, after the batch)
            fenced = "cl-fenced"
            await backend.acquire_lease(fenced, "attempt-1", 10, attempt=1)
            await backend.acquire_lease(fenced, "attempt-2", 10, attempt=2)
            await backend.append(fenced, [Append(b"a2", node="model.a", holder="attempt-2")])
            await backend.expire_run(fenced, 0.3)
            with pytest.raises(dbtbus.RunClaimed, match="attempt-2"):
                await backend.append(fenced, [Append(b"a1", node="model.a", holder="attempt-1")])
            assert await backend.get_node(fenced, "model.a") == b"a2"
            assert fenced in await bus.list_runs()
            await anyio.sleep(0.5)
            assert fenced not in await bus.list_runs()  # expired as set: not marked kept by the refused append
            runs = {f"cl-{i}" for i in range(20)}  # spread over the slots of all three masters
            for other in runs:
                await backend.append(other, [Append(b"x", node="n")])
            assert runs | {run} <= set(await bus.list_runs())
            await bus.expire_run(run, 0.1)
            await anyio.sleep(0.3)
            assert run not in await bus.list_runs()
            for other in runs:
                assert _data_of(await backend.read(other, None)) == [b"x"]
                await bus.delete_run(other)
            assert not runs & set(await bus.list_runs())


def _data_of(entries: list[Any]) -> list[bytes]:
    return [e.data for e in entries]


@pytest.mark.anyio
async def test_cancelled_blocking_reads_return_their_connections(redis_url: str) -> None:
    backend = await _open(redis_url, prefix=_prefix(), max_blocking=4)
    try:
        cursor = (await backend.append("r", [Append(b"x")]))[0]
        for _ in range(3):
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(functools.partial(backend.read, "r", cursor, timeout=None))
                await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
        pool = backend._blocking.connection_pool
        assert not pool._in_use_connections
        # a fifth concurrent reader waits for a connection instead of failing; all wake on one append
        results: list[int] = []

        async def reader() -> None:
            results.append(len(await backend.read("r", cursor, timeout=5)))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(reader)
                await anyio.sleep(0.1)
                await backend.append("r", [Append(b"y")])
        assert results == [1] * 5
    finally:
        await _cleanup(backend)


@pytest.mark.anyio
async def test_a_burst_of_commands_queues_for_connections(redis_url: str) -> None:
    backend = await _open(redis_url, prefix=_prefix(), max_connections=4)
    try:
        await backend.append("r", [Append(b"x", node="n")])
        results: list[bytes | None] = []

        async def probe() -> None:
            results.append(await backend.get_node("r", "n"))

        async with anyio.create_task_group() as tg:
            for _ in range(300):
                tg.start_soon(probe)
        assert results == [b"x"] * 300
        assert len(backend._client.connection_pool._available_connections) <= 4
    finally:
        await _cleanup(backend)


# ---------------------------------------------------------------------------------------------- permanent errors


@pytest.mark.anyio
@pytest.mark.usefixtures("own_server_available")
async def test_permanent_errors_are_typed_and_not_retried(tmp_path: Path) -> None:
    acl = tmp_path / "users.acl"
    acl.write_text(f"user default on >admin ~* &* +@all\nuser tenant on >t-secret {acl_rule('tenant:')}\n")
    with RedisServer(acl_file=acl, directory=tmp_path) as server:
        base = f"127.0.0.1:{server.port}/0"
        cases: list[tuple[str, type[BackendRejected], str]] = [
            (f"redis://tenant:wrong@{base}?prefix=tenant:", AuthenticationFailed, "WRONGPASS"),
            (f"redis://{base}?prefix=tenant:", AuthenticationFailed, "NOAUTH"),  # no password at all
            (f"redis://tenant:t-secret@{base}?prefix=other:", PermissionDenied, "NOPERM"),
        ]
        for url, error, code in cases:
            backend = await _open(url, retries=3)
            try:
                for call in (
                    lambda b=backend: b.append("r", [Append(b"x")]),
                    lambda b=backend: b.read("r", None, timeout=2),
                    lambda b=backend: b.get_node("r", "n"),
                    lambda b=backend: b.acquire_lease("r", "p", 5),
                ):
                    with pytest.raises(error) as info:
                        await call()
                    assert isinstance(info.value, BackendRejected)
                    assert not isinstance(info.value, BackendUnavailable), code
                    assert "wrong" not in str(info.value) and "t-secret" not in str(info.value)
            finally:
                await backend.aclose()
        # no retries of a refused password: one failed AUTH per connection attempt, not retries + 1
        log = server.cli("--user", "default", "--pass", "admin", "--no-auth-warning", "ACL", "LOG", "20")
        assert log.count("\nauth\n") <= 8  # 2 refused URLs × 4 calls, each one connection attempt
        # a key of the wrong type under the run's name is the operator's mistake, not an outage
        admin = f"redis://default:admin@{base}"
        await (raw := await _raw(admin)).set("tenant:{clash}:log", "not a stream")
        await raw.aclose()
        backend = await _open(f"redis://tenant:t-secret@{base}?prefix=tenant:")
        try:
            with pytest.raises(BackendRejected, match="WRONGTYPE"):
                await backend.append("clash", [Append(b"x")])
            with pytest.raises(BackendRejected, match="WRONGTYPE"):
                await backend.read("clash", None)
        finally:
            await backend.aclose()


_DOCS = Path(__file__).resolve().parents[2] / "docs" / "backends.md"


@pytest.mark.anyio
@pytest.mark.usefixtures("own_server_available")
async def test_acl_user_with_exactly_the_documented_commands(tmp_path: Path) -> None:
    """ACL_COMMANDS is complete (a whole run works) and minimal (without any one of them, something fails)."""
    acl = tmp_path / "users.acl"
    acl.write_text(f"user default on nopass ~* &* +@all\nuser tenant on >pw {acl_rule('tenant:')}\n")
    docs = _DOCS.read_text()
    assert acl_rule("tenant:") in docs.replace("dbtbus:", "tenant:")  # the docs show this exact rule

    async def whole_run() -> None:
        backend = await _open(f"redis://tenant:pw@127.0.0.1:{server.port}/0?prefix=tenant:", retries=0)
        try:
            await backend.acquire_lease("r", "p", 5, attempt=1)
            cursor = (await backend.append("r", [Append(b"a", node="n", key="p:1")]))[0]
            assert (await backend.read("r", None))[0].data == b"a"
            assert await backend.read("r", cursor, timeout=0.05) == []  # a blocking read
            assert await backend.get_node("r", "n") == b"a"
            assert await backend.get_lease("r") is not None
            await backend.renew_lease("r", "p", 5)
            await backend.release_lease("r", "p")
            assert await backend.list_runs() == ["r"]
            assert await backend.run_gone("r") is False
            await backend.expire_run("r", 60)
            await backend.delete_run("r")
            assert await backend.run_gone("r") is True  # the tombstone needs no command beyond the rule
        finally:
            await backend.aclose()

    with RedisServer(acl_file=acl, directory=tmp_path) as server:
        await whole_run()
        for command in ACL_COMMANDS:
            server.cli("SCRIPT", "FLUSH")
            server.cli("ACL", "SETUSER", "tenant", f"-{command}")
            with pytest.raises(PermissionDenied):
                await whole_run()
            server.cli("ACL", "SETUSER", "tenant", f"+{command}")
            server.cli("DEL", "tenant:{r}:log", "tenant:{r}:nodes", "tenant:{r}:lease", "tenant:{r}:claim",
                       "tenant:{r}:appended", "tenant:{r}:gone", "tenant:runs")  # fmt: skip


# ---------------------------------------------------------------------------------------------- reading junk


@pytest.mark.anyio
async def test_a_junk_tail_is_skipped_without_spinning(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    prefix = _prefix()
    backend = await _open(redis_url, prefix=prefix, block_ms=200)
    raw = await _raw(redis_url)
    try:
        cursor = (await backend.append("r", [Append(b"good")]))[0]
        await raw.xadd(backend.log_key("r"), {"other": "field"})  # a foreign writer's entry, no "d"
        await raw.xadd(backend.log_key("r"), {"d": "x" * 2000})
        before = await _xread_calls(raw)
        caplog.set_level("WARNING", logger="dbtbus.backends.redis")
        small = await _open(redis_url, prefix=prefix, block_ms=200, max_record_bytes=1000)
        try:
            assert await small.read("r", cursor, timeout=1.0) == []
            assert await small.read("r", cursor, timeout=0) == []
            # one XREAD for the junk, then blocking rounds of block_ms — not a busy loop
            assert await _xread_calls(raw) - before <= 2 + 1.0 / 0.2 + 2
            messages = [r.getMessage() for r in caplog.records]
            assert sum("no 'd' field" in m for m in messages) == 1  # once, not once per read
            assert sum("over max_record_bytes" in m for m in messages) == 1
            await backend.append("r", [Append(b"next")])
            assert [e.data for e in await small.read("r", cursor, timeout=1)] == [b"next"]
        finally:
            await small.aclose()
    finally:
        await raw.aclose()
        await _cleanup(backend)


async def _xread_calls(raw: Any) -> int:
    stats = await raw.info("commandstats")
    return int(stats.get("cmdstat_xread", {}).get("calls", 0))


# ---------------------------------------------------------------------------------------------- closing


async def _dbtbus_connections(raw: Any) -> int:
    clients = await raw.client_list()
    return sum(1 for client in clients if client.get("name") == "dbtbus")


@pytest.mark.anyio
async def test_closing_releases_every_connection(redis_url: str) -> None:
    raw = await _raw(redis_url)
    try:
        before = await _dbtbus_connections(raw)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            for _ in range(3):
                async with dbtbus.connect(redis_url, prefix=_prefix()) as bus:
                    backend = bus.backend
                    async with anyio.create_task_group() as tg:
                        for k in range(5):  # blocking reads, each on its own connection
                            tg.start_soon(functools.partial(backend.read, f"r{k}", None, timeout=0.3))
                        for k in range(20):
                            tg.start_soon(backend.get_node, "r", f"n{k}")
                    assert await _dbtbus_connections(raw) > before
                await anyio.sleep(0.05)
                assert await _dbtbus_connections(raw) == before
            gc.collect()
    finally:
        await raw.aclose()


@pytest.mark.anyio
@pytest.mark.usefixtures("own_server_available")
async def test_a_master_without_enough_replicas_is_transient(tmp_path: Path) -> None:
    """min-replicas-to-write refuses writes it cannot replicate: retried, never final."""
    with RedisServer(directory=tmp_path, extra_args=["--min-replicas-to-write", "1"]) as server:
        backend = await _open(server.url, retries=0)
        try:
            with pytest.raises(BackendUnavailable, match=r"NOREPLICAS|enough good replicas"):
                await backend.append("r", [Append(b"x")])
            assert await backend.get_node("r", "n") is None  # reads are served
        finally:
            await backend.aclose()


@pytest.mark.anyio
async def test_a_connection_closed_under_redis_py_is_transient(redis_url: str) -> None:
    """redis-py 8.1 raises AttributeError writing to a connection closed under it (its issue #4287)."""
    backend = await _open(redis_url, prefix=_prefix())
    try:
        await backend.get_node("r", "n")
        connection = backend._client.connection_pool._available_connections[0]

        async def broken(*args: Any, **kwargs: Any) -> None:
            connection._writer = None  # what a concurrent disconnect leaves behind
            connection._writer.writelines([])  # type: ignore[attr-defined]

        connection.send_packed_command = broken
        with pytest.raises(BackendUnavailable, match="dropped a connection"):
            await backend.get_node("r", "n")
    finally:
        await backend.aclose()
