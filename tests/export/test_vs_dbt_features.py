"""``dbtbus export --run-results`` against the ``run_results.json`` dbt itself wrote, field by field, for a real
``dbt build`` of the features project (every node type: seeds, views, tables, ephemeral, incremental,
microbatch, Python, snapshot, generic / singular / unit tests, saved query, project hooks).

Everything is compared for equality. The only exceptions are named below, each with why it cannot be equal;
docs/report.md ("How the export differs from dbt's file") lists the same.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from dbtbus._dbt.hook import REDACTED
from dbtbus._dbt.versions import version_tuple
from dbtbus.export import export_run_results

FEATURES = Path(__file__).resolve().parent.parent / "projects" / "features"

pytestmark = pytest.mark.skipif(
    (version_tuple(version("dbt-core")) or (0, 0)) < (1, 11),
    reason="the features project is dbt-core 1.11's (microbatch, a YAML time spine, generic-test arguments:)",
)
#: A secret-looking var: dbt writes it in its file; dbtbus never carries it.
SECRET = "hunter2-not-a-real-token"

# ------------------------------------------------------------------------------- the named exceptions
#: ``metadata.generated_at``: the moment each file was written (the export runs after dbt wrote its own).
WRITTEN_AT = "generated_at"
#: ``args.vars`` and ``args.invocation_command``: a ``--vars`` entry whose name looks secret (``*token*``) is
#: redacted by the producer (dbt writes it as given).
REDACTED_ARGS = ("vars", "invocation_command")
#: ``execution_time``: dbt's events carry it as a 32-bit float (dbt's file has the 64-bit figure where it
#: added up batches itself: a microbatch model), so it is equal to 1e-6 relative.
EXECUTION_TIME_REL = 1e-6
#: A project hook's ``timing``: dbt's events carry its compile start and its execute end exactly, not the
#: moment between (compile end, execute start): the export takes LogHookStartLine's, fired in that gap.
HOOK_PHASE_GAP = ("compile.completed_at", "execute.started_at")
#: A project hook whose record is still the ``not_run`` stand-in (exported as ``skipped``, on no thread):
#: recording hooks from dbt's LogHookEndLine (status, message, counting) is the ``hooks`` branch's (issue
#: #26); until it is merged such a record cannot carry what dbt wrote. Once merged this exception no longer
#: applies and every hook is compared in full.


def _hook_not_recorded(mine: dict[str, Any]) -> bool:
    return mine["unique_id"].startswith("operation.") and mine["status"] == "skipped" and not mine["thread_id"]


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any], Path]:
    from dbtbus.producer import Producer

    project = tmp_path_factory.mktemp("features") / "features"
    shutil.copytree(FEATURES, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*"))
    old = os.environ.get("DBTBUS_FEATURES_DUCKDB")
    os.environ["DBTBUS_FEATURES_DUCKDB"] = str(project / "features.duckdb")
    url, run_id = "memory://export-vs-dbt-features", "features-build"
    args = [
        "build", "--project-dir", str(project), "--profiles-dir", str(project), "--quiet",
        # three daily batches of the microbatch model (from `begin` to today would be hundreds)
        "--event-time-start", "2026-01-01", "--event-time-end", "2026-01-04",
        "--vars", f"{{api_token: {SECRET}, region: eu}}",
    ]
    argv = sys.argv[:]
    sys.argv[:] = ["dbt", *args]  # dbt's invocation_command is its process's argv, as from the command line
    try:
        result = Producer(url, run_id=run_id, heartbeat_interval=0.2).invoke(args)
    finally:
        sys.argv[:] = argv
        if old is None:
            os.environ.pop("DBTBUS_FEATURES_DUCKDB", None)
        else:
            os.environ["DBTBUS_FEATURES_DUCKDB"] = old
    assert not result.crashed, result.error
    path = tmp_path_factory.mktemp("export") / "run_results.json"
    returned = export_run_results(url, run_id, path)
    ours = json.loads(path.read_text())
    assert ours == json.loads(json.dumps(returned))
    return ours, json.loads((project / "target" / "run_results.json").read_text()), path


def test_metadata_elapsed_and_shape(both: tuple[dict[str, Any], dict[str, Any], Path]) -> None:
    ours, theirs, _ = both
    assert set(ours) == set(theirs)
    assert set(ours["metadata"]) == set(theirs["metadata"])
    for key in theirs["metadata"]:
        if key != WRITTEN_AT:
            assert ours["metadata"][key] == theirs["metadata"][key], key
    assert ours["elapsed_time"] == theirs["elapsed_time"]  # dbt's own figure, not the producer's


def test_args_are_dbts_with_secrets_redacted(both: tuple[dict[str, Any], dict[str, Any], Path]) -> None:
    ours, theirs, _ = both
    assert set(ours["args"]) == set(theirs["args"]) and len(ours["args"]) > 40
    for key, value in theirs["args"].items():
        if key not in REDACTED_ARGS:
            assert ours["args"][key] == value, key
    assert theirs["args"]["vars"] == {"api_token": SECRET, "region": "eu"}
    assert ours["args"]["vars"] == {"api_token": REDACTED, "region": "eu"}
    assert SECRET in theirs["args"]["invocation_command"]
    assert ours["args"]["invocation_command"] == theirs["args"]["invocation_command"].replace(SECRET, REDACTED)
    assert SECRET not in json.dumps(ours)


def test_the_same_results_in_number_and_ids(both: tuple[dict[str, Any], dict[str, Any], Path]) -> None:
    ours, theirs, _ = both
    assert len(ours["results"]) == len(theirs["results"])
    assert sorted(r["unique_id"] for r in ours["results"]) == sorted(r["unique_id"] for r in theirs["results"])
    kinds = {r["unique_id"].split(".")[0] for r in theirs["results"]}
    assert {"seed", "model", "snapshot", "test", "unit_test", "operation"} <= kinds


def _hook_phases_equal(mine: list[dict[str, Any]], dbts: list[dict[str, Any]]) -> None:
    assert [p["name"] for p in mine] == [p["name"] for p in dbts] == ["compile", "execute"]
    assert mine[0]["started_at"] == dbts[0]["started_at"] and mine[1]["completed_at"] == dbts[1]["completed_at"]
    # HOOK_PHASE_GAP: ours is one moment inside dbt's gap between the two phases
    assert mine[0]["completed_at"] == mine[1]["started_at"]
    assert _ts(dbts[0]["completed_at"]) <= _ts(mine[0]["completed_at"]) <= _ts(dbts[1]["started_at"])


def test_every_result_field_by_field(both: tuple[dict[str, Any], dict[str, Any], Path]) -> None:
    ours, theirs, _ = both
    by_id = {r["unique_id"]: r for r in theirs["results"]}
    compared = hooks = 0
    for mine in ours["results"]:
        dbts = by_id[mine["unique_id"]]
        assert set(mine) == set(dbts), mine["unique_id"]
        if _hook_not_recorded(mine):
            continue
        for key in dbts:
            where = (mine["unique_id"], key, mine[key], dbts[key])
            if key == "execution_time":
                assert mine[key] == pytest.approx(dbts[key], rel=EXECUTION_TIME_REL, abs=1e-9), where
            elif key == "timing" and mine["unique_id"].startswith("operation.") and dbts[key]:
                _hook_phases_equal(mine[key], dbts[key])
            else:
                assert mine[key] == dbts[key], where
        compared += 1
        hooks += mine["unique_id"].startswith("operation.")
    assert compared >= len(ours["results"]) - 3  # at most the three hooks wait for the hooks branch
    assert any(r["compiled_code"] for r in ours["results"])
    assert any(r["batch_results"] for r in ours["results"])


def test_written_with_dbts_mode(both: tuple[dict[str, Any], dict[str, Any], Path]) -> None:
    *_, path = both
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
