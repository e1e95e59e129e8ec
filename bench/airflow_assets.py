"""What ``emit_assets`` costs a DAG file: render time and serialized DAG size, with and without outlets.

A generated dbt-duckdb project (``dbtbus.testing.projects.generate_project``, parsed by dbt so its manifest and
profile are real) is rendered by ``render_dbt_task_group`` in a fresh interpreter per variant — with a cold
render-plan cache (the first parse after a new manifest: the naming reads the profile and names every node)
and a warm one (every later parse) — and each DAG it makes is serialized as Airflow stores it
(``DagSerialization.to_dict``). The serialized size matters beyond the database: Airflow 3.3's triggerer ships
and deserializes a node task's whole DAG for every trigger it starts (docs/airflow.md, "At scale").

What emitting costs a *live* build (every node task's success ended on a worker) is the ``dbtbus-redis-assets``
variant of ``airflow_live`` (``bench/airflow_live.py --assets``); its one recorded run, from when it was a
live-suite test, is carried in this result as ``live_recorded`` (:data:`LIVE_RECORDED`).

    python -m bench --interpreter airflow --only airflow_assets      # 1,000 models, 3 alternated runs
    python -m bench --interpreter airflow --only airflow_assets --quick   # 200 models, one run each
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench._harness import Measured, Options, Run, benchmark, standalone, stat

NAME = "airflow_assets"
LAYOUTS = ("one_dag", "split")
TIMINGS = ("render_cold_s", "render_warm_s", "serialize_s")

#: The live cost of ``emit_assets=True``, measured once by the live suite's former ``test_scale_assets_cost``
#: beside ``test_scale_clean_run`` (200 models, LocalExecutor with parallelism 4, the shared 2-core machine, one
#: run each; docs/lineage.md, "Airflow Assets") and kept here rather than measured in CI. Measure it again with
#: ``bench/airflow_live.py --assets --models 200`` (the ``dbtbus-redis-assets`` variant).
LIVE_RECORDED: dict[str, Any] = {
    "models": 200,
    "source": "tests/airflow_live/test_live.py::test_scale_assets_cost beside test_scale_clean_run, one run each",
    "without_outlets": {"dag_run_s": 71.0, "producer_task_s": 70.0, "last_node_task_end_after_its_node_s": 3.3},
    "with_outlets": {"dag_run_s": 277.0, "producer_task_s": 116.0, "last_node_task_end_after_its_node_s": 202.0,
                     "node_tasks_on_a_worker": 201},
}

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


def _render_once(manifest: Path, args: list[str], layout: str, emit: bool) -> dict[str, Any]:
    """One render and serialization of one variant, in a fresh interpreter with a fresh Airflow home."""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "AIRFLOW_HOME": home, "DBTBUS_CACHE_DIR": os.path.join(home, "cache"),
               "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        out = subprocess.run([sys.executable, "-c", CHILD, str(manifest), json.dumps(args), layout,
                              "1" if emit else "0"], check=False, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"the render failed ({layout}, emit_assets={emit}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure(models: int, repeat: int, workdir: Path) -> Measured:
    """Every variant (layout × emit_assets) once per round, alternated, ``repeat`` rounds."""
    manifest, args = project(models, workdir)
    samples: dict[tuple[str, bool], list[dict[str, Any]]] = {(lay, e): [] for lay in LAYOUTS for e in (False, True)}
    runs: list[Run] = []
    for round_ in range(repeat):
        for (layout, emit), got in samples.items():
            one = _render_once(manifest, args, layout, emit)
            got.append(one)
            runs.append(Run(variant=layout + ("+assets" if emit else ""), round=round_,
                            labels={k: one[k] for k in (*TIMINGS, "serialized_bytes_total")}))
    variants = []
    for (layout, emit), got in samples.items():
        first = got[0]  # sizes and counts are the same every run: the render is deterministic
        variants.append({"layout": layout, "emit_assets": emit, **{k: stat(r[k] for r in got) for k in TIMINGS},
                         **{k: first[k] for k in ("dags", "tasks", "tasks_with_outlets", "serialized_bytes_total",
                                                  "serialized_bytes_largest_dag")}})
    return Measured(params={"models": models, "repeat": repeat, "tests_per_model": 1},
                    figures={"variants": variants, "live_recorded": LIVE_RECORDED}, runs=runs,
                    notes=["render times: a fresh interpreter per run; sizes: json.dumps of DagSerialization.to_dict",
                           "live_recorded: one earlier run, not measured again here (bench/airflow_live.py --assets)"])


@benchmark(name=NAME, order=105, interpreter="airflow")
def run(opts: Options) -> Measured:
    """What ``emit_assets`` costs a DAG file (render time, serialized size), and, recorded, a live build."""
    models = 10 if opts.tiny else 200 if opts.quick else 1000
    workdir = Path(opts.extra.get("workdir") or os.path.join(tempfile.gettempdir(), "dbtbus-bench-assets"))
    workdir.mkdir(parents=True, exist_ok=True)
    return measure(models, 1 if opts.quick else 3, workdir)


def _size(value: float) -> str:
    return f"{value / 1000:,.0f} KB" if value < 1_000_000 else f"{value / 1_000_000:.2f} MB"


def render(data: dict[str, Any]) -> list[str]:
    """The page's block: per layout, without and with outlets (medians), then the recorded live run."""
    by = {(v["layout"], v["emit_assets"]): v for v in data["variants"]}
    rows = []
    for layout in LAYOUTS:
        off, on = by[(layout, False)], by[(layout, True)]
        rows += [
            f"| {layout}: serialized DAGs, all {off['dags']} | {_size(off['serialized_bytes_total'])} "
            f"| {_size(on['serialized_bytes_total'])} |",
            f"| {layout}: largest serialized DAG | {_size(off['serialized_bytes_largest_dag'])} "
            f"| {_size(on['serialized_bytes_largest_dag'])} |",
        ]
        for key, label in (("render_warm_s", "render, plan cache warm"),
                           ("render_cold_s", "render, first parse after a new manifest"),
                           ("serialize_s", "serializing every DAG")):
            rows.append(f"| {layout}: {label} | {off[key]['median']:.2f} s | {on[key]['median']:.2f} s |")
    live = data["live_recorded"]
    off, on = live["without_outlets"], live["with_outlets"]
    rows.append(
        f"| live, {live['models']} models (recorded): DAG run / producer task / last node task end − its node's "
        f"finish | {off['dag_run_s']:.0f} s / {off['producer_task_s']:.0f} s / "
        f"{off['last_node_task_end_after_its_node_s']:.1f} s | {on['dag_run_s']:.0f} s / "
        f"{on['producer_task_s']:.0f} s / {on['last_node_task_end_after_its_node_s']:.0f} s |")
    return [
        f"A generated {data['models']}-model dbt-duckdb project ({data['tests_per_model']} test per model), "
        f"{data['repeat']} alternated runs per variant, each in a fresh interpreter (medians); the live row is "
        "one recorded run of what `bench/airflow_live.py --assets` measures.",
        "",
        "| | without outlets | with outlets (`emit_assets=True`) |",
        "|---|---:|---:|",
        *rows,
    ]


def main() -> None:
    standalone(NAME)  # python bench/airflow_assets.py [--quick | --tiny] [--results-dir D]


if __name__ == "__main__":
    main()
