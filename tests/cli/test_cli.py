"""The `dbtbus` command line, in-process (``main([...])``) on the memory backend."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from dbtbus.cli import EXIT_CODES, build_parser, main
from dbtbus.cli._progress import Progress, make_progress
from dbtbus.events import RunFinished

from .conftest import GRAPH, SHOP_LOG, SHOP_MANIFEST, play, play_in_thread, publish_now

SUBCOMMANDS = ["run", "watch", "wait", "publish-log", "runs", "gc", "demo", "lineage"]


# ---------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help_everywhere(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--help"] if command is None else [command, "--help"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dbtbus")


def test_wait_help_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wait", "--help"]) == 0
    out = capsys.readouterr().out
    for code, text in EXIT_CODES.items():
        assert f"  {code}  {text}" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("dbtbus ")


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 1
    assert "usage: dbtbus" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["wait", "run-1"], "the following arguments are required: NODE"),
        (["frobnicate"], "invalid choice"),
        (["wait", "r", "n", "--bus", "memory://", "--timeout", "soon"], "not a number of seconds"),
        (["wait", "r", "n", "--bus", "nonsense"], "a bus URL looks like"),
        (["wait", "r", "n", "--bus", "nope://x"], "no dbtbus backend for URL scheme 'nope'"),
        (["wait", "r", "n"], "no bus: pass --bus URL"),
        (["gc", "--bus", "memory://"], "name the runs to delete, or pass --older-than"),
        (["gc", "x", "--older-than", "1d", "--bus", "memory://"], "not both"),
        (["gc", "--older-than", "a week", "--bus", "memory://"], "not a duration"),
        (["run", "--bus", "memory://"], "no dbt command"),
        (["publish-log", "/does/not/exist.json", "--run-id", "r", "--bus", "memory://"], "no such log file"),
    ],
)
def test_user_errors_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DBTBUS_URL", raising=False)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("dbtbus: error: ")
    assert message in err
    assert "Traceback" not in err


def test_bus_url_from_environment(
    memory_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBTBUS_URL", memory_url)
    publish_now(memory_url, "r-env", "success")
    assert main(["wait", "r-env", "model.p.b", "--timeout", "5"]) == 0


def test_parser_builds_without_importing_heavy_modules() -> None:
    code = (
        "import sys, dbtbus.cli; dbtbus.cli.build_parser();"
        "heavy = {'anyio', 'rich', 'dbt', 'redis', 'orjson', 'dbtbus._bus'} & set(sys.modules);"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_parser_offers_every_command_and_rejects_unknown_ones(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == {
        "run", "watch", "report", "export", "lineage", "wait", "publish-log", "runs", "gc", "demo"
    }  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["frobnicate"])
    assert exit_info.value.code not in (0, None) and "frobnicate" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- wait

WAIT_CASES = [
    ("model.p.b", "success", 0),
    ("model.p.b", "failed", 2),
    ("model.p.b", "upstream_failed", 3),
    ("model.p.b", "producer_lost", 4),
    ("model.p.b", "not_run", 5),
    ("model.p.nope", "success", 6),
]


@pytest.mark.parametrize(("node", "outcome", "code"), WAIT_CASES)
def test_wait_exit_code_per_outcome(
    memory_url: str, node: str, outcome: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # The waiter starts first; the "producer" publishes from another thread a moment later.
    thread = play_in_thread(memory_url, "r1", outcome)
    assert main(["wait", "r1", node, "--bus", memory_url, "--timeout", "20"]) == code
    thread.join(5)
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert node in out


def test_wait_timeout(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    publish_now(memory_url, "r1", "running")
    assert main(["wait", "r1", "model.p.b", "--bus", memory_url, "--timeout", "0.3"]) == 7
    assert capsys.readouterr().out.startswith("timeout: no outcome for model.p.b")


def test_wait_json_and_quiet(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    publish_now(memory_url, "r1", "upstream_failed")
    assert main(["wait", "r1", "model.p.b", "--bus", memory_url, "--json"]) == 3
    payload = orjson.loads(capsys.readouterr().out)
    assert payload["outcome"] == "upstream_failed"
    assert payload["cause"] == "model.p.a"
    assert payload["exit_code"] == 3
    assert main(["wait", "r1", "seed.p.raw", "--bus", memory_url, "--json"]) == 0
    payload = orjson.loads(capsys.readouterr().out)
    assert payload["record"]["status"] == "success"
    assert main(["wait", "r1", "model.p.a", "--bus", memory_url, "-q"]) == 2
    assert capsys.readouterr().out == ""


def test_wait_include_tests(memory_url: str) -> None:
    async def scenario() -> None:
        from dbtbus.testing.fake_runs import EventFactory

        run = await EventFactory(memory_url).run("r1", graph=GRAPH)
        await run.succeed("model.p.a")
        await run.fail("test.p.not_null_a")

    anyio.run(scenario)
    assert main(["wait", "r1", "model.p.a", "--bus", memory_url, "-q"]) == 0
    assert main(["wait", "r1", "model.p.a", "--bus", memory_url, "-q", "--include-tests"]) == 2


# ---------------------------------------------------------------------------------------------- watch


@pytest.mark.parametrize(("outcome", "code"), [("success", 0), ("failed", 2), ("producer_lost", 4), ("not_run", 4)])
def test_watch_follows_a_run_to_its_end(
    memory_url: str, outcome: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    thread = play_in_thread(memory_url, "r1", outcome)
    assert main(["watch", "r1", "--bus", memory_url, "--progress", "plain", "--timeout", "20"]) == code
    thread.join(5)
    out = capsys.readouterr().out
    assert "run r1 started" in out
    assert "[1/5] success seed.p.raw" in out
    if outcome == "failed":
        assert "fail" in out and "Catalog Error: nope" in out
    if outcome == "producer_lost":
        assert "producer lost" in out


def test_watch_timeout_and_once(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    publish_now(memory_url, "r1", "running")
    assert main(["watch", "r1", "--bus", memory_url, "--progress", "plain", "--timeout", "0.3"]) == 7
    assert "did not finish within 0.3 s" in capsys.readouterr().err
    assert main(["watch", "r1", "--bus", memory_url, "--once"]) == 0
    out = capsys.readouterr().out
    assert "run r1: started" in out
    assert "progress: 2/5 done" in out


# ---------------------------------------------------------------------------------------------- progress


def test_progress_plain_lines() -> None:
    from dbtbus.testing.fake_runs import EventFactory

    stream = io.StringIO()
    progress = make_progress("r1", "auto", stream)  # a StringIO is not a terminal
    assert type(progress) is Progress

    async def scenario() -> None:
        run = await EventFactory("memory://progress-plain").run("r1", graph=GRAPH)
        await run.succeed("seed.p.raw", execution_time=0.4)
        await run.fail("model.p.a", message="boom", skip_descendants=True)
        await run.finish(elapsed=2.5)
        for record in run.records:
            progress.update(record)

    anyio.run(scenario)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("run r1 started: dbt build (5 nodes)")
    assert lines[1] == "[1/5] success seed.p.raw 0.4s"
    assert lines[2].startswith("[2/5] error model.p.a") and lines[2].endswith("— boom")
    assert "(upstream model.p.a failed)" in lines[3]
    assert lines[-1].startswith("run r1 failed (dbt exit code 1) in 2.5s")


def test_progress_follows_a_microbatch_models_batches() -> None:
    from dbtbus.testing.fake_runs import EventFactory

    stream = io.StringIO()
    progress = make_progress("r1", "plain", stream)

    async def scenario() -> None:
        run = await EventFactory("memory://progress-batches").run("r1", graph=GRAPH)
        await run.start_node("model.p.a")
        await run.batch("model.p.a", "2026-01-01", index=1, total=2, execution_time=0.5)
        await run.batch("model.p.a", "2026-01-02", index=2, total=2, status="error", message="boom")
        await run.fail("model.p.a", status="partial success", message="PARTIAL SUCCESS (1/2)")
        for record in run.records:
            progress.update(record)

    anyio.run(scenario)
    lines = stream.getvalue().splitlines()
    assert lines[1] == "  batch 1/2 (2026-01-01) of model.p.a: success 0.5s"
    assert lines[2].startswith("  batch 2/2 (2026-01-02) of model.p.a: error") and lines[2].endswith("— boom")
    assert lines[3].startswith("[1/5] partial success model.p.a") and lines[3].endswith("— PARTIAL SUCCESS (1/2)")
    assert progress.done == 1  # batches are not nodes


def test_progress_rich_renders_and_plain_without_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    from dbtbus.cli._progress import RichProgress

    stream = io.StringIO()
    progress = make_progress("r1", "rich", stream)
    assert isinstance(progress, RichProgress)

    async def scenario() -> None:
        from dbtbus.testing.fake_runs import EventFactory

        run = await EventFactory("memory://progress-rich").run("r1", graph=GRAPH)
        await run.start_node("model.p.a")
        await run.fail("model.p.a", message="boom")
        await run.finish()
        with progress:
            for record in run.records:
                progress.update(record)
            progress.console.print(progress)

    anyio.run(scenario)
    assert "boom" in stream.getvalue()

    monkeypatch.setitem(sys.modules, "rich", None)  # as if rich were not installed
    assert type(make_progress("r1", "rich", io.StringIO())) is Progress


# ---------------------------------------------------------------------------------------------- runs / gc


def _old_finished_run(url: str, run_id: str, age: timedelta) -> None:
    async def scenario() -> None:
        from dbtbus.testing.fake_runs import EventFactory

        run = await EventFactory(url).run(run_id, graph=GRAPH)
        await run.succeed("seed.p.raw")
        await run.publish(
            RunFinished(run_id=run_id, success=True, finished_at=datetime.now(timezone.utc) - age, elapsed=1.0)
        )
        await run.lose_producer()

    anyio.run(scenario)


def test_runs_and_gc(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "--bus", memory_url]) == 0
    assert capsys.readouterr().out == "no runs\n"
    _old_finished_run(memory_url, "old", timedelta(days=3))
    publish_now(memory_url, "recent-failed", "failed")
    publish_now(memory_url, "live", "running")
    publish_now(memory_url, "crashed", "not_run")
    assert main(["runs", "--bus", memory_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["RUN_ID", "STATUS", "RESULT", "DONE", "COUNTS", "LAST", "ACTIVITY"]
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert rows["old"][1:4] == ["finished", "success", "1/5"]
    assert rows["recent-failed"][1:3] == ["finished", "failed"]
    assert rows["live"][1] == "started"
    assert rows["crashed"][1] == "crashed"

    assert main(["runs", "--bus", memory_url, "--json"]) == 0
    payloads = {p["run_id"]: p for p in map(orjson.loads, capsys.readouterr().out.splitlines())}
    assert payloads["recent-failed"]["counts"] == {"success": 2, "error": 1}

    assert main(["gc", "--older-than", "1d", "--bus", memory_url, "--dry-run"]) == 0
    assert capsys.readouterr().out == "would delete old\n1 run(s) would be deleted (dry run)\n"
    assert main(["gc", "--older-than", "0s", "--bus", memory_url]) == 0  # everything ended, not "live"
    out = capsys.readouterr().out
    assert "deleted live" not in out and "3 run(s) deleted" in out
    assert main(["gc", "live", "--bus", memory_url]) == 0
    assert main(["runs", "--bus", memory_url]) == 0
    assert capsys.readouterr().out.endswith("no runs\n")


# ---------------------------------------------------------------------------------------------- publish-log


def test_publish_log_then_wait(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["publish-log", str(SHOP_LOG), "--bus", memory_url, "--run-id", "replayed"]
    assert main([*argv, "--manifest", str(SHOP_MANIFEST)]) == 0
    assert "published run replayed" in capsys.readouterr().err
    assert main(["wait", "replayed", "model.shop.orders_enriched", "--bus", memory_url, "-q"]) == 0
    assert main(["wait", "replayed", "test.shop.assert_customers_have_repeat_orders", "--bus", memory_url, "-q"]) == 2
    assert main(["wait", "replayed", "model.shop.top_customers", "--bus", memory_url, "-q"]) == 3
    assert main(["watch", "replayed", "--bus", memory_url, "--once"]) == 2


def test_publish_log_into_a_used_run_id_is_refused_with_the_bus_refusal_code(
        memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["publish-log", str(SHOP_LOG), "--bus", memory_url, "--run-id", "used"]
    assert main(argv) == 0
    assert main(argv) == 9  # a run id names one run: the second replay is refused, as 'run' is
    assert "RunClaimed" in capsys.readouterr().err


def test_publish_log_without_manifest_still_reports_skips_as_upstream_failures(memory_url: str) -> None:
    assert main(["publish-log", str(SHOP_LOG), "--bus", memory_url, "--run-id", "bare"]) == 0
    assert main(["wait", "bare", "model.shop.orders_enriched", "--bus", memory_url, "-q"]) == 0
    # dbt's log says top_customers was skipped without naming the ancestor: dbt skips only for an upstream
    # failure, so it is "upstream failed" (the core's rule: a causeless skip is an upstream failure)
    assert main(["wait", "bare", "model.shop.top_customers", "--bus", memory_url, "-q"]) == 3
    assert main(["publish-log", str(SHOP_LOG), "--bus", memory_url, "--run-id", "x", "--manifest", "/nope"]) == 1


def test_publish_log_from_stdin(memory_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    class Stdin:
        buffer = io.BytesIO(SHOP_LOG.read_bytes())

    monkeypatch.setattr(sys, "stdin", Stdin)
    assert main(["publish-log", "-", "--bus", memory_url, "--run-id", "piped"]) == 0
    assert main(["wait", "piped", "seed.shop.orders", "--bus", memory_url, "-q"]) == 0



def test_publish_log_from_a_stdin_that_breaks_says_so_and_ends_nothing(
    memory_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    lines = SHOP_LOG.read_bytes().splitlines(keepends=True)

    class Breaking(io.BytesIO):
        """The first half of the log, then an I/O error, as a pipe from a dying pod may give."""

        def __iter__(self) -> Iterator[bytes]:
            yield from lines[: len(lines) // 2]
            raise OSError(errno.EIO, "Input/output error")

    class Stdin:
        buffer = Breaking()

    monkeypatch.setattr(sys, "stdin", Stdin)
    assert main(["publish-log", "-", "--bus", memory_url, "--run-id", "broken"]) == 1
    assert "Input/output error" in capsys.readouterr().err  # the error itself, not a traceback
    assert main(["wait", "broken", "seed.shop.orders", "--bus", memory_url, "-q"]) == 0  # read before it broke
    state = anyio.run(_run_state, memory_url, "broken")
    assert state.ending is None  # no RunCrashed: nobody knows how dbt's run ended


async def _run_state(url: str, run_id: str) -> Any:
    import dbtbus

    async with dbtbus.connect(url) as bus:
        return await bus.run_state(run_id)

# ---------------------------------------------------------------------------------------------- run / demo (real dbt)


@pytest.mark.dbt
def test_run_streams_progress_and_exits_as_watch_does(
    memory_url: str, shop_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBTBUS_DUCKDB_PATH", str(shop_copy / "shop.duckdb"))
    argv = ["run", "--bus", memory_url, "--run-id", "cli-run", "--progress", "plain", "--"]
    argv += ["build", "--project-dir", str(shop_copy), "--profiles-dir", str(shop_copy), "--quiet"]
    assert main(argv) == 2  # the shop project has a failing test: EXIT_FAILED, as `watch` says of the run
    assert main(["watch", "cli-run", "--bus", memory_url, "--progress", "plain"]) == 2
    assert main(["watch", "cli-run", "--bus", memory_url, "--once"]) == 2
    captured = capsys.readouterr()
    assert "dbtbus: run id cli-run on " in captured.err
    out = captured.out
    assert "run cli-run started: dbt build" in out
    assert "[28/28]" in out
    assert "fail test.shop.assert_customers_have_repeat_orders" in out
    assert "run cli-run failed (dbt exit code 1)" in out
    # the run stays on the bus for later consumers
    assert main(["wait", "cli-run", "model.shop.top_customers", "--bus", memory_url, "-q"]) == 3


@pytest.mark.dbt
def test_run_selecting_only_passing_nodes_exits_zero(
    memory_url: str, shop_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBTBUS_DUCKDB_PATH", str(shop_copy / "shop.duckdb"))
    argv = ["run", "--bus", memory_url, "--progress", "none", "--", "seed", "--project-dir", str(shop_copy)]
    argv += ["--profiles-dir", str(shop_copy), "--quiet"]
    assert main(argv) == 0
    assert capsys.readouterr().out == ""


def test_run_dbt_usage_error_is_exit_code_2(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("dbt.cli.main")
    assert main(["run", "--bus", memory_url, "--progress", "plain", "--", "build", "--no-such-flag"]) == 2


@pytest.mark.dbt
def test_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--progress", "plain"]) == 0
    out = capsys.readouterr().out
    assert "28 nodes, 28 concurrent waiters: 24 ok, 3 upstream failed, 1 failed" in out
    assert "upstream failed (test.shop.assert_customers_have_repeat_orders)" in out
    assert "The demo worked: exit code 0." in out


def test_demo_without_dbt_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "dbt.adapters.duckdb", None)
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dbtbus: error: the demo needs dbt-core and dbt-duckdb")
    assert err.count("\n") == 1


def test_async_play_helper_is_usable_directly(memory_url: str) -> None:
    # guards the helper the other tests rely on: the fabricated run reaches the bus
    async def scenario() -> None:
        from dbtbus import connect
        from dbtbus.testing.fake_runs import EventFactory

        await play(EventFactory(memory_url), "r1", "success")
        async with connect(memory_url) as bus:
            assert (await bus.run_state("r1")).ending is not None

    anyio.run(scenario)
