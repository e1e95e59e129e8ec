"""Rows 10 and 13: the log replay tells the truth; `dbtbus run` checks the bus before it starts dbt."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

import dbtbus
from dbtbus.testing.redis_server import RedisServer, free_port

from ._outcomes import waiters
from .conftest import DBT, DBTBUS, SlowProject, run_id, slow_project


@pytest.fixture(scope="module")
def info_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[SlowProject, Path]:
    """A real `dbt build --log-format json` at dbt's default (info) level, with one failing model."""
    directory = tmp_path_factory.mktemp("infolog")
    project = slow_project(directory / "p", chains=2, length=2, sleep=0.1, failing={"c1_0": directory / "never"})
    proc = subprocess.run([DBT, "--log-format", "json", *project.args()], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]  # one model fails
    log = directory / "build.jsonl"
    log.write_text(proc.stdout)
    return project, log


def _publish(url: str, run: str, log: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DBTBUS, "publish-log", str(log), "--bus", url, "--run-id", run],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.anyio
async def test_an_info_level_json_log_gives_the_right_outcomes(
    redis_server: RedisServer, info_log: tuple[SlowProject, Path]
) -> None:
    project, log = info_log
    run = run_id("info")
    proc = _publish(redis_server.url, run, log)
    assert proc.returncode == 0, proc.stderr
    async with dbtbus.connect(redis_server.url) as bus:
        kinds = await waiters(bus, run, project.nodes, timeout=30)
    assert kinds == {
        "model.slow.c0_0": ["success"],
        "model.slow.c0_1": ["success"],
        "model.slow.c1_0": ["failed"],
        "model.slow.c1_1": ["upstream_failed"],
    }


def test_input_without_dbt_events_is_an_error(redis_server: RedisServer, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("this is not a dbt log\nat all\n")
    proc = _publish(redis_server.url, run_id("text"), text)
    assert proc.returncode != 0, proc
    assert "published" not in (proc.stdout + proc.stderr).lower()


@pytest.mark.anyio
async def test_a_log_cut_off_before_dbt_finished_is_an_error_and_ends_the_run_crashed(
    redis_server: RedisServer, info_log: tuple[SlowProject, Path], tmp_path: Path
) -> None:
    _, log = info_log
    lines = log.read_text().splitlines()
    last_result = max(i for i, line in enumerate(lines) if '"LogModelResult"' in line)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[: last_result]) + "\n")  # the last result and dbt's summary are missing
    run = run_id("cut")
    proc = _publish(redis_server.url, run, cut)
    assert proc.returncode != 0, proc
    async with dbtbus.connect(redis_server.url) as bus:
        state = await bus.run_state(run)
    assert state.status.value == "crashed"


def test_run_with_redis_unreachable_fails_fast_with_one_line(tmp_path: Path) -> None:
    """Row 13: 57 s, 33 warning lines in two formats, exit 2. Wanted: one line, exit 8, within 5 s."""
    project = slow_project(tmp_path / "p", chains=1, length=1, sleep=0.1)
    url = f"redis://127.0.0.1:{free_port()}/0"
    start = time.monotonic()
    proc = subprocess.run([DBTBUS, "run", "--bus", url, "--run-id", "x", "--progress", "none", "--", *project.args()],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    elapsed = time.monotonic() - start
    assert proc.returncode == 8, proc
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Running with dbt" not in proc.stdout + proc.stderr  # dbt never started
    # the bound is 5 s; this generous one only catches the old retry storm on a loaded machine
    assert elapsed < 30, elapsed


def test_dbts_own_errors_are_always_shown(redis_server: RedisServer, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-project"
    proc = subprocess.run(
        [DBTBUS, "run", "--bus", redis_server.url, "--run-id", run_id("missing"), "--progress", "none", "--",
         "build", "--project-dir", str(missing), "--profiles-dir", str(missing)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode != 0
    assert str(missing) in proc.stdout + proc.stderr or "dbt_project.yml" in proc.stdout + proc.stderr, proc
