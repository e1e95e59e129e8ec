"""Airflow DAG wall time under ``dag.test()``: the rendered dbtbus group vs a bare ``dbt build`` task.

Not a test. Needs a virtualenv with apache-airflow 3 (``nox -s airflow`` builds one) and ``redis-server``.
Every measurement runs in a fresh interpreter with a freshly generated project (same shape every time):

* ``bare``          — one PythonOperator running ``dbtRunner().invoke(["build", ...])``;
* ``dbtbus-redis``  — ``render_dbt_task_group`` on a Redis bus: producer + one sensor per model/seed;
* ``dbtbus-xcom``   — the same on the ``xcom://`` bus (default 0.5 s poll);
* ``cosmos-watcher``— astronomer-cosmos ``DbtDag`` in ``ExecutionMode.WATCHER`` (only with ``--cosmos-path``,
  a directory holding cosmos installed with ``pip install --target``, kept out of the test virtualenv).

``dag.test()`` runs one task at a time in-process (deferred tasks run their trigger inline), so the root
sensors are made to wait for the producer (``sensors_after_producer=True``; the same ``all_done`` rule is
applied to cosmos's root consumers, whose ``always`` rule would otherwise let a consumer block the only slot
before its producer runs). The figures therefore measure the per-task overhead of each design on top of one
dbt build, not the concurrency a real scheduler + triggerer give.

    /work/airflow-venv/bin/python bench/airflow_dag.py --models 50 --repeat 3 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python bench/<script>.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import replace_doc_section

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
SECTION = "## Airflow"


def _register(dag: Any) -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    with create_session() as session:
        update_dag_parsing_results_in_db("dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(),
                                         session=session, files_parsed=set())


def _build_dag(variant: str, project: Path, bus: str, dag_id: str) -> Any:
    from airflow.sdk import DAG

    args = ["build", "--project-dir", str(project), "--profiles-dir", str(project)]
    if variant == "bare":
        from airflow.providers.standard.operators.python import PythonOperator

        def build() -> None:
            from dbt.cli.main import dbtRunner

            res = dbtRunner().invoke(args)
            if not res.success:
                raise RuntimeError("dbt build failed")

        with DAG(dag_id, schedule=None) as dag:
            PythonOperator(task_id="dbt_build", python_callable=build)
        return dag
    if variant.startswith("dbtbus"):
        from dbtbus.airflow import render_dbt_task_group

        with DAG(dag_id, schedule=None) as dag:
            render_dbt_task_group(project / "target" / "manifest.json", bus, args, group_id="dbt",
                                  sensor_kwargs={"timeout": 600}, sensors_after_producer=True)
        return dag
    if variant == "cosmos-watcher":
        from cosmos import DbtDag, ExecutionConfig, ProfileConfig, ProjectConfig
        from cosmos.constants import ExecutionMode

        dag = DbtDag(
            dag_id=dag_id,
            schedule=None,
            project_config=ProjectConfig(str(project)),
            profile_config=ProfileConfig(profile_name="gen", target_name="dev",
                                         profiles_yml_filepath=str(project / "profiles.yml")),
            execution_config=ExecutionConfig(execution_mode=ExecutionMode.WATCHER,
                                             dbt_executable_path=str(Path(sys.executable).parent / "dbt")),
            operator_args={"install_deps": False},
        )
        producer = next(t for t in dag.tasks if "producer" in t.task_id)
        for task in producer.downstream_list:
            task.trigger_rule = "all_done"
        return dag
    raise ValueError(variant)


def one(variant: str, models: int, bus: str) -> dict[str, Any]:
    """One measurement (in a fresh interpreter): generate, parse, then time ``dag.test()``."""
    from dbtbus.testing.projects import generate_project

    work = Path(tempfile.mkdtemp(prefix="af-bench-"))
    project = generate_project(work / "proj", models=models, tests_per_model=1, name="gen")
    subprocess.run([str(Path(sys.executable).parent / "dbt"), "parse", *project.dbt_args()], check=True,
                   capture_output=True)
    dag = _build_dag(variant, project.path, bus, f"bench_{variant.replace('-', '_')}_{os.getpid()}")
    _register(dag)
    start = time.perf_counter()
    dr = dag.test()
    wall = time.perf_counter() - start
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = dr.get_task_instances(session=session)
        task_states = {ti.task_id: str(ti.state) for ti in tis}
        producer = [ti for ti in tis if "producer" in ti.task_id or ti.task_id == "dbt_build"]
        dbt_time = (producer[0].end_date - producer[0].start_date).total_seconds() if producer else None
    bad = {k: v for k, v in task_states.items() if "success" not in v}
    return {"variant": variant, "wall": wall, "dbt_task": dbt_time, "tasks": len(task_states), "not_success": bad}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=["bare", "dbtbus-redis", "dbtbus-xcom", "cosmos-watcher"])
    parser.add_argument("--cosmos-path", default=None, help="a --target directory holding astronomer-cosmos")
    parser.add_argument("--write", default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bus", default="", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.one:
        print("RESULT " + json.dumps(one(opts.one, opts.models, opts.bus)))
        return

    from dbtbus.testing.redis_server import RedisServer

    home = Path(tempfile.mkdtemp(prefix="af-bench-home-"))
    (home / "dags").mkdir()
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}"}
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env, check=True,
                   capture_output=True)
    variants = list(opts.variants)
    if "cosmos-watcher" in variants and not opts.cosmos_path:
        variants.remove("cosmos-watcher")
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with RedisServer() as server:
        for _ in range(opts.repeat):
            for variant in variants:  # alternate the variants
                child_env = dict(env)
                if variant == "cosmos-watcher":
                    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [opts.cosmos_path, env.get("PYTHONPATH")]))
                bus = {"dbtbus-redis": server.url, "dbtbus-xcom": "xcom://"}.get(variant, "")
                proc = subprocess.run(
                    [sys.executable, str(HERE), "--one", variant, "--models", str(opts.models), "--bus", bus],
                    env=child_env, capture_output=True, text=True, timeout=1200,
                )
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if line is None:
                    print(f"{variant}: failed\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", file=sys.stderr)
                    results[variant].append({"variant": variant, "error": True})
                    continue
                result = json.loads(line[len("RESULT "):])
                print(result, flush=True)
                results[variant].append(result)
    rows = []
    for variant, runs in results.items():
        ok = [r for r in runs if not r.get("error")]
        if not ok:
            rows.append(f"| {variant} | failed | | | |")
            continue
        wall = statistics.median(r["wall"] for r in ok)
        dbt_times = [r["dbt_task"] for r in ok if r["dbt_task"] is not None]
        dbt = statistics.median(dbt_times) if dbt_times else float("nan")
        tasks = ok[0]["tasks"]
        green = all(not r["not_success"] for r in ok)
        rows.append(f"| {variant} | {tasks} | {wall:.1f} s | {dbt:.1f} s | {wall - dbt:.1f} s |"
                    f"{'' if green else ' (not all green: ' + str(ok[0]['not_success'])[:80] + ')'}")
    table = "\n".join(["| variant | tasks | DAG wall (median) | dbt task (median) | wall − dbt task |",
                       "|---|---:|---:|---:|---:|", *rows])
    print(table)
    if opts.write:
        write_section(Path(opts.write), table, opts)


def write_section(path: Path, table: str, opts: argparse.Namespace) -> None:
    import airflow

    body = (
        f"{SECTION}\n\n"
        f"`bench/airflow_dag.py`: Apache Airflow {airflow.__version__} `dag.test()` on sqlite, a generated "
        f"{opts.models}-model dbt-duckdb project (1 test per model, 4 threads), {opts.repeat} alternated runs "
        f"per variant, each in a fresh interpreter; {os.cpu_count()} CPUs, Python {platform.python_version()}.\n"
        "`dag.test()` runs one task at a time, so the root sensors start after the producer: the table shows\n"
        "the cost of one Airflow task per node on top of one dbt build, not the overlap a scheduler and a\n"
        "triggerer give (there, sensors wait in the triggerer while dbt runs and finish with their node).\n\n"
        f"{table}\n\n"
        "- *dbt task*: the producer task (for `bare`, the one task). The dbtbus producer costs about the bare\n"
        "  build on Redis; on XCom every record is one Execution-API call. cosmos's producer pushes 4–5 XComs\n"
        "  per node and re-serialises its whole state into a Variable per push, the O(N²) cost its users hit.\n"
        "- *wall − dbt task*: the per-node Airflow tasks. A dbtbus sensor whose node is already done answers with\n"
        "  a few key lookups and returns without deferring; cosmos renders a model task and a test task per\n"
        "  model (`TestBehavior.AFTER_EACH`), 102 tasks here.\n"
        "- cosmos: astronomer-cosmos 1.15.1, installed with `pip install --target` outside the test virtualenv\n"
        "  (it installs beside Airflow 3.3 without changing any package); its root consumers' `always` trigger\n"
        "  rule is changed to `all_done` for `dag.test()`, like dbtbus's `sensors_after_producer=True`.\n"
        "- 2-CPU VM shared with other jobs: expect ±30 % run-to-run noise (medians shown).\n"
    )
    replace_doc_section(path, SECTION, body)


if __name__ == "__main__":
    main()
