"""The bus at project scale: 50, 200 and 1,000 models, ``memory://`` and Redis, no dbt.

For each size a generated project's graph (1 test per model: 2 × models + 1 nodes) becomes a run:
``RunStarted`` with the graph, then ``NodeStarted`` and ``NodeResult`` per node, then ``RunFinished``.

* **publish throughput** — the run's records published the way the producer does while dbt runs (one
  ``bus.publish`` call per record, in log order) and in batches of 100: records/s, wall and CPU;
* **registration of 10,000 waiters** (spread round-robin over the run's nodes) — from creating the
  10,000 ``bus.wait`` tasks to the run's reader holding all of them, *early* (before ``RunStarted``) and
  *late* (the run started, nothing finished), wall and CPU;
* **release** — the results published in batches of 100 until every waiter returned;
* **records read per waiter** — entries the consumer bus read from the backend (every ``backend.read``
  counted) ÷ waiters: one reader per run reads the log once, however many waiters.

Producer and consumer are two ``Bus`` objects (two connections for Redis) on one asyncio loop in one process.

    python -m bench.scale [--quick]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._harness import Measured, Options, benchmark, log, redis_url, standalone, stat

NAME = "scale"
SIZES = (50, 200, 1000)
WAITERS = 10_000
BATCH = 100


def _project_graph(models: int, tmp: Path) -> tuple[dict[str, Any], list[str]]:
    from dbtbus.events import GraphNode
    from dbtbus.testing.projects import generate_project

    project = generate_project(tmp / f"p{models}", models=models, tests_per_model=1, threads=4)
    graph = {uid: GraphNode(uid.split(".", 1)[0], tuple(project.parents.get(uid, ()))) for uid in project.nodes}
    return graph, list(project.nodes)


def _records(run_id: str, graph: dict[str, Any], nodes: Sequence[str]) -> tuple[Any, list[Any], list[Any], Any]:
    from dbtbus.events import NodeStarted, NodeStatus, ProducerInfo, RunFinished, utcnow
    from dbtbus.testing.records import node_result, run_started

    now = utcnow()
    started = run_started(graph, run_id=run_id, producer=ProducerInfo(id="bench"), heartbeat_interval=3600)
    starts = [NodeStarted(run_id=run_id, unique_id=u, resource_type=graph[u].resource_type, started_at=now,
                          thread="Thread-1") for u in nodes]
    results = [
        node_result(u, NodeStatus.PASS if u.startswith("test.") else NodeStatus.SUCCESS, run_id=run_id, graph=graph,
                    started_at=now, finished_at=now, execution_time=0.1, message="OK",
                    adapter_response={"_message": "OK", "code": "OK", "rows_affected": -1},
                    thread="Thread-1", relation_name=f'"db"."main"."{u.rsplit(".", 1)[-1]}"')
        for u in nodes
    ]
    finished = RunFinished(run_id=run_id, success=True, counts={"success": len(nodes)})
    return started, starts, results, finished


def _connect(url: str, prefix: str, **options: Any) -> Any:
    import dbtbus

    return dbtbus.connect(url, prefix=prefix, **options) if not url.startswith("memory:") else dbtbus.connect(
        url, **options)


def _count_reads(bus: Any) -> dict[str, int]:
    """Wrap the consumer's ``backend.read`` to count the entries it hands the bus (instrumentation only)."""
    counter = {"calls": 0, "entries": 0}
    read = bus.backend.read

    async def counting(*args: Any, **kwargs: Any) -> Any:
        entries = await read(*args, **kwargs)
        counter["calls"] += 1
        counter["entries"] += len(entries)
        return entries

    bus.backend.read = counting
    return counter


async def _until(condition: Any) -> None:
    while not condition():  # noqa: ASYNC110 - polling the bus's internals is fine in a benchmark
        await asyncio.sleep(0)


async def _throughput(url: str, prefix: str, graph: dict[str, Any], nodes: list[str]) -> dict[str, Any]:
    from bench._harness import Clock

    out: dict[str, Any] = {}
    async with _connect(url, prefix) as producer:
        for mode in ("one_by_one", "batched"):
            run_id = f"tp-{uuid.uuid4().hex[:8]}"
            started, starts, results, finished = _records(run_id, graph, nodes)
            log_order = [started]
            for a, b in zip(starts, results, strict=True):
                log_order += [a, b]
            log_order.append(finished)
            clock = Clock()
            if mode == "one_by_one":
                for record in log_order:
                    await producer.publish(record)
            else:
                for i in range(0, len(log_order), BATCH):
                    await producer.publish(log_order[i : i + BATCH])
            took = clock.read()
            out[mode] = {"records": len(log_order), **took, "records_per_s": len(log_order) / took["wall"],
                         "cpu_us_per_record": took["cpu"] / len(log_order) * 1e6}
            await producer.delete_run(run_id)
    return out


async def _waiters(url: str, prefix: str, graph: dict[str, Any], nodes: list[str], early: bool,
                   waiters: int) -> dict[str, Any]:
    from bench._harness import Clock

    run_id = f"reg-{uuid.uuid4().hex[:8]}"
    started, starts, results, finished = _records(run_id, graph, nodes)
    targets = [nodes[i % len(nodes)] for i in range(waiters)]
    async with _connect(url, prefix) as producer, _connect(url, prefix, linger=60) as consumer:
        reads = _count_reads(consumer)
        await producer.renew_lease(run_id, "bench", 3600)
        if not early:
            await producer.publish(started)
            await producer.publish(starts)
        returned = 0

        async def waiter(uid: str) -> None:
            nonlocal returned
            await consumer.wait(run_id, uid, timeout=600)
            returned += 1

        clock = Clock()
        tasks = [asyncio.ensure_future(waiter(uid)) for uid in targets]
        await _until(lambda: consumer.statistics().readers.get(run_id, 0) >= waiters)
        registered = clock.read()
        if early:
            await producer.publish(started)
            await producer.publish(starts)
        clock = Clock()
        for i in range(0, len(results), BATCH):
            await producer.publish(results[i : i + BATCH])
        await producer.publish(finished)
        await _until(lambda: returned == waiters)
        released = clock.read()
        await asyncio.gather(*tasks)
        await producer.delete_run(run_id)
    log_length = 2 + 2 * len(nodes)
    return {
        "waiters": waiters,
        "register": registered,
        "register_us_per_waiter": registered["wall"] / waiters * 1e6,
        "release": released,
        "reads": reads["calls"],
        "records_read": reads["entries"],
        "log_length": log_length,
        "records_read_per_waiter": reads["entries"] / waiters,
    }


async def measure(url: str, models: int, graph: dict[str, Any], nodes: list[str], reps: int,
                  waiters: int = WAITERS) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}:"
    tps = [await _throughput(url, prefix, graph, nodes) for _ in range(reps)]
    out: dict[str, Any] = {"throughput": {
        mode: {"records": tps[0][mode]["records"],
               "records_per_s": stat([t[mode]["records_per_s"] for t in tps]),
               "cpu_us_per_record": stat([t[mode]["cpu_us_per_record"] for t in tps])}
        for mode in tps[0]
    }}
    for early in (True, False):
        runs = [await _waiters(url, prefix, graph, nodes, early, waiters) for _ in range(reps)]
        out["early" if early else "late"] = {
            "register_wall": stat([r["register"]["wall"] for r in runs]),
            "register_cpu": stat([r["register"]["cpu"] for r in runs]),
            "release_wall": stat([r["release"]["wall"] for r in runs]),
            "release_cpu": stat([r["release"]["cpu"] for r in runs]),
            "records_read_per_waiter": stat([r["records_read_per_waiter"] for r in runs]),
            "records_read": stat([r["records_read"] for r in runs]),
            "reads": stat([r["reads"] for r in runs]),
            "log_length": runs[0]["log_length"],
        }
    return out


@benchmark(name=NAME, order=50, redis=True)
def run(opts: Options) -> Measured:
    reps = 1 if opts.quick else 3
    sizes_wanted, waiters = ((5,), 500) if opts.tiny else (SIZES, WAITERS)
    tmp = Path(tempfile.mkdtemp(prefix="dbtbus-bench-scale-"))
    sizes: list[dict[str, Any]] = []
    with redis_url(opts) as url:
        for models in sizes_wanted:
            graph, nodes = _project_graph(models, tmp)
            entry: dict[str, Any] = {"models": models, "nodes": len(nodes), "backends": {}}
            for name, bus_url in (("memory", f"memory://bench-scale-{uuid.uuid4().hex[:6]}"), ("redis", url)):
                t0 = time.perf_counter()
                data = asyncio.run(measure(bus_url, models, graph, nodes, reps, waiters))
                entry["backends"][name] = data
                tp, early, late = data["throughput"]["one_by_one"], data["early"], data["late"]
                log(f"scale: {models:>5} models {name:>6}: publish {tp['records_per_s']['median']:,.0f}/s one by one; "
                    f"{waiters:,} waiters registered early in {early['register_wall']['median']:.3f} s "
                    f"(CPU {early['register_cpu']['median']:.3f} s), late in {late['register_wall']['median']:.3f} s; "
                    f"records read per waiter {late['records_read_per_waiter']['median']:.3f} "
                    f"({time.perf_counter() - t0:.0f} s)")
            sizes.append(entry)
    return Measured(
        params={"repetitions": reps, "waiters": waiters, "batch": BATCH, "models": list(sizes_wanted)},
        figures={"sizes": sizes},
    )


def main(argv: list[str] | None = None) -> None:
    standalone(NAME, argv)


if __name__ == "__main__":
    main()
