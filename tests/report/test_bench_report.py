"""bench/report.py's synthetic run is a valid run, drawn with one bar per node (the figure itself is in bench/)."""

from __future__ import annotations

from bench.report import section, synthetic_run
from dbtbus.events import NodeResult, RunFinished, RunStarted
from dbtbus.report import render


def test_synthetic_run_is_a_whole_run_and_renders() -> None:
    records = synthetic_run(400)
    assert isinstance(records[0], RunStarted) and isinstance(records[-1], RunFinished)
    results = [r for r in records if isinstance(r, NodeResult)]
    assert len(results) == 400 == len(records[0].graph or {})
    assert {r.status.value for r in results} == {"success", "pass", "error", "skipped"}
    html = render(records)
    assert html.count('<rect class="bar ') == 400


def test_section_reports_the_goal() -> None:
    data = {
        "nodes": 5000, "records": 10046, "threads": 8, "repeats": 3, "heartbeat_s": 5.0, "cold_wall_s": 1.0,
        "cold_cpu_s": 0.5,
        "wall_s": {"median": 0.9, "min": 0.8, "max": 1.1}, "cpu_s": {"median": 0.4, "min": 0.3, "max": 0.5},
        "page_bytes": 1_340_000, "goal_seconds": 2.0, "goal_bytes": 5_000_000,
        "machine": {"load_average": [1.0], "cpus": 2},
    }
    text = "\n".join(section(data))
    assert text.startswith("## HTML report of a 5,000-node run")
    assert "time met, size met" in text
    assert "1.34 MB" in text
