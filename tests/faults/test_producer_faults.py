"""Faults around a real producer: it is killed, Redis goes away under it, a second producer starts."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

import dbtbus
from dbtbus.testing.redis_server import RedisServer

from ._outcomes import census, log_records, until_started, waiters, waiting
from .conftest import run_id, slow_project, start_producer


@pytest.mark.anyio
async def test_producer_sigkill_gives_producer_lost_only_for_unfinished_nodes(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    project = slow_project(tmp_path / "p", chains=1, length=6, sleep=1.0)
    run = run_id("sigkill")
    producer = start_producer(redis_server.url, run, project, heartbeat=0.5)
    async with dbtbus.connect(redis_server.url) as bus:
        async with waiting(bus, run, project.nodes, timeout=120) as kinds:
            await until_started(bus, run, nodes=1)
            os.kill(producer.process.pid, signal.SIGKILL)
        producer.process.wait()
        stored = (await bus.run_state(run)).results
    for uid, got in kinds.items():
        expected = "success" if uid in stored else "producer_lost"
        assert got == [expected], (uid, got)
    assert "producer_lost" in {k for got in kinds.values() for k in got}


@pytest.mark.anyio
async def test_redis_restart_with_aof_mid_run_loses_nothing_and_stores_nothing_twice(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    project = slow_project(tmp_path / "p", chains=2, length=5, sleep=0.5)
    run = run_id("restart")
    producer = start_producer(redis_server.url, run, project, heartbeat=2.0)
    async with dbtbus.connect(redis_server.url) as bus:
        async with waiting(bus, run, project.nodes, per_node=5) as kinds:
            await until_started(bus, run, nodes=1)
            await anyio.to_thread.run_sync(lambda: redis_server.restart(down_for=0.5))
        report = await anyio.to_thread.run_sync(producer.result)
    assert report.get("success") is True, report
    assert kinds == {uid: ["success"] * 5 for uid in project.nodes}
    seen = census(await log_records(redis_server.url, run))
    assert len(seen["producers"]) == 1  # one producer, one attempt
    assert seen["ended"] == 1
    assert seen["per_node"] == dict.fromkeys(project.nodes, 1)


@pytest.mark.anyio
async def test_redis_down_longer_than_the_lease_mid_run_gives_no_false_producer_lost(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Row 1: Redis down 8 s with heartbeat 5 s, scaled: down 3 s, heartbeat 1 s (the lease, 1.5 s, lapses)."""
    project = slow_project(tmp_path / "p", chains=2, length=8, sleep=0.5)
    run = run_id("outage")
    producer = start_producer(redis_server.url, run, project, heartbeat=1.0)
    async with dbtbus.connect(redis_server.url) as bus:
        async with waiting(bus, run, project.nodes, per_node=5) as kinds:
            await until_started(bus, run, nodes=1)
            await anyio.to_thread.run_sync(redis_server.stop)
            await anyio.sleep(3.0)
            await anyio.to_thread.run_sync(redis_server.start)
        report = await anyio.to_thread.run_sync(producer.result)
    assert report.get("success") is True, report
    assert kinds == {uid: ["success"] * 5 for uid in project.nodes}  # 80 waiters, not one false loss


@pytest.mark.anyio
async def test_a_second_producer_on_the_same_run_and_attempt_fails_fast(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Row 9: two producers on one run id at once — the second is refused, the log has one run."""
    project = slow_project(tmp_path / "p", chains=1, length=4, sleep=0.5)
    second_project = slow_project(tmp_path / "q", chains=1, length=4, sleep=0.5)
    run = run_id("twice")
    first = start_producer(redis_server.url, run, project, heartbeat=1.0)
    async with dbtbus.connect(redis_server.url) as bus:
        await until_started(bus, run)
        second = start_producer(redis_server.url, run, second_project, heartbeat=1.0)
        refused = await anyio.to_thread.run_sync(second.result)
        report = await anyio.to_thread.run_sync(first.result)
        kinds = await waiters(bus, run, project.nodes, timeout=30)
    assert report.get("success") is True, report
    assert refused.get("success") is not True, refused
    assert "claimed" in (refused.get("error") or "").lower(), refused
    assert kinds == {uid: ["success"] for uid in project.nodes}
    seen = census(await log_records(redis_server.url, run))
    assert len(seen["producers"]) == 1  # one producer, one attempt
    assert seen["ended"] == 1
    assert seen["per_node"] == dict.fromkeys(project.nodes, 1)
