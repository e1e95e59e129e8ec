"""Peak RSS of an invocation: this run's own, not the host process's lifetime high-water mark."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dbtbus.events import RunFinished
from dbtbus.producer import Producer, _rss

from ._helpers import read_records

MiB = 2**20
BIG = 400 * MiB

#: A model that builds a 400 MiB string while dbt renders it at run time (``execute``), then drops it.
BIG_MODEL = f"""
{{% if execute %}}{{% set ballast = "x" * {BIG} %}}{{% endif %}}
select {{{{ 1 if ballast is not defined else (ballast | length) }}}} as n
"""


def _can_reset_hwm() -> bool:
    return sys.platform.startswith("linux") and _rss.reset_hwm()


def test_reset_hwm_forgets_an_earlier_peak() -> None:
    if not sys.platform.startswith("linux"):
        assert _rss.start_run_peak().scope == _rss.PROCESS
        return
    ballast = bytearray(BIG)
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])  # resident
    before = _rss.self_peak()
    del ballast
    peak = _rss.start_run_peak()
    assert peak.scope == _rss.INVOCATION
    now = peak.peak()
    assert before is not None and now is not None
    assert before - now > BIG // 2, (before, now)


def test_second_invocation_reports_its_own_peak(tmp_path: Path, memory_url: str) -> None:
    """Two invocations in one process, the first allocating 400 MiB more: the second's peak is its own."""
    from dbtbus.testing.projects import generate_project

    project = generate_project(tmp_path / "p", models=2, tests_per_model=0, threads=1)
    (project.path / "models" / "big.sql").write_text(BIG_MODEL)
    args = ["build", *project.dbt_args()]
    first = Producer(memory_url, run_id="big").invoke([*args, "--select", "big"])
    assert first.success and first.counts == {"success": 1}
    second = Producer(memory_url, run_id="small").invoke([*args, "--exclude", "big"])
    assert second.success and sum(second.counts.values()) == 3  # the seed and two models
    assert first.peak_rss is not None and second.peak_rss is not None
    lifetime = _rss.self_peak()
    assert lifetime is not None
    if _can_reset_hwm():
        assert first.peak_rss_scope == second.peak_rss_scope == _rss.INVOCATION
        assert first.peak_rss - second.peak_rss > BIG // 2, (first.peak_rss, second.peak_rss)
        assert 50 * MiB < second.peak_rss < first.peak_rss
    else:  # the kernel keeps one lifetime mark: the record says so
        assert first.peak_rss_scope == second.peak_rss_scope == _rss.PROCESS
        assert second.peak_rss >= first.peak_rss > BIG
    records = read_records(memory_url, "small")
    end = records[-1]
    assert isinstance(end, RunFinished) and end.peak_rss == second.peak_rss
    assert end.peak_rss_scope == second.peak_rss_scope  # the record says what the figure covers


def test_subprocess_peak_is_the_childs_own(tmp_path: Path, memory_url: str) -> None:
    from dbtbus.testing.projects import generate_project

    from ._helpers import DBT

    project = generate_project(tmp_path / "p", models=1, tests_per_model=0, threads=1)
    result = Producer(memory_url, run_id="sub").invoke_subprocess(["build", *project.dbt_args()], dbt_executable=DBT)
    assert result.success and result.peak_rss_scope == _rss.INVOCATION
    assert result.peak_rss is not None and 50 * MiB < result.peak_rss < 1024 * MiB
    end = read_records(memory_url, "sub")[-1]
    assert isinstance(end, RunFinished) and end.peak_rss_scope == _rss.INVOCATION


pytestmark = pytest.mark.dbt
