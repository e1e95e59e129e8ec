"""Airflow under a real scheduler, at 50 to 1,000 models: bare ``dbt build`` vs dbtbus (Redis, XCom) vs cosmos.

Not a test. Needs a virtualenv with apache-airflow 3, psycopg2-binary and asyncpg (``nox -s bench_airflow``
builds one), PostgreSQL on 127.0.0.1:5432 (trust auth) and ``redis-server``; astronomer-cosmos is optional
(``--cosmos``: it must be importable, it is never a dbtbus dependency). One deployment — api-server,
scheduler (LocalExecutor, parallelism 4), dag-processor, triggerer, each its own process group, stopped at
the end — runs every variant on the same generated project, alternating variants within each round:

* ``shell``          — ``dbt build`` in a shell (a subprocess of this script), no Airflow at all;
* ``bare``           — one PythonOperator running ``dbtRunner().invoke(["build", ...])``;
* ``dbtbus-redis``   — ``render_dbt_task_group`` (its default layout) on a throw-away redis-server;
* ``dbtbus-xcom``    — the same on ``xcom://?poll=0.2``;
* ``cosmos-watcher`` — astronomer-cosmos ``DbtDag`` in ``ExecutionMode.WATCHER`` (``--cosmos-max`` models at most);
* ``dbtbus-redis-assets`` (``--assets``) — ``dbtbus-redis`` with ``emit_assets=True``: every node task emits its
  asset, its success ended on a worker (what ``emit_assets`` costs a live build; it was a live-suite test);
* ``dbtbus-redis-failing`` — dbtbus on Redis on a copy of the project where the model with the most
  descendants fails: the time from the failure's publication (the node's ``finished_at`` in its record; the
  producer publishes it within milliseconds) to the failing task and every descendant's task being terminal.

Per run: DAG wall (the DAG run's start to the end of the last of it and its node DAGs' runs), the producer
task, the tail (that end − the producer's end), node tasks run on a worker, each node task's end − its
node's ``finished_at`` on the bus (p50 / p95 / max), CPU seconds per Airflow component, the triggerer's CPU
per node task and its peak RSS rise per process, and whether the run ended at all (a run that has not ended
after ``--hang-after`` × the bare task's time is recorded as hung, a py-spy dump of the triggerer is saved,
and the run is failed through the REST API so the next one can start). ``--soak SIZE:N`` adds N consecutive
``dbtbus-redis`` runs at SIZE models (hung runs counted); with ``--soak-result`` the run is recorded as
``bench/results/airflow_soak.json`` (its own section of docs/benchmarks.md, variants ``bare`` and
``dbtbus-redis`` unless ``--variants`` says otherwise): a soak never replaces the figures of airflow_live.json.

    .nox/bench_airflow/bin/python bench/airflow_live.py --models 50 200 500 --repeat 3 2 1 --soak 200:10 500:10 \\
        --cosmos --write docs/benchmarks.md
    ... --large      # adds 1,000 models (one round, and --soak 1000:3 if asked)
    .nox/bench_airflow/bin/python bench/airflow_live.py --soak-result --models 200 500 --soak 200:10 500:10
    .nox/bench_airflow/bin/python bench/airflow_live.py --soak-result --models 1000 --soak 1000:3   # keeps 200, 500

The JSON goes to ``bench/results/airflow_live.json``; the section of docs/benchmarks.md and its plot
(``docs/benchmarks-airflow.svg``) are rendered from it (``--render-only`` re-renders without running).
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

from bench._harness import (
    RESULTS_DIR,
    Measured,
    Options,
    benchmark,
    compile_bytecode,
    load_results,
    now,
    wrap,
    write_result,
)
from tests.airflow_live._deployment import Deployment

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
SECTION = "## Airflow under a real scheduler"
LAYOUT_SECTION = "## Airflow: one DAG or node DAGs"
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

if WHICH in ("redis", "xcom", "redis_failing", "redis_one_dag", "redis_split", "redis_assets"):
    from dbtbus.airflow import render_dbt_task_group

    url = os.environ["DBTBUS_BENCH_REDIS"] if WHICH != "xcom" else "xcom://?poll=0.2"
    project = FAILING if WHICH == "redis_failing" else PROJECT
    layout = {{"redis_one_dag": "one_dag", "redis_split": "split"}}.get(WHICH, "auto")
    args = ["build", "--project-dir", str(project), "--profiles-dir", str(project)]
    # a benchmark of node DAGs' size sets it for the whole deployment; unset, the default's
    per_dag = os.environ.get("DBTBUS_BENCH_PER_DAG")
    sizing = {{"max_tasks_per_dag": int(per_dag)}} if per_dag else {{}}
    with DAG(f"bench_dbtbus_{{WHICH}}_{models}", schedule=None, catchup=False) as dag:
        render_dbt_task_group(project / "manifest.render.json", url, args, group_id="dbt", layout=layout,
                              sensor_kwargs={{"timeout": 1800}}, emit_assets=WHICH == "redis_assets", **sizing)

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
             "cosmos-watcher": "cosmos", "dbtbus-redis-one-dag": "redis_one_dag", "dbtbus-redis-split": "redis_split",
             "dbtbus-redis-assets": "redis_assets"}

VARIANTS = {"bare": "bench_bare", "dbtbus-redis": "bench_dbtbus_redis", "dbtbus-xcom": "bench_dbtbus_xcom",
            "cosmos-watcher": "bench_cosmos", "dbtbus-redis-failing": "bench_dbtbus_redis_failing",
            "dbtbus-redis-one-dag": "bench_dbtbus_redis_one_dag", "dbtbus-redis-split": "bench_dbtbus_redis_split",
            "dbtbus-redis-assets": "bench_dbtbus_redis_assets"}
LABELS = {"shell": "`dbt build` in a shell", "bare": "bare `dbt build` (one PythonOperator)",
          "dbtbus-redis": "dbtbus, Redis", "dbtbus-xcom": "dbtbus, XCom (`poll=0.2`)",
          "cosmos-watcher": "astronomer-cosmos watcher", "dbtbus-redis-failing": "dbtbus, Redis, one model failing",
          "dbtbus-redis-one-dag": "dbtbus, Redis, every task in the DAG (`layout=\"one_dag\"`)",
          "dbtbus-redis-split": "dbtbus, Redis, node DAGs (`layout=\"split\"`)",
          "dbtbus-redis-assets": "dbtbus, Redis, every node task emitting its asset (`emit_assets=True`)"}
NOT_NODE_TASKS = ("producer", "carrier", "nodes_")
DEFAULT_VARIANTS = ("shell", "bare", "dbtbus-redis", "dbtbus-xcom", "dbtbus-redis-failing")
#: A soak: the bare task (what DAG wall is divided by) and dbtbus on Redis, whose runs the soak repeats.
SOAK_VARIANTS = ("bare", "dbtbus-redis")
SOAK_NAME = "airflow_soak"
SOAK_SECTION = "## Airflow soak: consecutive DAG runs"
PLOT = ROOT / "docs" / "benchmarks-airflow.svg"


# ---------------------------------------------------------------------------------------------- processes


def _tree(af: Deployment, name: str) -> list[Any]:
    """An Airflow component's process and its live descendants (psutil), or [] when psutil or it is gone."""
    try:
        import psutil
    except ImportError:
        return []
    proc = af.procs.get(name)
    if proc is None:
        return []
    try:
        root = psutil.Process(proc.pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _cpu_seconds(af: Deployment) -> dict[str, float]:
    """CPU seconds (user + system) each Airflow component has spent so far: its process and every live
    descendant (the LocalExecutor's workers, the task processes they run), each counting the children it
    reaped. A delta around one DAG run says who paid for it on this 2-core machine."""
    spent: dict[str, float] = {}
    for name in af.procs:
        total = 0.0
        for p in _tree(af, name):
            with contextlib.suppress(Exception):
                t = p.cpu_times()
                total += float(t.user + t.system + t.children_user + t.children_system)
        spent[name] = total
    return spent


def _triggerer_rss(af: Deployment) -> dict[int, int]:
    """RSS of each process of the triggerer's tree (supervisor, trigger runner, log server), by pid."""
    out: dict[int, int] = {}
    for p in _tree(af, "triggerer"):
        with contextlib.suppress(Exception):
            out[p.pid] = int(p.memory_info().rss)
    return out


class _PeakSampler:
    """The highest RSS of each triggerer process, sampled every ``interval`` seconds while in the block, and
    each one's RSS as the block began (``before``)."""

    def __init__(self, af: Deployment, interval: float = 0.25) -> None:
        self.af, self.interval = af, interval
        self.before: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            for pid, rss in _triggerer_rss(self.af).items():
                self.peak[pid] = max(self.peak.get(pid, 0), rss)

    def __enter__(self) -> _PeakSampler:
        self.before = _triggerer_rss(self.af)
        self._thread.start()
        return self

    def rises(self) -> dict[str, int]:
        """Each process's peak RSS over its RSS as the block began (bytes), by pid."""
        return {str(pid): peak - self.before.get(pid, 0) for pid, peak in self.peak.items()}

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------------------------- one run


def _node_dags(af: Deployment, dag_id: str) -> list[str]:
    return [str(r[0]) for r in af.query("select dag_id from dag where dag_id like %s", f"{dag_id}.%")]


def _node_tasks(af: Deployment, dag_id: str, run_id: str) -> dict[str, Any]:
    """Node task name (``m003``, ``raw_seed``) → its TaskState, from the DAG and its node DAGs."""
    out = {k.rsplit(".", 1)[-1]: t for k, t in af.tasks(dag_id, run_id).items()
           if not any(part in k for part in NOT_NODE_TASKS)}
    for node_dag in _node_dags(af, dag_id):
        out.update(af.tasks(node_dag, run_id))
    return out


def _wait_all(af: Deployment, dag_id: str, run_id: str, deadline: float) -> tuple[str | None, list[str]]:
    """The DAG run's state once it and its node DAG runs ended (None: not by ``deadline``), and what hung."""
    pending = [dag_id]
    while time.monotonic() < deadline:
        af.check_alive()
        pending = [d for d in [dag_id, *_node_dags(af, dag_id)]
                   if af.dag_run_state(d, run_id) not in ("success", "failed")]
        if not pending:
            return af.dag_run_state(dag_id, run_id), []
        time.sleep(0.5)
    return None, pending


def _py_spy_dump(af: Deployment, path: Path) -> None:
    spy = shutil.which("py-spy") or str(BIN / "py-spy")
    if not Path(spy).exists():
        return
    dumps = []
    for p in _tree(af, "triggerer"):
        proc = subprocess.run([spy, "dump", "--pid", str(p.pid)], capture_output=True, text=True, check=False)
        dumps.append(f"=== pid {p.pid}\n{proc.stdout}{proc.stderr}")
    path.write_text("\n".join(dumps))


def _state_counts(af: Deployment, dag_id: str, run_id: str) -> dict[str, int]:
    """How many of a DAG run's task instances are in each state (``none``: no state yet)."""
    counts: dict[str, int] = {}
    for task in af.tasks(dag_id, run_id).values():
        counts[task.state or "none"] = counts.get(task.state or "none", 0) + 1
    return counts


def _give_up(af: Deployment, dag_id: str, run_id: str, hung: list[str]) -> None:
    """Fail what hung through the REST API, so the next run can start (max_active_runs=1)."""
    for d in hung:
        with contextlib.suppress(Exception):
            af._http("PATCH", f"/api/v2/dags/{d}/dagRuns/{run_id}", {"state": "failed"})


def _records(redis_url: str, dag_id: str, run_id: str) -> dict[str, Any]:
    """The node results of the run on the bus, by unique id."""
    import anyio

    import dbtbus
    from dbtbus.airflow import dbtbus_run_id

    async def look() -> dict[str, Any]:
        async with dbtbus.connect(redis_url) as bus:
            state = await bus.run_state(dbtbus_run_id(dag_id, run_id, -1, "dbt"))
        return dict(state.results)

    result: dict[str, Any] = anyio.run(look)
    return result


def _uid(task: str) -> str:
    return "seed.gen.raw" if task == "raw_seed" else f"model.gen.{task}"


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]  # noqa: E731
    return {"p50": round(pick(0.5), 2), "p95": round(pick(0.95), 2), "max": round(ordered[-1], 2)}


def one(af: Deployment, variant: str, models: int, failing: dict[str, Any], redis_url: str, work: Path,
        hang_after: float) -> dict[str, Any]:
    dag_id = f"{VARIANTS[variant]}_{models}"
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    cpu_before = _cpu_seconds(af)
    with _PeakSampler(af) as peak:
        af.trigger(dag_id, run_id)
        state, hung = _wait_all(af, dag_id, run_id, time.monotonic() + hang_after)
    out: dict[str, Any] = {"variant": variant, "models": models, "run_id": run_id, "hung": bool(hung),
                           "load_average": [round(v, 2) for v in os.getloadavg()]}
    if hung:
        dump = work / f"hung-{dag_id}-{run_id}.txt"
        _py_spy_dump(af, dump)
        out["hung_task_states"] = {d: _state_counts(af, d, run_id) for d in hung}  # before they are failed
        # slow or stuck: was dbt still building, and how far had it got on the bus?
        producer_at_hang = next((t for k, t in af.tasks(dag_id, run_id).items() if "producer" in k), None)
        out["producer_state_at_hang"] = producer_at_hang.state if producer_at_hang else None
        if variant.startswith("dbtbus-redis"):
            with contextlib.suppress(Exception):
                out["nodes_on_bus_at_hang"] = len(_records(redis_url, dag_id, run_id))
        log = work / f"hung-{dag_id}-{run_id}-triggerer.log"  # the deployment's home is removed at the end
        with contextlib.suppress(OSError):
            shutil.copy(af.home / "triggerer.out", log)
        out["hung_dags"], out["py_spy_dump"], out["triggerer_log"] = hung, str(dump), str(log)
        _give_up(af, dag_id, run_id, hung)
        _wait_all(af, dag_id, run_id, time.monotonic() + 120)
    cpu_after = _cpu_seconds(af)
    start, end = af.dag_run_times(dag_id, run_id)
    ends = [end] + [af.dag_run_times(d, run_id)[1] for d in _node_dags(af, dag_id)]
    tasks = af.tasks(dag_id, run_id)
    producer = next((t for k, t in tasks.items() if "producer" in k), None)
    nodes = _node_tasks(af, dag_id, run_id)
    out.update({"state": state, "node_dags": len(_node_dags(af, dag_id)), "node_tasks": len(nodes),
                "node_worker_runs": sum(1 for t in nodes.values() if t.queued),
                "cpu": {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_after if k in cpu_before},
                "triggerer_rss_before": sum(peak.before.values()),
                "triggerer_rss_rise": peak.rises(),
                "triggerer_rss_after": sum(_triggerer_rss(af).values())})
    if start is not None and None not in ends:
        out["dag_wall"] = max(e for e in ends if e is not None) - start
    if producer is not None and producer.start is not None and producer.end is not None:
        out["producer"] = producer.end - producer.start
        if "dag_wall" in out:
            out["tail"] = start + out["dag_wall"] - producer.end
    if variant.startswith("dbtbus-redis") and nodes:
        records = _records(redis_url, dag_id, run_id)
        lag = [t.end - records[_uid(name)].finished_at.timestamp() for name, t in nodes.items()
               if t.end is not None and _uid(name) in records and records[_uid(name)].finished_at is not None
               and records[_uid(name)].status.is_success]
        out["outcome_lag"] = _percentiles(lag)
        if variant == "dbtbus-redis-failing":
            published = records.get(failing["unique_id"])
            doomed = [nodes.get(name) for name in [failing["name"], *failing["descendants"]]]
            done = [t.end for t in doomed if t is not None and t.end is not None]
            out["doomed_tasks"], out["doomed_terminal"] = len(doomed), len(done)
            if published is not None and published.finished_at is not None and len(done) == len(doomed):
                out["failure_to_terminal"] = max(done) - published.finished_at.timestamp()
                out["doomed_before_producer_end"] = bool(producer and producer.end and max(done) <= producer.end)
    return out


def shell(project: Path, models: int) -> dict[str, Any]:
    """``dbt build`` in a shell, no Airflow: the floor every variant is compared with too."""
    import psutil

    before = psutil.Process().cpu_times()
    began = time.monotonic()
    proc = subprocess.run([str(BIN / "dbt"), "build", "--project-dir", str(project), "--profiles-dir", str(project),
                           "--quiet"], capture_output=True, text=True, check=False, cwd=project,
                          env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"})
    wall = time.monotonic() - began
    after = psutil.Process().cpu_times()
    cpu = (after.children_user + after.children_system) - (before.children_user + before.children_system)
    return {"variant": "shell", "models": models, "state": "success" if proc.returncode == 0 else "failed",
            "dag_wall": wall, "cpu": {"dbt": round(cpu, 2)}, "hung": False}


# ---------------------------------------------------------------------------------------------- the page


def _med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _median(values: list[float], unit: str = " s", digits: int = 1) -> str:
    if not values:
        return "–"
    mid = statistics.median(values)
    text = f"{mid:.{digits}f}{unit}"
    return text if len(values) == 1 else f"{text} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def _per_task_ms(run: dict[str, Any]) -> float | None:
    tasks = run.get("node_tasks") or 0
    cpu = (run.get("cpu") or {}).get("triggerer")
    return None if not tasks or cpu is None else cpu * 1000 / tasks


def _rss_rise(run: dict[str, Any]) -> float:
    return sum(max(v, 0) for v in (run.get("triggerer_rss_rise") or {}).values()) / 2**20


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per size, the figures the goals are judged on (medians over the rounds, soak runs included)."""
    rows = []
    for size in results["sizes"]:
        runs = [r for r in size["runs"] if not r.get("hung")]
        def of(variant: str, key: str, runs: list[dict[str, Any]] = runs) -> list[float]:
            return [r[key] for r in runs if r["variant"] == variant and r.get(key) is not None]
        bare, sh = _med(of("bare", "dag_wall")), _med(of("shell", "dag_wall"))
        row: dict[str, Any] = {"models": size["models"], "bare": bare, "shell": sh}
        for variant in ("dbtbus-redis", "dbtbus-xcom", "cosmos-watcher", "dbtbus-redis-one-dag", "dbtbus-redis-split",
                        "dbtbus-redis-assets"):
            wall = _med(of(variant, "dag_wall"))
            row[variant] = {
                "wall": wall, "ratio": wall / bare if wall and bare else None,
                "ratio_shell": wall / sh if wall and sh else None,
                "tail": _med(of(variant, "tail")),
                "worker_runs": max(of(variant, "node_worker_runs") or [0]),
                "node_tasks": max(of(variant, "node_tasks") or [0]),
                "trig_ms": _med([v for r in runs if r["variant"] == variant if (v := _per_task_ms(r)) is not None]),
                "rss_rise_mb": _med([_rss_rise(r) for r in runs if r["variant"] == variant]),
                "scheduler_cpu": _med([r["cpu"].get("scheduler", 0) for r in runs if r["variant"] == variant]),
                "processor_cpu": _med([r["cpu"].get("dag-processor", 0) for r in runs if r["variant"] == variant]),
                "lag_p95": _med([r["outcome_lag"]["p95"] for r in runs if r["variant"] == variant
                                 and r.get("outcome_lag")]),
                "lag_max": max([r["outcome_lag"]["max"] for r in runs if r["variant"] == variant
                                and r.get("outcome_lag")] or [0]) or None,
            }
        row["failure_to_terminal"] = _med(of("dbtbus-redis-failing", "failure_to_terminal"))
        hung = [r for r in size["runs"] if r["variant"].startswith("dbtbus") and r.get("hung")]
        ran = [r for r in size["runs"] if r["variant"].startswith("dbtbus")]
        row["hung"], row["dbtbus_runs"] = len(hung), len(ran)
        rows.append(row)
    return rows


def _fmt(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def render(results: dict[str, Any]) -> str:
    cosmos = f" astronomer-cosmos {results['cosmos']};" if results.get("cosmos") else ""
    rows = summary(results)
    lines = [
        SECTION, "",
        f"`bench/airflow_live.py`: one Airflow {results['airflow']} deployment (api-server, scheduler with "
        f"LocalExecutor and parallelism 4, dag-processor, triggerer; PostgreSQL metadata DB) on "
        f"{results['host']}, measured {results['measured_at']};{cosmos} variants alternating within each "
        "round; dbtbus in `render_dbt_task_group`'s default layout (node tasks in the DAG up to 100 selected "
        "nodes, in node DAGs of at most 50 beyond). DAG wall runs from the DAG run's start to the end of the last of "
        "it and its node DAGs' runs. Medians (min–max) over the rounds.", "",
        "### At every size", "",
        "| models | bare task | shell | dbtbus Redis ÷ bare | ÷ shell | tail | failure → descendants terminal "
        "| node task ends after its node (p95 / max) | triggerer CPU per node task | triggerer peak RSS rise "
        "| scheduler + workers CPU | dag-processor CPU | node tasks on a worker | hung runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = row["dbtbus-redis"]
        lines.append(
            f"| {row['models']} | {_fmt(row['bare'], '.1f')} s | {_fmt(row['shell'], '.1f')} s "
            f"| **{_fmt(r['ratio'], '.2f')}×** | {_fmt(r['ratio_shell'], '.2f')}× | {_fmt(r['tail'], '.1f')} s "
            f"| {_fmt(row['failure_to_terminal'], '.1f')} s | {_fmt(r['lag_p95'], '.1f')} / "
            f"{_fmt(r['lag_max'], '.1f')} s | {_fmt(r['trig_ms'], '.0f')} ms | {_fmt(r['rss_rise_mb'], '.0f')} MB "
            f"| {_fmt(r['scheduler_cpu'], '.0f')} s | {_fmt(r['processor_cpu'], '.0f')} s "
            f"| {r['worker_runs']} of {r['node_tasks']} | {row['hung']} of {row['dbtbus_runs']} |")
    lines += ["", f"![Airflow cost against project size]({PLOT.name})", ""]
    for size in results["sizes"]:
        runs = size["runs"]
        bare = [r["dag_wall"] for r in runs if r["variant"] == "bare" and "dag_wall" in r]
        soak = size.get("soak", 0)
        lines += [
            f"### {size['models']} models ({size['nodes']} dbt nodes), {size['repeat']} round(s)"
            + (f" + {soak} soak runs" if soak else ""), "",
            "| | DAG wall | ÷ bare | producer task | tail | node tasks on a worker | triggerer CPU / node task "
            "| triggerer peak RSS rise |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for variant in ("shell", *VARIANTS):
            mine = [r for r in runs if r["variant"] == variant and "dag_wall" in r and not r.get("hung")]
            if not mine or variant == "dbtbus-redis-failing":
                continue
            walls = [r["dag_wall"] for r in mine]
            ratio = f"{statistics.median(walls) / statistics.median(bare):.2f}×" if bare else "–"
            green = all(r["state"] == "success" for r in mine)
            per_task = [v for r in mine if (v := _per_task_ms(r)) is not None]
            node = "–" if variant in ("shell", "bare") else (
                f"{max(r.get('node_worker_runs', 0) for r in mine)} of {mine[0].get('node_tasks', 0)}")
            lines.append(
                f"| {LABELS[variant]}{'' if green else ' (**not all green**)'} | {_median(walls)} | {ratio} "
                f"| {_median([r['producer'] for r in mine if 'producer' in r])} "
                f"| {'–' if variant in ('shell', 'bare') else _median([r['tail'] for r in mine if 'tail' in r])} "
                f"| {node} | {_median(per_task, ' ms', 0) if variant not in ('shell', 'bare') else '–'} "
                f"| {_median([_rss_rise(r) for r in mine], ' MB', 0) if variant not in ('shell', 'bare') else '–'} |")
        failing = [r for r in runs if r["variant"] == "dbtbus-redis-failing" and not r.get("hung")]
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
                + f"; the DAG run ended `{failing[0]['state']}`.",
            ]
        hung = [r for r in runs if r.get("hung")]
        if hung:
            lines += ["", "Hung runs: " + "; ".join(f"{r['variant']} {r['run_id']} ({', '.join(r['hung_dags'])})"
                                                    for r in hung) + "."]
        lines.append("")
    if results.get("cosmos_max"):
        lines += [f"cosmos watcher ran up to {results['cosmos_max']} models only: above that one worker run per "
                  "consumer makes a round take longer than the rest of the benchmark together.", ""]
    return "\n".join(lines)


def render_layouts(results: dict[str, Any]) -> str:
    """The same project with every node task in the rendering DAG and in node DAGs: the auto threshold."""
    rows = summary(results)
    lines = [
        LAYOUT_SECTION, "",
        f"`bench/airflow_live.py --layouts`: the deployment of the section above (Airflow {results['airflow']}, "
        f"{results['host']}, measured {results['measured_at']}), one generated project per size rendered "
        "both ways and alternated within each round with a bare build: `layout=\"one_dag\"` (every node task "
        "in the rendering DAG) and `\"split\"` (node DAGs of at most 50 tasks). Medians over the rounds; "
        "what `layout=\"auto\"` picks is set from this table (one DAG up to 100 selected nodes).", "",
        "| models | layout | DAG wall ÷ bare | tail | node task ends after its node (p95 / max) "
        "| triggerer CPU per node task | triggerer peak RSS rise | dag-processor CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for variant, name in (("dbtbus-redis-one-dag", "one DAG"), ("dbtbus-redis-split", "node DAGs")):
            r = row[variant]
            if r["wall"] is None:
                continue
            lines.append(f"| {row['models']} | {name} | {_fmt(r['ratio'], '.2f')}× | {_fmt(r['tail'], '.1f')} s "
                         f"| {_fmt(r['lag_p95'], '.1f')} / {_fmt(r['lag_max'], '.1f')} s "
                         f"| {_fmt(r['trig_ms'], '.0f')} ms | {_fmt(r['rss_rise_mb'], '.0f')} MB "
                         f"| {_fmt(r['processor_cpu'], '.0f')} s |")
    lines.append("")
    return "\n".join(lines)


def _soak_runs(size: dict[str, Any]) -> list[dict[str, Any]]:
    """A size's dbtbus-on-Redis runs, in the order they ran (the round's, then the soak's)."""
    return [r for r in size["runs"] if r["variant"] == "dbtbus-redis"]


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**20:.0f} MB"


def _spread(values: list[float], unit: str, digits: int = 1) -> str:
    """``median / max`` of the values, or – when there are none."""
    if not values:
        return "–"
    return f"{statistics.median(values):.{digits}f} / {max(values):.{digits}f}{unit}"


def render_soak(results: dict[str, Any]) -> str:
    """Consecutive dbtbus runs on one deployment, per size: how many ended, and what drifted over them."""
    lines = [
        SOAK_SECTION, "",
        f"`bench/airflow_live.py --soak-result --soak SIZE:N` on the deployment that script starts (Airflow "
        f"{results['airflow']}, {results['host']}), one deployment per invocation. Per size, one bare run (what DAG "
        "wall is divided by), then every dbtbus run on Redis back to back in `render_dbt_task_group`'s default "
        "layout: one round's run and the N soak runs. A run that has not ended after `--hang-after` times the bare "
        "task (never less than two minutes) is hung: a py-spy dump of the triggerer and its log are kept, and the "
        "run is failed through the REST API so that the next can start. The triggerer and redis-server live "
        "through every run of an invocation. Tail and ratio: median / max, or median (min–max), over the runs "
        "that ended.", "",
        "| models | measured | dbtbus runs ended | hung (not ended by the deadline) | DAG wall ÷ bare | tail "
        "| node task ends after its node "
        "(p95 median / max) | triggerer RSS, first run's start → last run's end | triggerer peak RSS rise per run "
        "| 1-minute load average at each run's end |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in results["sizes"]:
        runs = _soak_runs(size)
        ended = [r for r in runs if not r.get("hung")]
        bare = _med([r["dag_wall"] for r in size["runs"] if r["variant"] == "bare" and "dag_wall" in r])
        ratios = [r["dag_wall"] / bare for r in ended if bare and "dag_wall" in r]
        lag95 = _med([r["outcome_lag"]["p95"] for r in ended if r.get("outcome_lag")])
        lag_max = max([r["outcome_lag"]["max"] for r in ended if r.get("outcome_lag")] or [None], key=lambda v: v or 0)
        green = all(r.get("state") == "success" for r in ended)
        loads = [r["load_average"][0] for r in runs if r.get("load_average")]
        lines.append(
            f"| {size['models']} | {size.get('measured_at', results['measured_at'])} "
            f"| {len(ended)} of {len(runs)} ({size.get('soak', 0)} soak){'' if green else ' (**not all green**)'} "
            f"| **{len(runs) - len(ended)}** | {_median(ratios, '×', 2)} "
            f"| {_spread([r['tail'] for r in ended if 'tail' in r], ' s')} "
            f"| {_fmt(lag95, '.1f')} / {_fmt(lag_max, '.1f')} s "
            f"| {_mb(runs[0].get('triggerer_rss_before') if runs else None)} → "
            f"{_mb(runs[-1].get('triggerer_rss_after') if runs else None)} "
            f"| {_spread([_rss_rise(r) for r in runs], ' MB', 0)} | {_median(loads, '', 1)} |")
    lines.append("")
    return "\n".join(lines)


def render_soak_runs(results: dict[str, Any]) -> str:
    """Every run of the soak, in the order it ran: what a drift or a hang looks like run by run."""
    lines = [SOAK_SECTION, ""]
    for size in results["sizes"]:
        bare = [r for r in size["runs"] if r["variant"] == "bare" and "dag_wall" in r]
        bare_wall = _med([r["dag_wall"] for r in bare])
        lines += [
            f"#### {size['models']} models ({size['nodes']} dbt nodes), measured "
            f"{size.get('measured_at', results['measured_at'])}", "",
            "| run | state | DAG wall | ÷ bare | producer task | tail | node task ends after its node (p95 / max) "
            "| triggerer CPU / node task | triggerer peak RSS rise | triggerer RSS after | 1-, 5-, 15-minute load "
            "average |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in [*bare, *_soak_runs(size)]:
            name = "bare task" if r["variant"] == "bare" else "round" if "soak" not in r else f"soak {r['soak'] + 1}"
            wall = r.get("dag_wall")
            lag = r.get("outcome_lag") or {}
            per_task = _per_task_ms(r)
            dbtbus = r["variant"] != "bare"
            hung = bool(r.get("hung"))  # ended by the bench at the deadline: its wall is the deadline's
            over = "≥ " if hung else ""
            lines.append(
                f"| {name} | {'**hung**' if hung else r.get('state')} | {over}{_fmt(wall, '.1f')} s "
                f"| {over}{_fmt(wall / bare_wall if wall and bare_wall else None, '.2f')}× "
                f"| {'–' if hung else _fmt(r.get('producer'), '.1f') + ' s'} "
                f"| {_fmt(r.get('tail'), '.1f') + ' s' if dbtbus and not hung else '–'} "
                f"| {_fmt(lag.get('p95'), '.1f') + ' / ' + _fmt(lag.get('max'), '.1f') + ' s' if dbtbus else '–'} "
                f"| {_fmt(per_task, '.0f') + ' ms' if dbtbus else '–'} | {_rss_rise(r):.0f} MB "
                f"| {_mb(r.get('triggerer_rss_after'))} "
                f"| {' / '.join(format(v, '.1f') for v in r.get('load_average') or []) or '–'} |")
        for r in _soak_runs(size):
            if r.get("hung"):
                states = "; ".join(f"{dag}: " + ", ".join(f"{n} {st}" for st, n in sorted(counts.items()))
                                   for dag, counts in (r.get("hung_task_states") or {}).items())
                lines += ["", f"Hung: run `{r['run_id']}`, DAG runs not ended: {', '.join(r['hung_dags'])}"
                          + (f" (task states when found hung — {states})" if states else "")
                          + (f"; the producer task was `{r['producer_state_at_hang']}`"
                             if "producer_state_at_hang" in r else "")
                          + (f", {r['nodes_on_bus_at_hang']} of {size['nodes']} nodes decided on the bus"
                             if "nodes_on_bus_at_hang" in r else "")
                          + f"; py-spy dump of the triggerer: `{Path(r.get('py_spy_dump', '')).name}`."]
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], out: Path = PLOT) -> Path | None:
    """The summary against project size (matplotlib; None without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = summary(results)
    if not rows:
        return None
    plt.rcParams["svg.hashsalt"] = "dbtbus"
    models = [r["models"] for r in rows]
    panels = [
        ("DAG wall ÷ bare task", "ratio", 1.3, ""),
        ("tail after the producer (s)", "tail", 3.0, ""),
        ("triggerer CPU per node task (ms)", "trig_ms", 10.0, ""),
        ("triggerer peak RSS rise (MB)", "rss_rise_mb", 100.0, ""),
    ]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(20, 4))
    for ax, (title, key, goal, _) in zip(axes, panels, strict=False):
        for variant, colour in (("dbtbus-redis", "tab:red"), ("dbtbus-xcom", "tab:blue")):
            ys = [r[variant][key] for r in rows]
            ax.plot(models, [y if y is not None else float("nan") for y in ys], "-o", color=colour, label=variant)
        ax.axhline(goal, color="grey", linestyle=":", label="goal")
        ax.set_title(title)
        ax.set_xlabel("models")
        ax.set_xticks(models, [str(m) for m in models])
        ax.legend(fontsize=7)
    ax = axes[-1]
    ys = [r["failure_to_terminal"] for r in rows]
    ax.plot(models, [y if y is not None else float("nan") for y in ys], "-o", color="tab:red")
    ax.axhline(3.0, color="grey", linestyle=":")
    ax.set_title("failure → descendants terminal (s)")
    ax.set_xlabel("models")
    ax.set_xticks(models, [str(m) for m in models])
    fig.tight_layout()
    fig.savefig(out, format="svg")
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------- main


def _failing_pick(project: Any) -> dict[str, Any]:
    """The model with the most model descendants (ties: the earliest), and those descendants' names."""
    models = set(project.models)
    below = {uid: project.descendants(uid) & models for uid in project.models}  # tests are leaves
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--large", action="store_true", help="add 1,000 models (one round)")
    parser.add_argument("--repeat", type=int, nargs="+", default=[1],
                        help="rounds per size, in the order of --models (the last one repeats)")
    parser.add_argument("--variants", nargs="*", default=None,
                        help=f"default: {' '.join(DEFAULT_VARIANTS)} (with --soak-result: {' '.join(SOAK_VARIANTS)})")
    parser.add_argument("--cosmos", action="store_true", help="add cosmos-watcher (astronomer-cosmos importable)")
    parser.add_argument("--assets", action="store_true",
                        help="add dbtbus-redis-assets: dbtbus-redis with emit_assets=True, each node task's success "
                             "ended on a worker (what emitting every node's asset costs)")
    parser.add_argument("--cosmos-max", type=int, default=200, help="cosmos only up to this many models")
    parser.add_argument("--soak", nargs="*", default=[], metavar="SIZE:N",
                        help="N more consecutive dbtbus-redis runs at SIZE models (hung runs counted)")
    parser.add_argument("--hang-after", type=float, default=4.0,
                        help="a run not ended after this many times the bare task's time is hung")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--write", type=Path, help="regenerate this page's figures from the results (bench/render.py)")
    parser.add_argument("--soak-result", action="store_true",
                        help="record the run as bench/results/airflow_soak.json, its own section (the sizes of an "
                             "earlier soak result not measured again are carried over; airflow_live.json and its "
                             "plot are left alone)")
    parser.add_argument("--layouts", action="store_true",
                        help="compare layout='one_dag' with 'split' (variants shell, bare and both; "
                             "results in airflow_layouts.json, its own section)")
    return parser


def _measured(args: argparse.Namespace) -> Measured:
    if args.layouts:
        args.variants = ["shell", "bare", "dbtbus-redis-one-dag", "dbtbus-redis-split"]
    elif args.variants is None:
        args.variants = list(SOAK_VARIANTS if args.soak_result else DEFAULT_VARIANTS)
    figures = _run(args)
    notes: list[str] = []
    if args.soak_result:
        for size in figures["sizes"]:
            size["measured_at"] = figures["measured_at"]
        kept = _carried_over(args.results_dir, {s["models"] for s in figures["sizes"]})
        figures["sizes"] = sorted([*figures["sizes"], *kept], key=lambda s: s["models"])
        notes += [f"{s['models']} models: carried over from the run of {s['measured_at']}" for s in kept]
    return Measured(params={"models": [s["models"] for s in figures["sizes"]], "variants": list(args.variants),
                            "cosmos_max": args.cosmos_max, "soak": list(args.soak)}, figures=figures, notes=notes)


def _carried_over(results_dir: Path, measured: set[int]) -> list[dict[str, Any]]:
    """The sizes of the earlier soak result this run did not measure, each keeping when it was measured: the
    soak of the largest size runs in its own invocation and must not drop the others from the page."""
    data = load_results(results_dir).get(SOAK_NAME)
    if data is None or data["params"].get("quick"):
        return []
    kept = []
    for size in data["figures"].get("sizes", []):
        if size.get("models") in measured:
            continue
        size.setdefault("measured_at", data["figures"].get("measured_at", data["date"]))
        size["carried_over"] = True
        kept.append(size)
    return kept


@benchmark(name="airflow_live", order=120, interpreter="airflow")
def run(opts: Options) -> Measured:
    """Airflow under a real scheduler (PostgreSQL, redis-server): bare build vs dbtbus at 50 to 500 models."""
    return _measured(_parser().parse_args(["--models", "20"] if opts.tiny else ["--large"] if opts.large else []))


@benchmark(name=SOAK_NAME, order=135, interpreter="airflow")
def run_soak(opts: Options) -> Measured:
    """Airflow under a real scheduler: consecutive dbtbus runs at 200 and 500 models (and 1,000), hung runs counted."""
    sizes = ["20"] if opts.tiny else ["200", "500", *(["1000"] if opts.large else [])]
    soak = ["20:2"] if opts.tiny else ["200:10", "500:10", *(["1000:3"] if opts.large else [])]
    return _measured(_parser().parse_args(["--soak-result", "--models", *sizes, "--soak", *soak,
                                           "--results-dir", str(opts.results_dir)]))


@benchmark(name="airflow_layouts", order=130, interpreter="airflow")
def run_layouts(opts: Options) -> Measured:
    """Airflow under a real scheduler: one DAG vs node DAGs (``layout=``) at 50 to 200 models."""
    return _measured(_parser().parse_args(["--layouts", "--models", *(["20"] if opts.tiny else ["50", "100", "200"])]))


def main() -> None:
    import signal

    # SIGTERM unwinds like Ctrl-C: the deployment's processes and database are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    parser = _parser()
    args = parser.parse_args()
    compile_bytecode()  # the deployment's processes import dbtbus as an installed copy would, from bytecode
    date, started = now(), time.perf_counter()
    measured = _measured(args)
    figures = measured.figures
    name = "airflow_layouts" if args.layouts else SOAK_NAME if args.soak_result else "airflow_live"
    result = wrap(name, Options(results_dir=args.results_dir), measured, date=date,
                  duration_s=time.perf_counter() - started)
    print(write_result(args.results_dir, result))
    if name == "airflow_live":
        plot(figures)
    if args.write:
        from bench.render import render_file

        render_file(args.results_dir, args.write)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    sizes_wanted = list(args.models) + ([1000] if args.large and 1000 not in args.models else [])
    soak = {int(k): int(v) for k, v in (item.split(":") for item in args.soak)}
    variants = list(args.variants) + (["cosmos-watcher"] if args.cosmos else []) + (
        ["dbtbus-redis-assets"] if args.assets and "dbtbus-redis-assets" not in args.variants else [])
    from dbtbus.testing.redis_server import RedisServer

    work = Path(tempfile.mkdtemp(prefix="af-live-bench-")).resolve()
    prepared = {models: _prepare(work, models) for models in sizes_wanted}
    sizes: list[dict[str, Any]] = []
    with RedisServer() as redis:
        env = {"DBTBUS_BENCH_REDIS": redis.url}
        home = work / "airflow-home"
        home.mkdir()
        with Deployment(home, BIN, env) as af:
            for models, (project, _, failing_path) in prepared.items():
                for variant in variants:
                    if variant == "shell":
                        continue
                    which = DAG_FILES[variant]
                    (af.dags / f"dbtbus_bench_{models}_{which}.py").write_text(DAG_FILE.format(
                        which=which, models=models, project=str(project.path), failing=str(failing_path)))
            for index, models in enumerate(sizes_wanted):
                project, failing, _ = prepared[models]
                rounds = 1 if models == 1000 and models not in args.models else \
                    args.repeat[min(index, len(args.repeat) - 1)]
                runs: list[dict[str, Any]] = []
                expected = 30.0 + models * 0.2  # until the first bare run says better
                for round_ in range(rounds):
                    for variant in variants:
                        if variant == "cosmos-watcher" and models > args.cosmos_max:
                            continue
                        if variant == "shell":
                            result = shell(project.path, models)
                        else:  # cosmos's worker run per consumer takes minutes where dbtbus takes seconds
                            factor = args.hang_after * (4 if variant == "cosmos-watcher" else 1)
                            result = one(af, variant, models, failing, redis.url, work,
                                         hang_after=max(120.0, factor * expected))
                        if variant == "bare" and result.get("dag_wall"):
                            expected = result["dag_wall"]
                        result["round"] = round_
                        print(json.dumps(result), flush=True)
                        runs.append(result)
                for n in range(soak.get(models, 0)):
                    result = one(af, "dbtbus-redis", models, failing, redis.url, work,
                                 hang_after=max(120.0, args.hang_after * expected))
                    result["soak"] = n
                    print(json.dumps(result), flush=True)
                    runs.append(result)
                sizes.append({"models": models, "nodes": len(project.nodes), "repeat": rounds, "runs": runs,
                              "failing": failing, "soak": soak.get(models, 0)})
    from importlib.metadata import version

    shutil.rmtree(work / "airflow-home", ignore_errors=True)
    return {"sizes": sizes, "airflow": version("apache-airflow"),
            "cosmos": _version("astronomer-cosmos") if args.cosmos else None,
            "cosmos_max": args.cosmos_max if args.cosmos else None,
            "host": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
            "load_average_at_end": list(os.getloadavg()),
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


if __name__ == "__main__":
    main()
