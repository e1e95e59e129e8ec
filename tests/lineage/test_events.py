"""RunLineage: records in, OpenLineage run events out — lifecycles, run ids, parents, datasets, no open runs."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from dbtbus import ConfigurationError
from dbtbus.events import (
    Heartbeat,
    NodeResult,
    NodeStarted,
    NodeStatus,
    Record,
    RunCrashed,
    RunFinished,
    RunStarted,
)
from dbtbus.lineage import DatasetNaming, ParentRun, RunLineage, lineage_run_id
from dbtbus.testing.records import node_result, run_started

from ._project import DUCKDB, MANIFEST
from .conftest import SpecValidator

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)
GRAPH = {
    "seed.p.raw": [],
    "model.p.staged": ["seed.p.raw"],
    "model.p.mart": ["model.p.staged", "seed.p.raw"],
    "test.p.not_null_mart_id": ["model.p.mart"],
    "snapshot.p.history": ["model.p.staged"],
}
INVOCATION_ID = "6c5f3a1e-8d2b-4c1a-9e3f-2b7d4a6c8e01"  # dbt's, a UUID as dbt-ol's dbt_run facet requires
AIRFLOW_DAG_RUN = ParentRun("airflow", "shop_dag", "01938a5e-0000-7000-8000-000000000001")
AIRFLOW_PRODUCER_TASK = ParentRun("airflow", "shop_dag.dbt_build", "01938a5e-0000-7000-8000-000000000002",
                                  root=AIRFLOW_DAG_RUN)  # fmt: skip


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def started(uid: str, second: float, attempt: int = 1) -> NodeStarted:
    return NodeStarted(run_id="run-1", unique_id=uid, resource_type=uid.split(".")[0], started_at=at(second),
                       attempt=attempt)  # fmt: skip


def ended(uid: str, status: str, second: float, attempt: int = 1, **fields: Any) -> NodeResult:
    return node_result(uid, status, started_at=at(second - 1), finished_at=at(second), attempt=attempt, **fields)


def a_run(*, attempt: int = 1) -> RunStarted:
    return run_started(GRAPH, attempt=attempt, started_at=at(0), dbt_version="1.11.0", invocation_id=INVOCATION_ID)


def to_json(events: list[Any]) -> list[dict[str, Any]]:
    from openlineage.client.serde import Serde

    return [json.loads(Serde.to_json(event)) for event in events]


def feed_all(lineage: RunLineage, records: list[Record]) -> list[dict[str, Any]]:
    return to_json([event for record in records for event in lineage.feed(record)])


def lifecycles(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """job name → its event types in order."""
    out: dict[str, list[str]] = {}
    for event in events:
        out.setdefault(event["job"]["name"], []).append(event["eventType"])
    return out


A_GREEN_RUN: list[Record] = [
    a_run(),
    started("seed.p.raw", 1),
    ended("seed.p.raw", "success", 2, adapter_response={"rows_affected": 10}),
    Heartbeat(run_id="run-1"),
    started("model.p.staged", 3),
    ended("model.p.staged", "success", 4, compiled_code="select id from warehouse.analytics.raw"),
    started("model.p.mart", 5),
    ended("model.p.mart", "success", 6, compiled_code="select id from warehouse.analytics.staged"),
    started("test.p.not_null_mart_id", 7),
    ended("test.p.not_null_mart_id", "fail", 8, failures=3, message="Got 3 results"),
    ended("snapshot.p.history", "skipped", 8, skip_cause="model.p.staged"),
    RunFinished(run_id="run-1", success=False, exit_code=1, finished_at=at(9)),
]


def test_every_node_and_the_invocation_start_once_and_end_once_by_status(spec: SpecValidator) -> None:
    events = feed_all(RunLineage("run-1", DatasetNaming(MANIFEST, DUCKDB)), A_GREEN_RUN)
    for event in events:
        spec.validate(event)
    assert lifecycles(events) == {
        "dbt-run-p": ["START", "FAIL"],
        "seed.p.raw": ["START", "COMPLETE"],
        "model.p.staged": ["START", "COMPLETE"],
        "model.p.mart": ["START", "COMPLETE"],
        "test.p.not_null_mart_id": ["START", "FAIL"],
        "snapshot.p.history": ["START", "ABORT"],  # skipped: never started, so its START comes with its ABORT
    }
    assert {e["run"]["runId"] for e in events if e["job"]["name"] == "seed.p.raw"} == {
        lineage_run_id("run-1", "seed.p.raw", 1)
    }
    assert all(e["job"]["namespace"] == "dbt" for e in events)
    assert {"parent", "processing_engine", "dbt_run", "schema", "columnLineage", "dataQualityAssertions",
            "outputStatistics", "sql", "jobType", "errorMessage"} <= spec.checked_facets  # fmt: skip


def test_datasets_facets_and_assertions_come_from_the_manifest() -> None:
    events = feed_all(RunLineage("run-1", DatasetNaming(MANIFEST, DUCKDB)), A_GREEN_RUN)
    by_job = {(e["job"]["name"], e["eventType"]): e for e in events}
    mart = by_job[("model.p.mart", "COMPLETE")]
    assert [(d["namespace"], d["name"]) for d in mart["inputs"]] == [
        ("duckdb:///data/warehouse.duckdb", "warehouse.analytics.staged"),  # through the ephemeral model
        ("duckdb:///data/warehouse.duckdb", "warehouse.analytics.raw"),
    ]
    [output] = mart["outputs"]
    assert output["name"] == "warehouse.analytics.mart_v2"
    [column] = output["facets"]["schema"]["fields"]
    assert (column["name"], column["type"], column["description"]) == ("id", "integer", "the key")
    assert output["facets"]["documentation"]["description"] == "The mart."
    sql = mart["job"]["facets"]["sql"]
    assert (sql["query"], sql["dialect"]) == ("select id from warehouse.analytics.staged", "duckdb")
    seed = by_job[("seed.p.raw", "COMPLETE")]
    assert seed["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 10
    test = by_job[("test.p.not_null_mart_id", "FAIL")]
    assert test["outputs"] == []
    [tested] = test["inputs"]
    assert tested["name"] == "warehouse.analytics.mart_v2"
    [assertion] = tested["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert assertion == {"assertion": "not_null", "success": False, "column": "id", "name": "not_null_mart_id",
                         "severity": "error", "actual": "3", "expected": "0", "params": {}}  # fmt: skip
    assert tested["facets"]["dataQualityAssertions"]["assertions"] == [assertion]  # where dbt-ol puts it
    assert test["run"]["facets"]["errorMessage"]["message"] == "Got 3 results"


def test_run_ids_are_the_same_in_every_consumer_and_differ_by_attempt() -> None:
    first = feed_all(RunLineage("run-1", DatasetNaming(MANIFEST, DUCKDB)), A_GREEN_RUN)
    again = feed_all(RunLineage("run-1"), A_GREEN_RUN)  # another process, without the manifest even
    assert [e["run"]["runId"] for e in first] == [e["run"]["runId"] for e in again]
    assert len({e["run"]["runId"] for e in first}) == 6
    assert lineage_run_id("run-1", "model.p.mart", 1) != lineage_run_id("run-1", "model.p.mart", 2)
    assert lineage_run_id("run-1", "model.p.mart", 1) != lineage_run_id("run-2", "model.p.mart", 1)


def test_nodes_nest_under_the_invocation_and_the_invocation_under_the_task_that_ran_dbt() -> None:
    lineage = RunLineage("run-1", job_namespace="prod", parent=AIRFLOW_PRODUCER_TASK)
    events = feed_all(lineage, A_GREEN_RUN[:3])
    invocation, node = events[0], events[1]
    assert invocation["run"]["facets"]["parent"]["job"] == {"namespace": "airflow", "name": "shop_dag.dbt_build"}
    assert invocation["run"]["facets"]["parent"]["root"]["run"]["runId"] == AIRFLOW_DAG_RUN.run_id
    parent = node["run"]["facets"]["parent"]
    assert parent["run"]["runId"] == invocation["run"]["runId"] == lineage_run_id("run-1", "@invocation", 1)
    assert parent["job"] == {"namespace": "prod", "name": "dbt-run"}
    assert parent["root"]["job"] == {"namespace": "airflow", "name": "shop_dag"}  # the DAG run stays the root


def test_a_node_owned_by_an_airflow_task_nests_under_that_task() -> None:
    task = ParentRun("airflow", "shop_dag.seed_raw", "01938a5e-0000-7000-8000-000000000003", root=AIRFLOW_DAG_RUN)
    lineage = RunLineage("run-1", task_parents={"seed.p.raw": task})
    events = feed_all(lineage, [*A_GREEN_RUN[:3], started("model.p.staged", 3)])
    seed_parent = events[1]["run"]["facets"]["parent"]
    assert seed_parent["job"] == {"namespace": "airflow", "name": "shop_dag.seed_raw"}
    assert seed_parent["root"]["job"]["name"] == "shop_dag"
    assert events[-1]["run"]["facets"]["parent"]["job"]["name"] == "dbt-run"  # not given: the invocation
    by_callable = feed_all(RunLineage("run-1", task_parents=lambda uid: task), A_GREEN_RUN[:2])
    assert by_callable[1]["run"]["facets"]["parent"]["run"]["runId"] == task.run_id


def test_the_parent_of_the_invocation_is_read_as_dbt_ol_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLINEAGE_PARENT_ID", "airflow/shop_dag.dbt_build/01938a5e-0000-7000-8000-000000000002")
    monkeypatch.setenv("OPENLINEAGE_ROOT_PARENT_ID", "airflow/shop_dag/01938a5e-0000-7000-8000-000000000001")
    monkeypatch.setenv("OPENLINEAGE_NAMESPACE", "nightly")
    lineage = RunLineage("run-1")
    assert lineage.parent == AIRFLOW_PRODUCER_TASK and lineage.job_namespace == "nightly"
    with pytest.raises(ConfigurationError, match="namespace/job_name/run_id"):
        ParentRun.parse("airflow/only-two")
    with pytest.raises(ConfigurationError, match="not a UUID"):
        ParentRun.parse("airflow/task/run-42")


def test_a_lost_producer_ends_every_started_run_and_leaves_none_open(spec: SpecValidator) -> None:
    lineage = RunLineage("run-1", DatasetNaming(MANIFEST, DUCKDB))
    events = feed_all(lineage, [a_run(), started("seed.p.raw", 1), ended("seed.p.raw", "success", 2),
                                started("model.p.staged", 3)])  # fmt: skip
    assert lineage.open_runs == [("@invocation", 1), ("model.p.staged", 1)]
    events += to_json(lineage.abandon("dbtbus lost the run's producer", at=at(30)))
    for event in events:
        spec.validate(event)
    assert lifecycles(events) == {
        "dbt-run-p": ["START", "FAIL"], "seed.p.raw": ["START", "COMPLETE"], "model.p.staged": ["START", "ABORT"]
    }  # fmt: skip
    assert "lost the run's producer" in events[-2]["run"]["facets"]["errorMessage"]["message"]
    assert lineage.open_runs == [] and lineage.abandon("again") == []


def test_a_crash_or_an_ending_without_the_nodes_result_aborts_what_is_open() -> None:
    for ending in (RunCrashed(run_id="run-1", error="killed", finished_at=at(9)),
                   RunFinished(run_id="run-1", success=True, finished_at=at(9))):  # fmt: skip
        lineage = RunLineage("run-1")
        events = feed_all(lineage, [a_run(), started("model.p.staged", 3), ending])
        assert lifecycles(events)["model.p.staged"] == ["START", "ABORT"]
        assert lineage.open_runs == []
    crashed = feed_all(RunLineage("run-1"), [a_run(), RunCrashed(run_id="run-1", error="SIGTERM", finished_at=at(2))])
    assert crashed[-1]["eventType"] == "FAIL" and "SIGTERM" in crashed[-1]["run"]["facets"]["errorMessage"]["message"]


def test_a_not_run_node_is_aborted_and_a_republished_result_ends_nothing_twice() -> None:
    lineage = RunLineage("run-1")
    not_run = ended("model.p.mart", "not_run", 5, message="the run ended first")
    events = feed_all(lineage, [a_run(), started("model.p.mart", 4), not_run,
                                a_run(), not_run])  # a recovered producer republishes  # fmt: skip
    assert lifecycles(events) == {"dbt-run": ["START"], "model.p.mart": ["START", "ABORT"]}


def test_a_retry_is_a_new_run_per_node_and_supersedes_an_attempt_left_open() -> None:
    lineage = RunLineage("run-1")
    events = feed_all(lineage, [
        a_run(), started("model.p.staged", 1),  # attempt 1's producer vanished without an ending
        a_run(attempt=2), started("model.p.staged", 10, attempt=2), ended("model.p.staged", "success", 11, attempt=2),
        RunFinished(run_id="run-1", success=True, finished_at=at(12), attempt=2),
    ])  # fmt: skip
    ids = Counter((e["job"]["name"], e["run"]["runId"], e["eventType"]) for e in events)
    first, second = lineage_run_id("run-1", "model.p.staged", 1), lineage_run_id("run-1", "model.p.staged", 2)
    assert ids == Counter({
        ("dbt-run", lineage_run_id("run-1", "@invocation", 1), "START"): 1,
        ("model.p.staged", first, "START"): 1,
        ("model.p.staged", first, "ABORT"): 1,
        ("dbt-run", lineage_run_id("run-1", "@invocation", 1), "FAIL"): 1,
        ("dbt-run", lineage_run_id("run-1", "@invocation", 2), "START"): 1,
        ("model.p.staged", second, "START"): 1,
        ("model.p.staged", second, "COMPLETE"): 1,
        ("dbt-run", lineage_run_id("run-1", "@invocation", 2), "COMPLETE"): 1,
    })  # fmt: skip


def test_hooks_make_no_runs_and_a_run_without_a_manifest_has_no_datasets() -> None:
    hook = "operation.p.p-on-run-end-0"
    records = [a_run(), started(hook, 1), ended(hook, "success", 2), started("model.p.mart", 3),
               ended("model.p.mart", "success", 4)]
    events = feed_all(RunLineage("run-1"), records)
    assert list(lifecycles(events)) == ["dbt-run", "model.p.mart"]
    assert all(e["inputs"] == [] and e["outputs"] == [] for e in events)


def test_no_event_carries_the_profiles_password() -> None:
    from ._project import POSTGRES

    events = feed_all(RunLineage("run-1", DatasetNaming(MANIFEST, POSTGRES)), A_GREEN_RUN)
    assert events and "hunter2" not in json.dumps(events)
    assert NodeStatus.NOT_RUN.value == "not_run"  # the status the producer gives a node the run never reached


def test_a_retrys_consumer_emits_its_own_attempt_and_ends_what_the_last_left_open() -> None:
    """``aemit_lineage(since_attempt=2)`` — the producer task's retry in Airflow: attempt 1's events were sent by
    its own try, so they are not sent again; the run attempt 1 left open is still ended, by attempt 2's start."""
    import uuid

    import anyio

    import dbtbus
    from dbtbus.backends.memory import drop_store
    from dbtbus.lineage import aemit_lineage

    class Client:
        def __init__(self) -> None:
            self.sent: list[Any] = []

        def emit(self, event: Any) -> None:
            self.sent.append(event)

    records: list[Record] = [
        a_run(), started("model.p.staged", 1),  # attempt 1's producer was killed
        a_run(attempt=2), started("model.p.staged", 10, attempt=2), ended("model.p.staged", "success", 11, attempt=2),
        RunFinished(run_id="run-1", success=True, finished_at=at(12), attempt=2),
    ]  # fmt: skip
    store = f"lineage-retry-{uuid.uuid4().hex[:8]}"
    client = Client()

    async def main() -> None:
        async with dbtbus.connect(f"memory://{store}") as bus:
            await bus.publish(records)
            await aemit_lineage(bus, "run-1", follow=False, client=client, since_attempt=2)

    try:
        anyio.run(main)
    finally:
        drop_store(store)
    first, second = lineage_run_id("run-1", "model.p.staged", 1), lineage_run_id("run-1", "model.p.staged", 2)
    sent = [(e.job.name, e.run.runId, e.eventType.value) for e in client.sent]
    assert sent == [
        ("model.p.staged", first, "ABORT"),
        ("dbt-run", lineage_run_id("run-1", "@invocation", 1), "FAIL"),
        ("dbt-run", lineage_run_id("run-1", "@invocation", 2), "START"),
        ("model.p.staged", second, "START"),
        ("model.p.staged", second, "COMPLETE"),
        ("dbt-run", lineage_run_id("run-1", "@invocation", 2), "COMPLETE"),
    ]
