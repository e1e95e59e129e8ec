"""`dbtbus report`, `dbtbus export`, `dbtbus watch --json` and the rich view's threads (memory bus, in process)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import anyio
import pytest

from dbtbus.cli import main
from dbtbus.events import RunFinished, RunStarted, decode

from .conftest import GRAPH, publish_now


def test_report_writes_a_self_contained_page(
    memory_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_now(memory_url, "r1", "failed")
    target = tmp_path / "r1.html"
    assert main(["report", "r1", "--bus", memory_url, "-o", str(target)]) == 0
    assert f"wrote {target}" in capsys.readouterr().err
    html = target.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count('<rect class="bar ') == 3  # seed, a, b: the nodes that ran
    assert "Catalog Error: nope" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//|@import|url\(""", html)  # nothing fetched to view it


def test_report_to_stdout_and_of_a_live_run(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    publish_now(memory_url, "r1", "running")
    assert main(["report", "r1", "--bus", memory_url, "-o", "-"]) == 0
    out = capsys.readouterr().out
    assert "The run is in progress" in out


def test_report_and_export_of_an_unknown_run_are_one_line(
    memory_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    export = ["export", "nope", "--bus", memory_url, "--run-results", "-"]
    for argv in (["report", "nope", "--bus", memory_url], export):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.endswith("dbtbus: error: the bus has no record of run nope\n")


def test_export_run_results(memory_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dbtbus.testing.fake_runs import EventFactory

    async def crashed() -> None:
        run = await EventFactory(memory_url).run("r1", graph=GRAPH)
        await run.succeed("seed.p.raw")
        await run.succeed("model.p.a", relation_name='"db"."main"."a"')  # a table: not an ephemeral model
        await run.crash("killed")  # the rest never ran

    anyio.run(crashed)
    target = tmp_path / "run_results.json"
    assert main(["export", "r1", "--bus", memory_url, "--run-results", str(target)]) == 0
    err = capsys.readouterr().err
    assert "(crashed)" in err
    data = json.loads(target.read_text())
    # the count said is the count written (two results on the bus; the nodes that never ran are in the file)
    assert f": {len(data['results'])} result(s) of run r1" in err and len(data["results"]) == len(GRAPH)
    statuses = {r["unique_id"]: r["status"] for r in data["results"]}
    assert statuses["seed.p.raw"] == "success"
    assert statuses["model.p.b"] == "skipped"  # dbtbus's not_run: dbt's schema has no such status
    assert set(statuses) == set(GRAPH)
    assert main(["export", "r1", "--bus", memory_url, "--run-results", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["results"] == data["results"]


def test_watch_json_is_one_record_per_line(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    publish_now(memory_url, "r1", "success")
    assert main(["watch", "r1", "--bus", memory_url, "--json", "--timeout", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [decode(line) for line in lines]  # every line is one whole record in its wire form
    assert isinstance(records[0], RunStarted)
    assert isinstance(records[-1], RunFinished)
    assert [json.loads(line)["type"] for line in lines].count("node_result") == 3


def test_watch_once_json(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    publish_now(memory_url, "r1", "running")
    assert main(["watch", "r1", "--bus", memory_url, "--once", "--json"]) == 0
    types = [json.loads(line)["type"] for line in capsys.readouterr().out.splitlines()]
    assert types == ["run_started", "node_result", "node_result"]


def test_rich_view_lists_each_threads_node_and_for_how_long() -> None:
    pytest.importorskip("rich")
    from dbtbus.cli._progress import RichProgress, make_progress
    from dbtbus.testing.fake_runs import EventFactory

    stream = io.StringIO()
    progress = make_progress("r1", "rich", stream)
    assert isinstance(progress, RichProgress)

    async def scenario() -> None:
        run = await EventFactory("memory://rich-threads").run("r1", graph=GRAPH)
        await run.succeed("seed.p.raw", thread="Thread-2 (worker)")
        await run.start_node("model.p.a")
        with progress:
            for record in run.records:
                progress.update(record)
            rows = progress.running_by_thread()
            assert [(t, uid) for t, uid, _ in rows] == [("Thread-1", "model.p.a"), ("Thread-2 (worker)", None)]
            assert rows[0][2] is not None and rows[0][2] >= 0
            progress.console.print(progress)

    anyio.run(scenario)
    out = stream.getvalue()
    assert "Thread-1" in out and "model.p.a" in out and "idle" in out


def test_no_color_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    from dbtbus.cli._commands import dbt_output_args, use_colour

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(Tty()) is True
    assert use_colour(io.StringIO()) is False  # a pipe
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_colour(Tty()) is False
    assert dbt_output_args(["build"], show=True, colour=False) == ["--no-use-colors"]
    assert dbt_output_args(["build"], show=False, colour=True) == ["--log-level", "none"]
    assert dbt_output_args(["build", "--log-level", "warn"], show=False, colour=True) == []
    pytest.importorskip("rich")
    from dbtbus.cli._progress import RichProgress

    progress = RichProgress("r1", Tty())
    try:
        assert progress.console.no_color is True
    finally:
        progress.close()


def test_help_points_to_a_guide_that_exists(capsys: pytest.CaptureFixture[str]) -> None:
    from dbtbus.cli import guide_path

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    path = guide_path()
    assert path is not None and Path(path).is_file()  # a checkout's docs/cli.md, or the wheel's packaged copy
    assert f"The full guide: {path}" in " ".join(out.split())
    assert "dbtbus report" in Path(path).read_text() and "--resume" in Path(path).read_text()


def test_reports_and_exports_stay_out_of_import_dbtbus() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dbtbus; print(sorted(m for m in sys.modules if m.split('.')[0] in ('jinja2', 'markupsafe')"
        " or m.startswith(('dbtbus.report', 'dbtbus.export', 'dbtbus.cli'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
