"""Airflow under a real scheduler: bare ``dbt build`` vs dbtbus (Redis, XCom) vs cosmos watcher.

Not a test. Needs a virtualenv with apache-airflow 3, psycopg2-binary and asyncpg (``nox -s airflow_live``
builds one), PostgreSQL on 127.0.0.1:5432 (trust auth) and ``redis-server``; astronomer-cosmos is optional
(``--cosmos``: it must be importable, it is never a dbtbus dependency). One deployment — api-server,
scheduler (LocalExecutor, parallelism 4), dag-processor, triggerer, each its own process group, stopped at
the end — runs every variant on the same generated project, alternating variants within each repeat:

* ``bare``           — one PythonOperator running ``dbtRunner().invoke(["build", ...])``;
* ``dbtbus-redis``   — ``render_dbt_task_group`` on a throw-away redis-server;
* ``dbtbus-xcom``    — the same on ``xcom://?poll=0.2``;
* ``cosmos-watcher`` — astronomer-cosmos ``DbtDag`` in ``ExecutionMode.WATCHER``.

Per run: DAG wall (dag_run end − start), producer task, tail (DAG end − producer end), sensor tasks that
ran on a worker (queued at least once), and the triggerer's RSS after the run.

    .nox/airflow_live/bin/python bench/airflow_live.py --models 50 --repeat 3 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
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

DAG_FILE = '''"""dbtbus benchmark DAGs (airflow dag file)."""
import os
import sys
from pathlib import Path

from airflow.sdk import DAG

PROJECT = Path(os.environ["DBTBUS_BENCH_PROJECT"])
MANIFEST = PROJECT / "manifest.render.json"
ARGS = ["build", "--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT)]

with DAG("bench_bare", schedule=None, catchup=False) as bare:
    from airflow.providers.standard.operators.python import PythonOperator

    def build():
        from dbt.cli.main import dbtRunner

        if not dbtRunner().invoke(ARGS).success:
            raise RuntimeError("dbt build failed")

    PythonOperator(task_id="dbt_producer", python_callable=build)

from dbtbus.airflow import render_dbt_task_group

for name, url in (("redis", os.environ["DBTBUS_BENCH_REDIS"]), ("xcom", "xcom://?poll=0.2")):
    with DAG(f"bench_dbtbus_{name}", schedule=None, catchup=False) as dag:
        render_dbt_task_group(MANIFEST, url, ARGS, group_id="dbt", sensor_kwargs={"timeout": 900})
    globals()[f"bench_dbtbus_{name}"] = dag

if os.environ.get("DBTBUS_BENCH_COSMOS") == "1":
    from cosmos import DbtDag, ExecutionConfig, ProfileConfig, ProjectConfig
    from cosmos.constants import ExecutionMode

    bench_cosmos = DbtDag(
        dag_id="bench_cosmos", schedule=None, catchup=False,
        project_config=ProjectConfig(str(PROJECT)),
        profile_config=ProfileConfig(profile_name="gen", target_name="dev",
                                     profiles_yml_filepath=str(PROJECT / "profiles.yml")),
        execution_config=ExecutionConfig(execution_mode=ExecutionMode.WATCHER,
                                         dbt_executable_path=str(Path(sys.executable).parent / "dbt")),
        operator_args={"install_deps": False},
    )
'''

VARIANTS = {"bare": "bench_bare", "dbtbus-redis": "bench_dbtbus_redis", "dbtbus-xcom": "bench_dbtbus_xcom",
            "cosmos-watcher": "bench_cosmos"}


def _triggerer_rss(af: Deployment) -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    proc = af.procs.get("triggerer")
    if proc is None:
        return None
    try:
        root = psutil.Process(proc.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        return None


def one(af: Deployment, variant: str) -> dict[str, Any]:
    dag_id = VARIANTS[variant]
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    af.trigger(dag_id, run_id)
    state = af.wait_run(dag_id, run_id, timeout=1200)
    start, end = af.dag_run_times(dag_id, run_id)
    tasks = af.tasks(dag_id, run_id)
    producer = next((t for k, t in tasks.items() if "producer" in k), None)
    sensors = [t for k, t in tasks.items() if "producer" not in k and "carrier" not in k]
    assert start is not None and end is not None
    out: dict[str, Any] = {"variant": variant, "state": state, "dag_wall": end - start, "sensors": len(sensors),
                           "sensor_worker_runs": sum(1 for t in sensors if t.queued),
                           "triggerer_rss": _triggerer_rss(af)}
    if producer is not None and producer.start is not None and producer.end is not None:
        out["producer"] = producer.end - producer.start
        out["tail"] = end - producer.end
    return out


def _median(values: list[float]) -> str:
    if not values:
        return "–"
    mid = statistics.median(values)
    return f"{mid:.1f} s ({min(values):.1f}–{max(values):.1f})"


def render(results: dict[str, Any]) -> str:
    runs = results["runs"]
    bare = [r["dag_wall"] for r in runs if r["variant"] == "bare"]
    lines = [
        SECTION, "",
        f"`bench/airflow_live.py`: {results['models']} models ({results['nodes']} dbt nodes), Airflow "
        f"{results['airflow']}, LocalExecutor (parallelism 4), PostgreSQL metadata DB, "
        f"{results['repeat']} run(s) per variant alternating, on {results['machine']}. Median (min–max). "
        "The triggerer's RSS is its whole process tree after the run (it grows with the runs before it).", "",
        "| | DAG run wall | ÷ bare | producer task | DAG end − producer end | sensors run on a worker |"
        " triggerer RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
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
            f"| {variant}{'' if green else ' (not all green)'} | {_median(walls)} | {ratio} | "
            f"{_median([r['producer'] for r in mine if 'producer' in r])} | {tail} | {sensors} | {rss_text} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--variants", nargs="*", default=["bare", "dbtbus-redis", "dbtbus-xcom"])
    parser.add_argument("--cosmos", action="store_true", help="add cosmos-watcher (astronomer-cosmos importable)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "airflow_live.json")
    parser.add_argument("--write", type=Path, help="replace the section in this markdown file")
    args = parser.parse_args()
    variants = list(args.variants) + (["cosmos-watcher"] if args.cosmos else [])

    from dbtbus.testing.projects import generate_project
    from dbtbus.testing.redis_server import RedisServer

    work = Path(tempfile.mkdtemp(prefix="af-live-bench-")).resolve()
    project = generate_project(work / "proj", models=args.models, tests_per_model=1, name="gen")
    subprocess.run([str(BIN / "dbt"), "parse", "--project-dir", str(project.path), "--profiles-dir",
                    str(project.path)], check=True, capture_output=True, cwd=project.path)
    shutil.copy(project.path / "target" / "manifest.json", project.path / "manifest.render.json")
    runs: list[dict[str, Any]] = []
    with RedisServer() as redis:
        env = {"DBTBUS_BENCH_PROJECT": str(project.path), "DBTBUS_BENCH_REDIS": redis.url,
               "DBTBUS_BENCH_COSMOS": "1" if args.cosmos else "0"}
        home = work / "airflow-home"
        home.mkdir()
        with Deployment(home, BIN, env) as af:
            (af.dags / "dbtbus_bench_dags.py").write_text(DAG_FILE)
            for repeat in range(args.repeat):
                for variant in variants:
                    result = one(af, variant)
                    result["repeat"] = repeat
                    print(json.dumps(result), flush=True)
                    runs.append(result)
    from importlib.metadata import version

    results = {"models": args.models, "nodes": len(project.nodes), "repeat": args.repeat, "runs": runs,
               "airflow": version("apache-airflow"),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
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
