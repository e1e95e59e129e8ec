"""Every kind of dbt node and feature, as dbt itself reports it: the bus against dbt's ``run_results.json``.

tests/projects/features has seeds, views, tables, an ephemeral model, an incremental and a microbatch model,
a Python model, project hooks (on-run-start / on-run-end), a snapshot, generic tests with warn/error
thresholds, a singular test, a unit test and a saved query. Real dbt-core ``build`` runs it, in process and
through the JSON-log replay (at dbt's default info level and at debug level), green and failing
(``features_break``), with ``--empty`` and ``--sample``, ``dbt retry`` after the failing build and ``dbt clone``
from a green build's state: every node dbt reports
must have the same status on the bus (hooks with dbt's message too), no counter may exceed its total, and
the exported ``run_results.json`` must say what dbt's says.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

import dbtbus
from dbtbus import BatchResult, NodeResult, NodeStatus, OutcomeKind, RunState
from dbtbus.events import NodeStarted, Record
from dbtbus.export import run_results
from dbtbus.producer import publish_log

from ._helpers import DBT, DBT_MINOR, node_results, read_records

pytestmark = [
    pytest.mark.dbt,
    pytest.mark.skipif(
        DBT_MINOR < (1, 11),
        reason="the features project is dbt-core 1.11's (microbatch, a YAML time spine, generic-test arguments:)",
    ),
]

FEATURES = Path(__file__).resolve().parents[1] / "projects" / "features"
#: Three daily batches of the microbatch model, whatever the date the suite runs on.
WINDOW = ["--event-time-start", "2026-01-01", "--event-time-end", "2026-01-04"]
BREAK = ["--vars", "{features_break: true}"]
MICROBATCH = "model.features.orders_daily"
EPHEMERAL = "model.features.stg_payments"  # dbt's run_results.json leaves ephemeral models out
HOOKS = [
    "operation.features.features-on-run-start-0",
    "operation.features.features-on-run-start-1",
    "operation.features.features-on-run-end-0",
]
UNIT_TEST = "unit_test.features.orders_paid.orders_paid_joins_payments"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "features"
    shutil.copytree(FEATURES, path, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb"))
    monkeypatch.setenv("DBTBUS_FEATURES_DUCKDB", str(path / "features.duckdb"))
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    return path


def _args(project: Path, *extra: str, command: str = "build") -> list[str]:
    window = WINDOW if command == "build" else []
    return [command, "--project-dir", str(project), "--profiles-dir", str(project), *window, *extra]


def _dbt_results(project: Path) -> dict[str, Any]:
    data = orjson.loads((project / "target" / "run_results.json").read_bytes())
    return {r["unique_id"]: r for r in data["results"]}


def _replay(project: Path, url: str, run_id: str, *extra: str, level: str = "info", manifest: bool = False) -> None:
    """Run the dbt CLI with a JSON log and replay its output (as ``dbt ... | dbtbus publish-log`` does)."""
    proc = subprocess.run(
        [DBT, *_args(project, *extra, "--log-format", "json", "--log-level", level)],
        capture_output=True, env=dict(os.environ), check=False, timeout=600,
    )
    assert proc.returncode in (0, 1), proc.stdout[-3000:]
    graph = project / "target" / "manifest.json" if manifest else None
    publish_log(proc.stdout.splitlines(keepends=True), url, run_id=run_id, graph=graph)


def _assert_truthful(records: list[Record], dbt: dict[str, Any], url: str, run_id: str) -> int:
    """Every node dbt reports has dbt's status on the bus, in the export and in every counter; return how many."""
    results = node_results(records)
    assert sorted(results) == sorted({*dbt, *([EPHEMERAL] if EPHEMERAL in results else [])})
    for uid, expected in dbt.items():
        assert results[uid].status.value == expected["status"], (uid, results[uid], expected["message"])
    if EPHEMERAL in results:
        assert results[EPHEMERAL].status is NodeStatus.SUCCESS
    assert not [r for r in results.values() if r.status is NodeStatus.NOT_RUN]
    # project hooks: dbt's status, message, thread of their own, timing
    for uid in HOOKS:
        hook, expected = results[uid], dbt[uid]
        assert hook.resource_type == "operation"
        if expected["status"] == "error":  # dbt's events do not carry the error's text, its first words
            assert hook.message is not None and expected["message"].startswith(hook.message + ", error:")
        else:
            assert hook.message == expected["message"]
        assert hook.started_at is not None and hook.finished_at is not None and hook.execution_time is not None
        assert any(isinstance(r, NodeStarted) and r.unique_id == uid for r in records)
    # the microbatch model is decided once, after its batches, each of which is on record
    model_at = next(i for i, r in enumerate(records) if isinstance(r, NodeResult) and r.unique_id == MICROBATCH)
    batches = [(i, r) for i, r in enumerate(records) if isinstance(r, BatchResult)]
    if dbt[MICROBATCH]["status"] != "skipped":
        assert sorted(b.batch or "" for _, b in batches) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert all(i < model_at and b.unique_id == MICROBATCH for i, b in batches)
    # counters: the run's expected total holds every node that reports, and each reported once
    state = RunState(run_id)
    for record in records:
        state.apply(record)
    graph = state.graph
    if graph is not None:
        assert set(state.results) <= set(graph), sorted(set(state.results) - set(graph))
        assert len(state.results) <= len(graph) and not list(state.pending())
        assert set(HOOKS) <= set(graph) and UNIT_TEST in graph
    assert sum(state.counts().values()) == len(state.results)
    # the export says what dbt's file says, hooks included
    exported = {r["unique_id"]: r for r in run_results(state)["results"]}
    assert {uid: r["status"] for uid, r in exported.items() if uid in dbt} == {
        uid: r["status"] for uid, r in dbt.items()
    }
    assert {exported[uid]["message"] for uid in HOOKS if dbt[uid]["status"] == "success"} == {
        dbt[uid]["message"] for uid in HOOKS if dbt[uid]["status"] == "success"
    }
    # what a waiter gets
    for uid in HOOKS:
        kind = state.outcome(uid).kind
        assert kind is (OutcomeKind.SUCCESS if dbt[uid]["status"] == "success" else OutcomeKind.FAILED)
    outcomes = dbtbus.wait_many(url, run_id, sorted(dbt), timeout=10, return_exceptions=True)
    for uid, expected in dbt.items():
        got = outcomes[uid]
        ok = NodeStatus(expected["status"]).is_success
        assert isinstance(got, NodeResult) is ok, (uid, got)
    return len(dbt)


def _check_break(dbt: dict[str, Any]) -> None:
    """The failing build fails where the project says it does (and nowhere else)."""
    assert dbt["model.features.broken"]["status"] == "error"
    assert dbt["model.features.after_broken"]["status"] == "skipped"
    assert all(dbt[uid]["status"] == "success" for uid in HOOKS)


@pytest.mark.parametrize("broken", [False, True], ids=["green", "features_break"])
def test_in_process(project: Path, broken: bool) -> None:
    url, run_id = f"memory://features-in-process-{broken}", "features"
    result = dbtbus.Producer(url, run_id=run_id).invoke(_args(project, "--quiet", *(BREAK if broken else ())))
    dbt = _dbt_results(project)
    if broken:
        _check_break(dbt)
    assert result.success is (not broken)
    assert "not_run" not in result.counts
    assert sum(result.counts.values()) == len(dbt) + 1  # the ephemeral model, which dbt's file leaves out
    assert _assert_truthful(read_records(url, run_id), dbt, url, run_id) == 25


@pytest.mark.parametrize(
    ("broken", "level", "manifest"),
    [(False, "info", False), (True, "info", False), (False, "debug", True), (True, "debug", True)],
    ids=["green-info", "features_break-info", "green-debug-manifest", "features_break-debug-manifest"],
)
def test_replay(project: Path, broken: bool, level: str, manifest: bool) -> None:
    url, run_id = f"memory://features-replay-{broken}-{level}", "features"
    _replay(project, url, run_id, *(BREAK if broken else ()), level=level, manifest=manifest)
    dbt = _dbt_results(project)
    if broken:
        _check_break(dbt)
    assert _assert_truthful(read_records(url, run_id), dbt, url, run_id) == 25


def test_empty(project: Path) -> None:
    url, run_id = "memory://features-empty", "features"
    dbtbus.Producer(url, run_id=run_id).invoke(_args(project, "--quiet", "--empty"))
    dbt = _dbt_results(project)
    assert _assert_truthful(read_records(url, run_id), dbt, url, run_id) == len(dbt)


def test_retry_after_the_failing_build(project: Path) -> None:
    url = "memory://features-retry"
    dbtbus.Producer(url, run_id="first").invoke(_args(project, "--quiet", *BREAK))
    _check_break(_dbt_results(project))
    dbtbus.Producer(url, run_id="retry").invoke(_args(project, "--quiet", command="retry"))
    dbt = _dbt_results(project)
    assert dbt["model.features.broken"]["status"] == "error"  # the retry keeps the vars of the build it retries
    _same_statuses(read_records(url, "retry"), dbt, "retry")


def _same_statuses(records: list[Record], dbt: dict[str, Any], run_id: str) -> None:
    """Exactly the nodes dbt reports, each with dbt's status, none outside the run's graph."""
    results = node_results(records)
    assert sorted(results) == sorted({*dbt, *([EPHEMERAL] if EPHEMERAL in results else [])})
    for uid, expected in dbt.items():
        assert results[uid].status.value == expected["status"], (uid, results[uid])
    state = RunState(run_id)
    for record in records:
        state.apply(record)
    assert state.graph is not None and set(state.results) <= set(state.graph)
    assert not list(state.pending())


def test_clone_from_a_green_builds_state(project: Path) -> None:
    """dbt clone: every model, seed and snapshot of the state cloned, each answered as dbt reports it."""
    url = "memory://features-clone"
    dbtbus.Producer(url, run_id="build").invoke(_args(project, "--quiet"))
    shutil.copytree(project / "target", project / "state")
    dbtbus.Producer(url, run_id="clone").invoke(
        _args(project, "--quiet", "--state", str(project / "state"), command="clone"))
    dbt = _dbt_results(project)
    assert len(dbt) >= 10 and {r["status"] for r in dbt.values()} == {"success"}
    _same_statuses(read_records(url, "clone"), dbt, "clone")


def test_sample(project: Path) -> None:
    """build --sample: a sample window instead of the microbatch event-time window."""
    url, run_id = "memory://features-sample", "sample"
    dbtbus.Producer(url, run_id=run_id).invoke(
        ["build", "--project-dir", str(project), "--profiles-dir", str(project), "--quiet", "--sample", "2 days"])
    dbt = _dbt_results(project)
    assert len(dbt) >= 20
    _same_statuses(read_records(url, run_id), dbt, run_id)


def test_a_failing_hook(project: Path) -> None:
    """An on-run-start hook that fails is a failed node (dbt 1.11 still runs the nodes: it does not skip them
    unless ``skip_nodes_if_on_run_start_fails``), in process and replayed."""
    yml = project / "dbt_project.yml"
    yml.write_text(yml.read_text().replace('"select 1 as warm"', '"select * from no_such_table_for_the_hook"'))
    url = "memory://features-failing-hook"
    # the replay first: the in-process run keeps DuckDB's file open (and locked) after it returns
    _replay(project, url, "replayed")
    dbt = _dbt_results(project)
    assert dbt[HOOKS[1]]["status"] == "error"
    assert _assert_truthful(read_records(url, "replayed"), dbt, url, "replayed") == 25
    result = dbtbus.Producer(url, run_id="in-process").invoke(_args(project, "--quiet"))
    dbt = _dbt_results(project)
    assert dbt[HOOKS[1]]["status"] == "error" and result.success is False
    assert _assert_truthful(read_records(url, "in-process"), dbt, url, "in-process") == 25
    with pytest.raises(dbtbus.NodeFailed) as failed:
        dbtbus.wait(url, "in-process", HOOKS[1], timeout=5)
    assert failed.value.record.message == "features.on-run-start.1 failed"
