"""Every kind of dbt node through Airflow: the features project (tests/projects/features: seeds, views,
tables, an incremental, a microbatch and a Python model, project hooks, a snapshot, data and unit tests, a
saved query) rendered and run under ``dag.test()``; each node task ends as dbt's own run_results.json says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from airflow.sdk import DAG

from dbtbus.airflow import render_dbt_task_group

from ._dags import dag_id, run_dag, states
from .conftest import BIN, ROOT

pytestmark = pytest.mark.dbt

FAILED = {"error", "fail", "runtime error"}


@pytest.fixture
def features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "features"
    shutil.copytree(ROOT / "tests" / "projects" / "features", path)
    monkeypatch.setenv("DBTBUS_FEATURES_DUCKDB", str(path / "features.duckdb"))
    subprocess.run([str(BIN / "dbt"), "parse", "--project-dir", str(path), "--profiles-dir", str(path)],
                   check=True, capture_output=True, cwd=path, env={**os.environ})
    shutil.copy(path / "target" / "manifest.json", path / "manifest.render.json")
    return path


def expected_states(path: Path) -> dict[str, set[str]]:
    """unique id → the states dbt's run_results.json allows for it: a node that failed, or one of whose tests
    failed, fails; one dbt skipped fails (as dbtbus decides it) or is upstream_failed (as Airflow decides it,
    its parent task having failed first); every other one succeeds."""
    manifest = json.loads((path / "manifest.render.json").read_text())
    results = {r["unique_id"]: r["status"] for r in json.loads((path / "target" / "run_results.json").read_text())
               ["results"]}
    tests_of: dict[str, list[str]] = {}
    for uid, node in manifest["nodes"].items():
        if node["resource_type"] == "test" and node.get("attached_node"):
            tests_of.setdefault(node["attached_node"], []).append(uid)
    out: dict[str, set[str]] = {}
    for uid, node in manifest["nodes"].items():
        if node["resource_type"] not in ("model", "seed", "snapshot"):
            continue
        if node.get("config", {}).get("materialized") == "ephemeral":
            continue
        status = results[uid]
        if status == "skipped":
            out[uid] = {"failed", "upstream_failed"}
        elif status in FAILED or any(results.get(t) in FAILED for t in tests_of.get(uid, ())):
            out[uid] = {"failed"}
        else:
            out[uid] = {"success"}
    return out


@pytest.mark.parametrize("broken", [False, True], ids=["green", "broken"])
def test_every_node_task_ends_as_dbt_decided(features: Path, redis_url: str, broken: bool) -> None:
    args = ["build", "--project-dir", str(features), "--profiles-dir", str(features)]
    if broken:
        args += ["--vars", "{features_break: true}"]
    with DAG(dag_id("features"), schedule=None, catchup=False) as dag:
        render_dbt_task_group(features / "manifest.render.json", redis_url, args, group_id="dbt",
                              sensor_kwargs={"timeout": 300}, sensors_after_producer=True, layout="one_dag")
    task_of = {task.unique_id: task.task_id for task in dag.tasks if hasattr(task, "unique_id")}
    got = states(run_dag(dag))
    expected = expected_states(features)
    assert len(expected) >= 12 and set(task_of) == set(expected)  # every model, seed and snapshot has a task
    wrong = {uid: (got.get(task_of[uid]), sorted(allowed)) for uid, allowed in expected.items()
             if got.get(task_of[uid]) not in allowed}
    assert not wrong, wrong
    assert got["dbt.dbt_producer"] == ("failed" if broken else "success")
    if broken:
        assert got["dbt.broken"] == "failed" and got["dbt.after_broken"] in {"failed", "upstream_failed"}
