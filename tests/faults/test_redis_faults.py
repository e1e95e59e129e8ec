"""Faults of the storage itself: junk in a run's log, lost replies, oversized records, connections left
open, and a Redis Cluster master killed mid-run."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

import dbtbus
from dbtbus._exceptions import RecordTooLarge
from dbtbus.backends.base import Append
from dbtbus.backends.redis import RedisBackend
from dbtbus.events import NodeResult, encode
from dbtbus.testing.fake_runs import EventFactory
from dbtbus.testing.records import node_result
from dbtbus.testing.redis_server import RedisServer

from ._cluster import ReplicatedCluster
from ._outcomes import census, log_records, outcome_kind, until_started, waiters, waiting
from ._proxy import ReplyLosingProxy
from .conftest import run_id, slow_project, start_producer


async def _xread_calls(raw: Any) -> int:
    stats = await raw.info("commandstats")
    return int(stats.get("cmdstat_xread", {}).get("calls", 0))


# ---------------------------------------------------------------------------------------------- junk


@pytest.mark.anyio
async def test_an_entry_without_the_data_field_at_a_live_runs_tail_does_not_make_the_reader_spin(
    redis_server: RedisServer,
) -> None:
    """Row 3: the reader advanced past nothing and re-read the junk entry ~1,100 times a second."""
    run = run_id("junk-tail")
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        async with dbtbus.connect(redis_server.url, read_block=1.0) as bus:
            fake = await EventFactory(redis_server.url).run(run, {"model.a": [], "model.b": []}, bus=bus,
                                                            heartbeat_interval=30)  # fmt: skip
            await fake.succeed("model.a")
            async with anyio.create_task_group() as tg:
                got: list[str] = []

                async def waiter() -> None:
                    got.append(await outcome_kind(bus, run, "model.b", timeout=60))

                tg.start_soon(waiter)
                await anyio.sleep(0.5)
                await raw.xadd(f"dbtbus:{{{run}}}:log", {"foreign": "writer"})
                before, cpu = await _xread_calls(raw), _cpu()
                await anyio.sleep(3.0)
                reads, spent = await _xread_calls(raw) - before, _cpu() - cpu
                await fake.succeed("model.b")
            assert got == ["success"]
            # blocking reads of read_block (1 s), a lease check or two: a handful, not thousands
            assert reads <= 10, reads
            assert spent < 1.0, spent  # CPU seconds of this process while it waited 3 s (not wall time)
    finally:
        await raw.aclose()


def _cpu() -> float:
    import time

    return time.process_time()


@pytest.mark.anyio
async def test_garbage_entries_are_skipped_and_every_waiter_still_gets_the_truth(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    run = run_id("garbage")
    graph = {"model.a": [], "model.b": ["model.a"], "model.c": []}
    raw = aioredis.Redis.from_url(redis_server.url)
    caplog.set_level(logging.WARNING)
    try:
        async with dbtbus.connect(redis_server.url) as bus, anyio.create_task_group() as tg:
            kinds: dict[str, list[str]] = {}

            async def wait_all() -> None:
                kinds.update(await waiters(bus, run, list(graph), per_node=3, timeout=60))

            tg.start_soon(wait_all)
            fake = await EventFactory(redis_server.url).run(run, graph, bus=bus, heartbeat_interval=30)
            key = f"dbtbus:{{{run}}}:log"
            for junk in (b"not json", b"{}", b'{"type": "node_result"}', b"\xff\xfe", b'{"v": 999}', b"[]"):
                await raw.xadd(key, {"d": junk})
            await raw.xadd(key, {"x": "no data field"})
            await fake.succeed("model.a")
            await raw.xadd(key, {"d": b'{"type": "run_finished", "run_id": 7}'})
            await fake.fail("model.c")
            await fake.succeed("model.b")
            await fake.finish()
        assert kinds == {"model.a": ["success"] * 3, "model.b": ["success"] * 3, "model.c": ["failed"] * 3}
    finally:
        await raw.aclose()


# ---------------------------------------------------------------------------------------------- lost replies


@pytest.mark.anyio
async def test_an_append_retried_after_a_lost_reply_is_stored_once(redis_server: RedisServer) -> None:
    """Row 9 (second half), at the backend: redis-py resends the script after the reply was lost."""
    async with ReplyLosingProxy(redis_server.port) as proxy:
        backend = RedisBackend.from_url(proxy.url, retries=3)
        await backend.open()
        try:
            await backend.append("r", [Append(b"first", key="p:1")])
            proxy.lose_next_reply()
            cursors = await backend.append("r", [Append(b"second", node="n", key="p:2")])
            assert proxy.lost == 1
            entries = await backend.read("r", None)
            assert [e.data for e in entries] == [b"first", b"second"]
            assert cursors == [entries[1].cursor]
        finally:
            await backend.aclose()


@pytest.mark.anyio
async def test_a_publish_retried_after_a_lost_reply_stores_each_record_once(redis_server: RedisServer) -> None:
    """Row 9 (second half), through the bus: its appends must carry idempotency keys."""
    run = run_id("lost-reply")
    async with ReplyLosingProxy(redis_server.port) as proxy, dbtbus.connect(proxy.url, retries=3) as bus:
        fake = await EventFactory(proxy.url).run(run, {"model.a": [], "model.b": []}, bus=bus)
        proxy.lose_next_reply()
        await fake.succeed("model.a")
        assert proxy.lost == 1
        await fake.succeed("model.b")
        await fake.finish()
    seen = census(await log_records(redis_server.url, run))
    assert len(seen["producers"]) == 1  # one producer, one attempt
    assert seen["ended"] == 1
    assert seen["per_node"] == {"model.a": 1, "model.b": 1}


# ---------------------------------------------------------------------------------------------- oversize


def _big_result(run: str, uid: str, size: int) -> NodeResult:
    return node_result(uid, run_id=run, message="x" * size)


@pytest.mark.anyio
async def test_an_oversized_record_is_truncated_with_a_marker_when_published(redis_server: RedisServer) -> None:
    """Row 6, publishing: a 20 MiB message is stored truncated, visibly, under the backend's limit."""
    run = run_id("big-publish")
    async with dbtbus.connect(redis_server.url) as bus:
        fake = await EventFactory(redis_server.url).run(run, {"model.a": []}, bus=bus)
        await bus.publish(_big_result(run, "model.a", 20 * 1024 * 1024))
        record = await bus.wait(run, "model.a", timeout=30)
        limit = bus.backend.max_record_bytes
        assert limit is not None
        assert len(encode(record)) <= limit
        assert "truncated" in (record.message or "")
        await fake.finish()


@pytest.mark.anyio
async def test_a_record_that_cannot_fit_is_refused_not_dropped(redis_server: RedisServer) -> None:
    """Row 6: what truncating text cannot shrink fails loudly (RecordTooLarge), storing nothing."""
    run = run_id("too-big")
    async with dbtbus.connect(redis_server.url, max_record_bytes=4096) as bus:
        graph = {f"model.m{i:04d}_{'y' * 40}": [] for i in range(200)}  # the graph alone is ~20 KB
        with pytest.raises(RecordTooLarge):
            await EventFactory(redis_server.url).run(run, graph, bus=bus)
        assert await bus.backend.read(run, None) == []


@pytest.mark.anyio
async def test_oversized_entries_already_stored_are_skipped_on_read(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Row 6, reading: a 20 MiB entry written by anyone is skipped with a warning; the cursor moves on."""
    run = run_id("big-read")
    raw = aioredis.Redis.from_url(redis_server.url)
    caplog.set_level(logging.WARNING, logger="dbtbus.backends.redis")
    try:
        async with dbtbus.connect(redis_server.url) as bus:
            fake = await EventFactory(redis_server.url).run(run, {"model.a": [], "model.b": []}, bus=bus)
            await raw.xadd(f"dbtbus:{{{run}}}:log", {"d": encode(_big_result(run, "model.a", 20 * 1024 * 1024))})
            await fake.succeed("model.b")
            assert await outcome_kind(bus, run, "model.b", timeout=30) == "success"
            assert await outcome_kind(bus, run, "model.a", timeout=0.5) == "timeout"  # skipped, still pending
        assert any("over max_record_bytes" in r.getMessage() for r in caplog.records)
    finally:
        await raw.aclose()


# ---------------------------------------------------------------------------------------------- connections


def test_thirty_wait_syncs_leave_no_connection_open_and_no_resource_warning(redis_server: RedisServer) -> None:
    """Row 4: closing a Bus (and every sync twin: dbtbus.wait, formerly wait_sync) releases its connections."""
    run = run_id("close")

    async def publish() -> None:
        async with dbtbus.connect(redis_server.url) as bus:
            fake = await EventFactory(redis_server.url).run(run, {"model.a": []}, bus=bus)
            await fake.succeed("model.a")
            await fake.finish()

    anyio.run(publish)
    script = textwrap.dedent(
        f"""
        import gc, sys, warnings
        warnings.simplefilter("always", ResourceWarning)
        import dbtbus, redis
        for _ in range(30):
            dbtbus.wait({redis_server.url!r}, {run!r}, "model.a", timeout=30)
        client = redis.Redis.from_url({redis_server.url!r})
        open_now = sum(1 for c in client.client_list() if c.get("name") == "dbtbus")
        client.close()
        gc.collect()
        print(open_now)
        """
    )
    proc = subprocess.run([sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"
    assert "ResourceWarning" not in proc.stderr, proc.stderr[-2000:]


# ---------------------------------------------------------------------------------------------- cluster


@pytest.mark.anyio
async def test_cluster_master_killed_mid_run_loses_nothing_and_no_waiter_is_wrong(tmp_path: Path) -> None:
    """Row 14: 3 masters / 3 replicas; the master of the run's slot is SIGKILLed while dbt runs."""
    project = slow_project(tmp_path / "p", chains=2, length=8, sleep=0.5)
    run = run_id("failover")
    with ReplicatedCluster(tmp_path / "cluster") as cluster, anyio.fail_after(300):
        url = f"{cluster.url}?cluster=true"
        producer = start_producer(url, run, project, heartbeat=5.0)
        async with dbtbus.connect(url) as bus:
            async with waiting(bus, run, project.nodes, per_node=5) as kinds:
                await until_started(bus, run, nodes=2)
                victim = cluster.master_of(f"dbtbus:{{{run}}}:log")
                await anyio.to_thread.run_sync(lambda: victim.stop(kill=True))
            report = await anyio.to_thread.run_sync(producer.result)
            promoted = cluster.master_of(f"dbtbus:{{{run}}}:log")
        assert promoted is not victim
        assert report.get("success") is True, report
        assert kinds == {uid: ["success"] * 5 for uid in project.nodes}
        seen = census(await log_records(url, run))
        assert len(seen["producers"]) == 1  # one producer, one attempt
        assert seen["ended"] == 1
        assert seen["per_node"] == dict.fromkeys(project.nodes, 1)
