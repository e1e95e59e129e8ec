"""What a run's timings mean: the critical path, thread utilisation, the slowest nodes, failure cascades.

Pure functions of plain data (no I/O, no records): each is unit-tested on graphs with known answers.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "CriticalPath",
    "Interval",
    "Utilisation",
    "critical_path",
    "slowest",
    "utilisation",
]


@dataclass(frozen=True, slots=True)
class CriticalPath:
    """The chain of nodes, each depending on the one before, whose durations add up to the most.

    With unlimited threads no schedule of the run can be shorter than ``total``: this is the chain that set
    the run's wall time (speed any other node up and the run does not end sooner).
    """

    nodes: tuple[str, ...]
    total: float


def critical_path(parents: Mapping[str, Sequence[str]], durations: Mapping[str, float]) -> CriticalPath:
    """The heaviest chain through a DAG, weighting each node by its duration (missing: 0).

    ``parents`` maps every node to the nodes it depends on (parents outside the mapping are ignored).
    Iterative (Kahn's order), so a 10,000-deep chain is fine. Ties go to the lexicographically smallest
    node, so the answer is deterministic; nodes of no duration at the end of the chain (skipped ones) are left
    off. A cycle (never produced by dbt) raises ``ValueError``.
    """
    children: dict[str, list[str]] = {uid: [] for uid in parents}
    indegree: dict[str, int] = dict.fromkeys(parents, 0)
    for uid, ups in parents.items():
        for parent in dict.fromkeys(ups):
            if parent in children:
                children[parent].append(uid)
                indegree[uid] += 1
    best: dict[str, float] = {}
    via: dict[str, str | None] = {}
    ready = [uid for uid, degree in indegree.items() if degree == 0]
    heapq.heapify(ready)
    seen = 0
    while ready:
        uid = heapq.heappop(ready)
        seen += 1
        ups = [p for p in parents[uid] if p in best]
        before = min(ups, key=lambda p: (-best[p], p)) if ups else None
        best[uid] = max(0.0, float(durations.get(uid, 0.0) or 0.0)) + (best[before] if before is not None else 0.0)
        via[uid] = before
        for child in children[uid]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, child)
    if seen != len(parents):
        raise ValueError("the graph has a cycle")
    if not best:
        return CriticalPath((), 0.0)
    end = min(best, key=lambda uid: (-best[uid], uid))
    chain: list[str] = []
    node: str | None = end
    while node is not None:
        chain.append(node)
        node = via[node]
    chain.reverse()
    while len(chain) > 1 and not durations.get(chain[-1]):  # skipped nodes after the last that took time
        chain.pop()
    return CriticalPath(tuple(chain), best[end])


@dataclass(frozen=True, slots=True)
class Interval:
    """One node's time on one thread, in seconds from the run's start."""

    thread: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Utilisation:
    """How busy the run's threads were.

    ``steps`` is the number of busy threads as a step function: ``(t, busy)`` means ``busy`` threads from
    ``t`` until the next step's ``t`` (the last step is 0 busy at the end). ``busy_seconds`` per thread,
    ``fraction`` = busy thread-seconds ÷ (threads × span), in [0, 1].
    """

    span: float
    threads: int
    steps: tuple[tuple[float, int], ...]
    busy_seconds: Mapping[str, float]
    fraction: float
    peak_busy: int


def utilisation(intervals: Iterable[Interval], *, threads: int | None = None, span: float | None = None) -> Utilisation:
    """Busy threads over time, from each node's interval.

    ``threads`` is the pool size (default: the threads seen); ``span`` the run's length (default: the end of
    the last interval). Overlapping intervals on one thread (not something dbt does) count once per node.
    """
    items = [iv for iv in intervals if iv.end >= iv.start]
    names = sorted({iv.thread for iv in items})
    pool = max(threads or 0, len(names))
    length = span if span is not None else max((iv.end for iv in items), default=0.0)
    busy: dict[str, float] = dict.fromkeys(names, 0.0)
    events: list[tuple[float, int]] = []
    for iv in items:
        busy[iv.thread] += iv.end - iv.start
        if iv.end > iv.start:
            events.append((iv.start, 1))
            events.append((iv.end, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # ends before starts at the same instant
    steps: list[tuple[float, int]] = [(0.0, 0)]
    current = peak = 0
    for t, delta in events:
        current += delta
        peak = max(peak, current)
        if steps[-1][0] == t:
            steps[-1] = (t, current)
        else:
            steps.append((t, current))
    if steps[-1][1] != 0 or steps[-1][0] < length:
        steps.append((max(length, steps[-1][0]), 0))
    total = sum(busy.values())
    fraction = total / (pool * length) if pool and length > 0 else 0.0
    return Utilisation(length, pool, tuple(steps), busy, min(1.0, fraction), peak)


def slowest(durations: Mapping[str, float], n: int = 10) -> list[tuple[str, float]]:
    """The ``n`` longest nodes, longest first (ties by unique id)."""
    return heapq.nsmallest(n, durations.items(), key=lambda kv: (-kv[1], kv[0]))
