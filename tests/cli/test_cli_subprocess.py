"""`python -m dbtbus` in a subprocess: against Redis (shared across processes) and end to end."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from .conftest import play_in_thread, publish_now

Run = Callable[..., subprocess.CompletedProcess[str]]


def _run_id(tag: str) -> str:
    return f"cli-{tag}-{uuid.uuid4().hex[:8]}"


@pytest.mark.redis
@pytest.mark.parametrize(
    ("node", "outcome", "code"),
    [
        ("model.p.b", "success", 0),
        ("model.p.b", "failed", 2),
        ("model.p.b", "upstream_failed", 3),
        ("model.p.b", "producer_lost", 4),
        ("model.p.b", "not_run", 5),
        ("model.p.zzz", "success", 6),
        ("model.p.b", "running", 7),
    ],
)
def test_wait_exit_codes_across_processes(
    cli_subprocess: Run, dbtbus_redis_url: str, node: str, outcome: str, code: int
) -> None:
    run_id = _run_id(outcome)
    publish_now(dbtbus_redis_url, run_id, outcome)
    proc = cli_subprocess("wait", run_id, node, "--bus", dbtbus_redis_url, "--timeout", "1", "--json")
    assert proc.returncode == code, proc.stderr
    assert orjson.loads(proc.stdout)["exit_code"] == code


@pytest.mark.redis
def test_wait_started_before_the_run(cli_subprocess: Run, dbtbus_redis_url: str) -> None:
    run_id = _run_id("early")
    thread = play_in_thread(dbtbus_redis_url, run_id, "upstream_failed", delay=1.0)
    proc = cli_subprocess("wait", run_id, "model.p.b", "--bus", dbtbus_redis_url, "--timeout", "30")
    thread.join(10)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("upstream failed: model.p.b will not run: upstream model.p.a failed")


@pytest.mark.redis
def test_watch_from_another_process(cli_subprocess: Run, dbtbus_redis_url: str) -> None:
    run_id = _run_id("watch")
    thread = play_in_thread(dbtbus_redis_url, run_id, "failed", delay=0.5)
    proc = cli_subprocess("watch", run_id, "--bus", dbtbus_redis_url, "--timeout", "30")
    thread.join(10)
    assert proc.returncode == 2, proc.stderr
    assert f"run {run_id} started" in proc.stdout  # not a TTY: plain lines
    assert f"run {run_id} failed (dbt exit code 1)" in proc.stdout


def test_unreachable_backend_is_exit_code_8(cli_subprocess: Run) -> None:
    pytest.importorskip("redis")
    proc = cli_subprocess("wait", "r", "model.p.b", "--bus", "redis://127.0.0.1:1/0", "--timeout", "5")
    assert proc.returncode == 8
    assert proc.stderr.startswith("dbtbus: error: the bus is unreachable")
    assert "Traceback" not in proc.stderr
    proc = cli_subprocess("runs", "--bus", "redis://127.0.0.1:1/0")
    assert proc.returncode == 8
    assert "Traceback" not in proc.stderr


@pytest.mark.redis
def test_runs_and_gc_on_redis(cli_subprocess: Run, private_redis_url: str) -> None:
    for outcome in ("success", "failed", "running"):
        publish_now(private_redis_url, f"gc-{outcome}", outcome)
    proc = cli_subprocess("runs", "--bus", private_redis_url)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split()[1:3] for line in proc.stdout.splitlines()[1:]}
    assert rows == {
        "gc-failed": ["finished", "failed"],
        "gc-running": ["started", "-"],
        "gc-success": ["finished", "success"],
    }
    proc = cli_subprocess("gc", "--older-than", "0s", "--bus", private_redis_url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "2 run(s) deleted"
    proc = cli_subprocess("gc", "gc-running", "--bus", private_redis_url)
    assert proc.stdout.splitlines() == ["deleted gc-running", "1 run(s) deleted"]
    assert cli_subprocess("runs", "--bus", private_redis_url).stdout == "no runs\n"


def test_usage_error_in_a_subprocess_is_one_line(cli_subprocess: Run) -> None:
    proc = cli_subprocess("wait", "r", "n", "--bus", "bogus")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("dbtbus: error:")
    assert proc.stdout == ""


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("dbtbus")  # installed beside the interpreter running the tests
    assert script.exists(), f"the dbtbus console script is not installed at {script}"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert "demo" in proc.stdout


@pytest.mark.dbt
def test_demo_end_to_end(cli_subprocess: Run) -> None:
    proc = cli_subprocess("demo", timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "run demo-" in out and "started: dbt build" in out
    assert "[28/28]" in out
    table = out[out.index("node ") :]
    assert "test.shop.assert_customers_have_repeat_orders" in table
    assert "upstream failed (test.shop.assert_customers_have_repeat_orders)" in table
    assert "28 nodes, 28 concurrent waiters: 24 ok, 3 upstream failed, 1 failed" in out
    assert "Traceback" not in proc.stderr


@pytest.mark.dbt
def test_demo_with_a_broken_model(cli_subprocess: Run) -> None:
    proc = cli_subprocess("demo", "--break", "--progress", "none", timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "upstream failed (model.shop.broken)" in proc.stdout
    assert "2 failed" in proc.stdout


def test_python_dash_m_matches_main() -> None:
    proc = subprocess.run([sys.executable, "-m", "dbtbus", "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("dbtbus ")
