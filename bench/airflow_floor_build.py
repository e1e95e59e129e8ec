"""Airflow's floor for "DAG wall ÷ bare build": a bare ``dbt build`` while the same deployment ends N trivial
tasks across it, no dbtbus.

Not a test. Needs what ``bench/airflow_floor.py`` needs (Airflow's virtualenv, PostgreSQL on 127.0.0.1:5432)
and reuses its deployment, its trivial task and ``bench/airflow_live.py``'s bare build and dbtbus DAG. Issue
#25 asks for a dbtbus DAG within 1.3× of a bare build in one Airflow task at 500 and 1,000 models; this
measures how close Airflow itself lets any design come on this machine, beside dbtbus in the same rounds.
Variants, alternated within a round:

* ``bare`` — one PythonOperator running ``dbtRunner().invoke(["build", ...])`` on a generated N-model
  project, alone (``bench/airflow_live.py``'s bare variant): what the other is divided by;
* ``floor`` — N trivial ``start_from_trigger`` tasks (``bench._floor_trigger``) in DAGs of at most
  ``--per-dag``, one run id — dbtbus's node DAGs minus dbtbus. Once every one is deferred and waiting in the
  triggerer (the moment), the same bare build starts, and task *i* ends from the triggerer at (i+1)/N of the
  round's bare wall after the moment, as dbtbus's node tasks end while dbt decides their nodes. Its wall runs
  from the trigger of the tasks' DAG runs to the end of the last run (the build's or a task DAG's): the same
  span as dbtbus's DAG wall, whose producer first starts its node DAGs and waits for their tasks to defer;
* ``dbtbus`` — ``render_dbt_task_group`` on a throw-away redis-server, its default layout, on the same
  project (``bench/airflow_live.py``'s ``dbtbus-redis`` run).

What a dbtbus DAG adds over the floor is dbtbus's own (its producer's callback and publishing, its triggers'
reads of the bus, their logs, the return-value XCom, the larger DAG file); what the floor adds over the bare
build is Airflow's work per task (the triggers' start and end, the callback request per ended task and the
dag-processor's parse for it, the scheduler's loop) competing with dbt for the same cores.

    PYTHONPATH=. /path/to/airflow-venv/bin/python bench/airflow_floor_build.py --models 500 1000 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python bench/<script>.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._harness import RESULTS_DIR, Measured, Options, Run, benchmark, log, script_main, stat
from bench.airflow_floor import DAG_FILE as TASKS_FILE
from bench.airflow_floor import TRIGGER_SHAPE, _dag_id, _dag_ids, _pct, _wait, _wait_waiting
from bench.airflow_live import DAG_FILE as BUILD_FILE
from bench.airflow_live import _cpu_seconds, _med, _PeakSampler, _prepare, _rss_rise
from bench.airflow_live import one as airflow_live_run
from tests.airflow_live._deployment import TERMINAL, Deployment

BIN = Path(sys.executable).parent
NAME = "airflow_floor_build"
VARIANTS = ("bare", "floor", "dbtbus")
#: The tasks' DAGs, named as the floor benchmark's split variants (its ``_dag_ids`` waits until all are parsed).
TASKS_VARIANT = "build-split"
#: The floor's tasks: the floor benchmark's trivial task, each ending its share of the spread past the moment.
FLOOR_TASK = ('FloorOperator(task_id=f"m{{i:04d}}", moment_path={moment!r}, outcome="success", retries=0, '
              'after=(i + 1) / MODELS)')


def _bare_dag(models: int) -> str:
    return f"bench_bare_{models}"


def _run_times(af: Deployment, dag_ids: list[str], run_id: str, timeout: float) -> list[tuple[float | None, float]]:
    """Every run's (start, end), in ``dag_ids``' order, once all have ended (a run that never ends is a timeout:
    the floor does not hang)."""
    deadline = time.monotonic() + timeout
    while True:
        af.check_alive()
        times = [af.dag_run_times(d, run_id) for d in dag_ids]
        if all(end is not None for _, end in times):
            return [(start, end) for start, end in times if end is not None]
        if time.monotonic() > deadline:
            raise TimeoutError(f"the runs {run_id} have not all ended in {timeout:.0f} s")
        time.sleep(0.25)


def bare(af: Deployment, models: int, timeout: float) -> dict[str, Any]:
    run_id = f"bare-{uuid.uuid4().hex[:8]}"
    cpu0 = _cpu_seconds(af)
    af.trigger(_bare_dag(models), run_id)
    ((start, end),) = _run_times(af, [_bare_dag(models)], run_id, timeout)
    cpu1 = _cpu_seconds(af)
    return {"variant": "bare", "models": models, "run_id": run_id, "wall": end - (start or end),
            "state": af.dag_run_state(_bare_dag(models), run_id),
            "cpu": {k: round(cpu1[k] - cpu0[k], 3) for k in cpu1 if k in cpu0},
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def floor(af: Deployment, models: int, per_dag: int, moment: Path, spread: float, timeout: float) -> dict[str, Any]:
    """The tasks' runs, every task waiting, then the moment: the bare build starts and the tasks end across it."""
    run_id = f"floor-{uuid.uuid4().hex[:8]}"
    dag_ids = _dag_ids(af, TASKS_VARIANT, models, per_dag)
    if len(dag_ids) != -(-models // per_dag):
        raise TimeoutError(f"{len(dag_ids)} of the tasks' DAGs parsed")
    moment.unlink(missing_ok=True)
    Path(f"{moment}.waiting").unlink(missing_ok=True)
    for dag_id in [*dag_ids, _bare_dag(models)]:  # unpaused before the clock starts: only the runs are measured
        af.wait_for_dag(dag_id)
        af._http("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    cpu0 = _cpu_seconds(af)
    began = time.time()
    with _PeakSampler(af) as peak:
        for dag_id in dag_ids:
            af._http("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None})
        _wait(af, dag_ids, run_id, models, {"deferred"}, timeout, "every task deferred")
        _wait_waiting(af, moment, models, timeout)
        at = time.time()
        moment.write_text(f"{at!r} {spread!r}")
        af.trigger(_bare_dag(models), run_id)
        rows = _wait(af, dag_ids, run_id, models, set(TERMINAL), timeout + spread, "every task terminal")
        *_, (build_start, build_end) = times = _run_times(af, [*dag_ids, _bare_dag(models)], run_id,
                                                          timeout + spread)
    cpu1 = _cpu_seconds(af)
    moment.unlink(missing_ok=True)
    time.sleep(1.0)  # the trigger's poller forgets a moment once its file is gone (it looks every half second)
    # A task's end lag: its end − the moment it was due (its share of the spread past the moment).
    due = {f"m{i:04d}": at + (i + 1) / models * spread for i in range(models)}
    task_ends = dict(af.query("select task_id, extract(epoch from end_date) from task_instance "
                              "where dag_id = any(%s) and run_id = %s", dag_ids, run_id))
    lags = [float(end) - due[str(task)] for task, end in task_ends.items() if end is not None and str(task) in due]
    states = dict(Counter(str(s) for s, _ in rows))
    return {"variant": "floor", "models": models, "run_id": run_id, "dags": len(dag_ids), "spread": spread,
            "wall": max(end for _, end in times) - began, "to_waiting_s": at - began,
            "build_wall": build_end - (build_start or at), "states": states,
            "build_state": af.dag_run_state(_bare_dag(models), run_id),
            "lag_p50_s": statistics.median(lags), "lag_p95_s": _pct(lags, 0.95), "lag_max_s": max(lags),
            "cpu": {k: round(cpu1[k] - cpu0[k], 3) for k in cpu1 if k in cpu0},
            # airflow_live's shape: the triggerer's RSS before the run, each of its processes' peak rise in it.
            "triggerer_rss_before": sum(peak.before.values()),
            "triggerer_rss_rise": peak.rises(),
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def dbtbus(af: Deployment, models: int, failing: dict[str, Any], redis_url: str, work: Path,
           timeout: float) -> dict[str, Any]:
    out = airflow_live_run(af, "dbtbus-redis", models, failing, redis_url, work, hang_after=timeout)
    if out.get("hung") or "dag_wall" not in out:
        raise TimeoutError(f"the dbtbus run {out['run_id']} did not end in {timeout:.0f} s")
    return {"variant": "dbtbus", "models": models, "run_id": out["run_id"], "wall": out["dag_wall"],
            "state": out["state"], "cpu": out["cpu"], "outcome_lag": out.get("outcome_lag"),
            "node_dags": out.get("node_dags"),
            "triggerer_rss_before": out.get("triggerer_rss_before"),
            "triggerer_rss_rise": out.get("triggerer_rss_rise"),
            "load_average": out["load_average"]}


def _fresh_triggerer(af: Deployment) -> None:
    """A new triggerer, as a service manager restarts one, settled before the run: the run's peak RSS rise is
    then a first run's (what a deployment's triggerer pays the first time it meets a DAG of this size)."""
    af.restart_process("triggerer")
    af.wait_triggerers(1)
    time.sleep(5)  # its trigger runner started and idle


def _run(args: argparse.Namespace, checkpoint: Callable[[Measured], None] | None = None) -> Measured:
    from dbtbus.testing.redis_server import RedisServer

    work = Path(tempfile.mkdtemp(prefix="af-floor-build-")).resolve()
    home = work / "airflow-home"
    home.mkdir()
    sizes: list[dict[str, Any]] = []
    notes: list[str] = []
    prepared = {models: _prepare(work, models) for models in args.models}
    with RedisServer() as redis, Deployment(home, BIN, {
        "DBTBUS_BENCH_REDIS": redis.url, "DBTBUS_BENCH_PER_DAG": str(args.per_dag),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                    os.environ.get("PYTHONPATH")]))}) as af:
        for models, (project, _, failing_path) in prepared.items():
            for which in ("bare", "redis"):
                (af.dags / f"floor_build_{which}_{models}.py").write_text(BUILD_FILE.format(
                    which=which, models=models, project=str(project.path), failing=str(failing_path)))
            task = FLOOR_TASK.format(moment=str(work / f"moment-{models}"))
            (af.dags / f"floor_build_tasks_{models}.py").write_text(TASKS_FILE.format(
                models=models, variant="floor", per_dag=args.per_dag, split=True, dag_id=_dag_id(TASKS_VARIANT, models),
                what=TRIGGER_SHAPE["what"], imports=TRIGGER_SHAPE["imports"], task=task))
        for index, models in enumerate(args.models):
            runs: list[dict[str, Any]] = []
            # A first build of a fresh project (its database created, dbt's caches cold) is slower than the
            # rest: it warms up, unrecorded, and gives the first floor run its spread only if no round does.
            log(f"floor-build: {models} models, a warm-up bare build (not recorded)")
            spread = bare(af, models, args.timeout)["wall"]
            for round_ in range(args.repeat[min(index, len(args.repeat) - 1)]):
                for variant in args.variants:
                    log(f"floor-build: {models} models, {variant}, round {round_}")
                    if args.fresh_triggerer and variant != "bare":
                        _fresh_triggerer(af)
                    try:
                        if variant == "bare":
                            result = bare(af, models, args.timeout)
                            spread = result["wall"]
                        elif variant == "floor":
                            result = floor(af, models, args.per_dag, work / f"moment-{models}", spread, args.timeout)
                        else:
                            result = dbtbus(af, models, prepared[models][1], redis.url, work, args.timeout)
                    except TimeoutError as exc:  # recorded: a floor that does not end says so
                        result = {"variant": variant, "models": models, "timed_out": str(exc)}
                        notes.append(f"{models}/{variant}: {exc}")
                    result["round"] = round_
                    print(json.dumps(result), flush=True)
                    runs.append(result)
            sizes.append({"models": models, "runs": runs})
            if checkpoint is not None:  # a run cut short keeps the sizes it finished
                checkpoint(_summarise(args, sizes, notes))
    shutil.rmtree(work, ignore_errors=True)
    return _summarise(args, sizes, notes)


def _cpu_stats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each Airflow component's CPU seconds over ``runs``, as statistics."""
    components = ("triggerer", "scheduler", "dag-processor", "api-server")
    return {c: stat(r["cpu"].get(c, 0.0) for r in runs) for c in components}


def _rise_by_process(run: dict[str, Any]) -> tuple[float, float]:
    """A run's triggerer peak RSS rise (MB) in its supervisor — the process Airflow started, first in the
    tree — and in the rest of its tree (the trigger runner and the log server)."""
    rises = [max(0, v) / 2**20 for v in (run.get("triggerer_rss_rise") or {}).values()]
    return (rises[0], sum(rises[1:])) if rises else (0.0, 0.0)


def _rss_stats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The triggerer's RSS before ``runs`` and its peak rise in them (MB), where they were measured."""
    measured = [r for r in runs if r.get("triggerer_rss_rise") is not None]
    if not measured:
        return {}
    return {"triggerer_rss_before_mb": stat(r["triggerer_rss_before"] / 2**20 for r in measured),
            "triggerer_rss_rise_mb": stat(_rss_rise(r) for r in measured),
            "supervisor_rss_rise_mb": stat(_rise_by_process(r)[0] for r in measured),
            "runner_rss_rise_mb": stat(_rise_by_process(r)[1] for r in measured)}


def _summarise(args: argparse.Namespace, sizes: list[dict[str, Any]], notes: list[str]) -> Measured:
    figures: dict[str, Any] = {"sizes": [], "per_dag": args.per_dag, "fresh_triggerer": args.fresh_triggerer}
    for size in sizes:
        ok = {v: [r for r in size["runs"] if r["variant"] == v and "timed_out" not in r] for v in VARIANTS}
        bare_wall = _med([r["wall"] for r in ok["bare"]])
        bare_cpu = _med([sum(r["cpu"].values()) for r in ok["bare"]]) or 0.0
        row: dict[str, Any] = {"models": size["models"], "bare_wall": stat(r["wall"] for r in ok["bare"]),
                               "timed_out": sum(1 for r in size["runs"] if "timed_out" in r),
                               "rounds": max(len(ok["floor"]), len(ok["dbtbus"]))}
        if ok["floor"] and bare_wall:
            floors = ok["floor"]
            row.update({
                "floor_wall": stat(r["wall"] for r in floors),
                "ratio": stat(r["wall"] / bare_wall for r in floors),
                "build_ratio": stat(r["build_wall"] / bare_wall for r in floors),
                "to_waiting_s": stat(r["to_waiting_s"] for r in floors),
                "lag_p95_s": stat(r["lag_p95_s"] for r in floors),
                "green": all(r["build_state"] == "success" and set(r["states"]) == {"success"} for r in floors),
                "cpu": _cpu_stats(floors),
                "bare_cpu": _cpu_stats(ok["bare"]),
                # The scheduler's tree holds the LocalExecutor's task processes, dbt's build among them: what
                # the floor run spent in all over the median bare run is Airflow's work for the tasks.
                "cpu_over_bare": stat(sum(r["cpu"].values()) - bare_cpu for r in floors),
                **_rss_stats(floors),
            })
        if ok["dbtbus"] and bare_wall:
            mine = ok["dbtbus"]
            row["dbtbus"] = {"ratio": stat(r["wall"] / bare_wall for r in mine),
                             "green": all(r["state"] == "success" for r in mine),
                             "cpu": _cpu_stats(mine),
                             "cpu_over_bare": stat(sum(r["cpu"].values()) - bare_cpu for r in mine),
                             **_rss_stats(mine)}
        figures["sizes"].append(row)
    from importlib.metadata import version

    figures["airflow"] = version("apache-airflow")
    figures["host"] = f"{os.cpu_count()} cores (shared)"
    runs = [Run(variant=f"{r['variant']}@{r['models']}", round=r["round"], wall_s=r.get("wall"),
                cpu_s=sum(r.get("cpu", {}).values()) or None, peak_rss_bytes=None,
                labels={k: r.get(k) for k in ("to_waiting_s", "build_wall", "lag_p95_s", "timed_out",
                                              "triggerer_rss_before", "triggerer_rss_rise")})
            for size in sizes for r in size["runs"]]
    return Measured(params={"models": list(args.models), "variants": list(args.variants), "repeat": args.repeat,
                            "per_dag": args.per_dag, "fresh_triggerer": args.fresh_triggerer,
                            "timeout_s": args.timeout}, figures=figures, runs=runs, notes=notes)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--repeat", type=int, nargs="+", default=[2],
                        help="rounds per size, in the order of --models (the last one repeats); every variant "
                             "once per round")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="bare is what the others are divided by: keep it")
    parser.add_argument("--per-dag", type=int, default=50,
                        help="tasks per DAG: the floor's, and dbtbus's max_tasks_per_dag")
    parser.add_argument("--timeout", type=float, default=600, help="per phase of a run: past it, timed out")
    parser.add_argument("--fresh-triggerer", action="store_true",
                        help="restart the triggerer before each floor and dbtbus run: each run's triggerer RSS rise "
                             "is then a first run's")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--write", type=Path, help="regenerate this page's blocks from the results (bench/render.py)")
    return parser


@benchmark(name=NAME, order=150, interpreter="airflow")
def run(opts: Options) -> Measured:
    """Airflow's floor for DAG wall ÷ bare: a bare build while N trivial triggered tasks end across it."""
    return _run(_parser().parse_args(["--models", "20", "--repeat", "1"] if opts.tiny else []))


# ---------------------------------------------------------------------------------------------- the page


def _x(value: dict[str, Any] | None) -> str:
    """``median× (min–max)`` of a ratio statistic."""
    if not value or not value.get("n"):
        return "–"
    return f"{value['median']:.2f}× ({value['min']:.2f}–{value['max']:.2f})"


def _sec(value: dict[str, Any] | None) -> str:
    return "–" if not value or not value.get("n") else f"{value['median']:.1f} s"


def _memory(figures: dict[str, Any]) -> str:
    before, rise = figures.get("triggerer_rss_before_mb"), figures.get("triggerer_rss_rise_mb")
    if before is None or rise is None:
        return "–"
    text = f"{before['median']:.0f} MB / {rise['median']:.0f} MB ({rise['min']:.0f}–{rise['max']:.0f})"
    supervisor, runner = figures.get("supervisor_rss_rise_mb"), figures.get("runner_rss_rise_mb")
    if supervisor is not None and runner is not None:
        text += f": supervisor {supervisor['median']:.0f} MB, trigger runner {runner['median']:.0f} MB"
    return text


def render(data: dict[str, Any]) -> str:
    """The section of docs/benchmarks.md (and quoted by docs/airflow.md), from the result alone."""
    m = data["machine"]
    lines = [
        "`bench/airflow_floor_build.py` on the deployment of `bench/airflow_live.py` (Airflow "
        f"{data['airflow']}, {data['host']}, 1-minute load average {m['load_average'][0]:.1f} at the end, measured "
        f"{m['date']}), alternating within each round: the bare build in one Airflow task alone; the floor, no "
        f"dbtbus — the same build started once N trivial `start_from_trigger` tasks (DAGs of at most "
        f"{data['per_dag']}, one run id) all wait in the triggerer, which then ends them one by one across the "
        "build's length (task i at (i+1)/N of the round's bare wall); dbtbus on Redis in its default layout, "
        f"node DAGs of at most {data['per_dag']} tasks (`max_tasks_per_dag`), on the same project. DAG wall: "
        "from the start of the first run to the end of the last, the floor's from the trigger of its tasks' runs. "
        "Ratios against the median bare wall of the size: median (min–max); CPU: medians per run, every Airflow "
        "component's tree (the scheduler's holds the task processes, dbt's build among them), over the median bare "
        "run's. Triggerer: its RSS before the run and its processes' peak rise in it, medians"
        + (" — a new triggerer was started before each floor and dbtbus run, so each rise is a first run's."
           if data.get("fresh_triggerer") else "; the triggerer lives through every run of the invocation.")
        + (" dbtbus's bytecode was compiled before the run, as an installed copy's is at install."
           if m.get("dbtbus_bytecode") == "compiled before the run"
           else " dbtbus was compiled from source by every process that imported it."), "",
        "| models | rounds | bare task | run | DAG wall ÷ bare | CPU over the bare run's | of it: dag-processor "
        "/ triggerer | triggerer: RSS before / peak rise | floor: trigger → all waiting / its build's run ÷ bare / "
        "task end after its due moment, p95 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data["sizes"]:
        head = f"| {row['models']} | {row['rounds']} | {_sec(row['bare_wall'])}"
        if "ratio" in row:
            cpu = row["cpu"]
            lines.append(
                f"{head} | floor, no dbtbus | **{_x(row['ratio'])}**{'' if row['green'] else ' (not all green)'} "
                f"| {_sec(row['cpu_over_bare'])} | {_sec(cpu['dag-processor'])} / {_sec(cpu['triggerer'])} "
                f"| {_memory(row)} "
                f"| {_sec(row['to_waiting_s'])} / {_x(row['build_ratio'])} / {_sec(row['lag_p95_s'])} |")
        if "dbtbus" in row:
            d = row["dbtbus"]
            lines.append(
                f"{head} | dbtbus, Redis | **{_x(d['ratio'])}**{'' if d['green'] else ' (not all green)'} "
                f"| {_sec(d['cpu_over_bare'])} | {_sec(d['cpu']['dag-processor'])} / {_sec(d['cpu']['triggerer'])} "
                f"| {_memory(d)} | – |")
        if "ratio" not in row and "dbtbus" not in row:
            lines.append(f"{head} | no run ended | | | | | |")
    if data["notes"]:
        lines += ["", *[f"- {note}" for note in data["notes"]]]
    return "\n".join(lines) + "\n"


def main() -> None:
    script_main(NAME, _parser(), _run)


if __name__ == "__main__":
    main()
