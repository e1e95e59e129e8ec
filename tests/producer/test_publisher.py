"""The publishing engine against real dbt-core + DuckDB: the atomic ending, permanent backend errors, the
lease across a real Redis outage, records that must fit."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import dbtbus
from dbtbus import BackendRejected
from dbtbus.backends.mock import MockBackend, MockCall
from dbtbus.events import NodeResult, NodeStatus, RunCrashed, RunFinished, RunStarted, decode, encode
from dbtbus.producer import Producer

from ._helpers import node_results, read_records

pytestmark = pytest.mark.dbt

def _project(tmp_path: Path, **kwargs: Any) -> Any:
    from dbtbus.testing.projects import generate_project

    return generate_project(tmp_path / "p", **kwargs)


def _appends(calls: list[MockCall]) -> list[list[Any]]:
    return [[decode(item.data) for item in call.args[0]] for call in calls if call.method == "append"]


# ------------------------------------------------------------------------------------------ atomic ending


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_not_run_records_and_the_ending_are_one_append(tmp_path: Path) -> None:
    """--fail-fast leaves nodes unstarted: their not_run records and RunFinished land in ONE append, even with
    batches of 2 (a reader never sees the not_run records without the ending)."""
    project = _project(tmp_path, models=12, tests_per_model=0, failing=["m000"], threads=1)
    calls: list[MockCall] = []
    async with dbtbus.connect(MockBackend(hook=calls.append)) as bus:
        result = await Producer(bus, run_id="atomic", batch_size=2).ainvoke(
            ["build", *project.dbt_args(), "--fail-fast"]
        )
        state = await bus.run_state("atomic")
    assert result.counts.get("not_run", 0) >= 2 and result.published > 0 and result.success is False
    appends = _appends(calls)
    (last,) = [batch for batch in appends if any(isinstance(r, (RunFinished, RunCrashed)) for r in batch)]
    assert isinstance(last[-1], RunFinished)
    not_run = [r.unique_id for batch in appends for r in batch
               if isinstance(r, NodeResult) and r.status is NodeStatus.NOT_RUN]
    assert len(not_run) == result.counts["not_run"]
    assert {r.unique_id for r in last[:-1]} == set(not_run)  # every one of them, and nothing else
    assert all(len(batch) <= 2 for batch in appends if batch is not last)
    assert isinstance(state.ending, RunFinished)


# ------------------------------------------------------------------------------------------ permanent errors


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_permanent_rejection_mid_run_stops_publishing_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project = _project(tmp_path, models=8, tests_per_model=1, threads=1)
    calls: list[MockCall] = []

    def reject_after_three(call: MockCall) -> None:
        calls.append(call)
        if call.method == "append" and call.number > 3:
            raise BackendRejected("NOPERM this user has no permissions to access one of the keys")

    caplog.set_level(logging.WARNING, logger="dbtbus.producer")
    async with dbtbus.connect(MockBackend(hook=reject_after_three)) as bus:
        result = await Producer(bus, run_id="noperm", heartbeat_interval=0.2, batch_linger=0.05).ainvoke(
            ["build", *project.dbt_args()]
        )
    assert result.dbt_result is not None and result.dbt_result.success  # dbt itself ran to the end
    assert result.success is False and isinstance(result.rejected, BackendRejected)
    assert result.published == sum(len(b) for b in _appends(calls)[:3]) and result.published > 0
    assert "NOPERM" in (result.error or "")
    appends = [c for c in calls if c.method == "append"]
    assert len(appends) == 4  # the one refused, never retried
    lines = [r for r in caplog.records if r.name == "dbtbus.producer"]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR and "rejected" in lines[0].getMessage()


def test_a_rejected_announcement_raises_before_dbt_runs(tmp_path: Path) -> None:
    project = _project(tmp_path, models=2, tests_per_model=0, threads=1)

    def reject(call: MockCall) -> None:
        if call.method in ("append", "renew_lease"):
            raise BackendRejected("WRONGPASS invalid username-password pair")

    async def main() -> None:
        async with dbtbus.connect(MockBackend(hook=reject)) as bus:
            await Producer(bus, run_id="wrongpass").ainvoke(["build", *project.dbt_args()])

    with pytest.raises(BackendRejected, match="WRONGPASS"):
        anyio.run(main)
    assert not (project.path / "target" / "run_results.json").exists()  # dbt never started


# ------------------------------------------------------------------------------------------ the lease


SLOW_MODEL = """
def model(dbt, session):
    import time
    time.sleep({seconds})
    {ref}
    return session.sql("select 1 as id")
"""


def _slow_project(path: Path, models: int, seconds: float) -> list[str]:
    (path / "models").mkdir(parents=True)
    (path / "dbt_project.yml").write_text(
        "name: slow\nversion: '1.0'\nprofile: slow\nconfig-version: 2\nmodel-paths: ['models']\n"
    )
    (path / "profiles.yml").write_text(
        f"slow:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: '{path / 'slow.duckdb'}'\n"
        "      threads: 1\n"
    )
    for i in range(models):
        ref = f"dbt.ref('s{i - 1:02d}')" if i else ""
        (path / "models" / f"s{i:02d}.py").write_text(SLOW_MODEL.format(seconds=seconds, ref=ref))
    return [f"model.slow.s{i:02d}" for i in range(models)]


def test_the_lease_is_renewed_the_moment_redis_returns(tmp_path: Path) -> None:
    """Redis down ~8 s mid-run, heartbeat 5 s (the lease lapses during the outage): zero waiters get
    ProducerLost, the run finishes all success, and the lease is back within a second of Redis."""
    from dbtbus.testing.redis_server import RedisServer

    nodes = _slow_project(tmp_path / "slow", models=12, seconds=1.5)
    args = ["build", "--project-dir", str(tmp_path / "slow"), "--profiles-dir", str(tmp_path / "slow")]
    with RedisServer(appendonly=True) as server:
        url = server.url
        outcomes: dict[str, Any] = {}
        lease_back: list[float] = []

        def waiters() -> None:
            outcomes.update(dbtbus.wait_many(url, "outage", nodes, timeout=180, return_exceptions=True))

        def key(suffix: str) -> str | None:
            found = [k for k in server.cli("--raw", "keys", "*outage*", check=False).split() if k.endswith(suffix)]
            return found[0] if found else None

        def outage() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # two models done: the run is well under way
                log = key(":log")
                if log and server.cli("--raw", "xrange", log, "-", "+", check=False).count("node_result") >= 2:
                    break
                time.sleep(0.1)
            lease = key(":lease")
            server.stop()
            time.sleep(8.0)
            server.start()
            back = time.monotonic()
            while time.monotonic() - back < 10:
                if lease and server.cli("exists", lease, check=False).strip() == "1":
                    lease_back.append(time.monotonic() - back)
                    return
                time.sleep(0.05)

        threads = [threading.Thread(target=waiters), threading.Thread(target=outage)]
        threads[0].start()
        time.sleep(0.5)
        threads[1].start()
        result = Producer(url, run_id="outage", heartbeat_interval=5.0).invoke(args)
        for t in threads:
            t.join(120)
    assert result.success and result.counts == {"success": len(nodes)}, result
    lost = [uid for uid, o in outcomes.items() if isinstance(o, dbtbus.ProducerLost)]
    assert not lost, outcomes
    assert all(isinstance(outcomes[uid], NodeResult) and outcomes[uid].ok for uid in nodes), outcomes
    assert lease_back and lease_back[0] < 1.5, lease_back
    print(f"lease renewed {lease_back[0]:.2f} s after Redis restarted")


# ------------------------------------------------------------------------------------------ record size


def test_a_graph_left_out_of_run_started_is_logged(memory_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from dbtbus.events import GraphNode
    from dbtbus.producer._normalise import Normaliser, producer_info
    from dbtbus.producer._publisher import Ending, Publisher

    graph = {f"model.p.m{i:05d}": GraphNode("model", (f"model.p.m{i - 1:05d}",)) for i in range(2000)}
    normaliser = Normaliser("too-wide", producer=producer_info("test"), args=["build"], graph=graph)
    publisher = Publisher(normaliser, max_record_size=8192, heartbeat_interval=3600)
    publisher.finish(Ending(crashed=False, success=True))

    async def main() -> None:
        async with dbtbus.connect(memory_url) as bus:
            await publisher.run(bus)

    with caplog.at_level(logging.WARNING, logger="dbtbus.producer"):
        anyio.run(main)
    started = [r for r in read_records(memory_url, "too-wide") if isinstance(r, RunStarted)]
    assert started and all(r.graph is None for r in started) and publisher.ended
    assert "the graph of run 'too-wide' (2000 nodes) does not fit max_record_size=8192" in caplog.text


def test_a_huge_dbt_error_message_reaches_waiters_truncated(tmp_path: Path, memory_url: str) -> None:
    """A real model failing with a 3 MB error message: published within max_record_size, marked."""
    project = tmp_path / "loud"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: loud\nversion: '1.0'\nprofile: loud\nconfig-version: 2\n")
    (project / "profiles.yml").write_text(
        f"loud:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: '{project / 'l.duckdb'}'\n"
    )
    (project / "models" / "loud.sql").write_text(
        "{{ config(materialized='table') }}\nselect error(repeat('boom ', 600000)) as x\n"
    )
    args = ["build", "--project-dir", str(project), "--profiles-dir", str(project)]
    os.environ.pop("DBTBUS_DUCKDB_PATH", None)
    result = Producer(memory_url, run_id="loud", max_record_size=256 * 1024).invoke(args)
    assert result.truncated >= 1 and result.oversized == 0 and result.published > 0
    record = node_results(read_records(memory_url, "loud"))["model.loud.loud"]
    assert record.status is NodeStatus.ERROR and len(encode(record)) <= 256 * 1024
    assert record.message and "boom boom" in record.message and "[truncated by dbtbus:" in record.message
    with pytest.raises(dbtbus.NodeFailed):
        dbtbus.wait(memory_url, "loud", "model.loud.loud", timeout=10)
