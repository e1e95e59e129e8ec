"""Regenerate the figures of docs/benchmarks.md from ``bench/results/*.json``, and nothing else.

    python -m bench.render [--results-dir bench/results] [--docs docs/benchmarks.md]

The page is written by hand — headings, how each benchmark measures, what a figure means — and holds
generated blocks between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``: every figure of the page is in
one, and each block is a function of the result files alone (:data:`BLOCKS`). Goals and verdicts come from
``bench/goals.py``. ``tests/test_bench_docs.py`` renders the blocks again from the committed results and
checks that the page holds exactly those, and that the text outside them states no figure.
"""

from __future__ import annotations

import argparse
import importlib
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._harness import DOCS_PATH, RESULTS_DIR, load_results, view
from bench.goals import (
    GOAL_BYTES_PER_WAITER,
    GOAL_E2E_RATIO,
    GOAL_FAN_OUT_10K_MS,
    GOAL_IMPORT_MS,
    GOAL_MEMORY_P99_MS,
    GOAL_PRODUCER_RSS_FIXED,
    GOAL_PRODUCER_RSS_PER_NODE,
    GOAL_REDIS_P99_MS,
    GOAL_REGISTER_10K_S,
    _miss_bytes,
    _miss_ms,
    _miss_ratio,
    cpu_judged,
    goal_producer_rss,
    own_cpu_judged,
    under_load,
    verdict,
)

#: The plot of cost against project size, next to the page (bench/plot.py writes it from the JSON results).
PLOT_NAME = "benchmarks-scale.svg"


VARIANT_LABELS = {
    "bare": "(a) one bare `dbt build` (dbtRunner)",
    "producer-memory": "(b) producer + one `bus.wait` per node, `memory://`",
    "producer-redis": "(b) producer + one `bus.wait` per node, Redis",
    "produceronly-memory": "producer alone, no waiter, `memory://`",
    "produceronly-redis": "producer alone, no waiter, Redis",
    "pernode-dbtrunner": "(c) one dbtRunner invocation per node, extrapolated",
    "pernode-subprocess": "(c) one `dbt` CLI process per node, extrapolated",
}

# ------------------------------------------------------------------------------------------ formatting


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def s(value: Any) -> str:
    v = _num(value)
    return "n/a" if math.isnan(v) else f"{v:,.1f} s" if v >= 100 else f"{v:.2f} s"


def ms(value: Any, digits: int = 3) -> str:
    v = _num(value)
    return "n/a" if math.isnan(v) else f"{v:.{digits}f}"


def mib(value: Any) -> str:
    v = _num(value)
    return "n/a" if math.isnan(v) else f"{v / 2**20:,.0f} MiB"


def nbytes(value: Any) -> str:
    v = _num(value)
    return "n/a" if math.isnan(v) else f"{v:,.0f} B"


def x(value: Any, digits: int = 3) -> str:
    v = _num(value)
    return "n/a" if math.isnan(v) else f"{v:.{digits}f}"


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(sep) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


# ------------------------------------------------------------------------------------------ loading


def load(results_dir: Path) -> dict[str, Any]:
    """Every schema-valid result of ``results_dir``, as :func:`view` shows it, by benchmark."""
    return {name: view(result) for name, result in load_results(results_dir).items()}


# ------------------------------------------------------------------------------------------ sections


def header(results: dict[str, Any]) -> list[str]:
    machines = [r["machine"] for r in results.values() if isinstance(r, dict) and "machine" in r]
    lines: list[str] = []
    if not machines:
        return ["No results yet: run `python -m bench`."]
    named = {name: r["machine"] for name, r in results.items() if isinstance(r, dict) and "machine" in r}
    by_cpu: dict[str, list[str]] = {}
    for name, mm in named.items():
        by_cpu.setdefault(str(mm.get("cpu_model") or "an unrecorded CPU"), []).append(name)
    main_cpu = max(by_cpu, key=lambda cpu: len(by_cpu[cpu]))
    m = named[by_cpu[main_cpu][0]]
    dates = sorted(mm["date"] for mm in machines)
    quick = [name for name, r in results.items() if isinstance(r, dict) and r.get("quick")]
    loads = ", ".join(
        f"{name} {r['machine']['load_average'][0]:.1f}"
        for name, r in results.items()
        if isinstance(r, dict) and r.get("machine", {}).get("load_average")
    )
    ram = _num(m.get("ram_bytes")) / 2**30
    lines += [
        f"Measured {dates[0]}{' – ' + dates[-1] if dates[-1] != dates[0] else ''}.",
        "",
        *table(
            ["", ""],
            [
                ["CPU", f"{m.get('cpu_model')}, {m.get('cpus')} cores"],
                ["RAM", f"{ram:.0f} GiB"],
                ["OS", str(m.get("os"))],
                ["Python", str(m.get("python"))],
                ["dbt", f"dbt-core {m.get('dbt_core')}, dbt-duckdb {m.get('dbt_duckdb')} (duckdb {m.get('duckdb')})"],
                ["Redis", f"redis-server {m.get('redis_server')} (throw-away, loopback), redis-py {m.get('redis_py')}"
                          f"{' + hiredis ' + m['hiredis'] if m.get('hiredis') else ''}"],
                ["dbtbus", f"{m.get('dbtbus')}, anyio {m.get('anyio')}, asyncio"
                           f"{'; bytecode ' + m['dbtbus_bytecode'] if m.get('dbtbus_bytecode') else ''}"],
                ["one-minute load average when each benchmark started", loads or "n/a"],
            ],
            "ll",
        ),
    ]
    others = {cpu: names for cpu, names in by_cpu.items() if cpu != main_cpu}
    if others:
        elsewhere = "; ".join(
            f"{', '.join(sorted(names))} on {cpu} ({', '.join(sorted({named[n]['date'][:10] for n in names}))})"
            for cpu, names in sorted(others.items())
        )
        lines += ["", f"**More than one machine.** The table above is the machine of most results; {elsewhere}. "
                      "Compare figures within a section (each has its own controls), not across machines."]
    if quick:
        lines += ["", f"**Quick mode** (`--quick`: fewer runs, smaller sizes) for: {', '.join(sorted(quick))}."]
    loaded = sorted(name for name, r in results.items() if any("taken under load" in n for n in r.get("notes", [])))
    if loaded:
        lines += ["", f"**Taken under load** (the result's notes say so): {', '.join(loaded)}."]
    return lines


def goals(results: dict[str, Any]) -> list[str]:
    rows: list[list[str]] = []
    e2e = results.get("end_to_end")
    if e2e:
        for p in e2e["projects"]:
            for variant, label in (("producer-memory", "memory"), ("producer-redis", "Redis")):
                rows.append(_e2e_goal_row(p, variant, label, e2e.get("machine", {}).get("cpus"),
                                          results.get("callback_cost")))
        for p in e2e["projects"]:
            for variant, label in (("produceronly-memory", "memory"), ("produceronly-redis", "Redis")):
                over = p.get("overhead", {}).get(variant)
                if over is None:
                    continue
                goal = goal_producer_rss(p["nodes"])
                total = over["peak_rss_over_bare"]
                split = ""
                if "imports_parts" in over and "run_over_bare" in over:
                    libs = ", ".join(f"{_signed_mib(v)} {k}" for k, v in over["imports_parts"].items() if k != "dbtbus")
                    own = over["dbtbus_own"]
                    split = (f": {libs} (libraries imported for it), {_signed_mib(over['imports_parts']['dbtbus'])} "
                             f"dbtbus's modules, {_signed_mib(over['run_over_bare'])} the run itself — dbtbus's own "
                             f"share {_signed_mib(own)}, {'within' if own <= goal else 'over'} the goal")
                rows.append([
                    f"producer peak RSS over a bare build ≤ {GOAL_PRODUCER_RSS_FIXED / 2**20:g} MiB + "
                    f"{GOAL_PRODUCER_RSS_PER_NODE / 1024:g} KB/node ({goal / 2**20:.2f} MiB) — "
                    f"{p['models']} models, {label}" + (" (an earlier run's)" if p.get("carried_over") else ""),
                    f"{_signed_mib(total)} (medians){split}",
                    verdict(_num(total), goal, lambda m, g: f"missed by {(m - g) / 2**20:.2f} MiB"),
                ])
    scale_data = results.get("scale")
    if scale_data:
        for size in scale_data["sizes"]:
            redis = size["backends"].get("redis")
            if not redis:
                continue
            for when in ("early", "late"):
                reg = redis[when]
                rows.append([
                    f"{scale_data['waiters']:,} waiters registered on Redis ≤ {GOAL_REGISTER_10K_S:g} s — "
                    f"{size['models']} models, {when}",
                    f"wall {s(reg['register_wall']['median'])}, CPU {s(reg['register_cpu']['median'])} "
                    f"(wall {s(reg['register_wall']['min'])} – {s(reg['register_wall']['max'])})",
                    cpu_judged(_num(reg["register_wall"]["median"]), _num(reg["register_cpu"]["median"]),
                                _num(reg["register_wall"]["min"]), _num(reg["register_wall"]["max"]),
                                GOAL_REGISTER_10K_S, lambda m, g: f"missed by {m - g:.3f} s ({m / g:.1f}× the goal)",
                                loaded=under_load(scale_data["machine"].get("load_average", [None])[0],
                                                  scale_data["machine"].get("cpus"))),
                ])
    wake = results.get("wakeup")
    if wake:
        for backend, goal, label in (("redis", GOAL_REDIS_P99_MS, "Redis"), ("memory", GOAL_MEMORY_P99_MS, "memory")):
            data = wake["backends"].get(backend)
            if not data:
                continue
            controls = data.get("controls", {})
            notes = [
                f"{what} p99 {ms(controls[key]['p99_ms'])} ms"
                for key, what in (("publish_call", "the publish call alone:"),
                                  ("bare_handoff", "the same hand-off between bare asyncio tasks:"),
                                  ("sleep_lateness", f"the machine: a {wake.get('pause_ms', 0):g} ms sleep's lateness"))
                if controls.get(key, {}).get("p99_ms") is not None
            ]
            lateness = _num(controls.get("sleep_lateness", {}).get("p99_ms"))
            for n, summary in data["distinct_nodes"].items():
                note = f" ({'; '.join(notes)})" if n == "1" and notes else ""
                judged = verdict(_num(summary["p99_ms"]), goal, _miss_ms)
                if judged != "yes" and lateness >= _num(summary["p99_ms"]):
                    judged += " — the machine's own sleep lateness p99 was as high: the tail is the machine's"
                rows.append([
                    f"{label} wake-up p99 ≤ {goal:g} ms — {int(n):,} waiter{'s' if n != '1' else ''}",
                    f"{ms(summary['p99_ms'])} ms{note}",
                    judged,
                ])
        memory = wake["backends"].get("memory", {})
        fanned: str | None = max(memory.get("one_node", {}), key=int, default=None)
        fan = memory["one_node"][fanned] if fanned is not None else None
        if fan and fanned is not None:
            floor = fan.get("asyncio_floor")
            floor_note = (f"; the asyncio floor, {int(fanned):,} bare tasks released alike in the same rounds: "
                          f"{ms(floor['p50_ms'], 1)} ms" if floor else "")
            judged = verdict(_num(fan["last"]["p50_ms"]), GOAL_FAN_OUT_10K_MS, _miss_ms)
            if floor and _num(floor["p50_ms"]) > GOAL_FAN_OUT_10K_MS:
                judged += (f" — below what asyncio itself takes here: dbtbus adds "
                           f"{ms(_num(fan['last']['p50_ms']) - _num(floor['p50_ms']), 1)} ms to the floor")
            rows.append([
                f"{int(fanned):,} waiters on ONE node all released ≤ {GOAL_FAN_OUT_10K_MS:g} ms (memory, median of "
                f"{fan['last']['n']} rounds)",
                f"last returns after {ms(fan['last']['p50_ms'], 1)} ms (first {ms(fan['first']['p50_ms'], 1)} ms; "
                f"worst round {ms(fan['last']['max_ms'], 1)} ms{floor_note})",
                judged,
            ])
    fp = results.get("footprint")
    if fp:
        share = fp["dbtbus_share_bytes_per_waiter"]
        total = fp["bytes_per_waiter"]
        for scenario, label in (("wait", "`bus.wait`"), ("wait-timeout", "`bus.wait(timeout=…)`"),
                                ("as_completed", "`as_completed`")):
            worst = max(_num(share[scenario]["tracemalloc"]), _num(share[scenario]["rss"]))
            rows.append([
                f"≤ {GOAL_BYTES_PER_WAITER / 1024:g} KB per waiter (dbtbus's share) — {label}",
                f"{nbytes(share[scenario]['tracemalloc'])} heap, {nbytes(share[scenario]['rss'])} RSS "
                f"(with the task: {nbytes(total[scenario]['tracemalloc'])})",
                verdict(worst, GOAL_BYTES_PER_WAITER, _miss_bytes),
            ])
        imp = fp["import"]["importtime_cumulative_ms"]["median"]
        rows.append([
            f"`import dbtbus` ≤ {GOAL_IMPORT_MS:g} ms",
            f"{ms(imp, 2)} ms (`-X importtime`, median of {fp['import']['runs']})",
            verdict(_num(imp), GOAL_IMPORT_MS, lambda m, g: f"missed by {m - g:.1f} ms"),
        ])
    if not rows:
        return ["No results."]
    lines = table(["goal (issues #7, #13)", "measured", "met?"], rows, "lll")
    if e2e:
        parts = []
        for p in e2e["projects"]:
            r = p["ratios"]
            cr = p.get("cpu_ratios", r)
            b = [_num(cr[f"{v}/bare"]["of_medians"]) for v in ("producer-memory", "producer-redis")]
            part = f"at {p['models']} models, dbtbus (b) took {x(min(b))}–{x(max(b))}× a bare `dbt build` (CPU)"
            bare_cpu = _num(p["summary"]["bare"]["cpu"]["median"])
            own = [_num(p["summary"][v]["own_cpu"]["median"]) / bare_cpu * 100
                   for v in ("producer-memory", "producer-redis") if "own_cpu" in p["summary"].get(v, {})]
            if own:
                part += f" (dbtbus's own threads: {min(own):.1f}–{max(own):.1f} % of the bare build's)"
            if "pernode-dbtrunner/bare" in cr and "pernode-subprocess/bare" in cr:
                part += (f", while one dbt invocation per node (c) would take "
                         f"{x(cr['pernode-dbtrunner/bare']['of_medians'], 1)}× (dbtRunner) and "
                         f"{x(cr['pernode-subprocess/bare']['of_medians'], 1)}× (`dbt` CLI)")
            parts.append(part)
        lines += ["", "**Headline:** " + "; ".join(parts) + " (c is extrapolated from a measured sample)."]
    return lines


def _signed_mib(value: Any) -> str:
    v = _num(value)
    if math.isnan(v):
        return "n/a"
    mib = round(v / 2**20, 2) + 0.0  # + 0.0: no "-0.00" for a figure that rounds to nothing
    return f"{mib:+.2f} MiB"


def _callback_seconds_per_node(callback: dict[str, Any] | None) -> float | None:
    """The producer's callback on dbt's threads, a node's worth of events (bench/callback_cost.py), seconds."""
    if not callback or not callback.get("capture", {}).get("nodes"):
        return None
    return _num(callback["callback_total_per_run_us"]) / 1e6 / callback["capture"]["nodes"]


def _e2e_goal_row(p: dict[str, Any], variant: str, label: str, cpus: int | None,
                  callback: dict[str, Any] | None = None) -> list[str]:
    wall = p["ratios"][f"{variant}/bare"]
    cpu = p.get("cpu_ratios", {}).get(f"{variant}/bare")
    per = [_num(v) for v in wall["per_repetition"]]
    lo, hi = min(per, default=math.nan), max(per, default=math.nan)
    measured = f"wall {x(wall['of_medians'])} (per repetition {x(lo)}–{x(hi)})"
    what = f"{p['models']} models, {label}" + (" (an earlier run's)" if p.get("carried_over") else "")
    if cpu is None:
        return [f"end to end ≤ {GOAL_E2E_RATIO:.2f} — {what}", measured,
                verdict(_num(wall["of_medians"]), GOAL_E2E_RATIO, _miss_ratio) + " (on wall; no CPU figure)"]
    cper = [_num(v) for v in cpu["per_repetition"]]
    measured = (f"CPU {x(cpu['of_medians'])} (per repetition {x(min(cper))}–{x(max(cper))}); " + measured)
    bare_cpu = _num(p["summary"]["bare"]["cpu"]["median"])
    summary = p["summary"].get(variant, {})
    own = summary.get("own_cpu")
    ratio_of_own = math.nan
    if own is not None:
        per_node = _callback_seconds_per_node(callback)
        callback_s = per_node * p["nodes"] if per_node is not None else 0.0
        spent = _num(own["median"]) + callback_s
        ratio_of_own = 1 + spent / bare_cpu
        measured += (f"; dbtbus's own CPU: {spent:.3f} s, {spent / bare_cpu * 100:.1f} % of the bare build's "
                     f"(waiting loop {_num(summary['waiting_loop_cpu']['median']):.3f} s and publisher "
                     f"{_num(summary['publisher_cpu']['median']):.3f} s, each thread's own clock"
                     + (f"; the callback on dbt's threads {callback_s * 1e3:.1f} ms, from its cost an event)"
                        if per_node is not None else ")"))
    else:
        alone = p["summary"].get(variant.replace("producer-", "produceronly-"), {}).get("publisher_cpu")
        if alone is not None:
            measured += (f"; the publisher thread's own CPU (producer alone): {_num(alone['median']):.3f} s, "
                         f"{_num(alone['median']) / bare_cpu * 100:.1f} % of the bare build's")
    loaded = under_load((p.get("load_average") or {}).get("max"), cpus)
    wall_noisy = loaded or lo <= GOAL_E2E_RATIO < hi
    judged = (own_cpu_judged(ratio_of_own, cper, GOAL_E2E_RATIO) if wall_noisy else None) or cpu_judged(
        _num(wall["of_medians"]), _num(cpu["of_medians"]), lo, hi, GOAL_E2E_RATIO, _miss_ratio, loaded=loaded)
    return [f"end to end CPU ratio ≤ {GOAL_E2E_RATIO:.2f} — {what}", measured, judged]


def end_to_end(data: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for p in data["projects"]:
        counts = ", ".join(f"{v} {k}{'s' if v != 1 else ''}" for k, v in p["counts"].items())
        reps = f"{p['repetitions']} repetitions"
        if p.get("pernode_repetitions") is not None and p["pernode_repetitions"] != p["repetitions"]:
            reps += f" ({p['pernode_repetitions']} of (c))"
        lines += [f"### {p['models']} models ({p['nodes']} nodes: {counts}), {reps}", ""]
        carried = p.get("carried_over")
        if carried:
            lines += [f"**From an earlier run** ({carried.get('measured')}, {carried.get('cpu_model')}): this size "
                      "is measured only with `--large`, and the last run without it kept these figures; the code "
                      "measured may predate the other sections'.", ""]
        load = p.get("load_average")
        if load:
            loaded = under_load(load["max"], data.get("machine", {}).get("cpus"))
            lines += [f"1-minute load average during these runs: {load['min']:.1f}–{load['max']:.1f} on "
                      f"{data.get('machine', {}).get('cpus')} CPUs"
                      + (" — **taken under load**: read the CPU columns, not the wall ones." if loaded else "."), ""]
        rows = []
        over = p.get("overhead", {})
        for variant, label in VARIANT_LABELS.items():
            summ = p["summary"].get(variant)
            if summ is None:
                continue
            w = summ["wall"]
            c = summ.get("cpu")
            r = p["ratios"].get(f"{variant}/bare")
            cr = p.get("cpu_ratios", {}).get(f"{variant}/bare")
            o = over.get(variant)
            rows.append([
                label, s(w["median"]), f"{s(w['min'])} – {s(w['max'])}",
                "n/a" if c is None else s(c["median"]), "" if c is None else f"{s(c['min'])} – {s(c['max'])}",
                "1" if r is None else f"{x(r['of_medians'], 3 if r['of_medians'] < 2 else 1)}",
                "1" if cr is None else f"**{x(cr['of_medians'], 3 if cr['of_medians'] < 2 else 1)}**",
                f"{_num(summ['peak_rss']['median']) / 2**20:,.1f} MiB",
                "" if o is None else _signed_mib(o["peak_rss_over_bare"]),
            ])
        lines += table(["variant", "wall (median)", "wall min – max", "CPU (median)", "CPU min – max",
                        "wall ÷ (a)", "CPU ÷ (a)", "peak RSS (median)", "RSS over (a)"], rows, "lrrrrrrrr")
        sample = p.get("sample", [])
        kinds: dict[str, int] = {}
        for uid in sample:
            kinds[uid.split(".")[0]] = kinds.get(uid.split(".")[0], 0) + 1
        per_type = {
            v: p["summary"][v].get("mean_per_type", {}) for v in ("pernode-dbtrunner", "pernode-subprocess")
            if v in p["summary"]
        }
        own_rows = [
            f"{label}: {_num(p['summary'][v]['own_cpu']['median']):.3f} s "
            f"({_num(p['summary'][v]['own_cpu']['min']):.3f}–{_num(p['summary'][v]['own_cpu']['max']):.3f}; "
            f"waiting loop {_num(p['summary'][v]['waiting_loop_cpu']['median']):.3f} s, publisher "
            f"{_num(p['summary'][v]['publisher_cpu']['median']):.3f} s)"
            for v, label in (("producer-memory", "`memory://`"), ("producer-redis", "Redis"))
            if "own_cpu" in p["summary"].get(v, {})
        ]
        if own_rows:
            bare_cpu = _num(p["summary"]["bare"]["cpu"]["median"])
            lines += ["", "dbtbus's own CPU in (b), each thread on its own clock (`time.thread_time`), median "
                      "(min–max): " + "; ".join(own_rows) + f" — against the bare build's {bare_cpu:.2f} s."]
        if sample and any(per_type.values()):
            desc = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in kinds.items())
            means = "; ".join(
                f"{'dbtRunner' if v == 'pernode-dbtrunner' else 'CLI'}: "
                + ", ".join(f"{k} {t:.2f} s" for k, t in mt.items())
                for v, mt in per_type.items()
            )
            lines += [
                "",
                f"(c) is **extrapolated** from a measured sample of {len(sample)} nodes ({desc}) run one invocation",
                f"each, in dependency order; mean wall per invocation — {means}. Estimate = Σ over resource",
                "types of (mean per invocation) × (number of nodes of that type).",
            ]
        elif sample:
            lines += ["", "(c) is not measured at this size (one dbt invocation per node takes hours here)."]
        lines.append("")
    return lines


def _libraries(data: dict[str, Any]) -> list[str]:
    """What the libraries under the producer cost, from the largest project's producer-alone variants."""
    parts: dict[str, list[float]] = {}
    for p in data["projects"]:
        for variant in ("produceronly-memory", "produceronly-redis"):
            for name, value in ((p.get("overhead") or {}).get(variant, {}).get("imports_parts") or {}).items():
                if name != "dbtbus":
                    parts.setdefault(name, []).append(_num(value))
    if not parts:
        return []
    said = ", ".join(f"{name} {_signed_mib(max(vals))}" for name, vals in parts.items())
    return [f"Libraries the producer imports that a bare build does not (largest of the sizes above): {said}."]


def producer_memory(data: dict[str, Any]) -> list[str]:
    """Where the producer's memory goes (figures from end_to_end.json; the findings from issue #13's profiling)."""
    rows = []
    for p in data["projects"]:
        for variant, label in (("produceronly-memory", "`memory://`"), ("produceronly-redis", "Redis")):
            o = p.get("overhead", {}).get(variant)
            if not o or "imports_parts" not in o:
                continue
            parts = o["imports_parts"]
            rows.append([f"{p['models']} models ({p['nodes']} nodes)", label, _signed_mib(o["peak_rss_over_bare"]),
                         _signed_mib(parts["asyncio + anyio"]),
                         _signed_mib(parts["redis-py"]) if "redis-py" in parts else "",
                         _signed_mib(parts["dbtbus"]), _signed_mib(o["run_over_bare"]),
                         f"**{_signed_mib(o['dbtbus_own'])}**", f"{goal_producer_rss(p['nodes']) / 2**20:.2f} MiB"])
    lines: list[str] = []
    if rows:
        lines += table(["project", "bus", "peak RSS over a bare build", "asyncio + anyio", "redis-py",
                        "dbtbus's modules", "the run itself", "dbtbus's own share (modules + run)",
                        f"goal ({GOAL_PRODUCER_RSS_FIXED / 2**20:g} MiB + "
                        f"{GOAL_PRODUCER_RSS_PER_NODE / 1024:g} KB/node)"],
                       rows, "llrrrrrrr")
        lines += ["", *_libraries(data)]
    return lines


def scale(data: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    loaded = under_load(data.get("machine", {}).get("load_average", [None])[0], data.get("machine", {}).get("cpus"))
    if loaded:
        lines += [f"**Taken under load** (1-minute load average {data['machine']['load_average'][0]:.1f} on "
                  f"{data['machine']['cpus']} CPUs at start): the CPU figures are the ones to read.", ""]
    rows = []
    for size in data["sizes"]:
        for backend, b in size["backends"].items():
            tp = b["throughput"]
            for when in ("early", "late"):
                w = b[when]
                rows.append([
                    f"{size['models']:,} models ({size['nodes']:,} nodes)", "`memory://`" if backend == "memory"
                    else "Redis", when,
                    f"{tp['one_by_one']['records_per_s']['median']:,.0f} "
                    f"({tp['one_by_one']['cpu_us_per_record']['median']:.0f} µs CPU)" if when == "early" else "",
                    f"{tp['batched']['records_per_s']['median']:,.0f}" if when == "early" else "",
                    f"{s(w['register_wall']['median'])} / {s(w['register_cpu']['median'])}",
                    f"{s(w['release_wall']['median'])} / {s(w['release_cpu']['median'])}",
                    f"{w['records_read_per_waiter']['median']:.3f} ({w['records_read']['median']:,.0f} of a "
                    f"{w['log_length']:,}-record log, {w['reads']['median']:,.0f} reads)",
                ])
    lines += table(["project", "backend", "waiters arrive", "publish one by one, records/s (CPU per record)",
                    f"publish ×{data['batch']}, records/s", f"register {data['waiters']:,} waiters: wall / CPU",
                    "release them all: wall / CPU", "records read per waiter"], rows, "lllrrrrr")
    lines += [
        "",
        f"Medians of {data['repetitions']} repetitions; {data['waiters']:,} waiters; results published in batches "
        f"of {data['batch']:,}.",
    ]
    return lines


def wakeup(data: dict[str, Any]) -> list[str]:
    lines = [
        f"Milliseconds, on {data.get('machine', {}).get('cpu_model', 'n/a')} "
        f"({str(data.get('machine', {}).get('date', ''))[:16]}). "
        f"Load average {data['load_average_at_start'][0]:.1f} at start; realtime priority: "
        f"{'yes' if data.get('realtime_priority') else 'no (normal scheduling, shared CPUs)'}.",
        "",
    ]
    names = {"memory": "`memory://`", "redis": "Redis (loopback)"}
    for backend, b in data["backends"].items():
        rows = []
        for n, summ in b["distinct_nodes"].items():
            label = "1 waiter" if n == "1" else f"{int(n):,} concurrent waiters, one per node, published one by one"
            if n == "100" and summ["n"] > 100:
                label += f" ({summ['n'] // 100:,} rounds)"
            rows.append([label, f"{summ['n']:,}", ms(summ["p50_ms"]), ms(summ["p99_ms"]), ms(summ["max_ms"])])
        for n, fan in b["one_node"].items():
            for which in ("first", "last", "asyncio_floor"):
                summ = fan.get(which)
                if summ is None:
                    continue
                label = (f"control: {int(n):,} bare asyncio tasks released in one loop, last returns"
                         if which == "asyncio_floor" else f"{int(n):,} waiters on ONE node: {which} returns")
                rows.append([label, f"{summ['n']:,}", ms(summ["p50_ms"]), ms(summ["p99_ms"]), ms(summ["max_ms"])])
        controls = b.get("controls", {})
        for key, label in (("publish_call", "control: the publish call alone (1-waiter run)"),
                           ("bare_handoff", "control: the same hand-off between bare asyncio tasks (future → "
                                            "relay task → waiting task), alternated in blocks with the 1-waiter run"),
                           ("sleep_lateness", f"control: lateness of `asyncio.sleep({data.get('pause_ms', 0):g} ms)` "
                                              "(same run)")):
            if key in controls:
                summ = controls[key]
                rows.append([label, f"{summ['n']:,}", ms(summ["p50_ms"]), ms(summ["p99_ms"]), ms(summ["max_ms"])])
        lines += [f"### {names.get(backend, backend)}", ""]
        lines += table(["scenario", "events", "p50", "p99", "max"], rows)
        lines.append("")
    return lines


def throughput(data: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    backends = data["backends"]
    paths = list(next(iter(backends.values())))
    rows = []
    for path in paths:
        row = [path]
        for b in backends.values():
            v = b.get(path)
            row.append("n/a" if v is None else f"{v['median']:,.0f} ({v['min']:,.0f}–{v['max']:,.0f})")
        rows.append(row)
    labels = {"memory": "`memory://`", "redis": "Redis (loopback)"}
    lines += table(["path", *(f"{labels.get(b, b)}, records/s: median (min–max)" for b in backends)], rows)
    lines += [
        "",
        f"{data['runs']} runs per backend: {data['records_one_by_one']:,} records one by one, "
        f"{data['records_batched']:,} in batches of {data['batch']:,}.",
    ]
    return lines


def footprint(data: dict[str, Any]) -> list[str]:
    n = data["waiters"]
    per = data["bytes_per_waiter"]
    share = data["dbtbus_share_bytes_per_waiter"]
    labels = {
        "bare": "baseline without dbtbus: a bare task parked on an `anyio.Event`",
        "wait": "a task per waiter: `bus.wait(run, node)`",
        "wait-timeout": "a task per waiter: `bus.wait(run, node, timeout=3600)`",
        "as_completed": "one `bus.as_completed(run, nodes)` over all the nodes (one task)",
    }
    rows = []
    for scenario, label in labels.items():
        sh = share.get(scenario)
        rows.append([
            label, nbytes(per[scenario]["tracemalloc"]), "" if sh is None else nbytes(sh["tracemalloc"]),
            nbytes(per[scenario]["rss"]), "" if sh is None else nbytes(sh["rss"]),
        ])
    imp = data["import"]
    walls = imp["interpreter_wall_ms"]
    heavy = imp["heavy_modules_imported"]
    lines = [
        f"At {n:,} waiters (asyncio, `memory://`):",
        "",
        *table(["how the waiters wait", "heap total", "heap, dbtbus's share", "RSS total", "RSS, dbtbus's share"],
               rows),
        "",
        "`import dbtbus`:",
        "",
        *table(["measure", f"median of {imp['runs']} fresh interpreters", "min – max"], [
            ["`-X importtime`, cumulative, `dbtbus` line",
             f"{ms(imp['importtime_cumulative_ms']['median'], 2)} ms",
             f"{ms(imp['importtime_cumulative_ms']['min'], 2)} – {ms(imp['importtime_cumulative_ms']['max'], 2)} ms"],
            ["wall of `python -c \"import dbtbus\"`", f"{ms(walls['import dbtbus']['median'], 1)} ms",
             f"{ms(walls['import dbtbus']['min'], 1)} – {ms(walls['import dbtbus']['max'], 1)} ms"],
            ["wall of `python -c \"pass\"` (the interpreter alone)", f"{ms(walls['pass']['median'], 1)} ms",
             f"{ms(walls['pass']['min'], 1)} – {ms(walls['pass']['max'], 1)} ms"],
            ["RSS growth of the import", f"{_num(imp['rss_delta_bytes']['median']) / 1024:,.0f} KiB",
             f"{_num(imp['rss_delta_bytes']['min']) / 1024:,.0f} – {_num(imp['rss_delta_bytes']['max']) / 1024:,.0f}"
             " KiB"],
        ]),
        "",
        "Heavy dependencies imported by `import dbtbus`: "
        + (", ".join(f"`{h}`" for h in heavy) if heavy else "none") + ".",
    ]
    return lines


def callback_cost(data: dict[str, Any]) -> list[str]:
    ns = data["ns_per_call"]
    cap = data["capture"]
    rows = [
        ["a no-op callback, every event (the floor: one Python call)", ns["noop_all"]],
        [f"producer callback, events it keeps ({cap['wanted']:,})", ns["callback_wanted"]],
        [f"producer callback, events it drops ({cap['unwanted']:,})", ns["callback_unwanted"]],
        [f"producer callback, every event ({cap['events']:,})", ns["callback_all"]],
        ["protobuf → dict extraction of a kept event (publisher thread, not dbt's)", ns["extract_wanted"]],
    ]
    lines = [
        *table(["what", "ns per call (median of rounds)", "min"],
               [[r[0], f"{r[1]['median']:,.0f}", f"{r[1]['min']:,.0f}"] for r in rows]),
        "",
        f"A `dbt build` of {cap['nodes']} nodes fires {cap['events']:,} events ({cap['events'] / cap['nodes']:.0f} per "
        f"node); the callback spends about {data['callback_total_per_run_us']:,.0f} µs on all of them — "
        f"{data['callback_share_of_build'] * 100:.3f} % of that build's {cap['build_wall']:.2f} s wall.",
        "",
        f"The events of a generated {data['capture_project_models']}-model project's build, {data['rounds']} rounds.",
    ]
    return lines


def producer_overhead(data: dict[str, Any]) -> list[str]:
    """The in-process producer's cost over a bare build (``callback_cost.json``'s ``overhead``): wall, and CPU
    where the result has it."""
    ovh = data.get("overhead")
    if not ovh:
        return ["Not measured in this run (`--tiny` skips it)."]
    sub = ovh.get("subprocess") or {}
    pairs = [("`Producer(\"memory://\").invoke(build)` ÷ `dbtRunner().invoke(build)`", ovh["bare"],
              {**ovh["producer"], **{k: v for k, v in ovh.items() if "ratio" in k}})]
    for variant, label in (("cli-json-debug", "`dbt build --log-format json --log-level debug` ÷ `dbt build` CLI"),
                           ("subprocess", "`Producer.invoke_subprocess(build)` ÷ `dbt build` CLI")):
        if variant in sub and "cli-text" in sub:
            pairs.append((label, sub["cli-text"], sub[variant]))
    rows = [[label, s(base["median"]), s(v["median"]), f"**{x(v['ratio_of_medians'])}**", x(v["ratio_of_mins"]),
             x(v["cpu_ratio_of_medians"]) if "cpu_ratio_of_medians" in v else "n/a"]
            for label, base, v in pairs]
    lines = table(["comparison", "baseline wall (median)", "measured wall (median)", "wall ratio of medians",
                   "wall ratio of fastest", "CPU ratio of medians"], rows)
    return [*lines, "", f"{ovh['models']} models ({ovh['nodes']} nodes), {ovh['repetitions']} alternated runs per "
                        "variant."]


# ------------------------------------------------------------------------------------------ page

BEGIN = "<!-- bench:{} -->"
END = "<!-- /bench:{} -->"
_MARKER = re.compile(r"<!-- bench:([a-z_]+) -->\n(.*?)<!-- /bench:\1 -->", re.S)


def _without_heading(text: str) -> list[str]:
    """A benchmark module's section without its ``## `` heading (the page holds the headings)."""
    lines = text.splitlines()
    while lines and (lines[0].startswith("## ") or not lines[0].strip()):
        lines.pop(0)
    return lines


def _section_of(module: str, function: str = "section") -> Callable[[dict[str, Any]], list[str]]:
    def render_block(data: dict[str, Any]) -> list[str]:
        out = getattr(importlib.import_module(f"bench.{module}"), function)(data)
        return _without_heading(out if isinstance(out, str) else "\n".join(out))

    return render_block


#: The page's generated blocks: name → (the result it reads, how). ``machine`` and ``goals`` read them all.
BLOCKS: dict[str, tuple[str | None, Callable[..., list[str]]]] = {
    "machine": (None, header),
    "goals": (None, goals),
    "end_to_end": ("end_to_end", end_to_end),
    "producer_memory": ("end_to_end", producer_memory),
    "scale": ("scale", scale),
    "wakeup": ("wakeup", wakeup),
    "throughput": ("throughput", throughput),
    "footprint": ("footprint", footprint),
    "callback_cost": ("callback_cost", callback_cost),
    "producer_overhead": ("callback_cost", producer_overhead),
    "redis_append": ("redis_append", _section_of("redis_backend")),
    "report": ("report", _section_of("report")),
    "airflow_dag": ("airflow_dag", _section_of("airflow_dag")),
    "airflow_live": ("airflow_live", _section_of("airflow_live", "render")),
    "airflow_footprint": ("airflow_footprint", _section_of("airflow_footprint", "render")),
    "airflow_assets": ("airflow_assets", _section_of("airflow_assets", "render")),
    "airflow_layouts": ("airflow_layouts", _section_of("airflow_live", "render_layouts")),
    "airflow_soak": ("airflow_soak", _section_of("airflow_live", "render_soak")),
    "airflow_soak_runs": ("airflow_soak", _section_of("airflow_live", "render_soak_runs")),
    "airflow_floor": ("airflow_floor", _section_of("airflow_floor", "render")),
    "airflow_floor_compare": ("airflow_floor", _section_of("airflow_floor", "render_compare")),
    "airflow_floor_build": ("airflow_floor_build", _section_of("airflow_floor_build", "render")),
}


def blocks(results: dict[str, Any]) -> dict[str, str]:
    """Every generated block's Markdown, from the results alone (a block whose result is missing says so)."""
    out: dict[str, str] = {}
    for name, (source, fn) in BLOCKS.items():
        if source is None:
            lines = fn(results)
        elif source not in results:
            lines = [f"No result: `bench/results/{source}.json` is missing (`python -m bench --only {source}`)."]
        else:
            try:
                lines = fn(results[source])
            except (KeyError, TypeError, ValueError) as exc:
                lines = [f"(could not render `bench/results/{source}.json`: {exc!r})"]
        out[name] = "\n".join(lines).strip("\n")
    return out


def splice(page: str, generated: dict[str, str], *, add_missing: bool = True) -> str:
    """Put each generated block between its markers on ``page``; a block the page has no markers for is added
    at its end, under a heading of its name (unless ``add_missing`` is false). Everything outside the markers
    is kept as written."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        body = generated.get(name, match.group(2).strip("\n"))
        return f"{BEGIN.format(name)}\n{body}\n{END.format(name)}"

    text = _MARKER.sub(fill, page)
    present = {m.group(1) for m in _MARKER.finditer(page)}
    for name, body in generated.items():
        if add_missing and name not in present:
            text = text.rstrip("\n") + f"\n\n## {name}\n\n{BEGIN.format(name)}\n{body}\n{END.format(name)}\n"
    return text


def generated_blocks(page: str) -> dict[str, str]:
    """The blocks a page holds between its markers, by name."""
    return {m.group(1): m.group(2).strip("\n") for m in _MARKER.finditer(page)}


def render_file(results_dir: Path, docs: Path) -> None:
    """Regenerate the blocks of ``docs`` (the committed page when ``docs`` does not exist yet) and its plot."""
    from bench.plot import plot

    source = docs if docs.exists() else DOCS_PATH
    page = source.read_text(encoding="utf-8") if source.exists() else "# Benchmarks\n"
    docs.parent.mkdir(parents=True, exist_ok=True)
    plot(results_dir, docs.parent / PLOT_NAME)  # where matplotlib is installed (the `bench` nox session)
    generated = blocks(load(results_dir))
    docs.write_text(splice(page, generated), encoding="utf-8")
    for other in sorted(docs.parent.glob("*.md")):  # other pages quote blocks too (docs/airflow.md)
        text = other.read_text(encoding="utf-8")
        if other != docs and _MARKER.search(text):
            other.write_text(splice(text, generated, add_missing=False), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--docs", type=Path, default=DOCS_PATH)
    args = parser.parse_args(argv)
    render_file(args.results_dir, args.docs)
    print(args.docs)


if __name__ == "__main__":
    main()
