"""The goals the benchmarks are judged against (issues #4, #7, #12, #13) and the rules that judge them.

``bench/render.py`` reads every goal from here; no goal is written anywhere else.
"""

from __future__ import annotations

import math
from collections.abc import Callable

GOAL_E2E_RATIO = 1.03
GOAL_REDIS_P99_MS = 2.0
GOAL_MEMORY_P99_MS = 0.2
GOAL_BYTES_PER_WAITER = 2048
GOAL_IMPORT_MS = 20.0
GOAL_PRODUCER_RSS_FIXED = 2 * 2**20  # producer peak RSS over a bare build: 2 MiB ...
GOAL_PRODUCER_RSS_PER_NODE = 1024  # ... + 1 KB per node
GOAL_REGISTER_10K_S = 0.5  # 10,000 waiters registered (Redis)
GOAL_FAN_OUT_10K_MS = 20.0  # 10,000 waiters on one node, all released
GOAL_REPORT_SECONDS = 2.0  # the HTML report of a 5,000-node run ...
GOAL_REPORT_BYTES = 5 * 1000 * 1000  # ... and its size
GOAL_PARSE_SECONDS = 1.0  # a dag-processor parsing a DAG file that renders a 5,000-node manifest ...
GOAL_PARSE_BYTES = 100 * 2**20  # ... and its peak RSS rise
GOAL_SENSOR_BYTES = 10 * 1024  # a waiting sensor in the triggerer, traced and RSS

#: A figure is "taken under load" when the 1-minute load average passed this share of the CPUs.
LOADED_SHARE = 0.5


def goal_producer_rss(nodes: int) -> float:
    return GOAL_PRODUCER_RSS_FIXED + GOAL_PRODUCER_RSS_PER_NODE * nodes


def under_load(load: float | None, cpus: int | None) -> bool:
    """Whether a 1-minute load average of ``load`` on ``cpus`` CPUs counts as taken under load."""
    return load is not None and cpus is not None and load > LOADED_SHARE * cpus


def verdict(measured: float, goal: float, describe_miss: Callable[[float, float], str]) -> str:
    if math.isnan(measured):
        return "not measured"
    if measured <= goal:
        return "yes"
    return f"**no** — {describe_miss(measured, goal)}"


def _miss_ratio(m: float, g: float) -> str:
    return f"missed by {m - g:.3f} ({(m / g - 1) * 100:.0f} % over the allowed ratio)"


def _miss_ms(m: float, g: float) -> str:
    return f"missed by {m - g:.3f} ms ({m / g:.1f}× the goal)"


def _miss_bytes(m: float, g: float) -> str:
    return f"missed by {m - g:,.0f} B ({m / g:.2f}× the goal)"


def cpu_judged(wall: float, cpu: float, wall_min: float, wall_max: float, goal: float,
                describe_miss: Callable[[float, float], str], loaded: bool = False) -> str:
    """Judge on wall unless wall is within noise — its repetitions straddle the goal, or the machine was
    loaded while they ran — then on CPU; say which."""
    if math.isnan(wall):
        return "not measured"
    if not math.isnan(cpu):
        if loaded:
            return f"{verdict(cpu, goal, describe_miss)} (on CPU: taken under load)"
        if wall_min <= goal < wall_max:
            return f"{verdict(cpu, goal, describe_miss)} (on CPU: wall within noise)"
    return f"{verdict(wall, goal, describe_miss)} (on wall)"


def own_cpu_judged(ratio_of_own: float, cper: list[float], goal: float) -> str | None:
    """Where wall is within noise and the CPU ratio's own repetitions straddle the goal, the total is within
    noise on CPU as well: judge on what dbtbus itself spent, measured per thread (None: the total decides)."""
    if math.isnan(ratio_of_own) or not cper or not (min(cper) <= goal < max(cper)):
        return None
    return (f"{verdict(ratio_of_own, goal, _miss_ratio)} (on dbtbus's own CPU, {ratio_of_own:.3f}: the CPU "
            "ratio's repetitions straddle the goal, within noise too; what the own figure leaves out — dbt's "
            "threads slowed by dbtbus's — only the total can show)")
