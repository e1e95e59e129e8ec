"""Replaying REAL dbt JSON logs — dbt's default info level and debug level — tells the truth.

The truth is dbt's own ``run_results.json`` of the run that wrote the log: every node it reports gets the
same status from the replay (ephemeral models, which dbt logs nothing for at info level, count as success
when a child that reads them succeeded), skipped nodes name the failure that skipped them, the run ends as
dbt ended. A log with no dbt events, or cut before dbt finished, ends as crashed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

import dbtbus
from dbtbus.events import NodeResult, NodeStatus, RunCrashed, RunFinished
from dbtbus.producer import publish_log
from dbtbus.producer._normalise import EPHEMERAL_MESSAGE
from dbtbus.producer._replay import NO_EVENTS, TRUNCATED

from ._helpers import DBT, copy_shop, node_results, read_records, shop_args, started_of

pytestmark = pytest.mark.dbt

URL = "memory://producer-real-logs"
BROKEN = "model.shop.broken"
FAILING_TEST = "test.shop.assert_customers_have_repeat_orders"
EPHEMERAL = "model.shop.order_payments"


class DbtLog:
    def __init__(self, path: Path, lines: list[bytes], run_results: dict[str, str], manifest: Path) -> None:
        self.path = path
        self.lines = lines
        self.run_results = run_results
        self.manifest = manifest


def _dbt_log(shop: Path, tmp: Path, *extra: str) -> DbtLog:
    """Run the real dbt CLI (not the producer's bootstrap), the way a user's pipeline would."""
    target = tmp / "target"
    env = dict(os.environ, DBTBUS_DUCKDB_PATH=str(tmp / "shop.duckdb"), DBT_TARGET_PATH=str(target))
    args = [DBT, *shop_args(shop, "--vars", "{shop_break: true}"), "--log-format", "json", *extra]
    proc = subprocess.run(args, capture_output=True, env=env, check=False, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:]
    log = tmp / "dbt.jsonl"
    log.write_bytes(proc.stdout)
    results = orjson.loads((target / "run_results.json").read_bytes())
    statuses = {r["unique_id"]: r["status"] for r in results["results"]}
    return DbtLog(log, proc.stdout.splitlines(keepends=True), statuses, target / "manifest.json")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from dbtbus.backends.memory import drop_store

    yield copy_shop(tmp_path_factory.mktemp("shop-real-logs"))
    drop_store("producer-real-logs")


@pytest.fixture(scope="module")
def info_log(shop: Path, tmp_path_factory: pytest.TempPathFactory) -> DbtLog:
    return _dbt_log(shop, tmp_path_factory.mktemp("info"))


@pytest.fixture(scope="module")
def debug_log(shop: Path, tmp_path_factory: pytest.TempPathFactory) -> DbtLog:
    return _dbt_log(shop, tmp_path_factory.mktemp("debug"), "--log-level", "debug")


def _levels(log: DbtLog) -> set[str]:
    return {orjson.loads(line)["info"]["level"] for line in log.lines if line.startswith(b"{")}


def _assert_matches_dbt(log: DbtLog, results: dict[str, NodeResult]) -> None:
    for uid, status in log.run_results.items():
        assert results[uid].status.value == status, (uid, results[uid].status, status)
    assert results[BROKEN].status is NodeStatus.ERROR
    assert results["model.shop.broken_child"].skip_cause == BROKEN
    assert results["model.shop.broken_grandchild"].skip_cause == BROKEN
    assert results["model.shop.top_customers"].skip_cause == FAILING_TEST
    assert results[FAILING_TEST].failures == 3
    for r in results.values():
        if r.unique_id != EPHEMERAL:
            assert r.started_at is not None and r.finished_at is not None, r


def test_an_info_level_log_replays_to_dbts_own_results(info_log: DbtLog) -> None:
    assert "debug" not in _levels(info_log)  # dbt's default: no NodeStart / NodeFinished / CommandCompleted
    result = publish_log(info_log.lines, URL, run_id="info", graph=info_log.manifest)
    records = read_records(URL, "info")
    results = node_results(records)
    _assert_matches_dbt(info_log, results)
    assert results[EPHEMERAL].status is NodeStatus.SUCCESS and results[EPHEMERAL].message == EPHEMERAL_MESSAGE
    assert not any(r.status is NodeStatus.NOT_RUN for r in results.values())
    end = records[-1]
    assert isinstance(end, RunFinished) and not end.success and end.exit_code == 1 and end.elapsed > 0
    assert not result.crashed and not result.success and result.exit_code == 1
    assert started_of(records).graph  # the manifest's, with build's test edges
    for uid, cause in (("model.shop.broken_grandchild", BROKEN), ("model.shop.top_customers", FAILING_TEST)):
        outcome = dbtbus.wait_many(URL, "info", [uid], timeout=10, return_exceptions=True)[uid]
        assert isinstance(outcome, dbtbus.UpstreamFailed) and outcome.cause == cause


def test_a_debug_level_log_gives_one_terminal_record_per_node(debug_log: DbtLog) -> None:
    assert "debug" in _levels(debug_log)
    result = publish_log(debug_log.lines, URL, run_id="debug", graph=debug_log.manifest)
    records = read_records(URL, "debug")
    terminal = [r.unique_id for r in records if isinstance(r, NodeResult)]
    assert len(terminal) == len(set(terminal))  # Log*Result lines are not a second result
    results = node_results(records)
    _assert_matches_dbt(debug_log, results)
    assert results[EPHEMERAL].status is NodeStatus.SUCCESS and results[EPHEMERAL].message != EPHEMERAL_MESSAGE
    assert results["seed.shop.customers"].adapter_response.get("rows_affected") == 5  # NodeFinished's detail
    assert not result.crashed and result.exit_code == 1


def test_an_info_level_log_without_a_graph_still_ends_truthfully(info_log: DbtLog) -> None:
    result = publish_log(info_log.lines, URL, run_id="info-bare")
    records = read_records(URL, "info-bare")
    assert isinstance(records[-1], RunFinished) and records[-1].exit_code == 1
    results = node_results(records)
    for uid, status in info_log.run_results.items():
        if uid != EPHEMERAL:
            assert results[uid].status.value == status, uid
    assert not result.crashed


def test_a_log_cut_before_dbt_finished_ends_crashed_and_only_then(info_log: DbtLog) -> None:
    names = [orjson.loads(line)["info"]["name"] if line.startswith(b"{") else "" for line in info_log.lines]
    summary = names.index("EndOfRunSummary")
    cut = publish_log(info_log.lines[:summary], URL, run_id="cut", graph=info_log.manifest)
    assert cut.crashed and not cut.success and cut.error == TRUNCATED
    end = read_records(URL, "cut")[-1]
    assert isinstance(end, RunCrashed) and end.error == TRUNCATED
    whole = publish_log(info_log.lines[: summary + 1], URL, run_id="not-cut", graph=info_log.manifest)
    assert not whole.crashed and whole.exit_code == 1


@pytest.mark.parametrize("content", [b"", b"hello\nthis is not a dbt log\n", b'{"a": 1}\n'])
def test_input_without_dbt_events_is_an_error(content: bytes) -> None:
    run_id = f"junk-{len(content)}"  # one run id is one run: each input its own
    result = publish_log(content.splitlines(keepends=True), URL, run_id=run_id)
    assert result.crashed and not result.success and result.error == NO_EVENTS and result.exit_code is None
    end = read_records(URL, run_id)[-1]
    assert isinstance(end, RunCrashed) and end.error == NO_EVENTS


def test_dbt_failing_before_the_run_is_dbts_exit_code_2(shop: Path, tmp_path: Path) -> None:
    """A real parse error: dbt logs "Encountered an error" at info level and exits 2 — not a truncated log."""
    broken = copy_shop(tmp_path / "unparsable")
    (broken / "models" / "oops.sql").write_text("select {{ ref( }}\n")
    env = dict(os.environ, DBTBUS_DUCKDB_PATH=str(tmp_path / "x.duckdb"))
    proc = subprocess.run([DBT, *shop_args(broken), "--log-format", "json"], capture_output=True, env=env,
                          check=False, timeout=300)
    assert proc.returncode == 2
    result = publish_log(proc.stdout.splitlines(keepends=True), URL, run_id="unparsable")
    assert not result.crashed and result.exit_code == 2 and result.error
    end = read_records(URL, "unparsable")[-1]
    assert isinstance(end, RunFinished) and end.exit_code == 2 and not end.success
