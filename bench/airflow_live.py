"""Airflow under a real scheduler: bare ``dbt build`` vs dbtbus (Redis, XCom) vs cosmos watcher.

Not a test. Needs a virtualenv with apache-airflow 3, psycopg2-binary and asyncpg (``nox -s airflow_live``
builds one), PostgreSQL on 127.0.0.1:5432 (trust auth) and ``redis-server``; astronomer-cosmos is optional
(``--cosmos``: it must be importable, it is never a dbtbus dependency). One deployment — api-server,
scheduler (LocalExecutor, parallelism 4), dag-processor, triggerer, each its own process group, stopped at
the end — runs every variant on the same generated project, alternating variants within each repeat:

* ``bare``           — one PythonOperator running ``dbtRunner().invoke(["build", ...])``;
* ``dbtbus-redis``   — ``render_dbt_task_group`` on a throw-away redis-server;
* ``dbtbus-xcom``    — the same on ``xcom://?poll=0.2``;
* ``cosmos-watcher`` — astronomer-cosmos ``DbtDag`` in ``ExecutionMode.WATCHER``;
* ``dbtbus-redis-failing`` — dbtbus on Redis on a copy of the project where the model with the most
  descendants fails: the time from the failure's publication (the node's ``finished_at`` in its record; the
  producer publishes it within milliseconds) to the failing task and every descendant's task being terminal.

Per run: DAG wall (dag_run end − start), producer task, tail (DAG end − producer end), sensor tasks that
ran on a worker (queued at least once), and the triggerer's RSS after the run. Several sizes share one
deployment (``--models 50 200 --repeat 3 1``: 3 rounds at 50 models, 1 at 200).

    .nox/airflow_live/bin/python bench/airflow_live.py --models 50 200 --repeat 3 1 --cosmos --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python bench/<script>.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import replace_doc_section
from tests.airflow_live._deployment import Deployment

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
SECTION = "## Airflow under a real scheduler"
BIN = Path(sys.executable).parent

DAG_FILE = '''"""dbtbus benchmark DAG {which!r} for the {models}-model project (airflow dag file)."""
import os
import sys
from pathlib import Path

from airflow.sdk import DAG

WHICH = {which!r}
PROJECT = Path({project!r})
FAILING = Path({failing!r})
ARGS = ["build", "--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT)]

if WHICH == "bare":
    from airflow.providers.standard.operators.python import PythonOperator

    def build():
        from dbt.cli.main import dbtRunner

        if not dbtRunner().invoke(ARGS).success:
            raise RuntimeError("dbt build failed")

    with DAG("bench_bare_{models}", schedule=None, catchup=False) as bare:
        PythonOperator(task_id="dbt_producer", python_callable=build)

if WHICH in ("redis", "xcom", "redis_failing"):
    from dbtbus.airflow import render_dbt_task_group

    url = os.environ["DBTBUS_BENCH_REDIS"] if WHICH != "xcom" else "xcom://?poll=0.2"
    project = FAILING if WHICH == "redis_failing" else PROJECT
    args = ["build", "--project-dir", str(project), "--profiles-dir", str(project)]
    with DAG(f"bench_dbtbus_{{WHICH}}_{models}", schedule=None, catchup=False) as dag:
        render_dbt_task_group(project / "manifest.render.json", url, args, group_id="dbt",
                              sensor_kwargs={{"timeout": 1800}})

if WHICH == "cosmos":
    from cosmos import DbtDag, ExecutionConfig, ProfileConfig, ProjectConfig
    from cosmos.constants import ExecutionMode

    bench_cosmos = DbtDag(
        dag_id="bench_cosmos_{models}", schedule=None, catchup=False,
        project_config=ProjectConfig(str(PROJECT)),
        profile_config=ProfileConfig(profile_name="gen", target_name="dev",
                                     profiles_yml_filepath=str(PROJECT / "profiles.yml")),
        execution_config=ExecutionConfig(execution_mode=ExecutionMode.WATCHER,
                                         dbt_executable_path=str(Path(sys.executable).parent / "dbt")),
        operator_args={{"install_deps": False}},
    )
'''
#: One DAG file per variant: a task ended from the triggerer makes Airflow send the dag-processor a callback
#: request, which parses that task's DAG file — each variant pays for parsing its own DAG only.
DAG_FILES = {"bare": "bare", "dbtbus-redis": "redis", "dbtbus-xcom": "xcom", "dbtbus-redis-failing": "redis_failing",
             "cosmos-watcher": "cosmos"}

VARIANTS = {"bare": "bench_bare", "dbtbus-redis": "bench_dbtbus_redis", "dbtbus-xcom": "bench_dbtbus_xcom",
            "cosmos-watcher": "bench_cosmos", "dbtbus-redis-failing": "bench_dbtbus_redis_failing"}
LABELS = {"bare": "bare `dbt build` (one PythonOperator)", "dbtbus-redis": "dbtbus, Redis",
          "dbtbus-xcom": "dbtbus, XCom (`poll=0.2`)", "cosmos-watcher": "astronomer-cosmos watcher",
          "dbtbus-redis-failing": "dbtbus, Redis, one model failing"}


def _sum_over_tree(af: Deployment, name: str, measure: Any) -> float | None:
    """``measure(process)`` summed over an Airflow component's process and its live descendants (None without
    psutil, or when the component is gone); a descendant that ends meanwhile counts nothing."""
    try:
        import psutil
    except ImportError:
        return None
    proc = af.procs.get(name)
    if proc is None:
        return None
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for p in tree:
        with contextlib.suppress(psutil.Error):
            total += measure(p)
    return total


def _triggerer_rss(af: Deployment) -> int | None:
    rss = _sum_over_tree(af, "triggerer", lambda p: p.memory_info().rss)
    return None if rss is None else int(rss)


class _PeakSampler:
    """The highest value ``read()`` returned, sampled every ``interval`` seconds on a thread while in the block."""

    def __init__(self, read: Any, interval: float = 0.25) -> None:
        self.read, self.interval, self.value = read, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.value = max(self.value, self.read() or 0)

    def __enter__(self) -> _PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cpu_seconds(af: Deployment) -> dict[str, float]:
    """CPU seconds (user + system) each Airflow component has spent so far: its process and every live
    descendant (the LocalExecutor's workers, the task processes they run), each counting the children it
    reaped. A delta around one DAG run says who paid for it on this 2-core machine."""

    def cpu(p: Any) -> float:
        t = p.cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)

    spent = {name: _sum_over_tree(af, name, cpu) for name in af.procs}
    return {name: value for name, value in spent.items() if value is not None}


def _published_at(redis_url: str, dag_id: str, run_id: str, unique_id: str) -> float | None:
    """When the failing node's record says dbt finished it (the producer publishes it at once)."""
    import anyio

    import dbtbus
    from dbtbus.airflow import dbtbus_run_id

    async def look() -> float | None:
        async with dbtbus.connect(redis_url) as bus:
            outcome = await bus.outcome(dbtbus_run_id(dag_id, run_id, -1, "dbt"), unique_id, timeout=0)
        finished = getattr(outcome.record, "finished_at", None)
        return finished.timestamp() if finished is not None else None

    return anyio.run(look)


def one(af: Deployment, variant: str, models: int, failing: dict[str, Any], redis_url: str) -> dict[str, Any]:
    dag_id = f"{VARIANTS[variant]}_{models}"
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    cpu_before = _cpu_seconds(af)
    rss_before = _triggerer_rss(af)
    with _PeakSampler(lambda: _triggerer_rss(af)) as peak:
        af.trigger(dag_id, run_id)
        state = af.wait_run(dag_id, run_id, timeout=1200)
    cpu_after = _cpu_seconds(af)
    start, end = af.dag_run_times(dag_id, run_id)
    tasks = af.tasks(dag_id, run_id)
    producer = next((t for k, t in tasks.items() if "producer" in k), None)
    sensors = [t for k, t in tasks.items() if "producer" not in k and "carrier" not in k]
    assert start is not None and end is not None
    out: dict[str, Any] = {"variant": variant, "models": models, "state": state, "dag_wall": end - start,
                           "sensors": len(sensors), "sensor_worker_runs": sum(1 for t in sensors if t.queued),
                           "triggerer_rss": _triggerer_rss(af),
                           "triggerer_rss_rise": (peak.value - rss_before) if peak.value and rss_before else None,
                           "cpu": {k: cpu_after[k] - cpu_before[k] for k in cpu_after if k in cpu_before}}
    if producer is not None and producer.start is not None and producer.end is not None:
        out["producer"] = producer.end - producer.start
        out["tail"] = end - producer.end
    if variant == "dbtbus-redis-failing":
        published = _published_at(redis_url, dag_id, run_id, failing["unique_id"])
        doomed = [tasks.get(f"dbt.{name}") for name in [failing["name"], *failing["descendants"]]]
        ends = [t.end for t in doomed if t is not None and t.end is not None]
        out["doomed_tasks"], out["doomed_terminal"] = len(doomed), len(ends)
        if published is not None and len(ends) == len(doomed):
            out["failure_to_terminal"] = max(ends) - published
            out["doomed_before_producer_end"] = bool(producer and producer.end and max(ends) <= producer.end)
    return out


def _median(values: list[float]) -> str:
    if not values:
        return "–"
    mid = statistics.median(values)
    return f"{mid:.1f} s" if len(values) == 1 else f"{mid:.1f} s ({min(values):.1f}–{max(values):.1f})"


def render(results: dict[str, Any]) -> str:
    cosmos = f" astronomer-cosmos {results['cosmos']};" if results.get("cosmos") else ""
    lines = [
        SECTION, "",
        f"`bench/airflow_live.py`: one Airflow {results['airflow']} deployment (api-server, scheduler with "
        f"LocalExecutor and parallelism 4, dag-processor, triggerer; PostgreSQL metadata DB) on "
        f"{results['machine']}, measured {results['measured_at']};{cosmos} variants alternating within each "
        "round. Median (min–max) over the rounds. The triggerer's RSS is its whole process tree after the run "
        "(it grows with the runs before it).", "",
    ]
    for size in results["sizes"]:
        runs = size["runs"]
        bare = [r["dag_wall"] for r in runs if r["variant"] == "bare"]
        lines += [
            f"### {size['models']} models ({size['nodes']} dbt nodes), {size['repeat']} round(s)", "",
            "| | DAG run wall | ÷ bare | producer task | DAG end − producer end | sensors run on a worker |"
            " triggerer RSS |",
            "|---|---|---|---|---|---|---|",
        ]
        for variant in VARIANTS:
            mine = [r for r in runs if r["variant"] == variant]
            if not mine or variant == "dbtbus-redis-failing":
                continue
            walls = [r["dag_wall"] for r in mine]
            ratio = f"{statistics.median(walls) / statistics.median(bare):.2f}×" if bare else "–"
            rss = [r["triggerer_rss"] for r in mine if r.get("triggerer_rss")]
            green = all(r["state"] == "success" for r in mine)
            rss_text = f"{statistics.median(rss) / 2**20:.0f} MiB" if rss else "–"
            worker_runs = max(r["sensor_worker_runs"] for r in mine)
            sensors = "–" if variant == "bare" else f"{worker_runs} of {mine[0]['sensors']}"
            tail = "–" if variant == "bare" else _median([r["tail"] for r in mine if "tail" in r])
            lines.append(
                f"| {LABELS[variant]}{'' if green else ' (**not all green**)'} | {_median(walls)} | {ratio} | "
                f"{_median([r['producer'] for r in mine if 'producer' in r])} | {tail} | {sensors} | {rss_text} |"
            )
        lines += _cost_table(runs)
        failing = [r for r in runs if r["variant"] == "dbtbus-redis-failing"]
        if failing:
            pick = size["failing"]
            times = [r["failure_to_terminal"] for r in failing if "failure_to_terminal" in r]
            during = all(r.get("doomed_before_producer_end") for r in failing)
            complete = all(r["doomed_terminal"] == r["doomed_tasks"] for r in failing)
            lines += [
                "",
                f"One model failing (`{pick['name']}`, {len(pick['descendants'])} model descendants): from the "
                f"failure's publication to its task and all its descendants' tasks terminal: **{_median(times)}**"
                + ("" if complete else " (**some never ended**)")
                + (", every one of them before the producer task ended" if during else "")
                + f"; the DAG run ended `{failing[0]['state']}` after {_median([r['dag_wall'] for r in failing])}.",
            ]
        lines.append("")
    return "\n".join(lines)


def _cost_table(runs: list[dict[str, Any]]) -> list[str]:
    """Who paid for each variant on the shared machine: CPU seconds per Airflow component during the DAG run
    (medians; dbt runs in a task process under the scheduler's LocalExecutor), and the triggerer's peak RSS
    rise during the run per sensor."""
    if not any(r.get("cpu") for r in runs):
        return []
    lines = ["", "| | CPU: scheduler + its workers (dbt) | triggerer | dag-processor | api-server "
             "| triggerer peak RSS rise per sensor |", "|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant and r.get("cpu")]
        if not mine:
            continue

        def cpu(name: str, mine: list[dict[str, Any]] = mine) -> str:
            values = [r["cpu"][name] for r in mine if name in r["cpu"]]
            return f"{statistics.median(values):.1f} s" if values else "–"

        rises = [r["triggerer_rss_rise"] / r["sensors"] for r in mine if r.get("triggerer_rss_rise") and r["sensors"]]
        rise = f"{statistics.median(rises) / 1024:.0f} KB" if rises else "–"
        lines.append(f"| {LABELS[variant]} | {cpu('scheduler')} | {cpu('triggerer')} | {cpu('dag-processor')} "
                     f"| {cpu('api-server')} | {rise} |")
    return lines


def _failing_pick(project: Any) -> dict[str, Any]:
    """The model with the most model descendants (ties: the earliest), and those descendants' names."""
    from dbtbus._graph import descendants

    children: dict[str, list[str]] = {}
    for uid in project.models:
        for parent in project.parents.get(uid, ()):
            children.setdefault(parent, []).append(uid)
    below = {uid: descendants(children, uid) for uid in project.models}
    order = {uid: i for i, uid in enumerate(project.models)}
    best = max(project.models, key=lambda uid: (len(below[uid]), -order[uid]))
    return {"unique_id": best, "name": best.rsplit(".", 1)[1],
            "descendants": sorted(d.rsplit(".", 1)[1] for d in below[best])}


def _prepare(work: Path, models: int) -> tuple[Any, dict[str, Any], Path]:
    from dbtbus.testing.projects import generate_project

    project = generate_project(work / f"proj{models}", models=models, tests_per_model=1, name="gen")
    failing = _failing_pick(project)
    failed = generate_project(work / f"proj{models}_failing", models=models, tests_per_model=1, name="gen",
                              failing=[failing["name"]])
    for path in (project.path, failed.path):
        subprocess.run([str(BIN / "dbt"), "parse", "--project-dir", str(path), "--profiles-dir", str(path)],
                       check=True, capture_output=True, cwd=path)
        shutil.copy(path / "target" / "manifest.json", path / "manifest.render.json")
    return project, failing, failed.path


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, nargs="+", default=[50])
    parser.add_argument("--repeat", type=int, nargs="+", default=[1],
                        help="rounds per size, in the order of --models (the last one repeats)")
    parser.add_argument("--variants", nargs="*",
                        default=["bare", "dbtbus-redis", "dbtbus-xcom", "dbtbus-redis-failing"])
    parser.add_argument("--cosmos", action="store_true", help="add cosmos-watcher (astronomer-cosmos importable)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "airflow_live.json")
    parser.add_argument("--write", type=Path, help="replace the section in this markdown file")
    args = parser.parse_args()
    variants = list(args.variants) + (["cosmos-watcher"] if args.cosmos else [])

    from dbtbus.testing.redis_server import RedisServer

    work = Path(tempfile.mkdtemp(prefix="af-live-bench-")).resolve()
    prepared = {models: _prepare(work, models) for models in args.models}
    sizes: list[dict[str, Any]] = []
    with RedisServer() as redis:
        env = {"DBTBUS_BENCH_REDIS": redis.url}
        home = work / "airflow-home"
        home.mkdir()
        with Deployment(home, BIN, env) as af:
            for models, (project, _, failing_path) in prepared.items():
                for variant in variants:
                    which = DAG_FILES[variant]
                    (af.dags / f"dbtbus_bench_{models}_{which}.py").write_text(DAG_FILE.format(
                        which=which, models=models, project=str(project.path), failing=str(failing_path)))
            for index, models in enumerate(args.models):
                project, failing, _ = prepared[models]
                rounds = args.repeat[min(index, len(args.repeat) - 1)]
                runs: list[dict[str, Any]] = []
                for round_ in range(rounds):
                    for variant in variants:
                        result = one(af, variant, models, failing, redis.url)
                        result["repeat"] = round_
                        print(json.dumps(result), flush=True)
                        runs.append(result)
                sizes.append({"models": models, "nodes": len(project.nodes), "repeat": rounds, "runs": runs,
                              "failing": failing})
    from importlib.metadata import version

    results = {"sizes": sizes, "airflow": version("apache-airflow"),
               "cosmos": _version("astronomer-cosmos") if args.cosmos else None,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
               "load_average_at_end": list(os.getloadavg()),
               "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    text = render(results)
    print(text)
    if args.write:
        replace_doc_section(args.write, SECTION, text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
