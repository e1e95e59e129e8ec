"""``dbtbus demo``: the bundled DuckDB project, end to end through the in-memory bus.

The producer runs ``dbt build`` in-process on a worker thread (its own event loop) while this thread's
loop reads the run's graph from its ``RunStarted`` record and starts one ``bus.wait`` per node, all
concurrently; each waiter records its outcome and when it learnt it. Then a summary table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from .._outcome import Outcome
from ..events import NodeResult, RunCrashed, RunFinished, RunStarted
from ._exit_codes import EXIT_OK, EXIT_USAGE, _UsageError
from ._progress import Progress, make_progress

DEMO_URL = "memory://dbtbus-demo"
PROJECT = Path(__file__).resolve().parent.parent / "_demo_project"


@dataclass
class Learnt:
    """What one waiter learnt, and when (seconds after the demo started waiting)."""

    outcome: Outcome
    known_at: float

    @property
    def unique_id(self) -> str:
        return self.outcome.unique_id

    @property
    def result(self) -> NodeResult | None:
        return self.outcome.record

    @property
    def label(self) -> str:
        return self.outcome.label


def _check_dbt() -> None:
    try:
        import dbt.adapters.duckdb
        import dbt.cli.main  # noqa: F401
    except ImportError as exc:
        raise _UsageError(
            f"the demo needs dbt-core and dbt-duckdb ({exc}): pip install 'dbtbus[duckdb]'"
        ) from None
    if not (PROJECT / "dbt_project.yml").is_file():
        raise _UsageError(f"the bundled demo project is missing from {PROJECT} (a broken install?)")


@contextmanager
def _project(keep: str | None) -> Iterator[Path]:
    if keep is not None:
        target = Path(keep).resolve()
        if target.exists() and any(target.iterdir()):
            raise _UsageError(f"--keep {keep}: the directory exists and is not empty")
        shutil.copytree(PROJECT, target, dirs_exist_ok=True)
        yield target
        return
    with tempfile.TemporaryDirectory(prefix="dbtbus-demo-") as tmp:
        target = Path(tmp) / "shop"
        shutil.copytree(PROJECT, target)
        yield target


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def demo(args: argparse.Namespace) -> int:
    _check_dbt()
    from ..producer import Producer

    run_id = f"demo-{uuid.uuid4().hex[:8]}"
    out = sys.stdout
    with _project(args.keep) as project:
        from ._commands import dbt_output_args, use_colour

        dbt_args = ["build", "--project-dir", str(project), "--profiles-dir", str(project)]
        dbt_args += dbt_output_args(dbt_args, show=args.dbt_output, colour=use_colour())
        if args.shop_break:
            dbt_args += ["--vars", "{shop_break: true}"]
        out.write(f"dbtbus demo: dbt {' '.join(dbt_args[:1])} of the bundled DuckDB project in {project}\n")
        out.write(f"             bus {DEMO_URL}, run id {run_id}: one concurrent waiter per node\n\n")
        out.flush()
        with _env("DBTBUS_DUCKDB_PATH", str(project / "shop.duckdb")):
            progress = make_progress(run_id, args.progress)
            with progress:
                outcomes, produced = anyio.run(_demo, Producer, run_id, dbt_args, progress)
    return _report(outcomes, produced, progress)


async def _demo(
    producer_class: Any, run_id: str, dbt_args: list[str], progress: Progress
) -> tuple[dict[str, Learnt], dict[str, Any]]:
    from .._bus import connect

    produced: dict[str, Any] = {}
    outcomes: dict[str, Learnt] = {}
    began = time.monotonic()

    def produce() -> None:
        try:
            produced["result"] = producer_class(DEMO_URL, run_id=run_id).invoke(dbt_args)
        except BaseException as exc:  # reported by _report; the waiters learn of it from the bus
            produced["error"] = exc

    async with connect(DEMO_URL) as bus:

        async def waiter(unique_id: str) -> None:
            outcome = await bus.outcome(run_id, unique_id)
            outcomes[unique_id] = Learnt(outcome, time.monotonic() - began)

        async with anyio.create_task_group() as tg:

            async def run_producer() -> None:
                await anyio.to_thread.run_sync(produce)
                if "error" in produced:  # it may never have published: stop following the log
                    tg.cancel_scope.cancel()

            tg.start_soon(run_producer)
            spawned = False
            async for entry in bus.subscribe(run_id):
                record = entry.record
                progress.update(record)
                if isinstance(record, RunStarted) and not spawned and record.graph is not None:
                    spawned = True
                    for unique_id in record.graph:
                        tg.start_soon(waiter, unique_id)
        # Leaving the task group waited for the producer thread and for every waiter.
    return outcomes, produced


def _report(outcomes: dict[str, Learnt], produced: dict[str, Any], progress: Progress) -> int:
    out = sys.stdout
    error = produced.get("error")
    if error is not None:
        raise _UsageError(f"the demo's dbt run failed to start: {type(error).__name__}: {error}")
    state = progress.state
    rows = sorted(outcomes.values(), key=lambda o: (o.known_at, o.unique_id))
    table: list[tuple[str, str, str, str, str]] = []
    for o in rows:
        record = state.results.get(o.unique_id) or o.result
        status = record.status.value if record is not None else "-"
        seconds = (
            f"{record.execution_time:.2f}"
            if record is not None and record.execution_time is not None
            else "-"
        )
        table.append((_shorten(o.unique_id), status, _shorten(o.label), seconds, f"{o.known_at:.2f}"))
    out.write("\n")
    _print_table(("node", "status", "outcome", "seconds", "known at"), table, out)
    tally: dict[str, int] = {}
    for o in rows:
        key = o.label.split(" (")[0]
        tally[key] = tally.get(key, 0) + 1
    ending = state.ending
    out.write(
        f"\n{len(rows)} nodes, {len(rows)} concurrent waiters: "
        + ", ".join(f"{n} {label}" for label, n in sorted(tally.items(), key=lambda kv: -kv[1]))
        + "\n"
    )
    note = count_note(state.results.values())
    if note:
        out.write(note + "\n")
    if isinstance(ending, RunFinished):
        verdict = "succeeded" if ending.success else f"reported failures (dbt exit code {ending.exit_code})"
        out.write(
            f"dbt {verdict} in {ending.elapsed:.1f}s. The shop project fails a test on purpose, so\n"
            "'failed' and 'upstream failed' above are expected: each waiter learnt its outcome the moment\n"
            "it was certain (see 'known at'). The demo worked: exit code 0.\n"
        )
        return EXIT_OK
    if isinstance(ending, RunCrashed):
        sys.stderr.write(f"dbtbus: error: the demo's dbt run crashed: {ending.error}\n")
    else:
        sys.stderr.write("dbtbus: error: the demo's run never finished\n")
    return EXIT_USAGE


def count_note(results: Any) -> str:
    """Why dbtbus's node count differs from dbt's "N of M" (ephemeral models), or ''."""
    from ..export import is_ephemeral

    records = list(results)
    ephemeral = sorted(r.unique_id for r in records if is_ephemeral(r))
    if not ephemeral:
        return ""
    counted = len(records) - len(ephemeral)
    names = ", ".join(ephemeral[:3]) + (" ..." if len(ephemeral) > 3 else "")
    return (
        f"dbt counts {counted} of these: it compiles the {len(ephemeral)} ephemeral model(s) ({names}) into their "
        "children and leaves them out of its 'N of M' and of run_results.json."
    )


def _shorten(text: str, limit: int = 64) -> str:
    if len(text) <= limit:
        return text
    keep = (limit - 1) // 2
    return text[:keep] + "…" + text[-(limit - 1 - keep) :]


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], out: Any) -> None:
    if out.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            table = Table(*header)
            styles = {"ok": "green", "failed": "red", "not run": "yellow"}
            for row in rows:
                label = row[2]
                style = styles.get(label, "magenta" if label.startswith("upstream") else "")
                table.add_row(*row[:2], f"[{style}]{label}[/]" if style else label, *row[3:])
            Console(file=out).print(table)
            return
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        out.write("  ".join(str(c).ljust(widths[i]) for i, c in enumerate(row)).rstrip() + "\n")
