"""What dbtbus costs Airflow's long-lived processes: parsing a DAG file that renders a manifest, and the
triggerer's memory per waiting sensor. Goals (issue #14): parsing a 5,000-node group <= 1 s and <= 100 MB
with no dbt import; <= 10 KB of triggerer memory per waiting sensor.

**Parse cost.** The dag-processor re-parses every DAG file on a loop (which is why cosmos's memory guide
exists). A synthetic ``manifest.json`` of N models (layered, each with two tests, fed by seeds) is rendered by
a DAG file with ``render_dbt_task_group``; a fresh interpreter first imports what a dag-processor already has
(``airflow.sdk``), then resets its peak RSS (``/proc/self/clear_refs``) and executes the DAG file: wall and
CPU time of that, the rise of the peak RSS, the modules it imported, and whether any ``dbt`` module was among
them. Repeated in fresh interpreters; medians with their spread.

**Triggerer memory.** 1,000 :class:`~dbtbus.airflow.triggers.DbtNodeTrigger` s run in one event loop, as the
triggerer runs them (one asyncio task each, sharing one bus per URL and one watch of their producer task —
the Task SDK's answer stubbed as "running"), all waiting on nodes of one live run:
the memory they hold once they all wait, divided by 1,000: Python's allocations (tracemalloc) in one
interpreter, the whole process's RSS in another with tracemalloc off (its trace per live block is not the
sensors' memory), alternated. On ``memory://`` and on a throw-away Redis.

**Per node task, against Airflow's floor.** What Airflow itself does with each node task, beside the floor
benchmark's trivial ``start_from_trigger`` task (``bench/_floor_trigger.py``), in DAGs of 50 tasks (the
default ``max_tasks_per_dag``): building it when the dag-processor parses the DAG file (dbtbus: the whole
render of a 200-model manifest, per node task), serializing its DAG, the bytes it adds to the serialized DAG,
and deserializing that DAG — which Airflow 3.3's triggerer does for every trigger it starts, once in its
supervisor and once in its runner, so a task's bytes and fields are paid once per task of its DAG. Medians
of alternated repeats in one interpreter.

Needs Airflow (run it with the airflow nox session's interpreter)::

    .nox/airflow/bin/python -m bench.airflow_footprint [--quick] [--write docs/airflow.md]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._harness import ROOT, Measured, Options, benchmark, log, standalone, stat
from bench.goals import GOAL_PARSE_BYTES, GOAL_PARSE_SECONDS, GOAL_SENSOR_BYTES

NAME = "airflow_footprint"


def synthetic_manifest(models: int, *, root: str = "/srv/dbt/project") -> dict[str, Any]:
    """A manifest of ``models`` models in layers of 50 (each reads up to 3 of the layer before), 2 tests each."""
    nodes: dict[str, Any] = {}
    seeds = [f"seed.bench.raw_{i}" for i in range(max(1, models // 100))]
    for uid in seeds:
        nodes[uid] = {"resource_type": "seed", "name": uid.split(".")[-1], "depends_on": {"nodes": []},
                      "root_path": root, "original_file_path": f"seeds/{uid.split('.')[-1]}.csv"}
    width = 50
    for i in range(models):
        layer, pos = divmod(i, width)
        if layer == 0:
            parents = [seeds[pos % len(seeds)]]
        else:
            parents = [f"model.bench.m{(layer - 1) * width + (pos + k) % width}" for k in range(3)]
        uid = f"model.bench.m{i}"
        nodes[uid] = {"resource_type": "model", "name": f"m{i}", "depends_on": {"nodes": parents},
                      "root_path": root, "original_file_path": f"models/m{i}.sql", "config": {"materialized": "table"}}
        for kind in ("not_null", "unique"):
            test = f"test.bench.{kind}_m{i}_id.{i:08x}"
            nodes[test] = {"resource_type": "test", "name": f"{kind}_m{i}_id", "depends_on": {"nodes": [uid]},
                           "root_path": root, "original_file_path": f"models/m{i}.yml"}
    return {"metadata": {"dbt_version": "1.11.0"}, "nodes": nodes, "sources": {}, "unit_tests": {}}


BASELINE_FILE = '''"""The same graph of plain Airflow tasks, no dbtbus (airflow dag): Airflow's own floor."""
import json

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, TaskGroup

nodes = json.load(open({manifest!r}))["nodes"]
with DAG("plain_{models}", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    with TaskGroup("dbt"):
        tasks = {{uid: EmptyOperator(task_id=uid.replace(".", "__")) for uid, n in nodes.items()
                  if n["resource_type"] in ("model", "seed")}}
        for uid, task in tasks.items():
            ups = [tasks[p] for p in nodes[uid]["depends_on"]["nodes"] if p in tasks]
            if ups:
                ups >> task
'''

DAG_FILE = '''"""A dbt project's DAG, rendered by dbtbus (airflow dag)."""
import pendulum
from airflow.sdk import DAG

from dbtbus.airflow import render_dbt_task_group

with DAG("dbt_{models}", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    render_dbt_task_group({manifest!r}, "redis://127.0.0.1:6379/0", ["build", "--project-dir", "/srv/dbt/project"])
'''

PARSE_PROBE = r'''
import json, os, resource, sys, time, runpy
import airflow.sdk  # what a dag-processor has imported before it parses any file
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
before = set(sys.modules)
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    reset = True
except OSError:
    reset = False
base = hwm()
rss_base = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
c0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
runpy.run_path(sys.argv[1])
wall = time.perf_counter() - t0
c1 = resource.getrusage(resource.RUSAGE_SELF)
new = sorted(set(sys.modules) - before)
print(json.dumps({
    "wall": wall, "cpu": (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime),
    "peak_rise": hwm() - (rss_base if reset else base), "hwm_reset": reset,
    "modules": len(new), "dbt_imported": any(m == "dbt" or m.startswith("dbt.") for m in new),
    "heavy": sorted({m.split(".")[0] for m in new} & {"dbt", "redis", "anyio", "rich", "psutil", "jinja2"}),
}))
'''


def parse_cost(models: int, repeats: int, workdir: Path, *, plain: bool = False) -> dict[str, Any]:
    manifest = workdir / f"manifest_{models}.json"
    if not manifest.exists():
        manifest.write_text(json.dumps(synthetic_manifest(models)))
    dag_file = workdir / f"{'plain' if plain else 'dag'}_{models}.py"
    dag_file.write_text((BASELINE_FILE if plain else DAG_FILE).format(models=models, manifest=str(manifest)))
    runs = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-c", PARSE_PROBE, str(dag_file)], capture_output=True, text=True,
                              check=True, timeout=600, cwd=ROOT)  # fmt: skip
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    nodes = len(json.loads(manifest.read_text())["nodes"])
    return {
        "models": models,
        "plain_airflow": plain,
        "manifest_nodes": nodes,
        "manifest_bytes": manifest.stat().st_size,
        "wall": stat([r["wall"] for r in runs]),
        "cpu": stat([r["cpu"] for r in runs]),
        "peak_rise": stat([r["peak_rise"] for r in runs]),
        "modules": runs[-1]["modules"],
        "dbt_imported": any(r["dbt_imported"] for r in runs),
        "heavy_modules": runs[-1]["heavy"],
        "hwm_reset": all(r["hwm_reset"] for r in runs),
    }


async def waiting_memory(url: str, run_id: str, graph: dict[str, Any], start: Any, *, traced: bool,
                         warm: Any = None) -> dict[str, Any]:
    """Run inside a probe interpreter: publish a live run of ``graph`` on ``url``, start the triggers
    (``await start()`` returns their asyncio tasks), let them all wait, and return the memory they hold per
    sensor — Python's allocations with ``traced``, else the process's RSS growth with tracemalloc off.
    ``warm()``, when given, is one trigger's wait, run and cancelled first so imports and the shared bus are
    paid before measuring."""
    import asyncio
    import gc
    import tracemalloc

    import dbtbus
    from dbtbus.events import ProducerInfo, RunStarted

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    async with dbtbus.connect(url) as bus:
        await bus.renew_lease(run_id, "bench", 3600)
        await bus.publish(RunStarted(run_id=run_id, producer=ProducerInfo(id="bench"), command="build",
                                     graph=graph, heartbeat_interval=600))
        if warm is not None:
            first = asyncio.ensure_future(warm())
            await asyncio.sleep(1.0)
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
        gc.collect()
        if traced:
            tracemalloc.start()
        rss0, traced0 = rss(), tracemalloc.get_traced_memory()[0]
        tasks = await start()
        await asyncio.sleep(3.0)  # every trigger is now waiting on the run's one reader
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - traced0 if traced else rss() - rss0
        waiting = sum(not t.done() for t in tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"sensors": len(tasks), "waiting": waiting, "traced": traced, "per_sensor": grown / len(tasks)}


TRIGGER_PROBE = r'''
import asyncio, json, os, sys, types
from bench.airflow_footprint import waiting_memory
N = int(sys.argv[2]); URL = sys.argv[1]
# "traced" counts Python's allocations; "rss" reads the process's RSS with tracemalloc off (its own
# bookkeeping, a trace per live block, would otherwise be counted as the sensors').
TRACED = sys.argv[3] == "traced"
from dbtbus.airflow._task_states import TaskStates
from dbtbus.airflow.triggers import DbtNodeTrigger
from dbtbus.events import GraphNode

# As in a triggerer: each sensor also watches its producer task through the Task SDK (one shared call per DAG
# run and interval); here the SDK's answer is a stub saying the producer is running.
TaskStates._ask = lambda self: {"dbt.dbt_producer": "running"}
TI = types.SimpleNamespace(dag_id="bench", run_id="manual__1", task_id="dbt.s", try_number=1, map_index=-1)
RUN = f"footprint-{os.getpid()}"

def trigger(uid, **kwargs):
    t = DbtNodeTrigger(URL, RUN, uid, producer_task_id="dbt.dbt_producer", **kwargs)
    t.task_instance = TI
    return t

async def start():
    triggers = [trigger(f"model.p.m{i}", timeout=3600) for i in range(N)]
    return [asyncio.ensure_future(t.run().__anext__()) for t in triggers]

graph = {f"model.p.m{i}": GraphNode("model") for i in range(N)}
print(json.dumps(asyncio.run(waiting_memory(URL, RUN, graph, start, traced=TRACED,
                                            warm=lambda: trigger("model.p.m0").run().__anext__()))))
'''


STARTED_PROBE = r'''
# As Airflow 3.3's triggerer starts a start_from_trigger task (TriggerRunner.create_triggers / run_trigger): a
# task instance built from a DAG deserialized for that trigger alone, its template context, render, run().
# "keep": as before dbtbus let go of that DAG (BaseTrigger's rendering).
import asyncio, copy, json, sys, tempfile, uuid
from datetime import datetime, timezone
from pathlib import Path
URL, N, MODE, RELEASE = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "release"
from bench.airflow_footprint import synthetic_manifest, waiting_memory
from airflow.sdk import DAG
from airflow.serialization.serialized_objects import DagSerialization
from airflow.jobs.triggerer_job_runner import TriggerRunner
from airflow.executors.workloads.task import TaskInstanceDTO
from airflow.triggers.base import BaseTrigger
import dbtbus
from dbtbus.airflow import render_dbt_task_group
from dbtbus.airflow._task_states import TaskStates
from dbtbus.airflow.triggers import DbtNodeTrigger
from dbtbus.events import GraphNode
TaskStates._ask = lambda self: {"dbt.dbt_producer": "running"}
if not RELEASE:
    DbtNodeTrigger.render_template_fields = BaseTrigger.render_template_fields

manifest = Path(tempfile.mkdtemp()) / "manifest.json"
manifest.write_text(json.dumps(synthetic_manifest(N)))
with DAG("bench", schedule=None) as dag:
    # every sensor in this one DAG, whatever its size (layout="auto" would split 200 models into node DAGs)
    render_dbt_task_group(manifest, URL, ["build"], group_id="dbt", sensor_kwargs={"timeout": 3600},
                          layout="one_dag")
dag_data = DagSerialization.to_dict(dag)
sensors = [t for t in dag.tasks if t.task_type == "DbtNodeSensor"]
assert sensors, "no DbtNodeSensor in the rendered DAG"
now = datetime.now(timezone.utc)
dag_run = dict(dag_id="bench", run_id="manual__1", logical_date=None, data_interval_start=None,
               data_interval_end=None, run_after=now, start_date=now, end_date=None, run_type="manual",
               state="running", consumed_asset_events=[], partition_key=None)
version = uuid.uuid4()
copies = [copy.deepcopy(dag_data) for _ in sensors]  # what each workload carries (from_dict consumes it)
from airflow.serialization.decoders import smart_decode_trigger_kwargs

def start(task, data):
    ti = TaskInstanceDTO(id=uuid.uuid4(), task_id=task.task_id, dag_id="bench", run_id="manual__1", try_number=1,
                         dag_version_id=version, pool_slots=1, priority_weight=1)
    kwargs = {k: smart_decode_trigger_kwargs(v) for k, v in task.start_trigger_args.trigger_kwargs.items()}
    trigger = DbtNodeTrigger(**kwargs)
    runtime_ti = TriggerRunner.create_runtime_ti(ti, data, dag_run)
    context = runtime_ti.get_template_context()
    trigger.task_instance = runtime_ti
    trigger.render_template_fields(context=context)
    return trigger, context

held = []  # the triggerer's run_trigger frame keeps each trigger's context for the wait

async def start_all():
    tasks = []
    for task in sensors:
        trigger, context = start(task, copies.pop())
        held.append(context)
        tasks.append(asyncio.ensure_future(trigger.run().__anext__()))
        await asyncio.sleep(0)
    return tasks

graph = {t.unique_id: GraphNode("model") for t in sensors}
run = dbtbus.airflow.dbtbus_run_id("bench", "manual__1", -1, "dbt")
print(json.dumps(asyncio.run(waiting_memory(URL, run, graph, start_all, traced=MODE == "traced"))))
'''


PER_TASK_PROBE = r'''
# What Airflow does per node task, beside the floor's trivial start_from_trigger task: build, serialize,
# bytes, deserialize (as the triggerer does per trigger, for the trigger's whole DAG). DAGs of 50 tasks.
import functools, gc, json, sys, tempfile, time
from pathlib import Path
from airflow.sdk import DAG
from airflow.sdk.definitions._internal.contextmanager import DagContext
from airflow.serialization.definitions.baseoperator import SerializedBaseOperator
from airflow.serialization.serialized_objects import DagSerialization
from bench._floor_trigger import FloorOperator
from bench.airflow_footprint import synthetic_manifest
from dbtbus.airflow import render_dbt_task_group
REPEATS, MODELS, PER_DAG = int(sys.argv[1]), 200, 50
AS_IS = SerializedBaseOperator.__dict__["get_serialized_fields"]
manifest = Path(tempfile.mkdtemp()) / "manifest.json"
manifest.write_text(json.dumps(synthetic_manifest(MODELS)))

def floor():
    dags = []
    for k in range(MODELS // PER_DAG):
        with DAG(f"floor_{k}", schedule=None) as dag:
            for i in range(PER_DAG):
                FloorOperator(task_id=f"m{i:04d}", moment_path="/tmp/moment", outcome="success", after=i / MODELS)
        dags.append(dag)
    return dags

def dbtbus():
    # As the dag-processor imports a DAG file: every DAG made in a `with` is registered with the module.
    DagContext.current_autoregister_module_name = __name__
    try:
        with DAG("bench", schedule=None):
            render_dbt_task_group(manifest, "redis://127.0.0.1:6379/0", ["build"], group_id="dbt",
                                  max_tasks_per_dag=PER_DAG)
    finally:
        DagContext.current_autoregister_module_name = None
        made = [dag for dag, _ in DagContext.autoregistered_dags]
        DagContext.autoregistered_dags.clear()
    # the node DAGs of models (the seeds' DAG is small), as the triggerer meets them
    return [d for d in made if d.dag_id.startswith("bench.dbt.models")]

samples = {"floor": [], "dbtbus": []}
for _ in range(REPEATS):
    for name, build in (("floor", floor), ("dbtbus", dbtbus)):
        gc.collect()
        t0 = time.process_time()
        dags = build()
        built = time.process_time() - t0
        tasks = sum(len(d.tasks) for d in dags)
        t0 = time.process_time()
        data = [DagSerialization.to_dict(d) for d in dags]
        serialized = time.process_time() - t0
        blobs = [json.dumps(d) for d in data]
        deserialized = {}
        for fields in ("as is", "cached"):
            # An upstream lever, measured and put back: Airflow 3.3 builds the operator's field list anew for
            # every field of every task it deserializes (SerializedBaseOperator.get_serialized_fields).
            if fields == "cached":
                SerializedBaseOperator.get_serialized_fields = classmethod(functools.cache(AS_IS.__func__))
            t0 = time.process_time()
            for blob in blobs:
                DagSerialization.from_dict(json.loads(blob))
            deserialized[fields] = time.process_time() - t0
            SerializedBaseOperator.get_serialized_fields = AS_IS
        samples[name].append({"tasks": tasks, "dags": len(dags), "build_us": built / tasks * 1e6,
                              "serialize_us": serialized / tasks * 1e6,
                              "deserialize_us": deserialized["as is"] / tasks * 1e6,
                              "deserialize_cached_us": deserialized["cached"] / tasks * 1e6,
                              "bytes": sum(len(b) for b in blobs) / tasks})
        del dags, data, blobs
out = {}
for name, runs in samples.items():
    out[name] = {"tasks": runs[0]["tasks"], "dags": runs[0]["dags"],
                 **{k: [r[k] for r in runs] for k in runs[0] if k not in ("tasks", "dags")}}
print(json.dumps(out))
'''


def per_task_cost(repeats: int) -> dict[str, Any]:
    """Airflow's work per node task (dbtbus) and per trivial ``start_from_trigger`` task (the floor's), in a fresh
    interpreter: CPU µs to build, serialize and deserialize, and serialized bytes, per task of a DAG of 50."""
    proc = subprocess.run([sys.executable, "-c", PER_TASK_PROBE, str(repeats)], capture_output=True, text=True,
                          check=True, timeout=600, cwd=ROOT)  # fmt: skip
    raw = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: {"tasks": r["tasks"], "dags": r["dags"],
                   **{k: stat(v) for k, v in r.items() if k not in ("tasks", "dags")}}
            for name, r in raw.items()}


def triggerer_memory(url: str, sensors: int, repeats: int, *, started: str | None = None) -> dict[str, Any]:
    """``started=None``: dbtbus's triggers alone; ``"release"`` / ``"keep"``: started as Airflow's triggerer
    starts a start_from_trigger task, with the DAG copy let go after rendering (today) or kept (before)."""
    runs = []
    for _ in range(repeats):
        for mode in ("traced", "rss"):  # alternated, each in a fresh interpreter
            argv = ([TRIGGER_PROBE, url, str(sensors), mode] if started is None
                    else [STARTED_PROBE, url, str(sensors), mode, started])
            proc = subprocess.run([sys.executable, "-c", *argv],
                                  capture_output=True, text=True, check=True, timeout=600, cwd=ROOT)  # fmt: skip
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    sensors = runs[0]["sensors"]
    return {
        "url": url.split("://")[0] + "://",
        "started": started,
        "sensors": sensors,
        "all_waiting": all(r["waiting"] == sensors for r in runs),
        "traced_per_sensor": stat([r["per_sensor"] for r in runs if r["traced"]]),
        "rss_per_sensor": stat([r["per_sensor"] for r in runs if not r["traced"]]),
        "rss_without_tracemalloc": True,
    }


@benchmark(name=NAME, order=110, interpreter="airflow")
def run(opts: Options) -> Measured:
    from dbtbus.testing import RedisServer, find_redis_server

    repeats = 2 if opts.quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        parse = []
        # 200 and 5,000 manifest nodes: a third are models, two thirds their tests (seeds besides).
        for models in (66, 1666):
            for plain in (False, True):
                what = "plain Airflow tasks for" if plain else "a DAG file that renders"
                log(f"airflow_footprint: parsing {what} {models} models ({repeats}x)")
                parse.append(parse_cost(models, repeats, Path(tmp), plain=plain))
        log(f"airflow_footprint: Airflow's work per node task against the floor's trivial task ({repeats * 2}x)")
        per_task = per_task_cost(repeats * 2)
    triggers = [triggerer_memory("memory://footprint", 1000, max(1, repeats - 2))]
    if find_redis_server() is not None:
        with RedisServer() as server:
            triggers.append(triggerer_memory(server.url, 1000, max(1, repeats - 2)))
            # The DAG's size matters there: 200 models, each sensor holding what Airflow built for it.
            for started in ("release", "keep"):
                triggers.append(triggerer_memory(server.url, 200, max(1, repeats - 3), started=started))
    return Measured(params={"repeats": repeats}, figures={"parse": parse, "triggers": triggers, "per_task": per_task})


def _kb(value: float) -> str:
    return f"{value / 1024:.1f} KB" if value < 100 * 1024 else f"{value / 1024:,.0f} KB"


def _mb(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


def render(data: dict[str, Any]) -> str:
    """The page's block: the parse cost of a rendering DAG file beside plain Airflow's, and what a waiting
    sensor holds in the triggerer; verdicts against ``bench/goals.py``."""
    lines = [
        "| DAG file rendering | manifest nodes | parse wall | parse CPU | peak RSS rise | modules imported "
        "| dbt imported |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in data["parse"]:
        w, c, m = p["wall"], p["cpu"], p["peak_rise"]
        what = "plain Airflow, same edges" if p.get("plain_airflow") else "dbtbus"
        lines.append(
            f"| {p['models']} models ({what}) | {p['manifest_nodes']:,} "
            f"| {w['median']:.3f} s ({w['min']:.3f}–{w['max']:.3f}) "
            f"| {c['median']:.3f} s | {_mb(m['median'])} | {p['modules']} | {'yes' if p['dbt_imported'] else 'no'} |"
        )
    big = [p for p in data["parse"] if not p.get("plain_airflow")][-1]
    ok = big["wall"]["median"] <= GOAL_PARSE_SECONDS and big["peak_rise"]["median"] <= GOAL_PARSE_BYTES
    lines += ["", f"Goal for a {big['manifest_nodes']:,}-node manifest: ≤ {GOAL_PARSE_SECONDS:g} s, "
              f"≤ {GOAL_PARSE_BYTES / 2**20:g} MiB, no dbt import — "
              f"{'met' if ok and not big['dbt_imported'] else 'missed'}.",
              ""]
    how = {None: "dbtbus's triggers alone",
           "release": "as Airflow's triggerer starts them (start_from_trigger)",
           "keep": "the same, before: the DAG copy Airflow builds per trigger kept while waiting"}
    lines += ["| triggerer, waiting sensors | sensors | traced per sensor | RSS per sensor | all waiting |",
              "|---|---|---|---|---|"]
    for t in data["triggers"]:
        lines.append(
            f"| {t['url']}, {how[t.get('started')]} | {t['sensors']:,} | {_kb(t['traced_per_sensor']['median'])} "
            f"| {_kb(t['rss_per_sensor']['median'])} | {'yes' if t['all_waiting'] else 'NO'} |"
        )
    own = [t for t in data["triggers"] if t.get("started") is None]
    worst = max(max(t["traced_per_sensor"]["median"], t["rss_per_sensor"]["median"]) for t in own)
    lines += ["", f"Goal: ≤ {GOAL_SENSOR_BYTES / 1024:g} KB per waiting sensor, traced and RSS, for dbtbus's "
              f"triggers alone — {'met' if worst <= GOAL_SENSOR_BYTES else 'missed'}."]
    if data.get("per_task"):
        lines += ["", *per_task_lines(data["per_task"])]
    return "\n".join(lines)


def per_task_lines(per_task: dict[str, Any]) -> list[str]:
    """Airflow's work per node task beside the floor's trivial task (medians, CPU)."""
    floor, mine = per_task["floor"], per_task["dbtbus"]

    def ratio(key: str) -> str:
        return f"{mine[key]['median'] / floor[key]['median']:.1f}×"

    lines = [
        "| Airflow's work per task, DAGs of 50 | build (dag-processor parse) | serialize | serialized bytes "
        "| deserialize (triggerer, per task of the DAG, per trigger started) | the same, Airflow's field list "
        "cached |",
        "|---|---|---|---|---|---|",
    ]
    for name, what in (("floor", "floor: trivial `start_from_trigger` task"), ("dbtbus", "dbtbus node task")):
        r = per_task[name]
        lines.append(f"| {what} ({r['tasks']} tasks) | {r['build_us']['median']:.0f} µs "
                     f"| {r['serialize_us']['median']:.0f} µs | {r['bytes']['median']:.0f} B "
                     f"| {r['deserialize_us']['median']:.0f} µs | {r['deserialize_cached_us']['median']:.0f} µs |")
    lines.append(f"| dbtbus ÷ floor | {ratio('build_us')} | {ratio('serialize_us')} | {ratio('bytes')} "
                 f"| {ratio('deserialize_us')} | {ratio('deserialize_cached_us')} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    standalone(NAME, argv)


if __name__ == "__main__":
    main()
