"""Airflow's own floor for ending tasks from the triggerer: N trivial ``start_from_trigger`` tasks, no dbtbus.

Not a test. Needs Airflow's virtualenv (``nox -s bench_airflow``) and PostgreSQL on 127.0.0.1:5432, like
``bench/airflow_live.py``, whose deployment it reuses (api-server, scheduler with LocalExecutor,
dag-processor, triggerer, each its own process group, stopped at the end). Each task is
``bench._floor_trigger.FloorOperator``: it starts in the triggerer, waits for one shared moment (a file this
script writes once every task is deferred) and ends there with ``TaskSuccessEvent`` or ``TaskFailedEvent`` —
what dbtbus's node sensors do when dbt decides their node, minus dbtbus. Variants, alternated within a round:

* ``success`` / ``failed`` — one DAG of N independent tasks, all ending with success / with failure;
* ``success-split`` / ``failed-split`` — the same N tasks over DAGs of at most ``--per-dag`` tasks, triggered
  with one run id (the shape of dbtbus's node DAGs, its default above 100 models);
* ``rest-success-split`` / ``rest-failed-split`` (issue #25's alternative: a bus-driven reporter, no trigger
  per model) — the same split DAGs of ``bench._floor_rest.FloorRestOperator`` tasks in a pool of 0 slots, so
  they sit ``scheduled``, never queued, never run, with no trigger; at the moment one client in this process
  (the reporter) ends every task through the public REST API, ``PATCH
  /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}`` with ``{"new_state": ...}``, one call per
  task on one keep-alive connection;
* ``rest-bulk-success-split`` / ``rest-bulk-failed-split`` — the same, one bulk ``PATCH
  /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances`` (an ``update`` action listing the DAG's tasks) per
  DAG. Not in the default list.

Why a 0-slot pool: it is a public, per-task setting (``pool=``) that the scheduler honours before the executor
sees the task, so the task instance exists, is ``scheduled`` and can be PATCHed, while nothing runs or waits in
the triggerer; the scheduler's cost of looking at starved tasks each loop is part of what it measures. With
a REST variant selected the run ends with a probe (DAG ``floor_rest_probe``): a task with a retry left is
PATCHed ``failed`` (does it retry? does its downstream task follow? the DAG run?), another ``success``, and
the log files, the task log endpoint and the audit log are read.

No chained shape: a task downstream of another is only scheduled once that one ended, so its end lag would
be the scheduler's loop, not the triggerer's; dbtbus's node tasks wait side by side, and a failure's
descendants all end from the triggerer at once — the ``failed`` variants.

Per run: the time from the trigger to every task deferred, then from the moment to every task terminal; the
per-task end lag (task end − the moment: median, p95, max); CPU seconds per component over the whole run and
over the end phase alone (the triggerer's per task; every component's, the api-server's included, per task
too), the triggerer's peak RSS rise; for the REST variants the reporter's calls and their time. dbtbus's figures at the
same sizes (``bench/results/airflow_live.json``) are copied into the result, so the page compares them.

    PYTHONPATH=. /path/to/airflow-venv/bin/python bench/airflow_floor.py --models 200 1000 --repeat 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python bench/<script>.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._harness import RESULTS_DIR, Measured, Options, benchmark, log, script_main, stat
from bench.airflow_live import _cpu_seconds, _PeakSampler
from tests.airflow_live._deployment import TERMINAL, Deployment

BIN = Path(sys.executable).parent
VARIANTS = ("success", "failed", "success-split", "failed-split", "rest-success-split", "rest-failed-split",
            "rest-bulk-success-split", "rest-bulk-failed-split")
#: What a plain run measures: the triggerer's shape and the REST reporter's, one call per task (the bulk
#: variants are selectable with --variants).
DEFAULT_VARIANTS = ("success", "failed", "success-split", "failed-split", "rest-success-split",
                    "rest-failed-split")
LABELS = {"success": "one DAG, all succeed", "failed": "one DAG, all fail",
          "success-split": "DAGs of {per_dag}, all succeed", "failed-split": "DAGs of {per_dag}, all fail",
          "rest-success-split": "REST reporter, a PATCH per task, DAGs of {per_dag}, all succeed",
          "rest-failed-split": "REST reporter, a PATCH per task, DAGs of {per_dag}, all fail",
          "rest-bulk-success-split": "REST reporter, a bulk PATCH per DAG, DAGs of {per_dag}, all succeed",
          "rest-bulk-failed-split": "REST reporter, a bulk PATCH per DAG, DAGs of {per_dag}, all fail"}

#: The variants' DAG file: the same split of the same N tasks, each shape with its own task and import.
DAG_FILE = '''"""Floor benchmark DAGs: {models} {what} ({variant}), no dbtbus."""
from airflow.sdk import DAG

{imports}

MODELS, PER_DAG, SPLIT = {models}, {per_dag}, {split}
chunks = [range(i, min(i + PER_DAG, MODELS)) for i in range(0, MODELS, PER_DAG)] if SPLIT else [range(MODELS)]
for k, chunk in enumerate(chunks):
    dag_id = "{dag_id}" + (f"_{{k:03d}}" if SPLIT else "")
    with DAG(dag_id, schedule=None, catchup=False, max_active_runs=1) as dag:
        for i in chunk:
            {task}
    globals()[dag_id] = dag
'''
TRIGGER_SHAPE = {
    "what": "trivial start_from_trigger tasks",
    "imports": "from bench._floor_trigger import FloorOperator",
    "task": 'FloorOperator(task_id=f"m{{i:04d}}", moment_path={moment!r}, outcome={outcome!r}, retries=0)',
}
REST_SHAPE = {
    "what": "tasks in a 0-slot pool, ended by a REST reporter",
    "imports": "from bench._floor_rest import POOL, FloorRestOperator",
    "task": 'FloorRestOperator(task_id=f"m{{i:04d}}", pool=POOL, retries=0)',
}

#: The qualitative probe of the REST reporter: ``a`` (one retry allowed) upstream of ``b``, and ``c`` alone.
PROBE_DAG_ID = "floor_rest_probe"
PROBE_DAG_FILE = '''"""Floor benchmark: what a REST-ended task keeps and loses (a retry, its downstream, its log)."""
from datetime import timedelta

from airflow.sdk import DAG

from bench._floor_rest import POOL, FloorRestOperator

with DAG("{dag_id}", schedule=None, catchup=False) as dag:
    a = FloorRestOperator(task_id="a", pool=POOL, retries=1, retry_delay=timedelta(seconds=1))
    b = FloorRestOperator(task_id="b", pool=POOL, retries=0)
    c = FloorRestOperator(task_id="c", pool=POOL, retries=0)
    a >> b
'''


def _rest(variant: str) -> bool:
    return variant.startswith("rest-")


def _outcome(variant: str) -> str:
    return "failed" if "failed" in variant else "success"


class _Reporter:
    """The REST reporter: one keep-alive HTTP/1.1 connection to the api-server and one token, as a reporter
    process would hold (``Deployment._http`` opens a connection per call)."""

    def __init__(self, af: Deployment, timeout: float = 300) -> None:
        import http.client

        self.conn = http.client.HTTPConnection("127.0.0.1", af.port, timeout=timeout)
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {af.token()}"}
        self.calls = 0
        self.errors: list[str] = []

    def call(self, method: str, path: str, body: Any) -> Any:
        self.conn.request(method, path, body=json.dumps(body).encode(), headers=self.headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        self.calls += 1
        if resp.status >= 300:
            self.errors.append(f"{method} {path}: HTTP {resp.status}: {raw[:200]!r}")
            return None
        return json.loads(raw) if raw else None

    def end_each(self, dag_id: str, run_id: str, task_ids: list[str], state: str) -> None:
        """One ``PATCH .../taskInstances/{task_id}`` per task."""
        for task_id in task_ids:
            self.call("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}",
                      {"new_state": state})

    def end_bulk(self, dag_id: str, run_id: str, task_ids: list[str], state: str) -> None:
        """One bulk ``PATCH .../taskInstances`` for the DAG's tasks (an ``update`` action of every entity)."""
        out = self.call("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                        {"actions": [{"action": "update", "entities": [{"task_id": t, "new_state": state}
                                                                        for t in task_ids]}]})
        errors = ((out or {}).get("update") or {}).get("errors") or []
        self.errors.extend(str(e)[:200] for e in errors)

    def close(self) -> None:
        self.conn.close()


def _dag_id(variant: str, models: int) -> str:
    return f"floor_{variant.replace('-', '_')}_{models}"


def _dag_ids(af: Deployment, variant: str, models: int, per_dag: int, timeout: float = 120) -> list[str]:
    """The variant's DAG ids once the dag-processor has parsed them all (a split variant run first would
    otherwise start before its DAGs exist)."""
    base = _dag_id(variant, models)
    if not variant.endswith("split"):
        return [base]
    want, deadline = -(-models // per_dag), time.monotonic() + timeout
    while True:
        ids = sorted(str(r[0]) for r in af.query("select dag_id from dag where dag_id like %s", f"{base}\\_%"))
        if len(ids) >= want or time.monotonic() > deadline:
            return ids
        time.sleep(1)


def _states(af: Deployment, dag_ids: list[str], run_id: str) -> list[tuple[str | None, float | None]]:
    rows = af.query("select state, extract(epoch from end_date) from task_instance "
                    "where dag_id = any(%s) and run_id = %s", dag_ids, run_id)
    return [(r[0], float(r[1]) if r[1] is not None else None) for r in rows]


def _wait(af: Deployment, dag_ids: list[str], run_id: str, models: int, done: set[str], timeout: float,
          what: str) -> list[tuple[str | None, float | None]]:
    deadline = time.monotonic() + timeout
    while True:
        af.check_alive()
        rows = _states(af, dag_ids, run_id)
        if len(rows) == models and all(s in done for s, _ in rows):
            return rows
        if time.monotonic() > deadline:
            counts: dict[str, int] = {}
            for s, _ in rows:
                counts[str(s)] = counts.get(str(s), 0) + 1
            raise TimeoutError(f"{what}: not reached in {timeout:.0f} s ({len(rows)} tasks: {counts})")
        time.sleep(0.25)


def _wait_waiting(af: Deployment, moment: Path, models: int, timeout: float) -> None:
    """Until every trigger runs in the triggerer and waits for the moment (the count its poller writes)."""
    deadline = time.monotonic() + timeout
    count = Path(f"{moment}.waiting")
    while True:
        af.check_alive()
        try:
            if int(count.read_text() or 0) >= models:
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"every trigger waiting: not reached in {timeout:.0f} s")
        time.sleep(0.1)


_BLOCKED = re.compile(r"async thread was blocked for ([\d.]+) seconds")


def _log_size(af: Deployment) -> int:
    path = af.home / "triggerer.out"
    return path.stat().st_size if path.exists() else 0


def _triggerer_log(af: Deployment, since: int) -> dict[str, Any]:
    """What the triggerer logged during a run: how often its event loop was blocked (Airflow's own warning,
    over its threshold), the longest block, and the callback requests it sent the dag-processor."""
    with open(af.home / "triggerer.out", "rb") as fh:
        fh.seek(since)
        text = fh.read().decode(errors="replace")
    blocked = [float(m.group(1)) for m in _BLOCKED.finditer(text)]
    return {"loop_blocked": len(blocked), "loop_blocked_max_s": max(blocked, default=0.0),
            "callback_requests": text.count("Sending callback")}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def one(af: Deployment, variant: str, models: int, moment: Path, timeout: float, per_dag: int) -> dict[str, Any]:
    """One DAG run (or one run of each of its split DAGs): trigger → all deferred → the moment → all terminal."""
    run_id = f"floor-{uuid.uuid4().hex[:8]}"
    dag_ids = _dag_ids(af, variant, models, per_dag)
    moment.unlink(missing_ok=True)
    Path(f"{moment}.waiting").unlink(missing_ok=True)
    for dag_id in dag_ids:  # unpaused before the clock starts: only the runs are measured
        af.wait_for_dag(dag_id)
        af._http("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    cpu0 = _cpu_seconds(af)
    log_at = _log_size(af)
    out: dict[str, Any] = {"variant": variant, "models": models, "run_id": run_id, "dags": len(dag_ids)}
    with _PeakSampler(af) as peak:
        try:
            began = time.time()
            for dag_id in dag_ids:
                af._http("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None})
            if not _rest(variant):
                _wait(af, dag_ids, run_id, models, {"deferred"}, timeout, "every task deferred")
                out["to_deferred_s"] = time.time() - began
                _wait_waiting(af, moment, models, timeout)
                out["to_waiting_s"] = time.time() - began
                cpu1 = _cpu_seconds(af)
                at = time.time()
                moment.write_text(repr(at))
            else:  # every task `scheduled` in its 0-slot pool, then the reporter ends them all, DAG by DAG
                _wait(af, dag_ids, run_id, models, {"scheduled"}, timeout, "every task scheduled")
                out["to_scheduled_s"] = time.time() - began
                by_dag: dict[str, list[str]] = {}
                for dag_id, task_id in af.query("select dag_id, task_id from task_instance where dag_id = any(%s) "
                                                "and run_id = %s order by dag_id, task_id", dag_ids, run_id):
                    by_dag.setdefault(str(dag_id), []).append(str(task_id))
                reporter = _Reporter(af)
                end = reporter.end_bulk if "-bulk-" in variant else reporter.end_each
                cpu1 = _cpu_seconds(af)
                at = time.time()
                try:
                    for dag_id, task_ids in by_dag.items():
                        end(dag_id, run_id, task_ids, _outcome(variant))
                finally:
                    reporter.close()
                out["reporter_s"] = time.time() - at
                out["reporter_calls"] = reporter.calls
                out["reporter_errors"] = len(reporter.errors)
                if reporter.errors:
                    out["reporter_error_sample"] = reporter.errors[:3]
            rows = _wait(af, dag_ids, run_id, models, set(TERMINAL), timeout, "every task terminal")
            out["to_terminal_s"] = time.time() - at
            cpu2 = _cpu_seconds(af)
        except TimeoutError:
            # Leave a quiet deployment for the next run: end whatever still waits, fail the runs.
            moment.write_text(repr(time.time()))
            for dag_id in dag_ids:
                with contextlib.suppress(Exception):
                    af._http("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", {"state": "failed"})
            time.sleep(5)
            moment.unlink(missing_ok=True)
            raise
    deadline = time.monotonic() + 60  # the DAG runs' own end: the next run starts from a quiet deployment
    while time.monotonic() < deadline and any(af.dag_run_state(d, run_id) not in ("success", "failed")
                                              for d in dag_ids):
        time.sleep(0.25)
    moment.unlink(missing_ok=True)
    time.sleep(1.0)  # the poller forgets a moment once its file is gone (it looks every half second)
    lags = [end - at for _, end in rows if end is not None]
    states: dict[str, int] = {}
    for s, _ in rows:
        states[str(s)] = states.get(str(s), 0) + 1
    out.update({
        "states": states, "dag_run_states": sorted({str(af.dag_run_state(d, run_id)) for d in dag_ids}),
        "lag_p50_s": statistics.median(lags), "lag_p95_s": _pct(lags, 0.95), "lag_max_s": max(lags),
        "cpu_run": {k: round(cpu2[k] - cpu0[k], 3) for k in cpu2 if k in cpu0},
        "cpu_end": {k: round(cpu2[k] - cpu1[k], 3) for k in cpu2 if k in cpu1},
        "triggerer_rss_before": sum(peak.before.values()),
        "triggerer_rss_rise": sum(max(0, rise) for rise in peak.rises().values()),
    })
    out.update(_triggerer_log(af, log_at))
    out["triggerer_ms_per_task_run"] = 1000 * out["cpu_run"].get("triggerer", 0) / models
    out["triggerer_ms_per_task_end"] = 1000 * out["cpu_end"].get("triggerer", 0) / models
    return out


def _dbtbus_figures(results_dir: Path, sizes: list[int]) -> dict[str, Any]:
    """dbtbus's figures at the same sizes from ``airflow_live.json`` (its default layout), or {}."""
    # A --results-dir of its own (a trial run) still compares with the committed dbtbus figures.
    path = next((d / "airflow_live.json" for d in (results_dir, RESULTS_DIR) if (d / "airflow_live.json").exists()),
                None)
    if path is None:
        return {}
    from bench.airflow_live import summary

    data = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, Any] = {"measured": data["date"]}
    for row in summary(data["figures"]):
        if row["models"] in sizes:
            r = row["dbtbus-redis"]
            out[str(row["models"])] = {"failure_to_terminal_s": row["failure_to_terminal"], "lag_p95_s": r["lag_p95"],
                                       "lag_max_s": r["lag_max"], "triggerer_ms_per_task": r["trig_ms"],
                                       "triggerer_rss_rise_mb": r["rss_rise_mb"]}
    return out


def _run(args: argparse.Namespace, checkpoint: Callable[[Measured], None] | None = None) -> Measured:
    work = Path(tempfile.mkdtemp(prefix="af-floor-bench-")).resolve()
    home = work / "airflow-home"
    home.mkdir()
    sizes: list[dict[str, Any]] = []
    failed_sizes: list[str] = []
    # No dbtbus on the triggerer's path: the tasks import bench._floor_trigger only (this checkout on PYTHONPATH).
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}
    probe: dict[str, Any] = {}
    with Deployment(home, BIN, env) as af:
        rest = any(_rest(v) for v in args.variants)
        if rest:  # the pool that keeps the REST variants' tasks `scheduled`: never queued, never run
            from bench._floor_rest import POOL

            af.create_pool(POOL, 0)
            (af.dags / "floor_rest_probe.py").write_text(PROBE_DAG_FILE.format(dag_id=PROBE_DAG_ID))
        for models in args.models:
            for variant in args.variants:
                shape = REST_SHAPE if _rest(variant) else TRIGGER_SHAPE
                moment = str(work / f"moment-{variant}-{models}")
                task = shape["task"].format(moment=moment, outcome=_outcome(variant))
                (af.dags / f"floor_{models}_{variant.replace('-', '_')}.py").write_text(DAG_FILE.format(
                    models=models, variant=variant, per_dag=args.per_dag, split=variant.endswith("split"),
                    dag_id=_dag_id(variant, models), what=shape["what"], imports=shape["imports"], task=task))
        for index, models in enumerate(args.models):
            mine: list[dict[str, Any]] = []
            for round_ in range(args.repeat[min(index, len(args.repeat) - 1)]):
                for variant in args.variants:
                    log(f"floor: {models} tasks, {variant}, round {round_}")
                    try:
                        result = one(af, variant, models, work / f"moment-{variant}-{models}",
                                     timeout=args.timeout, per_dag=args.per_dag)
                    except TimeoutError as exc:  # recorded, not fatal: the other variants still say something
                        result = {"variant": variant, "models": models, "timed_out": str(exc)}
                        failed_sizes.append(f"{models}/{variant}: {exc}")
                    result["round"] = round_
                    print(json.dumps(result), flush=True)
                    mine.append(result)
            sizes.append({"models": models, "runs": mine, "repeat": round_ + 1})
            if checkpoint is not None:  # a bounded run cut short keeps the sizes it finished
                checkpoint(_summarise(args, sizes, failed_sizes))
        if rest:
            log("floor: the REST reporter's probe (retry, downstream, log)")
            try:
                probe = _probe(af)
            except Exception as exc:  # recorded, not fatal: the figures stand without it
                probe = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            print(json.dumps({"probe": probe}), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return _summarise(args, sizes, failed_sizes, probe)


def _probe(af: Deployment) -> dict[str, Any]:
    """What a task ended through the REST API keeps and loses: ``a`` (``retries=1``) is PATCHed ``failed``,
    ``c`` PATCHed ``success``; then the DAG run's end, ``a``'s tries, ``b`` (downstream of ``a``), the log
    files and what the task log endpoint serves, and the audit log's rows."""
    run_id = f"probe-{uuid.uuid4().hex[:8]}"
    af.trigger(PROBE_DAG_ID, run_id)
    for task_id in ("a", "c"):
        af.wait_task(PROBE_DAG_ID, run_id, task_id, {"scheduled"}, timeout=120)
    reporter = _Reporter(af)
    try:
        reporter.end_each(PROBE_DAG_ID, run_id, ["a"], "failed")
        reporter.end_each(PROBE_DAG_ID, run_id, ["c"], "success")
    finally:
        reporter.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and af.dag_run_state(PROBE_DAG_ID, run_id) not in ("success", "failed"):
        time.sleep(0.5)
    time.sleep(5)  # a retry, were one coming, would be scheduled within the scheduler's next loops
    tasks = af.tasks(PROBE_DAG_ID, run_id)
    out: dict[str, Any] = {
        "patch_errors": reporter.errors, "dag_run_state": af.dag_run_state(PROBE_DAG_ID, run_id),
        "tasks": {t: {"state": v.state, "try_number": v.try_number, "queued": v.queued} for t, v in tasks.items()},
        "earlier_tries": len(af.history(PROBE_DAG_ID, run_id)),
    }
    base = af.logs / f"dag_id={PROBE_DAG_ID}" / f"run_id={run_id}"
    out["log_files"] = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()) if base.exists() else []
    served: dict[str, str] = {}
    for task_id in ("a", "c"):
        try_number = max(1, tasks[task_id].try_number)
        try:
            body = af._http("GET", f"/api/v2/dags/{PROBE_DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/"
                                   f"{try_number}?full_content=true")
            served[task_id] = " ".join(str(e.get("event", "")) for e in (body or {}).get("content", [])
                                       if isinstance(e, dict) and not str(e.get("event", "")).startswith("::"))[:400]
        except Exception as exc:
            served[task_id] = f"{type(exc).__name__}: {exc}"[:400]
    out["log_endpoint"] = served
    with contextlib.suppress(Exception):
        out["audit_log"] = {str(e): int(n) for e, n in af.query(
            "select event, count(*) from log where dag_id = %s and run_id = %s group by event", PROBE_DAG_ID,
            run_id)}
        out["audit_log_owner"] = sorted({str(o) for (o,) in af.query(
            "select distinct owner from log where dag_id = %s and run_id = %s", PROBE_DAG_ID, run_id)})
    return out


def _summarise(args: argparse.Namespace, sizes: list[dict[str, Any]], failed_sizes: list[str],
               probe: dict[str, Any] | None = None) -> Measured:
    """The result of the sizes measured so far."""
    runs = [r for size in sizes for r in size["runs"]]
    figures: dict[str, Any] = {"sizes": [], "per_dag": args.per_dag,
                               "dbtbus": _dbtbus_figures(args.results_dir, [s["models"] for s in sizes])}
    if probe:
        figures["rest_probe"] = probe
    for size in sizes:
        by: dict[str, Any] = {}
        for variant in args.variants:
            ok = [r for r in size["runs"] if r["variant"] == variant and "timed_out" not in r]
            if not ok:
                continue
            # A key of one shape only (deferred / waiting for the trigger's, scheduled / reporter for REST's)
            # is summarised where every run has it.
            by[variant] = {key: stat(r[key] for r in ok) for key in (
                "to_deferred_s", "to_waiting_s", "to_scheduled_s", "to_terminal_s", "lag_p50_s", "lag_p95_s",
                "lag_max_s", "triggerer_ms_per_task_run", "triggerer_ms_per_task_end", "triggerer_rss_rise",
                "triggerer_rss_before", "reporter_s", "reporter_calls", "reporter_errors")
                if all(key in r for r in ok)}
            for phase in ("cpu_run", "cpu_end"):
                by[variant][phase] = {c: stat(r[phase].get(c, 0.0) for r in ok)
                                      for c in ("triggerer", "scheduler", "dag-processor", "api-server")}
            for key in ("loop_blocked", "loop_blocked_max_s", "callback_requests"):  # runs since they were counted
                if all(key in r for r in ok):
                    by[variant][key] = stat(r[key] for r in ok)
            by[variant]["states"] = ok[-1]["states"]
        figures["sizes"].append({"models": size["models"], "variants": by, "repeat": size["repeat"],
                                 "timed_out": sum(1 for r in size["runs"] if "timed_out" in r)})
    from importlib.metadata import version

    figures["airflow"] = version("apache-airflow")
    figures["host"] = f"{os.cpu_count()} cores (shared)"
    from bench._harness import Run

    measured_runs = [Run(variant=f"{r['variant']}@{r['models']}", round=r["round"],
                         wall_s=r.get("to_terminal_s"), cpu_s=sum(r.get("cpu_end", {}).values()) or None,
                         peak_rss_bytes=r.get("triggerer_rss_before", 0) + r.get("triggerer_rss_rise", 0) or None,
                         labels={"to_deferred_s": r.get("to_deferred_s"), "cpu_run_s": r.get("cpu_run"),
                                 "timed_out": r.get("timed_out")})
                     for r in runs]
    notes = [f"timed out: {f}" for f in failed_sizes]
    return Measured(params={"models": [s["models"] for s in sizes], "variants": list(args.variants),
                            "repeat": args.repeat, "per_dag": args.per_dag, "timeout_s": args.timeout},
                    figures=figures, runs=measured_runs, notes=notes)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS)
    parser.add_argument("--repeat", type=int, nargs="+", default=[1],
                        help="rounds per size, in the order of --models (the last one repeats); every variant "
                             "once per round")
    parser.add_argument("--per-dag", type=int, default=50, help="tasks per DAG of the split variants (dbtbus's)")
    parser.add_argument("--timeout", type=float, default=600, help="per phase of a run: a run past it is recorded "
                                                                    "as timed out")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--write", type=Path, help="regenerate this page's blocks from the results (bench/render.py)")
    return parser


@benchmark(name="airflow_floor", order=140, interpreter="airflow")
def run(opts: Options) -> Measured:
    """Airflow's floor: N trivial ``start_from_trigger`` tasks ended from the triggerer, no dbtbus."""
    return _run(_parser().parse_args(["--models", "20"] if opts.tiny else []))


# ---------------------------------------------------------------------------------------------- the page


def _s(value: dict[str, Any] | float | None, digits: int = 1, unit: str = " s") -> str:
    if isinstance(value, dict):
        value = value.get("median")
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def _sizes(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The sizes smallest first (a run may measure the largest before a middle one, to be sure to have it)."""
    return sorted(data["sizes"], key=lambda size: size["models"])


def _mb(value: dict[str, Any] | None) -> str:
    """A byte statistic in MB ("–" where the result predates it: the RSS at the start was counted later)."""
    return "–" if value is None else _s(value["median"] / 2**20, 0, " MB")


def _start(v: dict[str, Any]) -> str:
    """Trigger → all deferred / all waiting in the triggerer; for the REST shape, trigger → all scheduled."""
    if "to_scheduled_s" in v:
        return f"{_s(v['to_scheduled_s'])} all scheduled (0-slot pool)"
    return f"{_s(v.get('to_deferred_s'))} / {_s(v.get('to_waiting_s'))}"


def _cpu(v: dict[str, Any], phase: str, component: str) -> dict[str, Any] | None:
    """A component's CPU statistic ("–" where the result predates the component's count)."""
    return (v.get(phase) or {}).get(component)


def _per_task(v: dict[str, Any], component: str, models: int) -> str:
    """A component's CPU over the end phase, per task."""
    value = _cpu(v, "cpu_end", component)
    return "–" if value is None else _s(1000 * value["median"] / models, 1, " ms")


def render(data: dict[str, Any]) -> str:
    """The section of docs/benchmarks.md, from the result alone."""
    m = data["machine"]
    per_dag = data["per_dag"]
    lines = [
        "## Airflow's floor: ending tasks from the triggerer, no dbtbus", "",
        f"`bench/airflow_floor.py`: the deployment of `bench/airflow_live.py` (Airflow {data['airflow']}, "
        f"{data['host']}, 1-minute load average {m['load_average'][0]:.1f} at the end, measured {m['date']}); "
        "N trivial `start_from_trigger` tasks, every one deferred, then one shared moment ends them all from the "
        "triggerer (`TaskSuccessEvent` / `TaskFailedEvent`). Split: DAGs of at most "
        f"{per_dag} tasks, one run id. REST reporter: the same split DAGs of plain tasks in a pool of no slots "
        "(`scheduled`, never queued, no trigger); at the moment one client ends each through the public REST "
        "API on one keep-alive connection — `PATCH .../taskInstances/{task_id}` per task, or one bulk "
        "`PATCH .../taskInstances` per DAG — and the moment → all terminal includes its calls. "
        "Medians over the rounds (per size below); CPU is of the end phase "
        "(moment → all terminal) unless marked *run*. The triggerer keeps what it grew to from one run to the "
        "next (its RSS at the start of each run says so): a peak rise is against that, not against a fresh one.", "",
        "| tasks | variant | trigger → all deferred / all waiting in the triggerer | moment → all terminal "
        "| end lag p50 / p95 / max "
        "| triggerer CPU per task (end / run) | triggerer RSS at the start / peak rise | scheduler CPU (end / run) "
        "| dag-processor CPU (end / run) | api-server CPU (end / run) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in _sizes(data):
        for variant, v in size["variants"].items():
            lines.append(
                f"| {size['models']} ({size['repeat']} round(s)) | {LABELS[variant].format(per_dag=per_dag)} "
                f"| {_start(v)} | **{_s(v['to_terminal_s'])}** "
                f"| {_s(v['lag_p50_s'])} / {_s(v['lag_p95_s'])} / {_s(v['lag_max_s'])} "
                f"| {_s(v['triggerer_ms_per_task_end'], 0, ' ms')} / {_s(v['triggerer_ms_per_task_run'], 0, ' ms')} "
                f"| {_mb(v.get('triggerer_rss_before'))} / {_mb(v['triggerer_rss_rise'])} "
                f"| {_s(v['cpu_end']['scheduler'])} / {_s(v['cpu_run']['scheduler'])} "
                f"| {_s(v['cpu_end']['dag-processor'])} / {_s(v['cpu_run']['dag-processor'])} "
                f"| {_s(_cpu(v, 'cpu_end', 'api-server'))} / {_s(_cpu(v, 'cpu_run', 'api-server'))} |")
        if size["timed_out"]:
            lines.append(f"| {size['models']} | runs timed out | {size['timed_out']} | | | | | | | |")
    lines += ["", "CPU per task over the end phase (moment → all terminal), every component, and what the REST "
              "reporter spent: its calls and their time (its own process is not counted).", "",
              "| tasks | variant | api-server | triggerer | scheduler | dag-processor | reporter: calls / time "
              "/ errors |", "|---|---|---|---|---|---|---|"]
    for size in _sizes(data):
        n = size["models"]
        for variant, v in size["variants"].items():
            reporter = "–" if "reporter_calls" not in v else (
                f"{v['reporter_calls']['median']:.0f} / {_s(v['reporter_s'])} / {v['reporter_errors']['median']:.0f}")
            lines.append(f"| {n} | {LABELS[variant].format(per_dag=per_dag)} | {_per_task(v, 'api-server', n)} "
                         f"| {_per_task(v, 'triggerer', n)} | {_per_task(v, 'scheduler', n)} "
                         f"| {_per_task(v, 'dag-processor', n)} | {reporter} |")
    logged = [(size["models"], variant, v) for size in _sizes(data) for variant, v in size["variants"].items()
              if "loop_blocked" in v]
    if logged:
        lines += ["", "What the triggerer logged during the runs (medians): Airflow's own warning that its event loop "
                  "was blocked past its threshold, and the callback requests it sent the dag-processor.", "",
                  "| tasks | variant | loop blocked: times / longest | callback requests |", "|---|---|---|---|"]
        lines += [f"| {models} | {LABELS[variant].format(per_dag=per_dag)} "
                  f"| {v['loop_blocked']['median']:.0f} / {_s(v['loop_blocked_max_s'])} "
                  f"| {v['callback_requests']['median']:.0f} |" for models, variant, v in logged]
    lines += _render_probe(data.get("rest_probe"))
    lines += ["", *[f"- {note}" for note in data["notes"]]]
    return "\n".join(lines) + "\n"


def _render_probe(probe: dict[str, Any] | None) -> list[str]:
    """What the REST reporter's probe saw: a task PATCHed ``failed`` despite a retry left, its downstream task,
    the DAG run, the task's log."""
    if not probe:
        return []
    if "error" in probe:
        return ["", f"The REST reporter's probe did not finish: {probe['error']}"]
    tasks = probe["tasks"]
    a, b, c = (tasks.get(t, {}) for t in ("a", "b", "c"))
    audit = ", ".join(f"`{event}` × {count}" for event, count in sorted((probe.get("audit_log") or {}).items()))
    return [
        "", f"The REST reporter's probe (DAG `{PROBE_DAG_ID}`: `a` with a retry left, upstream of `b`; `c` alone; "
        "all in the pool of no slots): `a` PATCHed `failed`, `c` PATCHed `success`.", "",
        f"- `a`: ended `{a.get('state')}`, try number {a.get('try_number')}, earlier tries recorded "
        f"{probe['earlier_tries']}, ever queued: {a.get('queued')}"
        + (" — a PATCHed failure is final: its retry was not used." if a.get("state") == "failed"
           and not probe["earlier_tries"] else "."),
        f"- `b` (downstream of `a`): `{b.get('state')}`; `c`: `{c.get('state')}`; the DAG run: "
        f"`{probe['dag_run_state']}`.",
        f"- log files written for the run's tasks: {len(probe['log_files'])}"
        + (f" ({', '.join(probe['log_files'])})" if probe["log_files"] else "")
        + f"; what the task log endpoint serves for `a`: \"{probe['log_endpoint'].get('a', '–')}\"",
        f"- the audit log (`log` table) of the run: {audit or '–'}, "
        f"by {', '.join(probe.get('audit_log_owner') or ['–'])}"
        + (f"; PATCH errors: {probe['patch_errors']}" if probe.get("patch_errors") else ""),
    ]


def render_compare(data: dict[str, Any]) -> str:
    """dbtbus's figures beside the floor's at the same sizes (quoted by docs/airflow.md)."""
    dbtbus = data.get("dbtbus") or {}
    rows = [(size, dbtbus[str(size["models"])]) for size in _sizes(data) if str(size["models"]) in dbtbus]
    if not rows:
        return "No dbtbus figures at these sizes in the result (`bench/results/airflow_live.json` was missing).\n"
    lines = [
        f"Against dbtbus at the same sizes (`bench/results/airflow_live.json`, measured {dbtbus['measured']}; "
        "its default layout: node DAGs above 100 models). dbtbus's failure dooms most but not all of its model "
        "tasks; the floor's fails every task, at once — the last task's end after the moment:", "",
        "| tasks | dbtbus: failure → descendants terminal | floor, split, all fail: moment → last task end "
        "| dbtbus: task end lag p95 | floor, split, all succeed: end lag p95 "
        "| dbtbus: triggerer CPU per task (run) | floor, split: (run) |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, d in rows:
        v = size["variants"]
        fail, ok = v.get("failed-split", {}), v.get("success-split", {})
        lines.append(
            f"| {size['models']} | {_s(d['failure_to_terminal_s'])} | {_s(fail.get('lag_max_s'))} "
            f"| {_s(d['lag_p95_s'])} | {_s(ok.get('lag_p95_s'))} "
            f"| {_s(d['triggerer_ms_per_task'], 0, ' ms')} | {_s(ok.get('triggerer_ms_per_task_run'), 0, ' ms')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    script_main("airflow_floor", _parser(), _run)


if __name__ == "__main__":
    main()
