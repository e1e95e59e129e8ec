"""Issue #27, item 6: a Redis Cluster's seed nodes. A URL names several (``redis://a:7000,b:7001/0?cluster=true``,
redis-py's ``startup_nodes``); one dead seed among live ones costs nothing, and when no seed answers the waiter
gets a typed ``BackendUnavailable`` from ``connect`` in well under a second, not a ``WaitTimeout`` at its
deadline (before: 60 s of retried ``RedisClusterUnreachableError``, then ``WaitTimeout``)."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import anyio
import pytest

import dbtbus
from dbtbus.testing.redis_server import LOOPBACK, RedisClusterServers, RedisServer, free_port

from ._outcomes import census, log_records, waiting
from .conftest import run_id, slow_project, start_producer

SECRET = "cluster-seed-secret"


def _dead_seed() -> str:
    """A loopback address nothing listens on (its cluster bus port kept free too)."""
    return f"{LOOPBACK}:{free_port(with_bus=True)}"


@pytest.mark.anyio
async def test_a_waiter_whose_seeds_are_all_dead_gets_backend_unavailable_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seeds = [_dead_seed(), _dead_seed()]
    url = f"redis://:{SECRET}@{','.join(seeds)}/0?cluster=true"
    caplog.set_level(logging.DEBUG)
    began = time.monotonic()
    with pytest.raises(dbtbus.BackendUnavailable) as raised:
        async with dbtbus.connect(url) as bus:
            await bus.wait(run_id("dead-seeds"), "model.slow.c0_0", timeout=60)
    took = time.monotonic() - began
    assert took < 5, f"BackendUnavailable after {took:.2f} s"  # measured: ~0.1 s for refused connections
    message = str(raised.value)
    assert all(seed in message for seed in seeds), message  # says which seeds it tried
    assert SECRET not in message and SECRET not in caplog.text

    # The blocking twin, as a classic operator calls it: the same typed error, not a WaitTimeout.
    began = time.monotonic()
    with pytest.raises(dbtbus.BackendUnavailable):
        await anyio.to_thread.run_sync(lambda: dbtbus.wait(url, "any-run", "model.slow.c0_0", timeout=60))
    assert time.monotonic() - began < 5


@pytest.mark.anyio
async def test_a_hung_seed_costs_one_socket_timeout_then_backend_unavailable(tmp_path: Path) -> None:
    """A seed that accepts connections but never answers (SIGSTOPped): bounded by ``socket_timeout``."""
    with RedisServer(cluster=True, directory=tmp_path) as server:
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            with pytest.raises(dbtbus.BackendUnavailable):
                async with dbtbus.connect(f"{server.url}?cluster=true&socket_timeout=1"):
                    pass
            took = time.monotonic() - began
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
    assert took < 4, f"BackendUnavailable after {took:.2f} s with socket_timeout=1"  # measured: ~1.1 s


@pytest.mark.anyio
async def test_a_dead_seed_before_a_live_one_changes_nothing(tmp_path: Path) -> None:
    """A real producer and its waiters, all through a URL whose first seed is dead: every node succeeds."""
    project = slow_project(tmp_path / "p", chains=2, length=3, sleep=0.2)
    run = run_id("seeds")
    with RedisClusterServers() as cluster, anyio.fail_after(240):
        live = f"{LOOPBACK}:{cluster.nodes[1].port}"
        url = f"redis://{_dead_seed()},{live}/0?cluster=true"
        producer = start_producer(url, run, project, heartbeat=2.0)
        async with dbtbus.connect(url) as bus:
            async with waiting(bus, run, project.nodes, per_node=2) as kinds:
                pass
            report = await anyio.to_thread.run_sync(producer.result)
        assert report.get("success") is True, report
        assert kinds == {uid: ["success"] * 2 for uid in project.nodes}
        seen = census(await log_records(url, run))
        assert seen["per_node"] == dict.fromkeys(project.nodes, 1)


@pytest.mark.anyio
async def test_a_producer_started_while_no_seed_answers_publishes_once_the_cluster_is_up(tmp_path: Path) -> None:
    """For a producer, seeds that do not answer at connect are an outage like any other: dbt runs on, opening
    the bus is retried, and every record goes out once the cluster answers (not a publisher dead at start)."""
    project = slow_project(tmp_path / "p", chains=1, length=3, sleep=0.5)
    run = run_id("late-cluster")
    cluster = RedisClusterServers()  # ports chosen, nothing listening yet
    try:
        url = f"redis://{','.join(f'{LOOPBACK}:{node.port}' for node in cluster.nodes)}/0?cluster=true"
        producer = start_producer(url, run, project, heartbeat=2.0)
        await anyio.sleep(3)  # the producer has found no seed by now, and dbt has started
        assert producer.process.poll() is None
        await anyio.to_thread.run_sync(cluster.start)
        with anyio.fail_after(180):
            report = await anyio.to_thread.run_sync(producer.result)
            assert report.get("success") is True, {**report, "stderr": report["stderr"][-3000:]}
            assert report["published"] and report["published"] > 0
            async with dbtbus.connect(url) as bus:
                kinds = {uid: (await bus.outcome(run, uid, timeout=30)).kind.value for uid in project.nodes}
            assert kinds == dict.fromkeys(project.nodes, "success")
            seen = census(await log_records(url, run))
            assert seen["ended"] == 1 and seen["per_node"] == dict.fromkeys(project.nodes, 1)
    finally:
        cluster.close()
