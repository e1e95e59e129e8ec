"""Issue #27, items 1 and 4: a run whose producer died ends, and a run that vanished says so.

Real redis-servers and real producers (dbt in a subprocess, SIGKILLed mid-run):

* a snapshot (``Bus.run_state``, ``dbtbus runs``) calls a dead producer's run ``lost`` — it said ``started``
  forever, since a snapshot's loss clock started when it read — and ``dbtbus gc --older-than`` collects it;
* with a retention, a dead producer's keys expire by it, with no process left alive to expire them;
* a waiter that saw a run which is then deleted or flushed gets ``RunNotFound`` (``dbtbus wait``: exit 12),
  not a timeout; one that arrives after a deletion (``gc``, ``delete_run``) or an expiry by the retention
  gets it at once too, from the run's tombstone — after a ``FLUSHDB`` (no tombstone left) it waits; a run id
  used again after its deletion is answered as usual;
* a ``maxmemory-policy`` that can evict dbtbus's keys is reported when the Redis backend opens.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

import dbtbus
from dbtbus.backends.redis import acl_rule
from dbtbus.testing.redis_server import RedisServer

from ._outcomes import until_started, waiting
from .conftest import DBTBUS, run_id, slow_project, start_producer


def _keys(run: str) -> list[str]:
    return [f"dbtbus:{{{run}}}:{name}" for name in ("log", "nodes", "lease", "claim", "appended")]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DBTBUS, *args], capture_output=True, text=True, timeout=timeout, check=False)


async def _until(predicate: Callable[[], Awaitable[bool]], *, timeout: float, step: float = 0.25) -> float:
    """Poll the async ``predicate`` until it is true; return how long that took (fails after ``timeout``)."""
    start = time.monotonic()
    with anyio.fail_after(timeout):
        while True:
            if await predicate():
                return time.monotonic() - start
            await anyio.sleep(step)


def _start_cli_wait(url: str, run: str, node: str) -> subprocess.Popen[str]:
    """``dbtbus wait`` in its own process (a consumer elsewhere)."""
    return subprocess.Popen(
        [DBTBUS, "wait", run, node, "--bus", url, "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


# ---------------------------------------------------------------------------------------------- dead runs end


@pytest.mark.anyio
async def test_a_dead_producers_run_is_lost_in_snapshots_and_gc_older_than_collects_it(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    project = slow_project(tmp_path / "p", chains=1, length=8, sleep=1.0, threads=1)
    run = run_id("dead")
    producer = start_producer(redis_server.url, run, project, heartbeat=1.0)
    async with dbtbus.connect(redis_server.url) as bus:
        await until_started(bus, run, nodes=1)
        assert (await bus.run_state(run)).status is dbtbus.RunStatus.RUNNING  # a live producer is not lost
        # --older-than 0s: every run is old enough, so only "in progress" spares it — a live producer's run is.
        spared = _cli("gc", "--older-than", "0s", "--bus", redis_server.url)
        assert spared.returncode == 0 and "0 run(s) deleted" in spared.stdout, (spared.stdout, spared.stderr)
        os.kill(producer.process.pid, signal.SIGKILL)
        producer.process.wait()

        async def lost() -> bool:
            return (await bus.run_state(run)).status is dbtbus.RunStatus.LOST

        took = await _until(lost, timeout=30)
    print(f"a snapshot called the run lost {took:.1f} s after SIGKILL (heartbeat 1 s)")
    # Lease absent and the last record older than one heartbeat + 2.5 lease periods (3.5 s): the last record
    # was at most a heartbeat before the kill, and snapshots are taken every 0.25 s.
    assert took <= 1.0 + 3.5 + 1.0, took
    listed = _cli("runs", "--json", "--bus", redis_server.url)
    assert listed.returncode == 0, listed.stderr
    rows = {row["run_id"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert rows[run]["status"] == "lost", rows  # it said "started", forever
    collected = _cli("gc", "--older-than", "1s", "--bus", redis_server.url)
    assert collected.returncode == 0, collected.stderr
    assert f"deleted {run}" in collected.stdout, collected.stdout  # it was skipped as "in progress"
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.exists(*_keys(run)) == 0
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_an_abandoned_runs_keys_expire_by_its_retention_with_no_process_alive(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """retention=4 s, heartbeat 1 s (lease 1.5 s), SIGKILL mid-run: the keys carried an expiry all along and
    vanish ~5.5 s after the kill, listed no more. Before, only a producer that ended set an expiry: a dead
    one's keys stayed forever."""
    project = slow_project(tmp_path / "p", chains=1, length=8, sleep=1.0, threads=1)
    run = run_id("abandoned")
    producer = start_producer(
        redis_server.url, run, project, heartbeat=1.0, env={"DBTBUS_FAULTS_RETENTION": "4"}
    )
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        async with dbtbus.connect(redis_server.url) as bus:
            await until_started(bus, run, nodes=1)
            os.kill(producer.process.pid, signal.SIGKILL)
            producer.process.wait()
            for key in ("log", "claim"):
                ttl = await client.pttl(f"dbtbus:{{{run}}}:{key}")
                assert 0 < ttl <= (1.5 + 4) * 1000, (key, ttl)  # no longer -1 (kept) while the run is in progress
            assert run in await bus.list_runs()

            async def gone() -> bool:
                return await client.exists(*_keys(run)) == 0

            took = await _until(gone, timeout=30, step=0.1)
            assert run not in await bus.list_runs()
    finally:
        await client.aclose()
    print(f"the abandoned run's keys vanished {took:.1f} s after SIGKILL (lease 1.5 s + retention 4 s)")
    assert 3.0 <= took <= 1.5 + 4 + 1.0, took


# ---------------------------------------------------------------------------------------------- RunNotFound


@pytest.mark.anyio
@pytest.mark.parametrize("vanish", ["delete_run", "flushdb"])
async def test_a_run_deleted_or_flushed_under_its_waiters_answers_run_not_found(
    redis_server: RedisServer, tmp_path: Path, vanish: str
) -> None:
    """Waiters (in process, and ``dbtbus wait`` in another) saw the run; its producer dies and the run is
    deleted (as ``gc`` does) or flushed: nodes that finished keep their answer, the others get RunNotFound —
    not ProducerLost, not a timeout. A bus that never read the run learns it from the tombstone delete_run left
    (at once); after FLUSHDB there is none, and it cannot tell the run from one not started yet: it times out."""
    project = slow_project(tmp_path / "p", chains=1, length=8, sleep=1.0, threads=1)
    run = run_id(vanish.replace("_", ""))
    producer = start_producer(redis_server.url, run, project, heartbeat=1.0)
    last = project.nodes[-1]
    async with dbtbus.connect(redis_server.url) as bus:
        async with waiting(bus, run, project.nodes, timeout=60) as kinds:
            await until_started(bus, run, nodes=2)
            cli_wait = _start_cli_wait(redis_server.url, run, last)
            await anyio.sleep(1.5)  # the CLI's waiter has read the run
            done = len((await bus.run_state(run)).results)
            os.kill(producer.process.pid, signal.SIGKILL)
            producer.process.wait()
            vanished = time.monotonic()
            if vanish == "delete_run":
                await bus.delete_run(run)
            else:
                await anyio.to_thread.run_sync(lambda: redis_server.cli("FLUSHDB"))
        answered = time.monotonic() - vanished
        with pytest.raises(dbtbus.RunNotFound):  # the bus's reader of the run still knows (it lingers)
            await bus.wait(run, last, timeout=2)
    async with dbtbus.connect(redis_server.url) as late_bus:
        if vanish == "delete_run":
            with pytest.raises(dbtbus.RunNotFound, match="a tombstone says so"):
                await late_bus.wait(run, last, timeout=2)
        else:
            with pytest.raises(dbtbus.WaitTimeout):  # the documented limit: FLUSHDB took the tombstone too
                await late_bus.wait(run, last, timeout=2)
    out, err = await anyio.to_thread.run_sync(lambda: cli_wait.communicate(timeout=60))
    print(f"{vanish}: every waiter answered {answered:.1f} s after the run vanished")
    finished = {uid for uid, got in kinds.items() if got == ["success"]}
    assert len(finished) >= done >= 2, kinds
    assert kinds == {uid: ["success" if uid in finished else "run_not_found"] for uid in project.nodes}, kinds
    assert answered <= 3 * 1.0 + 2.0, answered  # within the lease rule's 3 periods, never at the timeout
    assert cli_wait.returncode == 12, (cli_wait.returncode, err)
    assert out.startswith("run not found: ") and "no longer on the bus" in out, (out, err)
    with pytest.raises(dbtbus.RunNotFound, match="deleted, expired or flushed"):
        dbtbus.Outcome(dbtbus.OutcomeKind.RUN_NOT_FOUND, run, last).unwrap()


@pytest.mark.anyio
@pytest.mark.parametrize("vanish", ["gc", "retention"])
async def test_a_waiter_that_comes_after_the_run_was_deleted_or_expired_gets_run_not_found_at_once(
    redis_server: RedisServer, tmp_path: Path, vanish: str
) -> None:
    """Issue #27 item 4's last gap. A run ends and is collected by ``dbtbus gc`` or expires by its retention
    (2 s, no process alive); only then do waiters come — a fresh bus, and ``dbtbus wait`` in its own process.
    Its tombstone answers them at once with RunNotFound (exit 12); before, they waited out their timeout as
    for a run not started yet. A new producer then uses the run id again: answered as usual."""
    project = slow_project(tmp_path / "p", chains=1, length=2, sleep=0.1, threads=1)
    run = run_id(vanish)
    env = {"DBTBUS_FAULTS_RETENTION": "2"} if vanish == "retention" else {}
    first = await anyio.to_thread.run_sync(
        lambda: start_producer(redis_server.url, run, project, heartbeat=1.0, env=env).result()
    )
    assert first["success"] is True, first
    client = aioredis.Redis.from_url(redis_server.url)
    tombstone = f"dbtbus:{{{run}}}:gone"
    try:
        if vanish == "gc":
            collected = _cli("gc", "--older-than", "0s", "--bus", redis_server.url)
            assert f"deleted {run}" in collected.stdout, (collected.stdout, collected.stderr)
        else:
            assert await client.exists(tombstone) == 1  # set with the expiry, while the keys were still there

            async def expired() -> bool:
                return await client.exists(*_keys(run)) == 0

            await _until(expired, timeout=30, step=0.1)
        # Bounded: 7 days (the default tombstone_period) from now, or from the keys' expiry — not forever.
        assert 6.9 * 86400 * 1000 < await client.pttl(tombstone) <= 7 * 86400 * 1000 + 2000
        async with dbtbus.connect(redis_server.url) as late_bus:
            began = time.monotonic()
            with pytest.raises(dbtbus.RunNotFound, match="a tombstone says so"):
                await late_bus.wait(run, project.nodes[-1], timeout=30)
            answered = time.monotonic() - began
        began = time.monotonic()
        waited = await anyio.to_thread.run_sync(
            lambda: _cli("wait", run, project.nodes[-1], "--bus", redis_server.url, "--timeout", "30")
        )
        cli_took = time.monotonic() - began
        assert waited.returncode == 12, (waited.stdout, waited.stderr)
        assert waited.stdout.startswith("run not found: ") and "a tombstone says so" in waited.stdout, waited.stdout
        print(f"{vanish}: a new waiter got RunNotFound {answered:.2f} s after it asked; "
              f"`dbtbus wait` exited 12 after {cli_took:.1f} s (process start included)")
        assert answered < 1.0, answered
        assert cli_took < 15, cli_took  # at once, not at its --timeout of 30 s
        # The run id used again: the new producer's first append removes the tombstone.
        again = await anyio.to_thread.run_sync(
            lambda: start_producer(redis_server.url, run, project, heartbeat=1.0).result()
        )
        assert again["success"] is True, again
        assert await client.exists(tombstone) == 0
        async with dbtbus.connect(redis_server.url) as fresh_bus:
            results = await fresh_bus.wait_many(run, project.nodes, timeout=30)
            assert sorted(results) == sorted(project.nodes)
        waited = await anyio.to_thread.run_sync(
            lambda: _cli("wait", run, project.nodes[-1], "--bus", redis_server.url, "--timeout", "30")
        )
        assert waited.returncode == 0, (waited.stdout, waited.stderr)
    finally:
        await client.aclose()


# ---------------------------------------------------------------------------------------------- eviction


@pytest.fixture
def evicting_server(tmp_path: Path) -> Iterator[RedisServer]:
    """An ACL file with dbtbus's documented user, plus one that may also run INFO (not CONFIG)."""
    acl = tmp_path / "users.acl"
    rule = acl_rule("dbtbus:")
    acl.write_text(f"user default on nopass ~* &* +@all\nuser plain on >pw {rule}\nuser info on >pw {rule} +info\n")
    directory = tmp_path / "redis"
    directory.mkdir()
    with RedisServer(acl_file=acl, directory=directory) as server:
        yield server


async def _open_messages(url: str, caplog: pytest.LogCaptureFixture, **options: str) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dbtbus.backends.redis"):
        async with dbtbus.connect(url, **options) as bus:
            await bus.list_runs()
    return [record.getMessage() for record in caplog.records if "maxmemory" in record.getMessage()]


@pytest.mark.anyio
async def test_an_eviction_policy_that_can_evict_dbtbus_keys_is_reported_when_the_backend_opens(
    evicting_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url, port = evicting_server.url, evicting_server.port
    evicting_server.cli("CONFIG", "SET", "maxmemory", "100mb")
    for policy in ("allkeys-lru", "volatile-ttl", "volatile-lru", "allkeys-random"):
        evicting_server.cli("CONFIG", "SET", "maxmemory-policy", policy)
        messages = await _open_messages(url, caplog)
        assert len(messages) == 1 and policy in messages[0] and "eviction=ignore" in messages[0], messages
        assert await _open_messages(url, caplog) == []  # once per process, server and policy
        assert await _open_messages(url, caplog, eviction="ignore") == []
        with pytest.raises(dbtbus.ConfigurationError, match=policy):
            await _open_messages(url, caplog, eviction="error")
    # A user denied CONFIG but allowed INFO: the policy is read from INFO memory.
    messages = await _open_messages(f"redis://info:pw@127.0.0.1:{port}/0", caplog)
    assert len(messages) == 1 and "allkeys-random" in messages[0], messages
    # The documented user may run neither: one info line says the check could not be made, nothing fails.
    messages = await _open_messages(f"redis://plain:pw@127.0.0.1:{port}/0", caplog)
    assert len(messages) == 1 and "could not read" in messages[0], messages
    assert [r.levelno for r in caplog.records if "maxmemory" in r.getMessage()] == [logging.INFO]
    # noeviction, and any policy without a maxmemory, cannot evict: nothing said.
    evicting_server.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
    assert await _open_messages(url, caplog) == []
    evicting_server.cli("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    evicting_server.cli("CONFIG", "SET", "maxmemory", "0")
    assert await _open_messages(url, caplog) == []
    with pytest.raises(dbtbus.ConfigurationError, match="warn, error or ignore"):
        dbtbus.connect(url, eviction="sometimes")
