"""memray profiles of a producer run: in process, in dbt's subprocess, from the CLI; unavailable is an error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dbtbus import ConfigurationError, MemrayUnavailable
from dbtbus.cli import main as cli_main
from dbtbus.events import RunFinished
from dbtbus.producer import Producer

from ._helpers import DBT, read_records

pytestmark = [
    pytest.mark.dbt,
    # memray is in the test extra wherever it installs (Linux, macOS): missing it there is a failure.
    pytest.mark.skipif(sys.platform == "win32", reason="memray does not support Windows"),
]

MiB = 2**20


@pytest.fixture
def project(tmp_path: Path) -> Any:
    from dbtbus.testing.projects import generate_project

    return generate_project(tmp_path / "p", models=3, tests_per_model=1, failing=["m002"], threads=1)


def _profile_peak(path: Path) -> int:
    import memray

    reader = memray.FileReader(path)
    assert reader.metadata.total_allocations > 0
    return int(reader.metadata.peak_memory)


def test_in_process_profile(project: Any, memory_url: str, tmp_path: Path) -> None:
    out = tmp_path / "in.bin"
    result = Producer(memory_url, run_id="mem", memray_output=out).invoke(["build", *project.dbt_args()])
    assert result.exit_code == 1 and not result.crashed  # m002 fails: the profile does not change the outcome
    # dbt ran under the tracker (what was allocated before it started, e.g. dbt's imports, is not counted)
    assert _profile_peak(out) > 1 * MiB


def test_subprocess_runs_dbt_under_memray(project: Any, memory_url: str, tmp_path: Path) -> None:
    out = tmp_path / "child.bin"
    result = Producer(memory_url, run_id="sub", memray_output=out).invoke_subprocess(
        ["build", *project.dbt_args()], dbt_executable=DBT
    )
    assert result.exit_code == 1 and not result.crashed  # dbt's exit code passes through memray run
    assert result.counts.get("error") == 1 and result.counts.get("skipped")
    assert _profile_peak(out) > 20 * MiB  # dbt's own process, not ours
    records = read_records(memory_url, "sub")
    assert isinstance(records[-1], RunFinished) and records[-1].exit_code == 1


def test_a_relative_output_is_the_callers_even_when_dbt_runs_elsewhere(
    project: Any, memory_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cwd=`` moves dbt, not the profile: the path was checked relative to the caller's directory."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(here)
    result = Producer(memory_url, run_id="rel", memray_output="rel.bin").invoke_subprocess(
        ["build", *project.dbt_args()], dbt_executable=DBT, cwd=elsewhere
    )
    assert result.exit_code == 1 and not result.crashed
    assert _profile_peak(here / "rel.bin") > 20 * MiB
    assert not (elsewhere / "rel.bin").exists()


def test_missing_memray_in_process_is_an_error_before_the_run(
    project: Any, memory_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "memray", None)  # import memray → ImportError
    with pytest.raises(MemrayUnavailable, match="memray is not installed"):
        Producer(memory_url, run_id="none", memray_output=tmp_path / "x.bin").invoke(["build", *project.dbt_args()])
    assert read_records(memory_url, "none") == []  # nothing was published: no run, no crashed run


def test_existing_output_is_an_error(project: Any, memory_url: str, tmp_path: Path) -> None:
    assert issubclass(MemrayUnavailable, ConfigurationError)  # what callers of the public API catch
    out = tmp_path / "exists.bin"
    out.write_bytes(b"")
    with pytest.raises(MemrayUnavailable, match="already exists"):
        Producer(memory_url, run_id="e", memray_output=out).invoke(["build", *project.dbt_args()])
    with pytest.raises(MemrayUnavailable, match="already exists"):
        Producer(memory_url, run_id="e", memray_output=out).invoke_subprocess(
            ["build", *project.dbt_args()], dbt_executable=DBT
        )
    assert read_records(memory_url, "e") == []


def test_memray_missing_in_dbts_environment(project: Any, memory_url: str, tmp_path: Path) -> None:
    """dbt of another virtualenv without memray: a typed error naming that interpreter."""
    env_dir = tmp_path / "bare-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import memray"], capture_output=True).returncode != 0
    fake_dbt = tmp_path / "dbt"
    fake_dbt.write_text(f"#!{python}\nraise SystemExit('not reached')\n")
    fake_dbt.chmod(0o755)
    with pytest.raises(MemrayUnavailable, match="not installed in dbt's environment") as info:
        Producer(memory_url, run_id="other", memray_output=tmp_path / "o.bin").invoke_subprocess(
            ["build", *project.dbt_args()], dbt_executable=fake_dbt
        )
    assert str(python) in str(info.value)
    assert read_records(memory_url, "other") == []


def test_non_python_dbt_cannot_be_profiled(project: Any, memory_url: str, tmp_path: Path) -> None:
    script = tmp_path / "dbt.sh"
    script.write_text(f"#!/bin/sh\nexec {DBT} \"$@\"\n")
    script.chmod(0o755)
    with pytest.raises(MemrayUnavailable, match="Python console script"):
        Producer(memory_url, run_id="sh", memray_output=tmp_path / "s.bin").invoke_subprocess(
            ["build", *project.dbt_args()], dbt_executable=script
        )


def test_cli_run_memray(project: Any, memory_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.bin"
    code = cli_main(["run", "--bus", memory_url, "--run-id", "cli", "--progress", "none", "--memray", str(out),
                     "--", "build", *project.dbt_args()])
    assert code == 2  # m002 fails: the CLI's code for a run with failures (watch's too)
    assert _profile_peak(out) > 1 * MiB
    capsys.readouterr()
    code = cli_main(["run", "--bus", memory_url, "--run-id", "cli2", "--progress", "none", "--memray", str(out),
                     "--", "build", *project.dbt_args()])
    assert code == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "dbtbus: error:" in err
    assert read_records(memory_url, "cli2") == []
    assert os.path.getsize(out) > 0  # the first profile is kept
