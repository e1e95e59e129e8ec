"""What ``emit_assets`` costs a DAG file: render time and serialized DAG size, with and without outlets.

A generated dbt-duckdb project (``dbtbus.testing.projects.generate_project``, parsed by dbt so its manifest and
profile are real) is rendered by ``render_dbt_task_group`` in a fresh interpreter per variant — with a cold
render-plan cache (the first parse after a new manifest: the naming reads the profile and names every node)
and a warm one (every later parse) — and each DAG it makes is serialized as Airflow stores it
(``DagSerialization.to_dict``). The serialized size matters beyond the database: Airflow 3.3's triggerer ships
and deserializes a node task's whole DAG for every trigger it starts (docs/airflow.md, "At scale").

    /work/afvenv/bin/python bench/airflow_assets.py --models 1000 [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHILD = r'''
import json, os, sys, time
from pathlib import Path
manifest, args, layout, emit = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
from airflow.sdk import DAG
from airflow.sdk.definitions._internal.contextmanager import DagContext
from dbtbus.airflow import render_dbt_task_group
DagContext.current_autoregister_module_name = "__main__"
times = []
for attempt in range(2):  # cold plan cache, then warm
    DagContext.autoregistered_dags.clear()
    began = time.perf_counter()
    with DAG(f"assets_{attempt}", schedule=None) as dag:
        render_dbt_task_group(manifest, "redis://127.0.0.1:6379/0", args, layout=layout, emit_assets=emit)
    times.append(time.perf_counter() - began)
from airflow.serialization.serialized_objects import DagSerialization
dags = [dag] + [d for d, _ in DagContext.autoregistered_dags if d.dag_id.startswith(dag.dag_id + ".")]
began = time.perf_counter()
sizes = [len(json.dumps(DagSerialization.to_dict(d)).encode()) for d in dags]  # as Airflow stores it
serialize_s = time.perf_counter() - began
tasks = sum(len(d.tasks) for d in dags)
outlets = sum(1 for d in dags for t in d.tasks if getattr(t, "outlets", None))
print(json.dumps({"render_cold_s": times[0], "render_warm_s": times[1], "serialize_s": serialize_s,
                  "dags": len(dags), "tasks": tasks, "tasks_with_outlets": outlets,
                  "serialized_bytes_total": sum(sizes), "serialized_bytes_largest_dag": max(sizes)}))
'''


def project(models: int, workdir: Path) -> tuple[Path, list[str]]:
    from dbtbus.testing.projects import generate_project

    path = workdir / f"gen{models}"
    if not (path / "manifest.render.json").exists():
        generate_project(path, models=models, tests_per_model=1, threads=4)
        dbt = Path(sys.executable).parent / "dbt"
        subprocess.run([str(dbt), "parse", "--project-dir", str(path), "--profiles-dir", str(path)], check=True,
                       capture_output=True, cwd=path, env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"})
        (path / "manifest.render.json").write_bytes((path / "target" / "manifest.json").read_bytes())
    return path / "manifest.render.json", ["build", "--project-dir", str(path), "--profiles-dir", str(path)]


def measure(manifest: Path, args: list[str], layout: str, emit: bool, repeat: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "AIRFLOW_HOME": home, "DBTBUS_CACHE_DIR": os.path.join(home, "cache"),
                   "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
            out = subprocess.run([sys.executable, "-c", CHILD, str(manifest), json.dumps(args), layout,
                                  "1" if emit else "0"], check=False, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                raise SystemExit(f"the render failed ({layout}, emit_assets={emit}):\n{out.stderr[-3000:]}")
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = dict(runs[0])
    for key in ("render_cold_s", "render_warm_s", "serialize_s"):
        result[key] = round(statistics.median(r[key] for r in runs), 3)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "dbtbus-bench-assets"))
    opts = parser.parse_args(argv)
    workdir = Path(opts.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    manifest, args = project(opts.models, workdir)
    rows = []
    for layout in ("one_dag", "split"):
        for emit in (False, True):
            row = {"models": opts.models, "layout": layout, "emit_assets": emit,
                   **measure(manifest, args, layout, emit, opts.repeat)}
            rows.append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
