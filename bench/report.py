"""The HTML report of a 5,000-node run: time to build the page from the bus, and its size. Goal: ≤ 2 s, ≤ 5 MB.

A synthetic run (seeded, so every run of the benchmark draws the same one): a layered DAG of 5,000 nodes
(models and their tests), scheduled on 8 dbt threads by list scheduling with durations of 0.05–3 s, one
model failing and taking its descendants down, a heartbeat every 5 s. Its records are published once to a
``memory://`` bus; each repetition then runs what ``dbtbus report`` runs — read and decode the run's whole
log (``bus.run_state``) and render the page — in this process, wall and CPU time measured apart. The first
repetition includes compiling the template (``cold``); the page's size is that of the UTF-8 file written.

    python -m bench.report [--quick] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import heapq
import random
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from bench._harness import Measured, Options, benchmark, log, standalone, stat
from bench.goals import GOAL_REPORT_BYTES, GOAL_REPORT_SECONDS

NAME = "report"
THREADS = 8
HEARTBEAT = 5.0


def synthetic_run(nodes: int = 5000, *, seed: int = 7, run_id: str = "bench-report") -> list[Any]:
    """The records of a finished run of ``nodes`` nodes (half models, half tests) on ``THREADS`` threads."""
    from dbtbus.events import GraphNode, Heartbeat, NodeResult, NodeStarted, NodeStatus, ProducerInfo, RunFinished
    from dbtbus.testing.records import node_result, run_started

    rng = random.Random(seed)
    t0 = datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)
    models = nodes // 2
    layers = 25
    per_layer = max(1, models // layers)
    graph: dict[str, GraphNode] = {}
    model_ids = [f"model.bench.m{i:05d}" for i in range(models)]
    for i, uid in enumerate(model_ids):
        layer = i // per_layer
        parents: tuple[str, ...] = ()
        if layer:
            below = model_ids[(layer - 1) * per_layer : layer * per_layer]
            parents = tuple(sorted(set(rng.sample(below, k=min(len(below), rng.randint(1, 3))))))
        graph[uid] = GraphNode("model", parents)
    for i, uid in enumerate(model_ids[: nodes - models]):
        graph[f"test.bench.not_null_m{i:05d}"] = GraphNode("test", (uid,))
    failing = model_ids[per_layer * 3 + 5]
    children: dict[str, list[str]] = {}
    for uid, node in graph.items():
        for parent in node.parents:
            children.setdefault(parent, []).append(uid)
    doomed: set[str] = set()
    stack = list(children.get(failing, ()))
    while stack:
        uid = stack.pop()
        if uid not in doomed:
            doomed.add(uid)
            stack.extend(children.get(uid, ()))

    records: list[Any] = [
        run_started(graph, run_id=run_id, producer=ProducerInfo(id="bench", host="bench", pid=1, kind="dbtRunner"),
                    started_at=t0, args=("build", "--threads", str(THREADS)), dbt_version="1.11.16")
    ]
    # List scheduling in topological order: each node on the thread free first, once its parents are done.
    free = [(2.0, f"Thread-{n + 1} (worker)") for n in range(THREADS)]  # 2 s of parsing first
    heapq.heapify(free)
    done_at: dict[str, float] = {}
    timed: list[tuple[float, Any]] = []
    for uid in _topological(graph):
        ready = max((done_at[p] for p in graph[uid].parents), default=2.0)
        when, thread = heapq.heappop(free)
        start = max(when, ready)
        skipped = uid in doomed
        seconds = 0.0 if skipped else rng.uniform(0.05, 3.0 if uid.startswith("model.") else 0.6)
        end = start + seconds
        heapq.heappush(free, (end, thread))
        done_at[uid] = end
        status = NodeStatus.SKIPPED if skipped else NodeStatus.ERROR if uid == failing else (
            NodeStatus.SUCCESS if uid.startswith("model.") else NodeStatus.PASS
        )
        timed.append((start, NodeStarted(run_id=run_id, unique_id=uid, resource_type=graph[uid].resource_type,
                                         started_at=t0 + timedelta(seconds=start), thread=thread)))
        timed.append((end, node_result(
            uid,
            status,
            run_id=run_id,
            graph=graph,
            started_at=t0 + timedelta(seconds=start),
            finished_at=t0 + timedelta(seconds=end),
            execution_time=seconds,
            message="Catalog Error: Table with name nope does not exist!" if uid == failing else "OK",
            adapter_response={"_message": "OK", "rows_affected": rng.randint(0, 10_000)},
            thread=thread,
            skip_cause=failing if skipped else None,
            relation_name=f'"bench"."main"."{uid.rsplit(".", 1)[1]}"' if uid.startswith("model.") else None,
        )))
    span = max(done_at.values())
    beat = HEARTBEAT
    while beat < span:
        timed.append((beat, Heartbeat(run_id=run_id, at=t0 + timedelta(seconds=beat),
                                      peak_rss=200_000_000 + int(beat * 50_000))))
        beat += HEARTBEAT
    timed.sort(key=lambda item: item[0])
    records.extend(record for _, record in timed)
    counts: dict[str, int] = {}
    for record in records:
        if isinstance(record, NodeResult):
            counts[record.status.value] = counts.get(record.status.value, 0) + 1
    records.append(RunFinished(run_id=run_id, success=False, exit_code=1, counts=counts, elapsed=span + 1,
                               peak_rss=200_000_000 + int(span * 50_000), finished_at=t0 + timedelta(seconds=span)))
    return records


def _topological(graph: dict[str, Any]) -> list[str]:
    indegree = dict.fromkeys(graph, 0)
    children: dict[str, list[str]] = {}
    for uid, node in graph.items():
        for parent in node.parents:
            indegree[uid] += 1
            children.setdefault(parent, []).append(uid)
    ready = sorted(uid for uid, d in indegree.items() if d == 0)
    out: list[str] = []
    while ready:
        uid = ready.pop(0)
        out.append(uid)
        for child in children.get(uid, ()):
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    return out


@benchmark(name=NAME, order=60)
def run(opts: Options) -> Measured:
    import anyio

    from dbtbus import connect
    from dbtbus.events import NodeResult
    from dbtbus.report import areport

    nodes = 200 if opts.tiny else 5000
    repeats = 2 if opts.tiny else 3 if opts.quick else 7
    records = synthetic_run(nodes)
    run_id = records[0].run_id
    url = "memory://bench-report"
    walls: list[float] = []
    cpus: list[float] = []
    page = ""

    async def main() -> None:
        nonlocal page
        async with connect(url) as bus:
            for i in range(0, len(records), 1000):
                await bus.publish(records[i : i + 1000])
            for n in range(repeats):
                wall0, cpu0 = time.perf_counter(), time.process_time()
                page = await areport(bus, run_id)
                walls.append(time.perf_counter() - wall0)
                cpus.append(time.process_time() - cpu0)
                log(f"report: repetition {n + 1}/{repeats}: {walls[-1]:.3f} s wall, {cpus[-1]:.3f} s CPU")

    anyio.run(main)
    size = len(page.encode("utf-8"))
    warm_walls, warm_cpus = walls[1:] or walls, cpus[1:] or cpus
    return Measured(
        params={"nodes": nodes, "threads": THREADS, "repeats": repeats, "heartbeat_s": HEARTBEAT},
        figures={
            "node_results": sum(isinstance(r, NodeResult) for r in records),
            "records": len(records),
            "cold_wall_s": walls[0],
            "cold_cpu_s": cpus[0],
            "wall_s": stat(warm_walls),
            "cpu_s": stat(warm_cpus),
            "page_bytes": size,
        },
    )


def section(data: dict[str, Any]) -> list[str]:
    """The page's section for these figures (bench/render.py puts it on docs/benchmarks.md)."""
    wall, cpu = data["wall_s"], data["cpu_s"]
    ok_time = data["cold_wall_s"] <= GOAL_REPORT_SECONDS and wall["median"] <= GOAL_REPORT_SECONDS
    load = (data.get("machine") or {}).get("load_average") or [float("nan")]
    ok_size = data["page_bytes"] <= GOAL_REPORT_BYTES
    return [
        f"## HTML report of a {data['nodes']:,}-node run",
        "",
        f"`bench/report.py`: a synthetic finished run of {data['nodes']:,} nodes ({data['records']:,} records, "
        f"{data['threads']} dbt threads, one failure cascade, a heartbeat every {data['heartbeat_s']:g} s) on a "
        f"`memory://` bus; each of {data['repeats']} repetitions does what `dbtbus report` does — read and decode "
        "the whole log, render the page — in one process. "
        f"Goal (issue #12): ≤ {GOAL_REPORT_SECONDS:g} s and ≤ {GOAL_REPORT_BYTES / 1e6:g} MB.",
        "",
        "| | wall | CPU |",
        "|---|---|---|",
        f"| first (template compiled) | {data['cold_wall_s']:.3f} s | {data['cold_cpu_s']:.3f} s |",
        f"| then: median (min – max) | {wall['median']:.3f} s ({wall['min']:.3f} – {wall['max']:.3f}) | "
        f"{cpu['median']:.3f} s ({cpu['min']:.3f} – {cpu['max']:.3f}) |",
        "",
        f"Page: {data['page_bytes'] / 1e6:.2f} MB, self-contained. Verdict (first and median wall, size): time "
        f"{'met' if ok_time else 'MISSED'}, size {'met' if ok_size else 'MISSED'}. Load average when it started: "
        f"{load[0]:.1f} on {(data.get('machine') or {}).get('cpus')} cores — wall above CPU is time spent waiting "
        "for a core.",
        "",
    ]


def main(argv: list[str] | None = None) -> None:
    standalone(NAME, argv)


if __name__ == "__main__":
    main()
