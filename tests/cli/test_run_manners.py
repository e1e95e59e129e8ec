"""`dbtbus run` as a newcomer meets it, in a subprocess on a pipe: dbtbus's progress, not dbt's stdout; no ANSI;
the bus checked before dbt starts; ``--resume`` against a real redis-server and real dbt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import pytest

from .conftest import ROOT

ANSI = "\x1b["


def dbtbus(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dbtbus", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False,
        env={**os.environ, **(env or {})},
    )


def build_args(project: Path, *extra: str) -> list[str]:
    return ["build", "--project-dir", str(project), "--profiles-dir", str(project), *extra]


@pytest.mark.dbt
def test_run_on_a_pipe_shows_dbtbus_progress_only(shop_copy: Path) -> None:
    env = {"DBTBUS_DUCKDB_PATH": str(shop_copy / "shop.duckdb"), "FORCE_COLOR": "", "NO_COLOR": "", "DBTBUS_URL": ""}
    proc = dbtbus("run", "--run-id", "manners", "--", *build_args(shop_copy), env=env)
    assert proc.returncode == 2, proc.stderr  # the shop project fails a test on purpose: EXIT_FAILED
    # No bus given: the run goes to memory://, and a newcomer is told that nobody else can watch it.
    assert "no bus given" in proc.stderr and "memory://" in proc.stderr and "DBTBUS_URL" in proc.stderr
    assert ANSI not in proc.stdout and ANSI not in proc.stderr
    assert "Running with dbt=" not in proc.stdout  # dbt's own log lines are not passed through
    assert "Finished running" not in proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("run manners started: dbt build")
    assert sum(line.startswith("[") for line in lines) == 28  # each node once
    assert "fail test.shop.assert_customers_have_repeat_orders" in proc.stdout


@pytest.mark.dbt
def test_dbt_output_on_request_still_without_colour_on_a_pipe(shop_copy: Path) -> None:
    env = {"DBTBUS_DUCKDB_PATH": str(shop_copy / "shop.duckdb")}
    proc = dbtbus("run", "--dbt-output", "--progress", "none", "--", "seed", *build_args(shop_copy)[1:], env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Running with dbt=" in proc.stdout
    assert ANSI not in proc.stdout


@pytest.mark.dbt
def test_dbts_own_errors_are_always_shown() -> None:
    proc = dbtbus("run", "--progress", "none", "--", "build", "--project-dir", "/does/not/exist")
    assert proc.returncode == 2
    assert "dbtbus: dbt:" in proc.stderr and "/does/not/exist" in proc.stderr


def test_unreachable_bus_fails_before_dbt_starts(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    proc = dbtbus("run", "--bus", "redis://127.0.0.1:1/0", "--", "build", "--project-dir", str(tmp_path), timeout=60)
    assert proc.returncode == 8
    assert proc.stderr.splitlines()[-1].startswith("dbtbus: error: the bus is unreachable")
    assert proc.stderr.count("dbtbus: error:") == 1
    assert "Traceback" not in proc.stderr
    assert "run id" not in proc.stderr  # dbt never started
    assert not (tmp_path / "target").exists()


def test_resume_refuses_what_it_cannot_do(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from dbtbus.cli import main

    assert main(["run", "--bus", memory_url, "--resume", "r1"]) == 1
    assert "--resume needs a bus that outlives a process" in capsys.readouterr().err


@pytest.mark.redis
@pytest.mark.dbt
def test_resume_reruns_only_what_did_not_succeed(shop_copy: Path, private_redis_url: str) -> None:
    from dbtbus import connect

    run_id = f"resume-{uuid.uuid4().hex[:8]}"
    env = {"DBTBUS_DUCKDB_PATH": str(shop_copy / "shop.duckdb")}
    first = dbtbus("run", "--bus", private_redis_url, "--run-id", run_id, "--", *build_args(shop_copy), env=env)
    assert first.returncode == 2, first.stderr

    async def state() -> object:
        async with connect(private_redis_url) as bus:
            return await bus.run_state(run_id)

    before = anyio.run(state)
    excluded = before.resume_excludes()  # type: ignore[attr-defined]
    assert "model.shop.stg_orders" in excluded and "model.shop.customers_summary" not in excluded

    second = dbtbus("run", "--bus", private_redis_url, "--resume", run_id, "--progress", "plain", env=env)
    assert second.returncode == 2, second.stderr  # the failing test fails again
    assert f"resuming run {run_id} as attempt 2: leaving out {len(excluded)} node(s)" in second.stderr
    after = anyio.run(state)
    assert after.attempt == 2  # type: ignore[attr-defined]
    graph = after.started.graph  # type: ignore[attr-defined]
    assert graph is not None and not set(excluded) & set(graph)  # what succeeded was left out
    assert "model.shop.customers_summary" in graph  # its test failed: built again with it
    assert "test.shop.assert_customers_have_repeat_orders" in graph
    # progress counts only this attempt
    assert f"[{len(graph)}/{len(graph)}]" in second.stdout
    export = dbtbus("export", run_id, "--bus", private_redis_url, "--run-results", "-")
    results = json.loads(export.stdout)["results"]
    assert len(results) == 27  # every node once (latest attempt's result), ephemeral model left out
