"""run_results.json from a run's state at any moment: live, crashed, retried; dbt's conventions kept."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from dbtbus._state import RunState
from dbtbus.events import NodeResult, NodeStatus, Record, RunCrashed
from dbtbus.export import RUN_RESULTS_SCHEMA, is_ephemeral, run_results, write_run_results
from tests.report._runs import RUN_ID, at, crashed_run, finished_run, live_run, result, started


def state_of(records: list[Record]) -> RunState:
    state = RunState(RUN_ID)
    for record in records:
        state.apply(record)
    return state


def test_finished_run() -> None:
    data = run_results(state_of(finished_run()), now=at(60))
    meta = data["metadata"]
    assert meta["dbt_schema_version"] == RUN_RESULTS_SCHEMA
    assert (meta["dbt_version"], meta["invocation_id"]) == ("1.11.16", "inv-1")
    assert meta["invocation_started_at"] == "2026-11-21T12:00:00.000000Z"
    assert meta["generated_at"] == "2026-11-21T12:01:00.000000Z"
    assert data["elapsed_time"] == 9.0
    assert data["args"] == {"which": "build", "invocation_command": "dbt build --threads 4"}
    ids = [r["unique_id"] for r in data["results"]]
    assert ids[0] == "seed.p.raw" and len(ids) == 7  # in the order the nodes finished
    seed = data["results"][0]
    assert seed["adapter_response"] == {"rows_affected": 7}
    assert seed["relation_name"] is None and seed["compiled"] is None  # as dbt writes seeds
    failed = next(r for r in data["results"] if r["unique_id"] == "test.p.t_b")
    assert (failed["status"], failed["failures"], failed["thread_id"]) == ("fail", 3, "Thread-1 (worker)")
    skipped = next(r for r in data["results"] if r["unique_id"] == "model.p.c")
    assert (skipped["status"], skipped["compiled"], skipped["failures"]) == ("skipped", False, None)


def test_the_metadata_is_the_one_the_runs_dbt_writes() -> None:
    """dbt-core 1.10 added ``invocation_started_at`` to the v6 metadata: a 1.8 or 1.9 run's export has none."""
    for version, has_it in (("1.8.0", False), ("1.9.10", False), ("1.10.0", True), ("1.11.16", True)):
        records = finished_run()
        records[0] = replace(started(), dbt_version=version)
        meta = run_results(state_of(records), now=at(60))["metadata"]
        assert ("invocation_started_at" in meta) is has_it, version
        assert list(meta)[-1] == "env" and meta["dbt_version"] == version


def test_a_run_of_dbt_1_8_has_no_batch_results() -> None:
    """dbt-core 1.9 added microbatch models and each result's ``batch_results``: 1.8 writes no such key."""
    for version, has_it in (("1.8.0", False), ("1.9.0", True), ("1.11.16", True)):
        records = [*crashed_run()]
        records[0] = replace(started(), dbt_version=version)
        results = run_results(state_of(records), now=at(60))["results"]
        assert results and all(("batch_results" in r) is has_it for r in results), version


def test_live_run_lists_what_has_finished_so_far() -> None:
    data = run_results(state_of(live_run()), now=at(6))
    assert sorted(r["unique_id"] for r in data["results"]) == ["model.p.a", "model.p.x", "seed.p.raw"]
    assert data["elapsed_time"] == 6.0  # so far


def test_crashed_run_lists_what_never_ran_as_skipped() -> None:
    records = crashed_run()
    not_run = NodeResult(
        run_id=RUN_ID, unique_id="model.p.b", status=NodeStatus.NOT_RUN, message="the run ended before this node ran"
    )
    records.insert(-1, not_run)
    data = run_results(state_of(records), now=at(60))
    b = next(r for r in data["results"] if r["unique_id"] == "model.p.b")
    assert (b["status"], b["message"], b["thread_id"], b["execution_time"]) == (
        "skipped", "the run ended before this node ran", "", 0)
    ids = [r["unique_id"] for r in data["results"]]
    assert ids[:4] == ["seed.p.raw", "model.p.x", "model.p.a", "model.p.b"]  # finished in this order; b never did
    assert isinstance(records[-1], RunCrashed)
    assert data["elapsed_time"] == 5.0
    # The producer died before it could say so: the nodes without a record did not run either.
    for rest in data["results"][4:]:
        assert rest["status"] == "skipped"
        assert rest["message"] == "not run: the run crashed (terminated by signal SIGTERM)"
    assert sorted(ids[4:]) == ["model.p.c", "model.p.d", "test.p.t_b"]


def test_live_run_leaves_pending_nodes_out_but_a_lost_one_lists_them() -> None:
    state = state_of(live_run())
    assert len(run_results(state, now=at(6))["results"]) == 3
    state.mark_lost()
    results = run_results(state, now=at(60))["results"]
    assert len(results) == 7
    assert results[-1]["message"] == "not run: the producer stopped heartbeating (producer lost)"


def test_a_retry_lists_each_nodes_latest_result() -> None:
    retry = started(attempt=2, graph={"model.p.b": started().graph["model.p.b"]})  # type: ignore[index]
    later = result("model.p.b", attempt=2)
    records = [*finished_run(), retry, later]
    data = run_results(state_of(records), now=at(60))
    assert [r["unique_id"] for r in data["results"]].count("model.p.b") == 1


def test_ephemeral_models_are_left_out_as_dbt_does() -> None:
    ephemeral = NodeResult(run_id=RUN_ID, unique_id="model.p.eph", status=NodeStatus.SUCCESS, resource_type="model",
                           finished_at=at(1))
    assert is_ephemeral(ephemeral)
    assert not is_ephemeral(result("model.p.a"))
    data = run_results(state_of([started(), ephemeral, result("model.p.a")]), now=at(60))
    assert [r["unique_id"] for r in data["results"]] == ["model.p.a"]


def test_written_atomically_as_json(tmp_path: Path) -> None:
    path = write_run_results(state_of(finished_run()), tmp_path / "run_results.json", now=at(60))
    assert json.loads(path.read_text())["metadata"]["invocation_id"] == "inv-1"
    assert [p.name for p in tmp_path.iterdir()] == ["run_results.json"]


def test_empty_state() -> None:
    data = run_results(RunState("nothing"), now=at(0) + timedelta(seconds=1))
    assert data["results"] == [] and data["elapsed_time"] == 0.0


def test_written_with_the_mode_dbt_gives_its_file(tmp_path: Path) -> None:
    """dbt's run_results.json is 0666 less the umask (0644 typically); the temporary file is created 0600."""
    import os

    old = os.umask(0o027)
    try:
        path = write_run_results(state_of(finished_run()), tmp_path / "run_results.json", now=at(60))
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    path = write_run_results(state_of(finished_run()), tmp_path / "again.json", now=at(60))
    assert path.stat().st_mode & 0o777 == 0o666 & ~old
