"""The normaliser alone: synthetic dbt events in JSON-log shape (no dbt needed)."""

from __future__ import annotations

from datetime import timezone

import pytest

from dbtbus._dbt.hook import GRAPH_EVENT, RESULTS_EVENT
from dbtbus.events import GraphNode, NodeResult, NodeStarted, NodeStatus, RunStarted
from dbtbus.producer._normalise import Normaliser, command_of, producer_info

GRAPH = {
    "model.p.a": GraphNode("model", ()),
    "test.p.t_a": GraphNode("test", ("model.p.a",)),
    "model.p.b": GraphNode("model", ("model.p.a", "test.p.t_a")),
    "model.p.c": GraphNode("model", ("model.p.b",)),
    "model.p.ok": GraphNode("model", ()),
}


def node_info(uid: str, **extra: object) -> dict[str, object]:
    return {"unique_id": uid, "resource_type": uid.split(".")[0], "node_started_at": "2026-01-01T10:00:00.5",
            "node_finished_at": "2026-01-01T10:00:01", **extra}


def finished(uid: str, status: str, **rr: object) -> dict[str, object]:
    return {"node_info": node_info(uid), "run_result": {"status": status, "message": "m", "execution_time": 0.5,
                                                        "num_failures": 0, "thread": "Thread-1", **rr}}


def make(graph: dict[str, GraphNode] | None = GRAPH) -> Normaliser:
    return Normaliser("r", producer=producer_info("log"), args=("build", "--select", "x"), graph=graph)


def test_command_of() -> None:
    assert command_of(["build", "--select", "a"]) == "build"
    assert command_of(["source", "freshness"]) == "source freshness"
    assert command_of(["--debug", "run"]) == ""


def test_run_started_comes_first_and_once() -> None:
    n = make()
    n.feed("MainReportVersion", {"version": "=1.11.16"}, {"invocation_id": "inv"})
    out = n.feed("NodeStart", {"node_info": node_info("model.p.a")}, {"thread": "Thread-1 (worker)"})
    assert isinstance(out[0], RunStarted) and isinstance(out[1], NodeStarted)
    started = out[0]
    assert started.dbt_version == "1.11.16" and started.invocation_id == "inv" and started.command == "build"
    assert NodeStatus.FAIL in started.skip_children_on
    assert out[1].started_at is not None and out[1].started_at.tzinfo is timezone.utc
    assert n.feed("NodeStart", {"node_info": node_info("model.p.b")}, {})[0].unique_id == "model.p.b"


def test_graph_event_defines_the_graph() -> None:
    n = make(None)
    payload = {"nodes": {"model.p.a": ["model", []], "model.p.b": ["model", ["model.p.a"]]}, "continue_on_error": []}
    (started,) = n.feed(GRAPH_EVENT, payload, {})
    assert isinstance(started, RunStarted)
    assert started.graph == {"model.p.a": GraphNode("model", ()), "model.p.b": GraphNode("model", ("model.p.a",))}


def test_exact_result_fields() -> None:
    n = make()
    data = finished("test.p.t_a", "fail", num_failures=3, adapter_response={"rows_affected": 3.0, "_message": "OK"})
    data["node_info"]["node_relation"] = {"relation_name": '"db"."s"."t"'}  # type: ignore[index]
    out = n.feed("NodeFinished", data, {"ts": "2026-01-01T10:00:02Z", "thread": "Thread-1 (worker)"})
    (result,) = [r for r in out if isinstance(r, NodeResult)]
    assert result.status is NodeStatus.FAIL and result.failures == 3 and result.resource_type == "test"
    assert result.adapter_response == {"rows_affected": 3, "_message": "OK"}
    assert result.started_at is not None and result.started_at.tzinfo is timezone.utc
    assert result.started_at.isoformat() == "2026-01-01T10:00:00.500000+00:00"
    assert result.relation_name == '"db"."s"."t"' and result.message == "m" and result.thread == "Thread-1"
    model = n.feed("NodeFinished", finished("model.p.ok", "success"), {})[0]
    assert isinstance(model, NodeResult) and model.failures is None


def test_skip_cause_is_the_root_through_chains() -> None:
    n = make()
    n.feed("NodeFinished", finished("model.p.a", "error"), {})
    n.feed("MarkSkippedChildren", {"unique_id": "model.p.a", "status": "error"}, {})
    skipped = finished("test.p.t_a", "skipped")
    skipped["node_info"]["node_finished_at"] = ""  # type: ignore[index]
    (t_a,) = n.feed("NodeFinished", skipped, {"ts": "2026-01-01T10:00:03Z"})
    n.feed("MarkSkippedChildren", {"unique_id": "test.p.t_a", "status": "skipped"}, {})
    (b,) = n.feed("NodeFinished", finished("model.p.b", "skipped"), {})
    n.feed("MarkSkippedChildren", {"unique_id": "model.p.b", "status": "skipped"}, {})
    (c,) = n.feed("NodeFinished", finished("model.p.c", "skipped"), {})
    assert isinstance(t_a, NodeResult) and isinstance(b, NodeResult) and isinstance(c, NodeResult)
    assert t_a.skip_cause == b.skip_cause == c.skip_cause == "model.p.a"
    assert t_a.finished_at is not None and t_a.finished_at.isoformat() == "2026-01-01T10:00:03+00:00"


def test_generic_exception_is_terminal_error() -> None:
    n = make()
    data = {"unique_id": "model.p.a", "exc": "boom", "node_info": node_info("model.p.a")}
    (_, result) = n.feed("GenericExceptionOnRun", data, {})
    assert isinstance(result, NodeResult) and result.status is NodeStatus.ERROR and "boom" in (result.message or "")


def test_not_run_for_the_rest_and_the_stream_wins() -> None:
    n = make()
    n.feed("NodeFinished", finished("model.p.a", "success"), {})
    n.feed(RESULTS_EVENT, {"results": [["model.p.a", "skipped", "Skipping due to fail_fast"],
                                       ["model.p.b", "skipped", "Skipping due to fail_fast"]], "success": False}, {})
    out = {r.unique_id: r for r in n.not_run(n.end.results) if isinstance(r, NodeResult)}
    assert set(out) == {"test.p.t_a", "model.p.b", "model.p.c", "model.p.ok"}
    assert out["model.p.b"].status is NodeStatus.NOT_RUN and out["model.p.b"].message == "Skipping due to fail_fast"
    assert n.statuses["model.p.a"] is NodeStatus.SUCCESS
    assert n.counts() == {"success": 1, "not_run": 4}


def test_unknown_status_becomes_error_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    n = make()
    r = n.feed("NodeFinished", finished("model.p.a", "weird"), {})[-1]
    assert isinstance(r, NodeResult) and r.status is NodeStatus.ERROR
    assert "no known status" in caplog.text


# ---------------------------------------------------------------------------------------------- #26 item 7


def test_the_graph_hook_carries_dbts_args_and_invocation_start() -> None:
    n = make(None)
    payload = {"nodes": {"model.p.a": ["model", []]}, "continue_on_error": [],
               "dbt_args": {"which": "build", "vars": {"region": "eu"}},
               "invocation_started_at": "2026-01-01T09:59:58.123456"}
    (started,) = n.feed(GRAPH_EVENT, payload, {})
    assert isinstance(started, RunStarted)
    assert started.dbt_args == {"which": "build", "vars": {"region": "eu"}}
    assert started.invocation_started_at is not None
    assert started.invocation_started_at.isoformat() == "2026-01-01T09:59:58.123456+00:00"  # naive UTC, as dbt's


def test_dbts_elapsed_time_from_the_results_hook_or_the_log() -> None:
    n = make()
    n.feed(RESULTS_EVENT, {"results": [], "success": True, "elapsed_time": 12.345678901}, {})
    assert n.end.dbt_elapsed == 12.345678901
    log = make()
    log.feed("FinishedRunningStats", {"execution_time": 3.5}, {})
    assert log.end.dbt_elapsed == 3.5


def _hook_events(n: Normaliser, uid: str, status: str = "success") -> None:
    info = node_info(uid, node_started_at="2026-01-01T10:00:00.100000", node_finished_at="")
    n.feed("LogHookStartLine", {"node_info": info, "statement": "p.on-run-start.0"},
           {"ts": "2026-01-01T10:00:00.200000Z", "thread": "MainThread"})
    end = node_info(uid, node_started_at="2026-01-01T10:00:00.100000", node_finished_at="2026-01-01T10:00:00.350000")
    n.feed("LogHookEndLine", {"node_info": end, "status": status, "execution_time": 0.25},
           {"ts": "2026-01-01T10:00:00.360000Z", "thread": "MainThread"})


def test_a_hooks_record_carries_dbts_timing_thread_and_execution_time() -> None:
    n = make(None)
    uid = "operation.p.p-on-run-start-0"
    n.feed("DbtbusCompiled", {"unique_id": uid, "compiled_code": "select 1"}, {})
    _hook_events(n, uid)
    # whoever records the hook (the hooks branch: from LogHookEndLine) goes through _terminal
    (record,) = n._terminal(NodeResult(run_id="r", unique_id=uid, status=NodeStatus.SUCCESS, resource_type="operation"))
    assert isinstance(record, NodeResult)
    assert record.thread == "main" and record.failures == 0 and record.compiled_code == "select 1"
    assert record.execution_time == pytest.approx(0.25)
    assert [(p.name, p.started_at.isoformat(), p.completed_at.isoformat()) for p in record.timing] == [  # type: ignore[union-attr]
        ("compile", "2026-01-01T10:00:00.100000+00:00", "2026-01-01T10:00:00.200000+00:00"),
        ("execute", "2026-01-01T10:00:00.200000+00:00", "2026-01-01T10:00:00.350000+00:00"),
    ]


def test_a_skipped_hook_ran_no_phase_and_counts_a_failure() -> None:
    n = make(None)
    uid = "operation.p.p-on-run-end-1"
    info = node_info(uid, node_started_at="", node_finished_at="")
    n.feed("LogHookEndLine", {"node_info": info, "status": "skipped", "execution_time": 0.0}, {})
    (record,) = n._terminal(NodeResult(run_id="r", unique_id=uid, status=NodeStatus.SKIPPED, resource_type="operation"))
    assert isinstance(record, NodeResult)
    assert (record.timing, record.thread, record.failures, record.execution_time) == ((), "main", 1, 0.0)
    # a not_run stand-in is never dressed up as having run
    _hook_events(n, "operation.p.p-on-run-end-0")
    (stand_in,) = n._terminal(NodeResult(run_id="r", unique_id="operation.p.p-on-run-end-0",
                                         status=NodeStatus.NOT_RUN, resource_type="operation"))
    assert isinstance(stand_in, NodeResult) and stand_in.timing == () and stand_in.thread is None


def test_compiled_code_goes_with_the_nodes_own_nodefinished_not_a_batchs() -> None:
    n = make()
    n.feed("DbtbusCompiled", {"unique_id": "model.p.a", "compiled_code": "select 1 as a"}, {})
    out = n.feed("NodeFinished", finished("model.p.a", "success"), {})
    (record,) = [r for r in out if isinstance(r, NodeResult)]
    assert record.compiled_code == "select 1 as a"
    out = n.feed("NodeFinished", finished("model.p.ok", "success"), {})
    assert next(r for r in out if isinstance(r, NodeResult)).compiled_code is None


def _hook(uid: str, status: str | None = None) -> dict[str, object]:
    data: dict[str, object] = {"node_info": node_info(uid, resource_type="operation"), "index": 1, "total": 2,
                               "statement": uid.split(".")[-1].replace("p-on-run-", "p.on-run-").replace("-0", ".0")}
    if status is not None:
        data.update(status=status, execution_time=0.25)
    return data


def test_project_hooks_have_results_of_their_own() -> None:
    """dbt runs project hooks outside its node machinery: LogHookStartLine / LogHookEndLine, no NodeFinished."""
    start, end = "operation.p.p-on-run-start-0", "operation.p.p-on-run-end-0"
    graph = {**GRAPH, start: GraphNode("operation", ()), end: GraphNode("operation", ())}
    n = make(graph)
    out = n.feed("LogHookStartLine", _hook(start), {"thread": "MainThread"})
    assert isinstance(out[-1], NodeStarted) and out[-1].resource_type == "operation"
    (record,) = n.feed("LogHookEndLine", _hook(start, "success"), {"thread": "MainThread"})
    assert isinstance(record, NodeResult) and record.status is NodeStatus.SUCCESS
    assert record.message == "p.on-run-start.0 passed"
    assert record.started_at is not None and record.finished_at is not None
    # as dbt's RunResult has it: the span between start and end, exactly, on the thread dbt calls "main"
    assert record.execution_time == (record.finished_at - record.started_at).total_seconds()
    assert record.thread == "main"
    (failed,) = n.feed("LogHookEndLine", _hook(end, "error"), {})
    assert failed.status is NodeStatus.ERROR and failed.message == "p.on-run-end.0 failed"
    assert n.counts() == {"success": 1, "error": 1}
    assert {r.unique_id for r in n.not_run()} == set(GRAPH)  # the hooks are done, not "not run"


def test_a_hook_skipped_after_a_failed_one_names_it() -> None:
    first, second = "operation.p.p-on-run-start-0", "operation.p.p-on-run-start-1"
    n = make({first: GraphNode("operation", ()), second: GraphNode("operation", ())})
    n.feed("LogHookEndLine", _hook(first, "error"), {})
    (skipped,) = n.feed("LogHookEndLine", _hook(second, "skipped"), {})
    assert skipped.status is NodeStatus.SKIPPED and skipped.skip_cause == first


def test_a_failing_unit_test_of_build_is_the_cause_of_its_models_skip() -> None:
    """dbt build runs a model's unit tests right before it, and a failing one skips the model and below."""
    ut = "unit_test.p.a.checks_a"
    n = make({**GRAPH, ut: GraphNode("unit_test", ("model.p.a",))})
    n.feed("NodeFinished", finished(ut, "fail"), {})
    n.feed("MarkSkippedChildren", {"unique_id": ut, "status": "fail"}, {})
    (model,) = n.feed("NodeFinished", finished("model.p.a", "skipped"), {})
    (child,) = n.feed("NodeFinished", finished("model.p.c", "skipped"), {})
    assert model.skip_cause == ut and child.skip_cause == ut
