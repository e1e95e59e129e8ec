"""Producer callback cost per dbt event, and the whole in-process producer overhead.

1. In a fresh interpreter, a real ``dbt build`` of a small generated project runs once with a recording
   callback (``dbtRunner(callbacks=[events.append])``): the real ``EventMsg`` objects of a run. The
   producer's callback (``dbtbus.producer._callback.make_callback`` feeding a real ``Publisher.push``, the
   publisher not sleeping — its usual state while dbt is busy) is then called on them in a loop: ns per call
   for the events it keeps (NodeStart, NodeFinished, …) and for those it drops, against a no-op callback.
   The protobuf → dict extraction, which runs on the publisher thread, is timed as well.
2. The in-process overhead ratio, ``Producer("memory://").invoke(build)`` ÷ ``dbtRunner().invoke(build)``,
   with ``bench/producer_overhead.py``'s alternated fresh-interpreter runs.

    python -m bench.callback_cost [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._harness import (
    PY,
    Measured,
    Options,
    Run,
    benchmark,
    child_json,
    emit,
    log,
    ratio,
    run_child,
    standalone,
    stat,
)

NAME = "callback_cost"
CAPTURE_MODELS = 20
ROUNDS = 200


def _time_calls(make: Any, msgs: list[Any], rounds: int) -> list[float]:
    """ns per call, one value per round over all ``msgs``; ``make()`` gives each round its callback (a fresh
    publisher's, so what one round queued never weighs on the next)."""
    per_round: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        callback = make()
        start = clock()
        for msg in msgs:
            callback(msg)
        per_round.append((clock() - start) / len(msgs))
    return per_round


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--models", type=int, default=CAPTURE_MODELS)
    args = parser.parse_args(argv)
    rounds, models = args.rounds, args.models
    from dbt.cli.main import dbtRunner

    from dbtbus.producer._callback import extract, make_callback
    from dbtbus.producer._normalise import WANTED, Normaliser, producer_info
    from dbtbus.producer._publisher import Publisher
    from dbtbus.testing.projects import generate_project

    tmp = Path(tempfile.mkdtemp(prefix="dbtbus-bench-cb-"))
    project = generate_project(tmp / "p", models=models, tests_per_model=1)
    args = ["build", *project.dbt_args(), "--quiet"]
    dbtRunner().invoke(args)  # warm-up: parse once, so the captured run is a usual (partial-parse) one
    events: list[Any] = []
    start = time.perf_counter()
    res = dbtRunner(callbacks=[events.append]).invoke(args)
    build_wall = time.perf_counter() - start
    if not res.success:
        raise SystemExit("capture build failed")
    wanted = [m for m in events if m.info.name in WANTED]
    unwanted = [m for m in events if m.info.name not in WANTED]
    def callback() -> Any:
        normaliser = Normaliser("bench", producer=producer_info("dbtRunner"), args=tuple(args))
        return make_callback(Publisher(normaliser).push)

    def noop(msg: Any) -> None:
        pass

    timings = {
        "noop_all": _time_calls(lambda: noop, events, rounds),
        "callback_wanted": _time_calls(callback, wanted, rounds),
        "callback_unwanted": _time_calls(callback, unwanted, rounds),
        "callback_all": _time_calls(callback, events, rounds),
        "extract_wanted": _time_calls(lambda: lambda m: extract(m.info.name, m), wanted, max(rounds // 10, 5)),
    }
    counts: dict[str, int] = {}
    for m in wanted:
        counts[m.info.name] = counts.get(m.info.name, 0) + 1
    emit({
        "events": len(events),
        "wanted": len(wanted),
        "unwanted": len(unwanted),
        "wanted_by_name": counts,
        "nodes": len(project.nodes),
        "build_wall": build_wall,
        "ns_per_call": {k: stat(v) for k, v in timings.items()},
    })


def overhead(quick: bool) -> tuple[dict[str, Any], list[Run]]:
    from bench.producer_overhead import series
    from dbtbus.testing.projects import generate_project

    models, repeat = (10, 1) if quick else (50, 3)
    tmp = Path(tempfile.mkdtemp(prefix="dbtbus-bench-ovh-"))
    project = generate_project(tmp / f"p{models}", models=models, tests_per_model=1, threads=4)
    runs = series(["bare", "producer"], project.path, 4, repeat)
    if not quick:  # the subprocess producer and the debug-level JSON log it needs, against the text CLI
        runs += series(["cli-text", "cli-json-debug", "subprocess"], project.path, 4, repeat)
    walls: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    for r in runs:
        walls.setdefault(r.variant, []).append(float(r.wall_s or math.nan))
        cpus.setdefault(r.variant, []).append(float(r.cpu_s or math.nan))

    def versus(variant: str, base: str) -> dict[str, Any]:
        return {**stat(walls[variant]), "cpu": stat(cpus[variant]),
                "ratio_of_medians": ratio(statistics.median(walls[variant]), statistics.median(walls[base])),
                "ratio_of_mins": ratio(min(walls[variant]), min(walls[base])),
                "cpu_ratio_of_medians": ratio(statistics.median(cpus[variant]), statistics.median(cpus[base]))}

    bare, prod = versus("bare", "bare"), versus("producer", "bare")
    return {
        "models": models,
        "nodes": len(project.nodes),
        "repetitions": repeat,
        "bare": bare,
        "producer": prod,
        "ratio_of_medians": prod["ratio_of_medians"],
        "ratio_of_mins": prod["ratio_of_mins"],
        "cpu_ratio_of_medians": prod["cpu_ratio_of_medians"],
        "subprocess": {v: versus(v, "cli-text") for v in ("cli-text", "cli-json-debug", "subprocess") if v in walls},
    }, runs


@benchmark(name=NAME, order=20)
def run(opts: Options) -> Measured:
    rounds = 10 if opts.tiny else 50 if opts.quick else ROUNDS
    models = 2 if opts.tiny else CAPTURE_MODELS
    data = child_json(run_child([PY, "-m", "bench.callback_cost", "--child", "--rounds", str(rounds),
                                 "--models", str(models)], timeout=900), "callback_cost child")
    ns = data["ns_per_call"]
    log(f"callback: wanted {ns['callback_wanted']['median']:.0f} ns, unwanted {ns['callback_unwanted']['median']:.0f}"
        f" ns, no-op {ns['noop_all']['median']:.0f} ns, extract {ns['extract_wanted']['median']:.0f} ns; "
        f"{data['events']} events for {data['nodes']} nodes")
    ovh, runs = None, []
    if not opts.tiny:  # dbt builds alternated in fresh interpreters: minutes, not the smoke test's seconds
        log("callback: in-process producer overhead (bench/producer_overhead.py series)")
        ovh, runs = overhead(opts.quick)
        log(f"callback: overhead ratio {ovh['ratio_of_medians']:.3f} (medians)")
    per_run_us = (ns["callback_all"]["median"] * data["events"]) / 1000
    return Measured(
        params={"capture_project_models": models, "rounds": rounds},
        figures={
            "capture": {k: v for k, v in data.items() if k != "ns_per_call"},
            "ns_per_call": ns,
            "callback_total_per_run_us": per_run_us,
            "callback_share_of_build": per_run_us / 1e6 / data["build_wall"],
            "overhead": ovh,
        },
        runs=runs,
    )


def main(argv: list[str] | None = None) -> None:
    standalone(NAME, argv, child=child_main)


if __name__ == "__main__":
    main()
