"""Rows whose fault is in what an answer means: a hostile heartbeat, timeout=0, --fail-fast, dbt retry."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

import dbtbus
from dbtbus.backends.base import Append
from dbtbus.backends.mock import MockBackend
from dbtbus.events import encode
from dbtbus.testing.fake_runs import EventFactory
from dbtbus.testing.redis_server import RedisServer

from ._outcomes import outcome_kind, until_started, waiters
from .conftest import run_id, slow_project, start_producer


def _with_heartbeat(started: object, interval: float) -> bytes:
    """The encoded RunStarted with a heartbeat_interval no producer of ours would write."""
    data = json.loads(encode(started))  # type: ignore[arg-type]
    data["heartbeat_interval"] = interval
    return json.dumps(data).encode()


@pytest.mark.anyio
@pytest.mark.parametrize("interval", [1e308, 0.0, -5.0])
async def test_a_hostile_heartbeat_interval_is_clamped(interval: float) -> None:
    """Row 7: 1e308 turned loss detection off; <= 0 polled the lease every 10 ms."""
    backend = MockBackend()
    run = run_id("hb")
    async with dbtbus.connect(backend) as bus:
        fake = await EventFactory("memory://unused").run(run, {"model.a": []}, bus=bus, heartbeat_interval=1.0)
        await backend.delete_run(run)
        await backend.renew_lease(run, fake.holder, 600)
        await backend.append(run, [Append(_with_heartbeat(fake.started, interval))])
        state = await bus.run_state(run)
        assert state.started is not None
        assert 0 < state.started.heartbeat_interval <= 3600, state.started.heartbeat_interval
        before = backend.calls["get_lease"]
        assert await outcome_kind(bus, run, "model.a", timeout=1.5) == "timeout"
        # a live reader checks the lease on a clamped schedule, not every 10 ms (150 calls in 1.5 s)
        assert backend.calls["get_lease"] - before <= 20


@pytest.mark.anyio
async def test_timeout_zero_answers_what_is_known_now(redis_server: RedisServer) -> None:
    """Row 8: wait(timeout=0) on a node that already succeeded raised WaitTimeout."""
    run = run_id("t0")
    async with dbtbus.connect(redis_server.url) as bus:
        fake = await EventFactory(redis_server.url).run(run, {"model.a": [], "model.b": []}, bus=bus)
        await fake.succeed("model.a")
        record = await bus.wait(run, "model.a", timeout=0)
        assert record.unique_id == "model.a"
        assert await outcome_kind(bus, run, "model.a", timeout=0) == "success"
        assert await outcome_kind(bus, run, "model.b", timeout=0) == "timeout"  # not known now
        await fake.finish()
        assert await outcome_kind(bus, run, "model.b", timeout=0) == "not_run"


@pytest.mark.anyio
async def test_fail_fast_live_and_late_waiters_get_the_same_answer(redis_server: RedisServer, tmp_path: Path) -> None:
    """Row 11: a live waiter got UpstreamFailed, a late one NodeNotRun, for the same node."""
    project = slow_project(
        tmp_path / "p", chains=3, length=3, sleep=0.3, failing={"c0_1": tmp_path / "never"}, threads=2
    )
    run = run_id("ff")
    producer = start_producer(redis_server.url, run, project, heartbeat=1.0, extra=["--fail-fast"])
    async with dbtbus.connect(redis_server.url) as bus:
        live = await waiters(bus, run, project.nodes, timeout=120)
        report = await anyio.to_thread.run_sync(producer.result)
    async with dbtbus.connect(redis_server.url) as late_bus:
        late = await waiters(late_bus, run, project.nodes, timeout=30)
    assert report.get("success") is False, report
    assert live["model.slow.c0_1"] == ["failed"]
    assert live == late


@pytest.mark.anyio
async def test_dbt_retry_is_an_attempt_waiters_can_ask_for(redis_server: RedisServer, tmp_path: Path) -> None:
    """Row 12: `dbt retry` published as attempt 2 had no graph, and waiters got attempt 1's stale answers."""
    fix = tmp_path / "fixed"
    project = slow_project(tmp_path / "p", chains=2, length=3, sleep=0.1, failing={"c0_1": fix})
    run = run_id("retry")
    first = await anyio.to_thread.run_sync(
        lambda: start_producer(redis_server.url, run, project, heartbeat=1.0).result()
    )
    assert first.get("success") is False, first
    async with dbtbus.connect(redis_server.url) as bus:
        after_first = await waiters(bus, run, project.nodes, timeout=30)
        assert after_first["model.slow.c0_1"] == ["failed"]
        assert after_first["model.slow.c0_2"] == ["upstream_failed"]
        fix.write_text("fixed")
        async with anyio.create_task_group() as tg:
            retried: dict[str, list[str]] = {}

            async def wait_attempt_2() -> None:  # registered before attempt 2 starts: no stale answers
                retried.update(await waiters(bus, run, project.nodes, timeout=120, min_attempt=2))

            tg.start_soon(wait_attempt_2)
            await anyio.sleep(0.5)
            second = start_producer(redis_server.url, run, project, heartbeat=1.0, attempt=2, command="retry")
            report = await anyio.to_thread.run_sync(second.result)
        await until_started(bus, run)
        state = await bus.run_state(run)
    assert report.get("success") is True, report
    assert state.attempt == 2
    assert state.started is not None
    assert state.started.graph, "attempt 2 carries the graph of the command it retries"
    assert retried == {uid: ["success"] for uid in project.nodes}
