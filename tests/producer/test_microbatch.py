"""Microbatch models: each batch is progress of its own, the model is decided only when dbt decides it.

dbt runs a microbatch model's batches through its node machinery: every batch fires a NodeStart and a
NodeFinished carrying the model's unique_id (and a LogBatchResult). Taken for the model's own, the first
batch answered every waiter while dbt was still building the table, and a later failing batch ("partial
success") never reached anyone. Checked here against dbt's own ``run_results.json`` on a real project, in
process, through the subprocess producer and by replaying the real dbt CLI's JSON log at both levels.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

import dbtbus
from dbtbus import BatchResult, NodeResult, NodeStatus, OutcomeKind, RunState
from dbtbus.events import Record, decode, encode
from dbtbus.export import run_results
from dbtbus.producer import publish_log

from ._helpers import DBT, DBT_MINOR, read_records

pytestmark = [
    pytest.mark.dbt,
    pytest.mark.skipif(DBT_MINOR < (1, 9), reason="microbatch models arrived in dbt-core 1.9"),
]

MODEL = "model.mb.daily"
CHILD = "model.mb.after"
BATCHES = ["2026-01-01", "2026-01-02", "2026-01-03"]
#: dbt's event-time window: three daily batches, whatever the date the suite runs on.
WINDOW = ["--event-time-start", "2026-01-01", "--event-time-end", "2026-01-04"]


def _write_project(root: Path, *, failing_day: str | None) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "dbt_project.yml").write_text("name: mb\nversion: '1.0'\nprofile: mb\n")
    (root / "profiles.yml").write_text(
        "mb:\n  target: dev\n  outputs:\n    dev:\n"
        f"      type: duckdb\n      path: {root / 'mb.duckdb'}\n      threads: 3\n"
    )
    (root / "models" / "events.sql").write_text(
        "{{ config(materialized='table', event_time='ts') }}\n"
        "select i as id, timestamp '2026-01-01' + to_days(i % 3) as ts from range(30) t(i)\n"
    )
    boom = f"case when cast(ts as date) = date '{failing_day}' then error('boom') else 1 end" if failing_day else "1"
    (root / "models" / "daily.sql").write_text(
        "{{ config(materialized='incremental', incremental_strategy='microbatch', event_time='ts',"
        " batch_size='day', begin='2026-01-01', concurrent_batches=true) }}\n"
        f"select id, ts, {boom} as x from {{{{ ref('events') }}}}\n"
    )
    (root / "models" / "after.sql").write_text("select count(*) as n from {{ ref('daily') }}\n")
    return root


def _args(project: Path, *extra: str) -> list[str]:
    return ["build", "--project-dir", str(project), "--profiles-dir", str(project), *WINDOW, *extra]


def _run_results(project: Path) -> dict[str, Any]:
    results = orjson.loads((project / "target" / "run_results.json").read_bytes())
    return {r["unique_id"]: r for r in results["results"]}


@pytest.fixture(params=[None, "2026-01-02"], ids=["all-batches-succeed", "one-batch-fails"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return _write_project(tmp_path / "mb", failing_day=request.param)


def _assert_truthful(records: list[Record], dbt: dict[str, Any], run_id: str, url: str) -> None:
    """Every node as dbt has it, the model decided once and only after its batches, each batch on record."""
    results = [r for r in records if isinstance(r, NodeResult)]
    assert sorted(r.unique_id for r in results) == sorted(dbt)  # one terminal record per node
    for r in results:
        assert r.status.value == dbt[r.unique_id]["status"], r
    batches = [r for r in records if isinstance(r, BatchResult)]
    assert sorted(b.batch for b in batches) == BATCHES
    assert {b.batch_index for b in batches} == {1, 2, 3} and {b.total_batches for b in batches} == {3}
    failed = {start[:10] for start, _end in dbt[MODEL]["batch_results"]["failed"]}
    assert {b.batch for b in batches if b.status is NodeStatus.ERROR} == failed
    assert all(b.status is NodeStatus.SUCCESS for b in batches if b.batch not in failed)
    model_at = next(i for i, r in enumerate(records) if isinstance(r, NodeResult) and r.unique_id == MODEL)
    assert all(i < model_at for i, r in enumerate(records) if isinstance(r, BatchResult))
    # Folded up to the model's last batch, the model is still pending: no waiter was answered early.
    state = RunState(run_id)
    for record in records[:model_at]:
        state.apply(record)
    assert state.outcome(MODEL).kind is OutcomeKind.PENDING
    assert [b.batch for b in sorted(state.batches[MODEL], key=lambda b: b.batch_index)] == BATCHES
    state.apply(records[model_at])
    expected = OutcomeKind.FAILED if failed else OutcomeKind.SUCCESS
    assert state.outcome(MODEL).kind is expected
    # the export says what dbt's file says of the model's batches (the window ends on a batch boundary)
    for record in records[model_at + 1 :]:
        state.apply(record)
    exported = {r["unique_id"]: r for r in run_results(state)["results"]}
    assert exported[MODEL]["batch_results"] == dbt[MODEL]["batch_results"]
    assert exported[MODEL]["compiled"] is dbt[MODEL]["compiled"] is False
    assert exported[MODEL]["status"] == dbt[MODEL]["status"] and exported[MODEL]["message"] == dbt[MODEL]["message"]
    assert exported[CHILD]["batch_results"] is dbt[CHILD]["batch_results"] is None
    # what a waiter gets
    outcome = dbtbus.wait_many(url, run_id, [MODEL, CHILD], timeout=10, return_exceptions=True)
    if failed:
        assert isinstance(outcome[MODEL], dbtbus.NodeFailed)
        assert outcome[MODEL].record.status is NodeStatus.PARTIAL_SUCCESS
        assert outcome[MODEL].record.message == "PARTIAL SUCCESS (2/3)"
        assert isinstance(outcome[CHILD], dbtbus.UpstreamFailed) and outcome[CHILD].cause == MODEL
    else:
        assert isinstance(outcome[MODEL], NodeResult) and outcome[MODEL].status is NodeStatus.SUCCESS
        assert isinstance(outcome[CHILD], NodeResult)


def test_in_process(project: Path) -> None:
    url = "memory://microbatch-in-process"
    run_id = f"mb-{project.parent.name}"
    result = dbtbus.Producer(url, run_id=run_id).invoke(_args(project, "--quiet"))
    dbt = _run_results(project)
    assert result.success is (dbt[MODEL]["status"] == "success")
    _assert_truthful(read_records(url, run_id), dbt, run_id, url)


def test_subprocess(project: Path) -> None:
    url = "memory://microbatch-subprocess"
    run_id = f"mb-{project.parent.name}"
    dbtbus.Producer(url, run_id=run_id).invoke_subprocess(_args(project), dbt_executable=DBT)
    _assert_truthful(read_records(url, run_id), _run_results(project), run_id, url)


@pytest.mark.parametrize("level", ["info", "debug"])
def test_replay_of_the_dbt_clis_log(project: Path, level: str) -> None:
    env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    proc = subprocess.run(
        [DBT, *_args(project, "--log-format", "json", "--log-level", level)],
        capture_output=True, env=env, check=False, timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stdout[-2000:]
    url = f"memory://microbatch-replay-{level}"
    run_id = f"mb-{project.parent.name}"
    publish_log(proc.stdout.splitlines(keepends=True), url, run_id=run_id,
                graph=project / "target" / "manifest.json")
    _assert_truthful(read_records(url, run_id), _run_results(project), run_id, url)


def test_a_batch_record_round_trips_and_old_fields_default() -> None:
    record = BatchResult(run_id="r", unique_id=MODEL, status=NodeStatus.ERROR, batch_index=2, total_batches=3,
                         batch="2026-01-02", message="boom", adapter_response={"rows_affected": 4})
    assert decode(encode(record)) == record
    bare = decode(b'{"v": 1, "type": "batch_result", "run_id": "r", "unique_id": "m", "status": "success"}')
    assert bare == BatchResult(run_id="r", unique_id="m", status=NodeStatus.SUCCESS)
    with pytest.raises(dbtbus.DecodeError, match="batch_index"):
        decode(b'{"v": 1, "type": "batch_result", "run_id": "r", "unique_id": "m", "status": "success",'
               b' "batch_index": "two"}')
