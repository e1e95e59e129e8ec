"""The ``dbtbus`` command line's parser: the top level, and one small function per subcommand."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ._exit_codes import EXIT_CODES, EXIT_USAGE

__all__ = ["build_parser", "guide_path"]

_BUS_HELP = "the bus URL, e.g. redis://localhost:6379/0 (default: $DBTBUS_URL)"
_REQUIRE_RUN_HELP = (
    "fail at once (exit code 10) when the bus has never seen the run, instead of waiting for it to start"
)


def guide_path() -> str | None:
    """The CLI guide (docs/cli.md) as this installation has it: packaged in a wheel, or in a checkout."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for candidate in (os.path.join(here, "_docs", "cli.md"), os.path.join(os.path.dirname(here), "docs", "cli.md")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _docs_epilog() -> str:
    path = guide_path()
    where = path if path is not None else "docs/cli.md in dbtbus's source distribution"
    return f"Start with 'dbtbus demo'. Every command has --help. The full guide: {where}"


def _exit_code_epilog() -> str:
    lines = ["exit codes:"]
    lines += [f"  {code}  {text}" for code, text in EXIT_CODES.items()]
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors end as one ``dbtbus: error:`` line plus a hint, with exit code 1."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"dbtbus: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The ``dbtbus`` parser: the top level here, each subcommand in its own ``_add_<command>``."""
    from .._version import __version__

    parser = _Parser(
        prog="dbtbus",
        description="Stream one dbt invocation's per-node results to any number of waiters.",
        epilog=_docs_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dbtbus {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    fmt = argparse.RawDescriptionHelpFormatter
    _add_run(commands, fmt)
    _add_watch(commands, fmt)
    _add_report(commands, fmt)
    _add_export(commands, fmt)
    _add_lineage(commands, fmt)
    _add_wait(commands, fmt)
    _add_publish_log(commands, fmt)
    _add_runs(commands, fmt)
    _add_gc(commands, fmt)
    _add_demo(commands, fmt)
    return parser


def _add_run(commands: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """``dbtbus run``."""
    run = commands.add_parser(
        "run",
        help="run dbt (in-process) publishing to a bus, with live progress",
        description="Run dbt in this process, publish every node's result to the bus, show live progress.\n"
        "dbt's own log lines are hidden (dbtbus shows each node instead) unless --dbt-output; dbt's errors\n"
        "are always shown. The bus is checked before dbt starts. Without --bus or $DBTBUS_URL the run goes\n"
        "to memory://, which no other process can watch (a note on stderr says so).\n"
        "Exit code (the same as 'dbtbus watch' gives for the run): 0 the run succeeded, 2 it had failures or\n"
        "dbt could not run, 4 it crashed; 8 the bus is unreachable, 9 it refused (see 'dbtbus wait --help').",
        epilog="examples:\n"
        "  dbtbus run --bus redis://localhost:6379/0 --run-id nightly -- build --select tag:daily\n"
        "  dbtbus run --bus redis://localhost:6379/0 --resume nightly   # again, without what succeeded",
        formatter_class=fmt,
    )
    run.add_argument("--bus", default=None, help="the bus URL (default: $DBTBUS_URL, else memory://)")
    run.add_argument(
        "--run-id", default=None, help="the run id consumers wait on (default: a fresh one, printed)"
    )
    run.add_argument(
        "--resume",
        metavar="RUN_ID",
        default=None,
        help="a new attempt of RUN_ID that leaves out every node that already succeeded (default dbt args: "
        "the previous attempt's)",
    )
    run.add_argument(
        "--progress",
        choices=("auto", "rich", "plain", "none"),
        default="auto",
        help="progress display: rich when on a terminal and rich is installed (auto), plain lines, or none",
    )
    run.add_argument("--dbt-output", action="store_true", help="also show dbt's own log lines")
    run.add_argument(
        "--memray", metavar="FILE", default=None,
        help="profile dbt's memory with memray into FILE (memray must be installed; FILE must not exist)",
    )
    run.add_argument(
        "dbt_args", nargs=argparse.REMAINDER, metavar="-- DBT_ARGS", help="the dbt command and its arguments"
    )


def _add_watch(commands: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """``dbtbus watch``."""
    watch = commands.add_parser(
        "watch",
        help="show the live state of a run, from any machine",
        description="Follow a run's records and show its progress until it finishes. Started before the run,\n"
        "it waits for the run to start (and says so on stderr after a few seconds).\n"
        "Exit code (the same as 'dbtbus run' gives): 0 the run succeeded, 2 it finished with failures,\n"
        "4 its producer was lost or it crashed, 5 (--once) the run has not started, 7 --timeout elapsed,\n"
        "8 the backend is unreachable, 9 it refused, 10 --require-run and the bus has never seen the run,\n"
        "12 the run was deleted, expired or flushed (also when its tombstone says so).",
        formatter_class=fmt,
    )
    watch.add_argument("run_id", metavar="RUN_ID")
    watch.add_argument("--bus", default=None, help=_BUS_HELP)
    watch.add_argument("--timeout", type=_seconds, default=None, help="give up after this many seconds")
    watch.add_argument("--once", action="store_true", help="print the run's current state and exit")
    watch.add_argument("--require-run", action="store_true", help=_REQUIRE_RUN_HELP)
    watch.add_argument(
        "--progress", choices=("auto", "rich", "plain"), default="auto", help="progress display"
    )
    watch.add_argument(
        "--json", action="store_true", help="print every record as one JSON object per line (NDJSON), e.g. for jq"
    )


def _add_report(commands: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """``dbtbus report``."""
    report = commands.add_parser(
        "report",
        help="draw a run as one self-contained HTML page (timeline per thread, critical path, failures)",
        description="Read a run from the bus and write an HTML report: a timeline per dbt thread, the critical\n"
        "path, the slowest nodes, thread utilisation and peak memory over time, the failures with what they\n"
        "took down, and the run's summary. Works on a run in progress (as far as it has got) or a crashed one.\n"
        "The page needs no network to view. Needs 'dbtbus[report]' (jinja2).",
        epilog="example:\n  dbtbus report nightly --bus redis://localhost:6379/0 -o nightly.html",
        formatter_class=fmt,
    )
    report.add_argument("run_id", metavar="RUN_ID")
    report.add_argument("--bus", default=None, help=_BUS_HELP)
    report.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="FILE.html",
        help="where to write it (default: RUN_ID.html; - for stdout)",
    )


def _add_export(commands: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """``dbtbus export``."""
    export = commands.add_parser(
        "export",
        help="write a run's results as dbt's run_results.json, at any time",
        description="Write dbt's run_results.json (the schema dbt 1.11 writes) for a run, from the bus: during the\n"
        "run (what has finished so far), after a crash or a --fail-fast, which dbt itself cannot do.",
        epilog="example:\n  dbtbus export nightly --bus redis://localhost:6379/0 --run-results target/run_results.json",
        formatter_class=fmt,
    )
    export.add_argument("run_id", metavar="RUN_ID")
    export.add_argument("--bus", default=None, help=_BUS_HELP)
    export.add_argument(
        "--run-results", required=True, metavar="FILE", help="the run_results.json to write (- for stdout)"
    )


def _add_lineage(commands: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """``dbtbus lineage``."""
    lineage = commands.add_parser(
        "lineage",
        help="emit a run as OpenLineage events, one run per dbt node (live with --follow)",
        description="Turn a run into OpenLineage run events: the dbt invocation and every node as a run of its\n"
        "own (START when it starts; COMPLETE, FAIL or ABORT when it ends), its datasets named as dbt-ol names\n"
        "them. Sent by openlineage-python's client, configured the OpenLineage way (openlineage.yml,\n"
        "OPENLINEAGE_URL, OPENLINEAGE__TRANSPORT__*). Run ids are stable: running it again sends the same runs.\n"
        "The dbt project is found where the run's own dbt arguments say, unless given. Needs 'dbtbus[lineage]'.\n"
        "Exit code: 0 done (--follow: the run ended), 4 --follow and the producer was lost (its open runs were\n"
        "ended), 8 the bus is unreachable, 9 it refused, 10 --require-run and the bus has never seen the run,\n"
        "12 --follow and the run was deleted, expired or flushed, 13 the OpenLineage transport failed to deliver\n"
        "an event, 1 a usage or configuration error.",
        epilog="examples:\n"
        "  OPENLINEAGE_URL=http://marquez:5000 dbtbus lineage nightly --bus redis://localhost:6379/0 --follow\n"
        "  dbtbus lineage nightly --project-dir shop --target prod   # what the log holds now, then exit",
        formatter_class=fmt,
    )
    lineage.add_argument("run_id", metavar="RUN_ID")
    lineage.add_argument("--bus", default=None, help=_BUS_HELP)
    lineage.add_argument(
        "--follow", action="store_true",
        help="follow the run live until it ends (a lost producer ends its open runs); without it, emit what the "
        "log holds now and exit",
    )  # fmt: skip
    lineage.add_argument("--require-run", action="store_true", help=_REQUIRE_RUN_HELP)
    lineage.add_argument("--project-dir", default=None, help="the dbt project (default: the run's own)")
    lineage.add_argument("--profiles-dir", default=None, help="where profiles.yml is (default: the run's own)")
    lineage.add_argument("--target", default=None, help="the profile's target (default: the run's own)")
    lineage.add_argument(
        "--manifest", default=None, metavar="PATH", help="dbt's manifest.json (default: the project's target/)"
    )
    lineage.add_argument(
        "--no-datasets", action="store_true", help="emit the runs without datasets (no project or manifest read)"
    )
    lineage.add_argument(
        "--namespace", default=None, help="the jobs' namespace (default: $OPENLINEAGE_NAMESPACE, else dbt)"
    )
    lineage.add_argument("--job-name", default=None, help="the invocation's job (default: dbt-run-<project>)")
    lineage.add_argument(
        "--parent", default=None, metavar="NAMESPACE/JOB/RUN_ID",
        help="the run that ran dbt, e.g. an Airflow task (default: $OPENLINEAGE_PARENT_ID, as dbt-ol)",
    )  # fmt: skip
    lineage.add_argument(
        "--root-parent", default=None, metavar="NAMESPACE/JOB/RUN_ID",
        help="the run at the top, e.g. the Airflow DAG run (default: $OPENLINEAGE_ROOT_PARENT_ID)",
    )  # fmt: skip


def _add_wait(commands: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """``dbtbus wait``."""
    wait = commands.add_parser(
        "wait",
        help="wait for one node of a run; the exit code says its outcome",
        description="Block until a node's outcome is known; exit with a code for it (for shell, Make, CI).",
        epilog=_exit_code_epilog()
        + "\n\nexample: dbtbus wait nightly model.shop.orders --bus redis://ci:6379/0 --timeout 3600",
        formatter_class=fmt,
    )
    wait.add_argument("run_id", metavar="RUN_ID")
    wait.add_argument(
        "node",
        metavar="NODE",
        help="the node's unique_id (model.shop.orders) or its name (orders) when that names one node of the run",
    )
    wait.add_argument("--bus", default=None, help=_BUS_HELP)
    wait.add_argument("--timeout", type=_seconds, default=None, help="seconds to wait (default: forever)")
    wait.add_argument(
        "--include-tests", action="store_true", help="also wait for the node's tests; a failing test fails it"
    )
    wait.add_argument("--require-run", action="store_true", help=_REQUIRE_RUN_HELP)
    wait.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    wait.add_argument("--quiet", "-q", action="store_true", help="print nothing; only the exit code")


def _add_publish_log(commands: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """``dbtbus publish-log``."""
    publish = commands.add_parser(
        "publish-log",
        help="publish a dbt JSON log (dbt --log-format json --log-level debug) to a bus",
        description="Read dbt's JSON log lines (a file, or - for stdin) and publish them as a run.\n"
        "The log must be at debug level: dbt logs NodeStart/NodeFinished only there.",
        epilog="example:\n"
        "  dbt build --log-format json --log-level debug \\\n"
        "    | dbtbus publish-log - --bus redis://localhost:6379/0 --run-id ci-42",
        formatter_class=fmt,
    )
    publish.add_argument(
        "log", nargs="?", default="-", metavar="LOG", help="the JSON log file (default: - for stdin)"
    )
    publish.add_argument("--bus", default=None, help=_BUS_HELP)
    publish.add_argument("--run-id", required=True, help="the run id to publish under")
    publish.add_argument(
        "--manifest",
        default=None,
        metavar="PATH",
        help="dbt's target/manifest.json: gives waiters the graph, hence upstream failures before dbt skips",
    )


def _add_runs(commands: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """``dbtbus runs``."""
    runs = commands.add_parser(
        "runs",
        help="list the runs a bus stores, with their status",
        description="List the runs a bus stores: status (started / lost / finished / crashed), counts, age.",
        formatter_class=fmt,
    )
    runs.add_argument("--bus", default=None, help=_BUS_HELP)
    runs.add_argument("--json", action="store_true", help="one JSON object per run")


def _add_gc(commands: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """``dbtbus gc``."""
    gc = commands.add_parser(
        "gc",
        help="delete runs from a bus",
        description="Delete runs: the ones named, or every ended run older than --older-than.\n"
        "Runs still in progress (their producer is alive) are never deleted by --older-than.",
        epilog="examples:\n  dbtbus gc nightly-41 nightly-42 --bus redis://localhost:6379/0\n"
        "  dbtbus gc --older-than 7d --bus redis://localhost:6379/0 --dry-run",
        formatter_class=fmt,
    )
    gc.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    gc.add_argument("--bus", default=None, help=_BUS_HELP)
    gc.add_argument(
        "--older-than", type=_duration, default=None, metavar="AGE", help="e.g. 90s, 30m, 12h, 7d"
    )
    gc.add_argument("--dry-run", action="store_true", help="only print what would be deleted")


def _add_demo(commands: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """``dbtbus demo``."""
    demo = commands.add_parser(
        "demo",
        help="run the bundled DuckDB project with one concurrent waiter per node",
        description="Copy the bundled DuckDB 'shop' project to a temporary directory, 'dbt build' it\n"
        "through the in-memory bus while one waiter per node awaits its outcome concurrently, then print\n"
        "a summary.\n"
        "The project has an intentionally failing test (and a warning), so some nodes are 'failed' and\n"
        "'upstream failed': the exit code is 0 when the demo itself worked. Needs 'dbtbus[duckdb]'.",
        formatter_class=fmt,
    )
    demo.add_argument(
        "--break", dest="shop_break", action="store_true", help="also make a model error at runtime"
    )
    demo.add_argument("--dbt-output", action="store_true", help="show dbt's own log output too")
    demo.add_argument("--keep", metavar="DIR", default=None, help="copy the project to DIR and keep it")
    demo.add_argument(
        "--progress", choices=("auto", "rich", "plain", "none"), default="auto", help="progress display"
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"not a non-negative number of seconds: {text!r}")
    return value


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def _duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` → seconds."""
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in _UNITS else "s"
    number = raw[:-1] if raw[-1:] in _UNITS else raw
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration (like 90s, 30m, 12h, 7d): {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"not a non-negative duration: {text!r}")
    return value
