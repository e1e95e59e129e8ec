"""The subprocess (JSON log) producer against real dbt: same records as in-process; a killed dbt crashes."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import dbtbus
from dbtbus import NodeNotRun
from dbtbus.backends.memory import drop_store, get_store
from dbtbus.events import NodeStarted, RunCrashed, RunFinished, RunStarted, decode
from dbtbus.producer import Producer, publish_log
from dbtbus.producer._normalise import NOT_RUN_MESSAGE
from dbtbus.producer._producer import SUBPROCESS_LOG_ARGS, _bootstrap_source, _python_of

from ._helpers import DBT, announced, comparable, copy_shop, node_results, read_records, shop_args, started_of

pytestmark = pytest.mark.dbt

URL = "memory://producer-sub"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = copy_shop(tmp_path_factory.mktemp("shop-sub"))
    yield path
    drop_store("producer-sub")


def _invoke(path: Path, run_id: str, sub: bool, *extra: str) -> Any:
    # same file name everywhere: DuckDB names the database after it, and relation names include it
    (path / run_id).mkdir()
    os.environ["DBTBUS_DUCKDB_PATH"] = str(path / run_id / "shop.duckdb")
    try:
        producer = Producer(URL, run_id=run_id, heartbeat_interval=0.5)
        args = shop_args(path, "--vars", "{shop_break: true}", *extra)
        return producer.invoke_subprocess(args, dbt_executable=DBT) if sub else producer.invoke(args)
    finally:
        os.environ.pop("DBTBUS_DUCKDB_PATH", None)


@pytest.fixture(scope="module")
def both(shop: Path) -> tuple[Any, Any]:
    return _invoke(shop, "inproc", False), _invoke(shop, "subproc", True)


def test_both_producers_publish_identical_node_results(both: tuple[Any, Any]) -> None:
    inproc, subproc = (node_results(read_records(URL, run)) for run in ("inproc", "subproc"))
    assert len(inproc) == 28
    assert comparable(inproc) == comparable(subproc)
    assert both[0].counts == both[1].counts


def test_subprocess_run_lifecycle(both: tuple[Any, Any]) -> None:
    records = read_records(URL, "subproc")
    assert announced(records).graph is None
    started = started_of(records)
    assert isinstance(started, RunStarted) and started.producer.kind == "subprocess"
    assert started.graph == started_of(read_records(URL, "inproc")).graph
    assert started.dbt_version and started.invocation_id
    end = records[-1]
    assert isinstance(end, RunFinished) and not end.success and end.exit_code == 1
    assert end.peak_rss is not None and end.peak_rss > 50 * 2**20
    result = both[1]
    assert result.exit_code == 1 and not result.crashed and result.peak_rss == end.peak_rss
    for r in node_results(records).values():
        assert r.started_at is not None and r.started_at.tzinfo is not None


def test_the_subprocess_at_dbts_default_info_level(shop: Path, both: tuple[Any, Any]) -> None:
    """No debug stream: the result lines give the same statuses, failures and skip causes as in process."""
    (shop / "sub-info").mkdir()
    os.environ["DBTBUS_DUCKDB_PATH"] = str(shop / "sub-info" / "shop.duckdb")
    try:
        result = Producer(URL, run_id="sub-info").invoke_subprocess(
            shop_args(shop, "--vars", "{shop_break: true}"), dbt_executable=DBT, log_args=("--log-format", "json")
        )
    finally:
        os.environ.pop("DBTBUS_DUCKDB_PATH", None)
    info, inproc = (node_results(read_records(URL, run)) for run in ("sub-info", "inproc"))

    def key(r: Any) -> tuple[object, ...]:
        # A skipped test has no failure count; NodeFinished's protobuf says 0, SkippingDetails nothing.
        failures = None if r.status.value == "skipped" else r.failures
        return (r.unique_id, r.status.value, r.skip_cause, failures, r.resource_type)

    assert {key(r) for r in info.values()} == {key(r) for r in inproc.values()}
    assert result.exit_code == 1 and not result.crashed and result.counts == both[0].counts


def test_a_quiet_subprocess_still_tells_every_node(shop: Path, both: tuple[Any, Any]) -> None:
    """dbt's --quiet silences the JSON log the producer reads: every node used to end not_run."""
    result = _invoke(shop, "sub-quiet", True, "--quiet")
    quiet, inproc = (node_results(read_records(URL, run)) for run in ("sub-quiet", "inproc"))
    assert comparable(quiet) == comparable(inproc)
    assert result.counts == both[0].counts and result.counts.get("not_run", 0) == 0


def test_fail_fast_through_the_subprocess(shop: Path) -> None:
    result = _invoke(shop, "sub-ff", True, "--fail-fast")
    results = node_results(read_records(URL, "sub-ff"))
    assert len(results) == 28 and result.counts.get("not_run", 0) > 0
    message = results["model.shop.broken_grandchild"].message
    # dbt-duckdb's fail-fast cancel can race under load: dbt then exits 2 without results (see test_producer)
    assert message == "Skipping due to fail_fast" or (result.exit_code == 2 and message == NOT_RUN_MESSAGE)


def test_publish_log_replays_the_subprocess_log(shop: Path, tmp_path: Path) -> None:
    """A JSON log captured from the bootstrap (e.g. a pod log) replays to the same records."""
    import subprocess

    python = _python_of(DBT)
    assert python
    env = dict(os.environ, DBTBUS_DUCKDB_PATH=str(tmp_path / "shop.duckdb"))
    args = shop_args(shop, "--vars", "{shop_break: true}")
    log = tmp_path / "dbt.jsonl"
    with log.open("wb") as fh:
        subprocess.run([python, "-c", _bootstrap_source(), *args, *SUBPROCESS_LOG_ARGS], stdout=fh, env=env,
                       check=False)
    with log.open("rb") as fh:
        result = publish_log(fh, URL, run_id="replayed")
    replayed = node_results(read_records(URL, "replayed"))
    assert comparable(replayed) == comparable(node_results(read_records(URL, "inproc")))
    assert not result.success and not result.crashed


def test_killed_subprocess_ends_as_crashed_and_waiters_get_not_run(tmp_path: Path) -> None:
    import psutil

    from dbtbus.testing.projects import generate_project

    project = generate_project(tmp_path / "slow", models=25, tests_per_model=0, threads=1)
    name, run_id = "producer-kill", "killed"
    url = f"memory://{name}"
    last = project.models[-1]
    waited: dict[str, Any] = {}
    waited_at: list[float] = []

    def waiter() -> None:
        try:
            dbtbus.wait(url, run_id, last, timeout=120)
        except dbtbus.WaitError as exc:
            waited[last] = exc
        waited_at.append(time.monotonic())

    def killer() -> None:
        store = get_store(name)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            entries = store.read_now(run_id, 0, 100_000)
            if any(isinstance(decode(e.data), NodeStarted) for e in entries):
                break
            time.sleep(0.02)
        for child in psutil.Process().children():
            if "build" in child.cmdline():  # the dbt child only (not multiprocessing's resource tracker)
                os.kill(child.pid, signal.SIGKILL)

    threads = [threading.Thread(target=waiter), threading.Thread(target=killer)]
    for t in threads:
        t.start()
    result = Producer(url, run_id=run_id, heartbeat_interval=0.5).invoke_subprocess(
        ["build", *project.dbt_args()], dbt_executable=DBT
    )
    returned = time.monotonic()
    for t in threads:
        t.join(30)
    assert result.crashed and result.exit_code == -signal.SIGKILL and "SIGKILL" in (result.error or "")
    records = read_records(url, run_id)
    assert isinstance(records[-1], RunCrashed) and records[-1].exit_code == -signal.SIGKILL
    assert isinstance(waited.get(last), NodeNotRun)
    assert waited_at and waited_at[0] - returned < 3.0
    drop_store(name)


def test_subprocess_peak_rss_is_dbts_own_not_the_parents(tmp_path: Path, memory_url: str) -> None:
    """A big parent (an Airflow worker, say) must not inflate dbt's reported peak RSS."""
    from dbtbus.testing.projects import generate_project

    project = generate_project(tmp_path / "rss", models=3, tests_per_model=0, threads=1)
    ballast = b"x" * (600 * 2**20)  # resident: every byte written
    result = Producer(memory_url, run_id="rss").invoke_subprocess(["build", *project.dbt_args()], dbt_executable=DBT)
    assert len(ballast) == 600 * 2**20
    assert result.success
    assert result.peak_rss is not None
    assert 50 * 2**20 < result.peak_rss < 500 * 2**20  # dbt on DuckDB: ~150-250 MiB, not 600+ MiB
    finished = read_records(memory_url, "rss")[-1]
    assert isinstance(finished, RunFinished) and finished.peak_rss == result.peak_rss
