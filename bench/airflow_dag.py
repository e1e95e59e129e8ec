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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python bench/<script>.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._harness import (
    RESULTS_DIR,
    Measured,
    Options,
    Run,
    benchmark,
    compile_bytecode,
    now,
    stat,
    wrap,
    write_result,
)

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
NAME = "airflow_dag"


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


VARIANTS = ("bare", "dbtbus-redis", "dbtbus-xcom", "cosmos-watcher")


@benchmark(name=NAME, order=100, interpreter="airflow")
def run(opts: Options) -> Measured:
    """``dag.test()`` of each variant, alternated; cosmos only where ``$DBTBUS_BENCH_COSMOS_PATH`` holds it."""
    models = 5 if opts.tiny else 50
    repeat = 1 if opts.quick else 3
    return measure(models, repeat, list(VARIANTS), os.environ.get("DBTBUS_BENCH_COSMOS_PATH"))


def measure(models: int, repeat: int, variants: list[str], cosmos_path: str | None) -> Measured:
    from dbtbus.testing.redis_server import RedisServer

    home = Path(tempfile.mkdtemp(prefix="af-bench-home-"))
    (home / "dags").mkdir()
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}"}
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env, check=True,
                   capture_output=True)
    variants = list(variants)
    if "cosmos-watcher" in variants and not cosmos_path:
        variants.remove("cosmos-watcher")
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with RedisServer() as server:
        for round_ in range(repeat):
            for variant in variants:  # alternate the variants
                child_env = dict(env)
                if variant == "cosmos-watcher":
                    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [cosmos_path, env.get("PYTHONPATH")]))
                bus = {"dbtbus-redis": server.url, "dbtbus-xcom": "xcom://"}.get(variant, "")
                proc = subprocess.run(
                    [sys.executable, str(HERE), "--one", variant, "--models", str(models), "--bus", bus],
                    env=child_env, capture_output=True, text=True, timeout=1200,
                )
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if line is None:
                    print(f"{variant}: failed\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", file=sys.stderr)
                    results[variant].append({"variant": variant, "error": True})
                    continue
                result = {**json.loads(line[len("RESULT "):]), "round": round_}
                print(result, flush=True)
                results[variant].append(result)
    rows: list[dict[str, Any]] = []
    for variant, runs in results.items():
        ok = [r for r in runs if not r.get("error")]
        if not ok:
            rows.append({"variant": variant, "failed": True})
            continue
        green = all(not r["not_success"] for r in ok)
        rows.append({"variant": variant, "tasks": ok[0]["tasks"], "dag_wall_s": stat(r["wall"] for r in ok),
                     "dbt_task_s": stat(r["dbt_task"] for r in ok if r["dbt_task"] is not None),
                     "not_success": {} if green else ok[0]["not_success"]})
    import airflow

    return Measured(
        params={"models": models, "tests_per_model": 1, "threads": 4, "runs": repeat, "airflow": airflow.__version__,
                "cosmos": _cosmos_version(cosmos_path)},
        figures={"variants": rows},
        runs=[Run(variant=r["variant"], round=r.get("round", 0), wall_s=r.get("wall"),
                  labels={k: v for k, v in r.items()
                          if isinstance(v, (int, float, str)) and k not in ("wall", "round")})
              for rs in results.values() for r in rs],
    )


def _cosmos_version(path: str | None) -> str | None:
    found = sorted(Path(path).glob("astronomer_cosmos-*.dist-info")) if path else []
    return found[0].name.split("-")[1].removesuffix(".dist") if found else None


def section(data: dict[str, Any]) -> list[str]:
    """The page's block: the DAG wall, the dbt task and what the per-node tasks add, per variant (medians)."""
    rows = []
    for v in data["variants"]:
        if v.get("failed"):
            rows.append(f"| {v['variant']} | failed | | | |")
            continue
        wall, dbt = v["dag_wall_s"]["median"], v["dbt_task_s"]["median"]
        rows.append(f"| {v['variant']} | {v['tasks']} | {wall:.1f} s | {dbt:.1f} s | {wall - dbt:.1f} s |"
                    + (f" (not all green: {str(v['not_success'])[:80]})" if v.get("not_success") else ""))
    cosmos = f", astronomer-cosmos {data['cosmos']}" if data.get("cosmos") else ""
    return [
        f"Apache Airflow {data['airflow']}{cosmos}, `dag.test()` on sqlite, a generated {data['models']}-model "
        f"dbt-duckdb project ({data['tests_per_model']} test per model, {data['threads']} threads), {data['runs']} "
        "alternated runs per variant, each in a fresh interpreter.",
        "",
        "| variant | tasks | DAG wall (median) | dbt task (median) | wall − dbt task |",
        "|---|---:|---:|---:|---:|",
        *rows,
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--cosmos-path", default=None, help="a --target directory holding astronomer-cosmos")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bus", default="", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.one:
        print("RESULT " + json.dumps(one(opts.one, opts.models, opts.bus)))
        return
    compile_bytecode()  # the measured children import dbtbus as an installed copy would, from bytecode
    date, started = now(), time.perf_counter()
    measured = measure(opts.models, opts.repeat, opts.variants, opts.cosmos_path)
    result = wrap(NAME, Options(results_dir=opts.results_dir), measured, date=date,
                  duration_s=time.perf_counter() - started)
    print(write_result(opts.results_dir, result))


if __name__ == "__main__":
    main()
