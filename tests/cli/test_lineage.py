"""``dbtbus lineage``: a run's OpenLineage events through the client the environment configures (here an
``openlineage.yml`` with a file transport), its exit codes, its errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dbtbus.cli import EXIT_CODES, main
from dbtbus.lineage import lineage_run_id

from .conftest import play_in_thread, publish_now


@pytest.fixture
def events_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the client writes: configured by an openlineage.yml, as OpenLineage users configure it."""
    target = tmp_path / "events.jsonl"
    config = tmp_path / "openlineage.yml"
    config.write_text(f"transport:\n  type: file\n  log_file_path: {target}\n  append: true\n")
    for name in ("OPENLINEAGE_URL", "OPENLINEAGE_NAMESPACE", "OPENLINEAGE_PARENT_ID", "OPENLINEAGE_ROOT_PARENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENLINEAGE_CONFIG", str(config))
    return target


def written(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def lifecycles(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for event in events:
        out.setdefault(event["job"]["name"], []).append(event["eventType"])
    return out


def test_an_ended_run_is_emitted_whole_and_emitting_it_again_sends_the_same_runs(
    memory_url: str, events_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_now(memory_url, "r1", "failed")
    assert main(["lineage", "r1", "--bus", memory_url, "--no-datasets", "--namespace", "nightly"]) == 0
    events = written(events_file)
    assert lifecycles(events) == {
        "dbt-run": ["START", "FAIL"],  # dbt's verdict: a node failed
        "seed.p.raw": ["START", "COMPLETE"],
        "model.p.a": ["START", "COMPLETE"],
        "model.p.b": ["START", "FAIL"],
    }
    assert {e["job"]["namespace"] for e in events} == {"nightly"}
    err = capsys.readouterr().err
    assert "run r1 ended" in err and "(file)" in err and "4 START" in err
    assert main(["lineage", "r1", "--bus", memory_url, "--no-datasets", "--namespace", "nightly"]) == 0
    again = written(events_file)[len(events):]
    assert [(e["run"]["runId"], e["eventType"]) for e in again] == [(e["run"]["runId"], e["eventType"]) for e in events]


def test_follow_ends_the_open_runs_of_a_lost_producer_with_exit_code_4(
    memory_url: str, events_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    thread = play_in_thread(memory_url, "r2", "producer_lost")
    code = main(["lineage", "r2", "--bus", memory_url, "--no-datasets", "--follow",
                 "--parent", "airflow/dag.dbt_build/01938a5e-0000-7000-8000-000000000002"])  # fmt: skip
    thread.join(10)
    assert code == 4 and "lost its producer" in capsys.readouterr().err
    events = written(events_file)
    assert lifecycles(events)["dbt-run"] == ["START", "FAIL"]
    assert all(len(types) == 2 and types[0] == "START" for types in lifecycles(events).values())
    invocation = next(e for e in events if e["job"]["name"] == "dbt-run")
    assert invocation["run"]["runId"] == lineage_run_id("r2", "@invocation", 1)
    assert invocation["run"]["facets"]["parent"]["job"]["name"] == "dag.dbt_build"


def test_an_undeliverable_event_exits_12_and_bad_input_exits_1(
    memory_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "openlineage.yml"
    # append: one file, and the path is a directory: every write fails
    config.write_text(f"transport:\n  type: file\n  log_file_path: {tmp_path}\n  append: true\n")
    monkeypatch.delenv("OPENLINEAGE_URL", raising=False)
    monkeypatch.setenv("OPENLINEAGE_CONFIG", str(config))
    publish_now(memory_url, "r3", "success")
    assert main(["lineage", "r3", "--bus", memory_url, "--no-datasets"]) == 12
    assert "could not deliver START of dbt-run" in capsys.readouterr().err
    assert "OpenLineage transport" in EXIT_CODES[12]
    assert main(["lineage", "r3", "--bus", memory_url, "--parent", "airflow/just-two"]) == 1
    assert "namespace/job_name/run_id" in capsys.readouterr().err
    root_only = ["--root-parent", "a/b/01938a5e-0000-7000-8000-000000000001"]
    assert main(["lineage", "r3", "--bus", memory_url, *root_only]) == 1
    assert "give --parent too" in capsys.readouterr().err


def test_a_run_that_does_not_say_where_its_project_is_is_emitted_without_datasets(
    memory_url: str, events_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publish_now(memory_url, "r4", "success")  # a fabricated run: no dbt arguments recorded
    assert main(["lineage", "r4", "--bus", memory_url]) == 0
    assert all(e["inputs"] == [] and e["outputs"] == [] for e in written(events_file))
    assert "without datasets" in caplog.text and "does not say where its dbt project is" in caplog.text
