"""Airflow's own floor for ending tasks from the triggerer: N trivial ``start_from_trigger`` tasks, no dbtbus.

Not a test. Needs Airflow's virtualenv (``nox -s bench_airflow``) and PostgreSQL on 127.0.0.1:5432, like
``bench/airflow_live.py``, whose deployment it reuses (api-server, scheduler with LocalExecutor,
dag-processor, triggerer, each its own process group, stopped at the end). Each task is
``bench._floor_trigger.FloorOperator``: it starts in the triggerer, waits for one shared moment (a file this
script writes once every task is deferred) and ends there with ``TaskSuccessEvent`` or ``TaskFailedEvent`` —
what dbtbus's node sensors do when dbt decides their node, minus dbtbus. Variants, alternated within a round:

* ``success`` / ``failed`` — one DAG of N independent tasks, all ending with success / with failure;
* ``success-split`` / ``failed-split`` — the same N tasks over DAGs of at most ``--per-dag`` tasks, triggered
  with one run id (the shape of dbtbus's node DAGs, its default above 100 models).

No chained shape: a task downstream of another is only scheduled once that one ended, so its end lag would
be the scheduler's loop, not the triggerer's; dbtbus's node tasks wait side by side, and a failure's
descendants all end from the triggerer at once — the ``failed`` variants.

Per run: the time from the trigger to every task deferred, then from the moment to every task terminal; the
per-task end lag (task end − the moment: median, p95, max); CPU seconds per component over the whole run and
over the end phase alone (the triggerer's per task), the triggerer's peak RSS rise. dbtbus's figures at the
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
import signal
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

from bench._harness import RESULTS_DIR, Measured, Options, benchmark, log, now, stat, wrap, write_result
from bench.airflow_live import _cpu_seconds, _PeakSampler, _triggerer_rss
from tests.airflow_live._deployment import TERMINAL, Deployment

BIN = Path(sys.executable).parent
VARIANTS = ("success", "failed", "success-split", "failed-split")
LABELS = {"success": "one DAG, all succeed", "failed": "one DAG, all fail",
          "success-split": "DAGs of {per_dag}, all succeed", "failed-split": "DAGs of {per_dag}, all fail"}

DAG_FILE = '''"""Floor benchmark DAGs: {models} trivial start_from_trigger tasks ({variant}), no dbtbus."""
from airflow.sdk import DAG

from bench._floor_trigger import FloorOperator

MODELS, PER_DAG, SPLIT = {models}, {per_dag}, {split}
chunks = [range(i, min(i + PER_DAG, MODELS)) for i in range(0, MODELS, PER_DAG)] if SPLIT else [range(MODELS)]
for k, chunk in enumerate(chunks):
    dag_id = "{dag_id}" + (f"_{{k:03d}}" if SPLIT else "")
    with DAG(dag_id, schedule=None, catchup=False, max_active_runs=1) as dag:
        for i in chunk:
            FloorOperator(task_id=f"m{{i:04d}}", moment_path={moment!r}, outcome={outcome!r}, retries=0)
    globals()[dag_id] = dag
'''


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
    rss0 = _triggerer_rss(af)
    log_at = _log_size(af)
    out: dict[str, Any] = {"variant": variant, "models": models, "run_id": run_id, "dags": len(dag_ids)}
    with _PeakSampler(af) as peak:
        try:
            began = time.time()
            for dag_id in dag_ids:
                af._http("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None})
            _wait(af, dag_ids, run_id, models, {"deferred"}, timeout, "every task deferred")
            out["to_deferred_s"] = time.time() - began
            _wait_waiting(af, moment, models, timeout)
            out["to_waiting_s"] = time.time() - began
            cpu1 = _cpu_seconds(af)
            at = time.time()
            moment.write_text(repr(at))
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
        "triggerer_rss_before": sum(rss0.values()),
        "triggerer_rss_rise": sum(max(0, peak.peak[pid] - rss0.get(pid, 0)) for pid in peak.peak),
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
    with Deployment(home, BIN, env) as af:
        for models in args.models:
            for variant in args.variants:
                (af.dags / f"floor_{models}_{variant.replace('-', '_')}.py").write_text(DAG_FILE.format(
                    models=models, variant=variant, per_dag=args.per_dag, split=variant.endswith("split"),
                    dag_id=_dag_id(variant, models), moment=str(work / f"moment-{variant}-{models}"),
                    outcome="failed" if variant.startswith("failed") else "success"))
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
    shutil.rmtree(work, ignore_errors=True)
    return _summarise(args, sizes, failed_sizes)


def _summarise(args: argparse.Namespace, sizes: list[dict[str, Any]], failed_sizes: list[str]) -> Measured:
    """The result of the sizes measured so far."""
    runs = [r for size in sizes for r in size["runs"]]
    figures: dict[str, Any] = {"sizes": [], "per_dag": args.per_dag,
                               "dbtbus": _dbtbus_figures(args.results_dir, [s["models"] for s in sizes])}
    for size in sizes:
        by: dict[str, Any] = {}
        for variant in args.variants:
            ok = [r for r in size["runs"] if r["variant"] == variant and "timed_out" not in r]
            if not ok:
                continue
            by[variant] = {key: stat(r[key] for r in ok) for key in (
                "to_deferred_s", "to_waiting_s", "to_terminal_s", "lag_p50_s", "lag_p95_s", "lag_max_s",
                "triggerer_ms_per_task_run", "triggerer_ms_per_task_end", "triggerer_rss_rise",
                "triggerer_rss_before")}
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
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
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


def render(data: dict[str, Any]) -> str:
    """The section of docs/benchmarks.md, from the result alone."""
    m = data["machine"]
    lines = [
        "## Airflow's floor: ending tasks from the triggerer, no dbtbus", "",
        f"`bench/airflow_floor.py`: the deployment of `bench/airflow_live.py` (Airflow {data['airflow']}, "
        f"{data['host']}, 1-minute load average {m['load_average'][0]:.1f} at the end, measured {m['date']}); "
        "N trivial `start_from_trigger` tasks, every one deferred, then one shared moment ends them all from the "
        "triggerer (`TaskSuccessEvent` / `TaskFailedEvent`). Split: DAGs of at most "
        f"{data['per_dag']} tasks, one run id. Medians over the rounds (per size below); CPU is of the end phase "
        "(moment → all terminal) unless marked *run*. The triggerer keeps what it grew to from one run to the "
        "next (its RSS at the start of each run says so): a peak rise is against that, not against a fresh one.", "",
        "| tasks | variant | trigger → all deferred / all waiting in the triggerer | moment → all terminal "
        "| end lag p50 / p95 / max "
        "| triggerer CPU per task (end / run) | triggerer RSS at the start / peak rise | scheduler CPU (end / run) "
        "| dag-processor CPU (end / run) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size in _sizes(data):
        for variant, v in size["variants"].items():
            lines.append(
                f"| {size['models']} ({size['repeat']} round(s)) | {LABELS[variant].format(per_dag=data['per_dag'])} "
                f"| {_s(v['to_deferred_s'])} / {_s(v['to_waiting_s'])} | **{_s(v['to_terminal_s'])}** "
                f"| {_s(v['lag_p50_s'])} / {_s(v['lag_p95_s'])} / {_s(v['lag_max_s'])} "
                f"| {_s(v['triggerer_ms_per_task_end'], 0, ' ms')} / {_s(v['triggerer_ms_per_task_run'], 0, ' ms')} "
                f"| {_mb(v.get('triggerer_rss_before'))} / {_mb(v['triggerer_rss_rise'])} "
                f"| {_s(v['cpu_end']['scheduler'])} / {_s(v['cpu_run']['scheduler'])} "
                f"| {_s(v['cpu_end']['dag-processor'])} / {_s(v['cpu_run']['dag-processor'])} |")
        if size["timed_out"]:
            lines.append(f"| {size['models']} | runs timed out | {size['timed_out']} | | | | | | |")
    logged = [(size["models"], variant, v) for size in _sizes(data) for variant, v in size["variants"].items()
              if "loop_blocked" in v]
    if logged:
        lines += ["", "What the triggerer logged during the runs (medians): Airflow's own warning that its event loop "
                  "was blocked past its threshold, and the callback requests it sent the dag-processor.", "",
                  "| tasks | variant | loop blocked: times / longest | callback requests |", "|---|---|---|---|"]
        lines += [f"| {models} | {LABELS[variant].format(per_dag=data['per_dag'])} "
                  f"| {v['loop_blocked']['median']:.0f} / {_s(v['loop_blocked_max_s'])} "
                  f"| {v['callback_requests']['median']:.0f} |" for models, variant, v in logged]
    lines += ["", *[f"- {note}" for note in data["notes"]]]
    return "\n".join(lines) + "\n"


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
    # SIGTERM unwinds like Ctrl-C: the deployment's processes and database are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    args = _parser().parse_args()
    date, started = now(), time.perf_counter()

    def save(measured: Measured) -> None:
        result = wrap("airflow_floor", Options(results_dir=args.results_dir), measured, date=date,
                      duration_s=time.perf_counter() - started)
        print(write_result(args.results_dir, result), flush=True)

    measured = _run(args, save)
    result = wrap("airflow_floor", Options(results_dir=args.results_dir), measured, date=date,
                  duration_s=time.perf_counter() - started)
    print(write_result(args.results_dir, result))
    if args.write:
        from bench.render import render_file

        render_file(args.results_dir, args.write)


if __name__ == "__main__":
    main()
