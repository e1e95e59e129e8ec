"""Live progress of a run, from its records: plain lines (not a terminal) or a rich live display."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from .._format import format_bytes, format_counts
from .._state import RunState
from ..events import BatchResult, Heartbeat, NodeResult, NodeStarted, Record, RunCrashed, RunFinished, RunStarted

__all__ = ["Progress", "make_progress"]


class Progress:
    """Folds a run's records into a :class:`RunState` and reports progress as plain lines."""

    def __init__(self, run_id: str, stream: IO[str] | None = None, *, quiet: bool = False) -> None:
        self.state = RunState(run_id)
        self.stream = stream if stream is not None else sys.stdout
        self.quiet = quiet
        self.began = time.monotonic()
        #: Attempts already announced: the producer's second RunStarted of an attempt only brings its graph.
        self._announced: set[int] = set()
        self.peak_rss: int | None = None
        #: Has any record of the run arrived? (Before that, the run has not started, as far as we know.)
        self.seen = False

    # ------------------------------------------------------------------------------------------ numbers

    @property
    def total(self) -> int | None:
        return self.state.total

    @property
    def done(self) -> int:
        return len(self.state.results)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.state.results.values() if r.status.is_failure)

    @property
    def elapsed(self) -> float:
        ending = self.state.ending
        if ending is not None and ending.elapsed:
            return ending.elapsed
        return time.monotonic() - self.began

    def summary(self) -> str:
        total = self.total
        return (
            f"{self.done}/{total if total is not None else '?'} done, {len(self.state.running)} running, "
            f"{self.failed} failed, {self.elapsed:.1f}s elapsed, peak memory {format_bytes(self.peak_rss)}"
        )

    # ------------------------------------------------------------------------------------------ records

    def update(self, record: Record, stored_at: float | None = None) -> None:
        """Show ``record``; ``stored_at``: when the backend stored it, on its clock (measures the producer's)."""
        self.seen = True
        if isinstance(record, RunStarted) and self.state.started is None:
            self.began = time.monotonic()
        if stored_at is not None:
            self.state.note_stored_at(record, stored_at)
        self.state.apply(record)
        if isinstance(record, (Heartbeat, RunFinished, RunCrashed)) and record.peak_rss is not None:
            self.peak_rss = max(self.peak_rss or 0, record.peak_rss)
        if not self.quiet:
            self.render(record)

    def render(self, record: Record) -> None:
        line = self.line(record)
        if line is not None:
            self.print(line)

    def print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def line(self, record: Record) -> str | None:
        if isinstance(record, RunStarted):
            total = self.total
            if record.attempt in self._announced:
                return f"run {record.run_id} planned: {total} nodes" if record.graph is not None else None
            self._announced.add(record.attempt)
            if record.graph is None:  # announced before dbt planned it: the plan follows
                retry = f" (attempt {record.attempt})" if record.attempt > 1 else ""
                return f"run {record.run_id} started{retry}: dbt {' '.join(record.args) or record.command}"
            nodes = f"{total} nodes" if total is not None else "graph unknown"
            command = " ".join(record.args) or record.command
            where = f" on {record.producer.host}" if record.producer.host else ""
            return f"run {record.run_id} started: dbt {command} ({nodes}){where}"
        if isinstance(record, NodeResult):
            total = self.total
            detail = ""
            if record.status.is_failure and record.message:
                detail = f" — {_one_line(record.message)}"
            elif record.skip_cause:
                detail = f" (upstream {record.skip_cause} failed)"
            seconds = f" {record.execution_time:.1f}s" if record.execution_time is not None else ""
            count = f"[{self.done}/{total if total is not None else '?'}]"
            return f"{count} {record.status.value} {record.unique_id}{seconds}{detail}"
        if isinstance(record, BatchResult):
            name = f" ({record.batch})" if record.batch else ""
            detail = f" — {_one_line(record.message)}" if record.status.is_failure and record.message else ""
            seconds = f" {record.execution_time:.1f}s" if record.execution_time is not None else ""
            return (
                f"  batch {record.batch_index}/{record.total_batches}{name} of {record.unique_id}: "
                f"{record.status.value}{seconds}{detail}"
            )
        if isinstance(record, RunFinished):
            verdict = "succeeded" if record.success else f"failed (dbt exit code {record.exit_code})"
            error = f": {_one_line(record.error)}" if record.error else ""
            return (
                f"run {record.run_id} {verdict}{error} in {record.elapsed:.1f}s — "
                f"{format_counts(dict(record.counts))}; "
                f"peak memory {format_bytes(self.peak_rss)}"
            )
        if isinstance(record, RunCrashed):
            return f"run {record.run_id} crashed after {record.elapsed:.1f}s: {_one_line(record.error)}"
        return None

    def lost(self) -> None:
        self.print(
            f"run {self.state.run_id}: the producer stopped heartbeating (producer lost) — {self.summary()}"
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass


class JsonProgress(Progress):
    """Every record as one JSON object per line (NDJSON: the wire form, for ``jq`` or another dbtbus)."""

    def render(self, record: Record) -> None:
        from ..events import encode

        self.stream.write(encode(record).decode() + "\n")
        self.stream.flush()

    def lost(self) -> None:
        sys.stderr.write(f"dbtbus: run {self.state.run_id}: the producer stopped heartbeating (producer lost)\n")


class RichProgress(Progress):
    """A rich live display: a status line, the nodes running now, and a line per failure above it."""

    def __init__(self, run_id: str, stream: IO[str] | None = None) -> None:
        super().__init__(run_id, stream)
        from rich.console import Console
        from rich.live import Live

        self.threads_seen: set[str] = set()
        self.console = Console(file=self.stream)
        self.live = Live(self, console=self.console, refresh_per_second=8, transient=True)
        self.live.start()

    def print(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False)

    def render(self, record: Record) -> None:
        # Only what matters scrolls above the live region: the start, failures, the end.
        if isinstance(record, (NodeResult, BatchResult)) and not (
            record.status.is_failure or record.status.value == "warn"
        ):
            return
        if isinstance(record, (NodeStarted, Heartbeat)):
            return
        super().render(record)

    def __rich__(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        if not self.seen:
            grid.add_row(Text(f" waiting for run {self.state.run_id} to start…", style="dim"))
            return grid
        total = self.total
        bar = ProgressBar(total=float(total or 1), completed=float(self.done if total else 0), width=30)
        head = Text.assemble(
            (f" {self.done}/{total if total is not None else '?'} ", "bold"),
            f"done · {len(self.state.running)} running · ",
            (f"{self.failed} failed", "red" if self.failed else ""),
            f" · {self.elapsed:.1f}s · peak {format_bytes(self.peak_rss)}",
        )
        grid.add_row(bar, head)
        for thread, uid, seconds in self.running_by_thread():
            label = Text(f"  {thread}", style="dim")
            if uid is None:
                grid.add_row(label, Text("idle", style="dim"))
            else:
                batches = self.state.batches.get(uid)
                of = f"  batch {len(batches)}/{batches[-1].total_batches} done" if batches else ""
                timing = f"  {seconds:.1f}s" if seconds is not None else ""
                grid.add_row(label, Text.assemble(uid, (timing, "cyan"), (of, "dim")))
        return grid

    def running_by_thread(self, limit: int = 16) -> list[tuple[str, str | None, float | None]]:
        """(thread, the node it runs or None when idle, for how many seconds), threads in order."""
        from datetime import datetime, timezone

        now = self.state.producer_time(datetime.now(timezone.utc))  # began.started_at is the producer's clock
        rows: dict[str, tuple[str | None, float | None]] = dict.fromkeys(self.threads_seen, (None, None))
        for uid, began in self.state.running.items():
            seconds = max(0.0, (now - began.started_at).total_seconds()) if began.started_at is not None else None
            rows[began.thread or "?"] = (uid, seconds)
        ordered = sorted(rows.items(), key=lambda kv: _thread_order(kv[0]))[:limit]
        return [(thread, uid, seconds) for thread, (uid, seconds) in ordered]

    def update(self, record: Record, stored_at: float | None = None) -> None:
        thread = getattr(record, "thread", None)
        if isinstance(thread, str):
            self.threads_seen.add(thread)
        super().update(record, stored_at)

    def close(self) -> None:
        self.live.stop()


def _thread_order(name: str) -> tuple[int, str]:
    digits = "".join(c if c.isdigit() else " " for c in name).split()
    return (int(digits[0]) if digits else 1 << 30, name)


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def make_progress(run_id: str, mode: str, stream: IO[str] | None = None) -> Progress:
    """``auto``: rich when ``stream`` is a terminal and rich is installed, else plain lines (no ANSI codes on a
    pipe; rich itself honours ``NO_COLOR``). ``json``: NDJSON records. ``none``: nothing."""
    stream = stream if stream is not None else sys.stdout
    if mode == "json":
        return JsonProgress(run_id, stream)
    if mode == "none":
        return Progress(run_id, stream, quiet=True)
    if mode in ("auto", "rich") and (mode == "rich" or stream.isatty()):
        try:
            import rich  # noqa: F401
        except ImportError:
            if mode == "rich":
                sys.stderr.write(
                    "dbtbus: rich is not installed (pip install 'dbtbus[cli]'); showing plain progress\n"
                )
        else:
            return RichProgress(run_id, stream)
    return Progress(run_id, stream)
