"""End to end: one bare ``dbt build`` vs the dbtbus producer with a waiter per node vs one dbt per node.

Variants, on the same generated dbt-duckdb project (1 test per model, 4 threads), each repetition in a fresh
interpreter (dbt keeps global state; every variant starts from the same clean process), alternated:

* ``bare`` (a) — ``dbtRunner().invoke(["build", ...])``;
* ``producer-memory`` / ``producer-redis`` (b) — ``Producer(url).invoke(build)`` on a worker thread while the
  main event loop holds one ``bus.wait(run_id, node)`` per node; the clock stops when the last waiter returns;
  (b) also times dbtbus's own two threads, the waiting loop and the producer's publisher (``time.thread_time``);
* ``produceronly-memory`` / ``produceronly-redis`` — ``Producer(url).invoke(build)`` alone, no waiter: the
  producer's own cost in CPU and peak RSS over (a);
* ``pernode-dbtrunner`` / ``pernode-subprocess`` (c) — one dbt invocation per node in dependency order
  (``dbt seed|run|test --select <node>``), through ``dbtRunner`` in one process or the ``dbt`` CLI, on a
  stratified sample (the seed, evenly spaced models and their tests) extrapolated to every node.

Every figure is wall AND CPU time (user + system of the measured process, every thread, and its waited-for
children: ``getrusage`` deltas around the measured section); redis-server's own CPU is not included. Peak
RSS is the measured section's: the high-water mark is reset (Linux ``clear_refs``) just before dbt starts.

    python -m bench.end_to_end [--quick] [--large]     # --large adds the 1,000-model point
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._harness import (
    DBT,
    PY,
    Clock,
    Measured,
    Options,
    Run,
    benchmark,
    child_json,
    children_peak_rss,
    emit,
    load_results,
    log,
    ratio,
    redis_url,
    reset_peak_rss,
    run_child,
    self_peak_rss,
    standalone,
    stat,
    vm_rss,
)

NAME = "end_to_end"
BASELINE = "bare"
PRODUCERS = ("producer-memory", "producer-redis")
PRODUCER_ONLY = ("produceronly-memory", "produceronly-redis")
PERNODE = ("pernode-dbtrunner", "pernode-subprocess")
CORE = (BASELINE, *PRODUCERS, *PRODUCER_ONLY)
VARIANTS = (*CORE, *PERNODE)
THREADS = 4


@dataclass(frozen=True)
class Size:
    models: int
    repetitions: int  # of the core variants (bare, producers), alternated
    pernode_repetitions: int = 0  # of the per-node variants (c); 0: not measured at this size
    sampled_models: int = 10
    warm_up: bool = True  # one bare build first (partial parse, DuckDB file, OS caches): fair, not needed to smoke


#: The default series (``nox -s bench``: ~15 min of it); ``--large`` adds 1,000 models; ``--quick`` is a smoke.
#: Even repetition counts: as many forward passes of the alternation as backward ones.
SIZES = (Size(50, 6, 2), Size(200, 4, 1))
LARGE = Size(1000, 3, 0)
QUICK = (Size(20, 3, 1, 3),)
TINY = (Size(2, 1, 1, 1, warm_up=False),)  # the smoke test's: every variant once, in seconds


# ------------------------------------------------------------------------------------------ children


def _dbt_args(project: str) -> list[str]:
    return ["--project-dir", project, "--profiles-dir", project]


def child_bare(project: str) -> dict[str, Any]:
    from dbt.cli.main import dbtRunner  # imported before the clock starts

    reset_peak_rss()  # as the producer does: both peaks are of the build alone
    clock = Clock()
    res = dbtRunner().invoke(["build", *_dbt_args(project)])
    out = clock.read()
    if res.exception is not None or not res.success:
        raise SystemExit(f"bare build failed: {res.exception}")
    return {**out, "nodes": len(res.result.results)}


def _time_publisher_thread() -> list[float]:
    """Instrumentation only: the CPU time of the producer's publisher thread (its whole ``anyio.run``: start-up,
    connecting, every publish, the ending), summed into the returned list when the thread ends. The rest of
    the producer's cost is the callback on dbt's threads (bench/callback_cost.py: a few hundred ns an event)."""
    import anyio

    spent: list[float] = []
    real_run = anyio.run

    def timed_run(*args: Any, **kwargs: Any) -> Any:
        if not threading.current_thread().name.startswith("dbtbus-publisher"):
            return real_run(*args, **kwargs)
        start = time.thread_time()
        try:
            return real_run(*args, **kwargs)
        finally:
            spent.append(time.thread_time() - start)

    anyio.run = timed_run
    return spent


def child_producer_only(project: str, url: str) -> dict[str, Any]:
    from dbt.cli.main import dbtRunner  # noqa: F401 - imported before the clock starts

    # What a bare build does not load, imported before the clock in three steps so each has its figure:
    # the async runtime the publisher thread runs on, the backend's client library, dbtbus's own modules.
    parts: dict[str, int] = {}
    rss = vm_rss() or 0
    steps: list[tuple[str, tuple[str, ...]]] = [("asyncio + anyio", ("asyncio", "anyio", "anyio._backends._asyncio"))]
    if url.startswith("redis"):
        steps.append(("redis-py", ("redis.asyncio",)))
    backend = "dbtbus.backends.redis" if url.startswith("redis") else "dbtbus.backends.memory"
    steps.append(("dbtbus", ("dbtbus.producer", backend)))
    for part, modules in steps:
        for module in modules:
            importlib.import_module(module)
        now = vm_rss() or 0
        parts[part], rss = now - rss, now
    from dbtbus.producer import Producer

    publisher_cpu = _time_publisher_thread()
    run_id = f"e2e-{uuid.uuid4().hex[:8]}"
    clock = Clock()
    result = Producer(url, run_id=run_id).invoke(["build", *_dbt_args(project)])  # resets the peak itself
    out = clock.read()
    if result.crashed or not result.success:
        raise SystemExit(f"producer run failed: {result.error}")
    for thread in threading.enumerate():  # the thread records its CPU as it ends, just after invoke returns
        if thread.name.startswith("dbtbus-publisher"):
            thread.join(30)
    return {**out, "peak_rss_producer": result.peak_rss, "peak_rss_scope": result.peak_rss_scope,
            "imports_rss": sum(parts.values()), "imports_parts": parts, "publisher_cpu": sum(publisher_cpu)}


def child_producer(project: str, url: str, nodes: list[str]) -> dict[str, Any]:
    import anyio
    import anyio.to_thread
    from dbt.cli.main import dbtRunner  # noqa: F401 - imported before the clock starts

    import dbtbus
    from dbtbus.producer import Producer

    if url.startswith("redis"):
        import redis.asyncio  # noqa: F401 - imported before the clock starts

    publisher_cpu = _time_publisher_thread()
    run_id = f"e2e-{uuid.uuid4().hex[:8]}"
    args = ["build", *_dbt_args(project)]
    out: dict[str, Any] = {}

    async def main() -> None:
        async with dbtbus.connect(url) as bus:
            returned: list[float] = []
            producer_done: list[float] = []

            async def waiter(uid: str) -> None:
                await bus.wait(run_id, uid, timeout=900)
                returned.append(time.perf_counter())

            async def produce() -> None:
                result = await anyio.to_thread.run_sync(Producer(url, run_id=run_id).invoke, args)
                producer_done.append(time.perf_counter())
                if result.crashed or not result.success:
                    raise SystemExit(f"producer run failed: {result.error}")

            clock = Clock()
            start = clock.wall0
            loop_cpu0 = time.thread_time()
            async with anyio.create_task_group() as tg:
                for uid in nodes:
                    tg.start_soon(waiter, uid)
                tg.start_soon(produce)
            out.update(clock.read())  # CPU up to the last waiter's return (the task group has just exited)
            out["waiting_loop_cpu"] = time.thread_time() - loop_cpu0
            out["wall"] = max(returned) - start
            out["producer_returned"] = producer_done[0] - start
            out["waiters"] = len(returned)
            await bus.delete_run(run_id)

    anyio.run(main)
    for thread in threading.enumerate():  # the thread records its CPU as it ends, just after invoke returns
        if thread.name.startswith("dbtbus-publisher"):
            thread.join(30)
    out["publisher_cpu"] = sum(publisher_cpu)
    return out


def child_pernode(kind: str, project: str, sample: list[list[str]]) -> dict[str, Any]:
    """Run each sampled node with its own dbt invocation, in order; return the wall of each."""
    if kind == "pernode-dbtrunner":
        from dbt.cli.main import dbtRunner  # imported before the clock starts
    run_results = Path(project) / "target" / "run_results.json"
    walls: list[float] = []
    cpus: list[float] = []
    reset_peak_rss()
    for uid, command, selector in sample:
        args = [command, "--select", selector, *_dbt_args(project)]
        clock = Clock()
        if kind == "pernode-dbtrunner":
            res = dbtRunner().invoke(args)
            ok = res.exception is None and bool(res.success)
        else:
            proc = subprocess.run([DBT, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            ok = proc.returncode == 0
        took = clock.read()
        walls.append(took["wall"])
        cpus.append(took["cpu"])
        done = json.loads(run_results.read_text())["results"]
        if not ok or [r["unique_id"] for r in done] != [uid]:
            ran = [r["unique_id"] for r in done]
            raise SystemExit(f"{kind}: {' '.join(args[:3])} did not run exactly {uid}: {ran}")
    peak = children_peak_rss() if kind == "pernode-subprocess" else self_peak_rss()
    return {"walls": walls, "cpus": cpus, "peak_rss_dbt": peak}


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--url", default="")
    parser.add_argument("--nodes-file", default="")
    opts = parser.parse_args(argv)
    data = json.loads(Path(opts.nodes_file).read_text()) if opts.nodes_file else {}
    if opts.child == BASELINE:
        out = child_bare(opts.project)
    elif opts.child in PRODUCERS:
        out = child_producer(opts.project, opts.url, data["nodes"])
    elif opts.child in PRODUCER_ONLY:
        out = child_producer_only(opts.project, opts.url)
    elif opts.child in PERNODE:
        out = child_pernode(opts.child, opts.project, data["sample"])
    else:
        raise SystemExit(f"unknown variant {opts.child}")
    out["peak_rss_self"] = self_peak_rss()
    emit(out)


# ------------------------------------------------------------------------------------------ parent


def resource_of(uid: str) -> str:
    return uid.split(".", 1)[0]


def command_for(uid: str) -> list[str]:
    """``[unique_id, dbt command, selector]`` that runs exactly this node."""
    kind, _, rest = uid.partition(".")
    name = rest.split(".")[1]
    command = {"seed": "seed", "model": "run", "test": "test", "snapshot": "snapshot"}[kind]
    return [uid, command, name]


def topological(project: Any) -> list[str]:
    """Seed, then each model followed by its tests: a dependency order (a model's parents come earlier)."""
    tests_of: dict[str, list[str]] = {}
    for test in project.tests:
        tests_of.setdefault(project.parents[test][0], []).append(test)
    order = [project.seed]
    for model in project.models:
        order += [model, *tests_of.get(model, [])]
    return order


def stratified_sample(project: Any, models: int) -> list[str]:
    """The seed, ``models`` evenly spaced models and their tests, in dependency order."""
    n = len(project.models)
    picks = sorted({round(i * (n - 1) / max(models - 1, 1)) for i in range(min(models, n))})
    chosen = {project.models[i] for i in picks}
    chosen.add(project.seed)
    chosen |= {t for t in project.tests if project.parents[t][0] in chosen}
    return [uid for uid in topological(project) if uid in chosen]


def extrapolate(sample: list[str], values: list[float], counts: dict[str, int]) -> dict[str, Any]:
    """Σ over resource types of (mean of that type in the sample) × (number of nodes of that type)."""
    by_type: dict[str, list[float]] = {}
    for uid, value in zip(sample, values, strict=True):
        by_type.setdefault(resource_of(uid), []).append(value)
    means = {kind: statistics.fmean(v) for kind, v in by_type.items()}
    total = sum(means[kind] * count for kind, count in counts.items())
    return {"estimate": total, "mean_per_type": means, "sampled": sum(values), "sampled_nodes": len(values)}


def _run_variant(variant: str, project: Path, url: str, nodes_file: Path) -> dict[str, Any]:
    cmd = [PY, "-m", "bench.end_to_end", "--child", variant, "--project", str(project), "--url", url,
           "--nodes-file", str(nodes_file)]
    child = run_child(cmd, timeout=3600)
    data = child_json(child, f"end_to_end {variant}")
    data["process_wall"] = child.wall
    data["process_cpu"] = child.cpu  # the whole child: interpreter start, imports, teardown included
    return data


def peak_rss(run: dict[str, Any]) -> int:
    """The peak RSS of dbt's process: the child's own VmHWM, or the largest dbt CLI child's ru_maxrss.

    Not ``os.wait4``'s ru_maxrss of the child: Linux folds the parent's RSS at fork time into it (the old mm's
    high-water mark is kept across exec), so a large parent (this suite, an Airflow worker) inflates it.
    """
    return int(run.get("peak_rss_dbt") or run["peak_rss_self"])


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for variant, rs in runs.items():
        if not rs:
            continue
        summary[variant] = {
            "wall": stat([r["wall"] for r in rs]),
            "cpu": stat([r["cpu"] for r in rs]),
            "peak_rss": stat([peak_rss(r) for r in rs]),
        }
        if all("publisher_cpu" in r for r in rs):
            summary[variant]["publisher_cpu"] = stat([r["publisher_cpu"] for r in rs])
        if all("waiting_loop_cpu" in r and "publisher_cpu" in r for r in rs):
            summary[variant]["waiting_loop_cpu"] = stat([r["waiting_loop_cpu"] for r in rs])
            # dbtbus's own CPU in (b), measured per thread: the other threads' and processes' swings stay out
            summary[variant]["own_cpu"] = stat([r["publisher_cpu"] + r["waiting_loop_cpu"] for r in rs])
        if variant in PERNODE:
            summary[variant]["mean_per_type"] = {
                k: statistics.median(r["mean_per_type"][k] for r in rs) for k in rs[0]["mean_per_type"]
            }
    return summary


def _ratios(runs: dict[str, list[dict[str, Any]]], summary: dict[str, Any], key: str) -> dict[str, Any]:
    base = summary[BASELINE][key]
    out: dict[str, Any] = {}
    for v in runs:
        if v == BASELINE or not runs[v]:
            continue
        per = [ratio(a[key], b[key]) for a, b in zip(runs[v], runs[BASELINE], strict=False)]  # paired
        out[f"{v}/{BASELINE}"] = {
            "of_medians": ratio(summary[v][key]["median"], base["median"]),
            "of_mins": ratio(summary[v][key]["min"], base["min"]),
            "per_repetition": per,
        }
    return out


def _overhead(summary: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Peak RSS of each producer variant over the bare build's (medians), bytes.

    For the producer alone, ``imports_rss`` is what importing dbtbus's producer (and redis-py) adds before the
    run — a one-off cost of any process that uses the library — and ``run_over_bare`` the rest: the
    invocation's own memory (publisher thread, records, buffers) over a bare build's.
    """
    base = summary[BASELINE]["peak_rss"]["median"]
    out: dict[str, Any] = {}
    for v in (*PRODUCERS, *PRODUCER_ONLY):
        if v not in summary:
            continue
        over = summary[v]["peak_rss"]["median"] - base
        out[v] = {"peak_rss_over_bare": over,
                  "peak_rss_over_bare_min": summary[v]["peak_rss"]["min"] - summary[BASELINE]["peak_rss"]["min"]}
        imports = [r["imports_rss"] for r in runs[v] if "imports_rss" in r]
        if imports:
            out[v]["imports_rss"] = statistics.median(imports)
            out[v]["run_over_bare"] = over - statistics.median(imports)
        parts = [r["imports_parts"] for r in runs[v] if "imports_parts" in r]
        if parts and len(parts) == len(runs[v]):
            out[v]["imports_parts"] = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
            # dbtbus's own share: its modules and what the run adds, not the libraries it stands on
            out[v]["dbtbus_own"] = out[v]["imports_parts"]["dbtbus"] + out[v]["run_over_bare"]
    return out


def measure_size(size: Size, tmp: Path, redis_url: str) -> tuple[dict[str, Any], list[Run]]:
    from dbtbus.testing.projects import generate_project

    project = generate_project(tmp / f"p{size.models}", models=size.models, tests_per_model=1, threads=THREADS)
    counts: dict[str, int] = {}
    for uid in project.nodes:
        counts[resource_of(uid)] = counts.get(resource_of(uid), 0) + 1
    sample = stratified_sample(project, size.sampled_models)
    nodes_file = tmp / f"p{size.models}.json"
    nodes_file.write_text(json.dumps({"nodes": list(project.nodes), "sample": [command_for(u) for u in sample]}))
    if size.warm_up:
        log(f"end_to_end: {size.models} models ({len(project.nodes)} nodes), warm-up build")
        _run_variant(BASELINE, project.path, redis_url, nodes_file)  # partial parse, DuckDB file, OS caches
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    loads: list[float] = []
    for rep in range(max(size.repetitions, size.pernode_repetitions)):
        variants = [v for v in CORE if rep < size.repetitions]
        variants += [v for v in PERNODE if rep < size.pernode_repetitions]
        order = variants if rep % 2 == 0 else list(reversed(variants))
        for variant in order:
            loads.append(os.getloadavg()[0])
            url = redis_url if variant.endswith("-redis") else "memory://bench-e2e"
            data = _run_variant(variant, project.path, url, nodes_file)
            if variant in PERNODE:
                walls = extrapolate(sample, data["walls"], counts)
                data.update(walls)
                data["wall"] = walls["estimate"]
                data["cpu"] = extrapolate(sample, data["cpus"], counts)["estimate"]
            runs[variant].append(data)
            log(f"  {size.models} models rep {rep + 1} {variant:>20}: wall {data['wall']:8.2f} s, "
                f"CPU {data['cpu']:8.2f} s, peak RSS {peak_rss(data) / 2**20:.1f} MiB")
    summary = summarise(runs)
    return {
        "models": size.models,
        "nodes": len(project.nodes),
        "counts": counts,
        "repetitions": size.repetitions,
        "pernode_repetitions": size.pernode_repetitions,
        "sample": sample,
        "summary": summary,
        "ratios": _ratios(runs, summary, "wall"),
        "cpu_ratios": _ratios(runs, summary, "cpu"),
        "overhead": _overhead(summary, runs),
        "load_average": stat(loads),
    }, [Run(variant=v, round=i, wall_s=r["wall"], cpu_s=r["cpu"], peak_rss_bytes=peak_rss(r),
            labels={"models": size.models, **{k: x for k, x in r.items() if k not in ("wall", "cpu")
                                             and isinstance(x, (int, float, str))}})
        for v, rs in runs.items() for i, r in enumerate(rs)]


def _carried_over(results_dir: Path, measured: set[int]) -> list[dict[str, Any]]:
    """The earlier results' sizes this run did not measure (the 1,000-model point without ``--large``), each
    marked with when it was measured: a default run must not drop the point from the page."""
    data = load_results(results_dir).get(NAME)
    if data is None or data["params"].get("quick"):
        return []
    kept = []
    for project in data["figures"].get("projects", []):
        if project.get("models") in measured:
            continue
        project.setdefault("carried_over", {"measured": data["date"], "cpu_model": data["machine"].get("cpu_model")})
        kept.append(project)
    return kept


@benchmark(name=NAME, order=90, redis=True)
def run(opts: Options) -> Measured:
    sizes = list(TINY if opts.tiny else QUICK if opts.quick else SIZES)
    if opts.large:
        sizes.append(LARGE)
    tmp = Path(tempfile.mkdtemp(prefix="dbtbus-bench-e2e-"))
    projects: list[dict[str, Any]] = []
    runs: list[Run] = []
    with redis_url(opts) as url:
        for size in sizes:
            project, project_runs = measure_size(size, tmp, url)
            projects.append(project)
            runs += project_runs
    notes = []
    if not opts.quick:
        kept = _carried_over(opts.results_dir, {p["models"] for p in projects})
        projects += kept
        notes += [f"{p['models']} models: carried over from the run of {p['carried_over']['measured']}" for p in kept]
    return Measured(
        params={"large": opts.large, "threads": THREADS, "tests_per_model": 1,
                "models": [p["models"] for p in projects]},
        figures={"projects": projects}, runs=runs, notes=notes,
    )


def main(argv: list[str] | None = None) -> None:
    standalone(NAME, argv, child=child_main)


if __name__ == "__main__":
    main()
