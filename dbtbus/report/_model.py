"""A run's records, folded into what the report draws: bars per thread, the critical path, cascades."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

from .._state import RunState
from ..events import Heartbeat, NodeResult, Record, RunCrashed, RunFinished, RunStarted
from ._analysis import CriticalPath, Interval, Utilisation, critical_path, slowest, utilisation

__all__ = ["Bar", "Cascade", "RunView"]

#: Outcome classes the page colours bars by (CSS classes ``o-<name>``).
OUTCOME_CLASSES = ("success", "warn", "failed", "skipped", "not_run", "running")


@dataclass(frozen=True, slots=True)
class Bar:
    """One node on the timeline."""

    unique_id: str
    thread: str
    start: float  # seconds from the run's start
    end: float
    outcome: str  # one of OUTCOME_CLASSES
    status: str
    resource_type: str
    execution_time: float | None
    message: str | None
    rows_affected: Any
    skip_cause: str | None
    attempt: int
    critical: bool = False


@dataclass(frozen=True, slots=True)
class Cascade:
    """A failure and what it took down (every node skipped, doomed or not run because of it)."""

    unique_id: str
    status: str
    message: str | None
    took_down: tuple[str, ...]


def _outcome_class(record: NodeResult) -> str:
    status = record.status
    if status.is_failure:
        return "failed"
    if status.value == "warn":
        return "warn"
    if status.is_success:
        return "success"
    if status.value == "skipped":
        return "skipped"
    return "not_run"


_THREAD_NUMBER = re.compile(r"(\d+)")


def _thread_key(name: str) -> tuple[int, str]:
    match = _THREAD_NUMBER.search(name)
    return (int(match.group(1)) if match else 1 << 30, name)


def _threads_from_args(args: Iterable[str]) -> int | None:
    words = list(args)
    for i, word in enumerate(words):
        value = None
        if word == "--threads" and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith("--threads="):
            value = word.split("=", 1)[1]
        if value is not None and value.isdigit():
            return int(value)
    return None


@dataclass
class RunView:
    """Everything the page shows, computed once from a run's state (any prefix of its log)."""

    run_id: str
    state: RunState
    heartbeats: list[Heartbeat] = field(default_factory=list)
    generated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @classmethod
    def from_state(cls, state: RunState, *, now: datetime | None = None) -> RunView:
        """A view of a :class:`~dbtbus.RunState` (e.g. ``await bus.run_state(run_id)``, lease checked)."""
        beats = list(state.heartbeats)
        return cls(state.run_id, state, beats, generated_at=now or datetime.now(timezone.utc))

    @classmethod
    def from_records(cls, run_id: str, records: Iterable[Record], *, now: datetime | None = None) -> RunView:
        """A view of records in log order (a recorded stream, a fabricated run)."""
        view = cls(run_id, RunState(run_id), generated_at=now or datetime.now(timezone.utc))
        for record in records:
            view.state.apply(record)
            if isinstance(record, RunStarted):
                view.heartbeats = []  # memory over time is the current attempt's
            elif isinstance(record, Heartbeat):
                view.heartbeats.append(record)
        return view

    @property
    def attempts(self) -> list[int]:
        """Every attempt with a record in the view, oldest first."""
        seen = {r.attempt for r in self.state.results.values()}
        if self.state.started is not None:
            seen.add(self.state.started.attempt)
        return sorted(seen)

    # ------------------------------------------------------------------------------------------ time

    @cached_property
    def origin(self) -> datetime | None:
        """Time zero of the timeline: the current attempt's start (or the earliest node start)."""
        first = self.state.started.started_at if self.state.started is not None else None
        starts = [r.started_at for r in self.state.results.values() if r.started_at is not None]
        starts += [s.started_at for s in self.state.running.values() if s.started_at is not None]
        candidates = [t for t in (first, *starts) if t is not None]
        return min(candidates) if candidates else None

    def seconds(self, moment: datetime | None) -> float | None:
        origin = self.origin
        if moment is None or origin is None:
            return None
        return (moment - origin).total_seconds()

    @property
    def live(self) -> bool:
        return self.state.started is not None and self.state.ending is None and not self.state.lost

    @property
    def end_time(self) -> datetime | None:
        """When the timeline ends: the run's end, else the last sign of life (or now for a live run)."""
        ending = self.state.ending
        if ending is not None:
            return ending.finished_at
        if self.live:
            return self.state.producer_time(self.generated_at)  # the timeline is on the producer's clock
        moments = [h.at for h in self.heartbeats]
        moments += [r.finished_at for r in self.state.results.values() if r.finished_at is not None]
        return max(moments) if moments else None

    @cached_property
    def span(self) -> float:
        end = self.seconds(self.end_time)
        latest = max((b.end for b in self.bars), default=0.0)
        return max(end or 0.0, latest, 0.0)

    @property
    def elapsed(self) -> float | None:
        ending = self.state.ending
        if ending is not None and ending.elapsed:
            return ending.elapsed
        return self.seconds(self.end_time)

    # ------------------------------------------------------------------------------------------ nodes

    def durations(self) -> dict[str, float]:
        """Each finished node's duration: its wall span when known, else dbt's execution time."""
        out: dict[str, float] = {}
        for uid, record in self.state.results.items():
            if record.started_at is not None and record.finished_at is not None:
                out[uid] = max(0.0, (record.finished_at - record.started_at).total_seconds())
            elif record.execution_time is not None:
                out[uid] = record.execution_time
        return out

    @cached_property
    def _critical(self) -> CriticalPath:
        graph = self.state.graph
        # What did not run (skipped, not run) waited for nothing: it cannot lengthen the run.
        ran = {uid for uid, r in self.state.results.items() if r.status.value not in ("skipped", "not_run")}
        durations = {uid: seconds for uid, seconds in self.durations().items() if uid in ran}
        if graph is not None:
            parents: Mapping[str, tuple[str, ...]] = {uid: node.parents for uid, node in graph.items()}
        else:  # a bare log replay: no edges, so the longest single node
            parents = dict.fromkeys(durations, ())
        return critical_path(parents, durations)

    def critical_path(self) -> CriticalPath:
        """The chain of dependent nodes that set the run's wall time (see :func:`~dbtbus.report.critical_path`)."""
        return self._critical

    @cached_property
    def bars(self) -> list[Bar]:
        """Every node that ran (or runs now) on a thread, in start order."""
        critical = set(self.critical_path().nodes)
        bars: list[Bar] = []
        for uid, record in self.state.results.items():
            start = self.seconds(record.started_at)
            end = self.seconds(record.finished_at)
            if start is None and end is not None and record.execution_time is not None:
                start = end - record.execution_time
            if start is None or end is None or record.thread is None:
                continue  # never ran on a thread (not_run): listed, not drawn
            bars.append(
                Bar(
                    unique_id=uid,
                    thread=record.thread,
                    start=start,
                    end=max(end, start),
                    outcome=_outcome_class(record),
                    status=record.status.value,
                    resource_type=record.resource_type or uid.split(".", 1)[0],
                    execution_time=record.execution_time,
                    message=record.message,
                    rows_affected=record.adapter_response.get("rows_affected"),
                    skip_cause=self.state.root_cause(record) if record.status.value == "skipped" else None,
                    attempt=record.attempt,
                    critical=uid in critical,
                )
            )
        now = self.seconds(self.state.producer_time(self.generated_at))
        for uid, began in self.state.running.items():
            start = self.seconds(began.started_at)
            if start is None:
                continue
            bars.append(
                Bar(
                    unique_id=uid,
                    thread=began.thread or "?",
                    start=start,
                    end=max(start, now if now is not None and self.live else start),
                    outcome="running",
                    status="running",
                    resource_type=began.resource_type or uid.split(".", 1)[0],
                    execution_time=None,
                    message=None,
                    rows_affected=None,
                    skip_cause=None,
                    attempt=began.attempt,
                )
            )
        bars.sort(key=lambda b: (b.start, b.unique_id))
        return bars

    def threads(self) -> list[str]:
        return sorted({b.thread for b in self.bars}, key=_thread_key)

    def pool_size(self) -> int:
        started = self.state.started
        configured = _threads_from_args(started.args) if started is not None else None
        return max(configured or 0, len(self.threads()))

    def utilisation(self) -> Utilisation:
        return self._utilisation

    @cached_property
    def _utilisation(self) -> Utilisation:
        intervals = [Interval(b.thread, b.start, b.end) for b in self.bars if b.outcome != "skipped"]
        return utilisation(intervals, threads=self.pool_size(), span=self.span)

    def slowest(self, n: int = 15) -> list[tuple[str, float]]:
        return slowest(self.durations(), n)

    def not_drawn(self) -> list[NodeResult]:
        drawn = {b.unique_id for b in self.bars}
        return sorted((r for uid, r in self.state.results.items() if uid not in drawn), key=lambda r: r.unique_id)

    def pending(self) -> list[str]:
        """Selected nodes with no result and not running (a live run's queue, or a lost run's leftovers)."""
        return sorted(uid for uid in self.state.pending() if uid not in self.state.running)

    def cascades(self) -> list[Cascade]:
        """Every failed node with the nodes it took down (skipped or doomed, rooted at it)."""
        took_down: dict[str, list[str]] = {}
        for uid, record in self.state.results.items():
            if record.status.value in ("skipped", "not_run"):
                cause = record.skip_cause or self.state.doomed.get(uid)
                root = self.state.root_cause(record) if record.status.value == "skipped" else cause
                if root is not None and root != uid:
                    took_down.setdefault(root, []).append(uid)
        for uid, root in self.state.doomed.items():
            if uid not in self.state.results:
                took_down.setdefault(root, []).append(uid)
        out = []
        for uid, record in sorted(self.state.results.items()):
            if record.status.is_failure:
                out.append(Cascade(uid, record.status.value, record.message, tuple(sorted(took_down.get(uid, ())))))
        return out

    def memory(self) -> list[tuple[float, int]]:
        """(seconds, peak RSS bytes so far) from the heartbeats and the run's end."""
        points: list[tuple[float, int]] = []
        for beat in self.heartbeats:
            t = self.seconds(beat.at)
            if t is not None and beat.peak_rss is not None:
                points.append((t, beat.peak_rss))
        ending = self.state.ending
        if ending is not None and ending.peak_rss is not None:
            t = self.seconds(ending.finished_at)
            if t is not None:
                points.append((t, ending.peak_rss))
        points.sort()
        return points

    def peak_rss(self) -> int | None:
        values = [rss for _, rss in self.memory()]
        return max(values) if values else None

    def status(self) -> str:
        state = self.state
        if state.started is None:
            return "empty" if not state.results else "unknown"
        if isinstance(state.ending, RunCrashed):
            return "crashed"
        if isinstance(state.ending, RunFinished):
            return "finished" if state.ending.success else "finished with failures"
        if state.lost:
            return "producer lost"
        return "running"
