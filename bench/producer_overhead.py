"""Producer overhead: wall of ``dbt build`` through the producer (memory bus) ÷ bare ``dbt build``.

Not a test. Every measurement runs in a fresh Python process (imports done before the clock starts), the
variants alternate, the project and thread count are the same. Also measures the subprocess producer and the
cost of dbt's debug-level JSON log on stdout (which the subprocess producer needs: NodeStart/NodeFinished are
debug-level events).

    .venv/bin/python bench/producer_overhead.py --models 50 200 --repeat 5 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/<script>.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import replace_doc_section

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
PY = sys.executable
DBT = str(Path(PY).parent / "dbt")


def one(variant: str, project: str, threads: int) -> float:
    """Run one measurement in this process (called in a fresh interpreter) and return the wall seconds."""
    from dbt.cli.main import dbtRunner  # imported before the clock starts

    import dbtbus
    from dbtbus.producer import Producer

    args = ["build", "--project-dir", project, "--profiles-dir", project, "--threads", str(threads)]
    run_id = f"bench-{os.getpid()}"
    start = time.perf_counter()
    if variant == "bare":
        res = dbtRunner().invoke(args)
        ok = res.exception is None
    elif variant == "producer":
        result = Producer("memory://bench", run_id=run_id).invoke(args)
        ok = not result.crashed
    elif variant == "subprocess":
        result = Producer("memory://bench", run_id=run_id).invoke_subprocess(args, dbt_executable=DBT)
        ok = not result.crashed
    elif variant.startswith("cli"):
        extra = {
            "cli-text": [],
            "cli-json-info": ["--log-format", "json"],
            "cli-json-debug": ["--log-format", "json", "--log-level", "debug"],
            "cli-json-debug-nofile": ["--log-format", "json", "--log-level", "debug", "--log-level-file", "none"],
        }[variant]
        proc = subprocess.Popen([DBT, *args, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        for _ in proc.stdout:
            pass
        ok = proc.wait() in (0, 1)
    else:
        raise SystemExit(f"unknown variant {variant}")
    wall = time.perf_counter() - start
    if not ok:
        raise SystemExit(f"{variant}: dbt crashed")
    del dbtbus
    return wall


def measure(variant: str, project: Path, threads: int) -> float:
    out = subprocess.run(
        [PY, str(HERE), "--one", variant, "--project", str(project), "--threads", str(threads)],
        capture_output=True, text=True, check=True, cwd=project,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["wall"])


def series(variants: list[str], project: Path, threads: int, repeat: int) -> dict[str, list[float]]:
    walls: dict[str, list[float]] = {v: [] for v in variants}
    for v in variants:  # warm-up: partial parse file, DuckDB file, OS caches
        measure(v, project, threads)
    for i in range(repeat):
        order = variants if i % 2 == 0 else list(reversed(variants))
        for v in order:
            walls[v].append(measure(v, project, threads))
            print(f"  {v:>24} {walls[v][-1]:7.2f}s", flush=True)
    return walls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one")
    parser.add_argument("--project")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--models", type=int, nargs="*", default=[50, 200])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--subprocess-repeat", type=int, default=3)
    parser.add_argument("--write")
    opts = parser.parse_args()
    if opts.one:
        print(json.dumps({"wall": one(opts.one, opts.project, opts.threads)}))
        return

    sys.path.insert(0, str(ROOT))
    from dbtbus.testing.projects import generate_project

    lines = []
    tmp = Path(tempfile.mkdtemp(prefix="dbtbus-bench-"))
    for n in opts.models:
        project = generate_project(tmp / f"p{n}", models=n, tests_per_model=1, threads=opts.threads)
        print(f"{n} models ({len(project.nodes)} nodes), {opts.threads} threads", flush=True)
        walls = series(["bare", "producer"], project.path, opts.threads, opts.repeat)
        bare, prod = statistics.median(walls["bare"]), statistics.median(walls["producer"])
        lines.append(
            f"| {n} models ({len(project.nodes)} nodes) | in-process | {bare:.2f} s | {prod:.2f} s | "
            f"**{prod / bare:.3f}** | {min(walls['producer']) / min(walls['bare']):.3f} |"
        )
        print(lines[-1], flush=True)
        if opts.subprocess_repeat:
            sub_variants = ["cli-text", "cli-json-info", "cli-json-debug", "cli-json-debug-nofile", "subprocess"]
            sw = series(sub_variants, project.path, opts.threads, opts.subprocess_repeat)
            base = statistics.median(sw["cli-text"])
            for v in sub_variants[1:]:
                med = statistics.median(sw[v])
                lines.append(
                    f"| {n} models ({len(project.nodes)} nodes) | `{v}` vs `dbt build` CLI | {base:.2f} s | "
                    f"{med:.2f} s | {med / base:.3f} | {min(sw[v]) / min(sw['cli-text']):.3f} |"
                )
                print(lines[-1], flush=True)
    table = "\n".join(
        ["| project | comparison | baseline (median) | measured (median) | ratio (median) | ratio (min) |",
         "|---|---|---|---|---|---|", *lines]
    )
    print(table)
    if opts.write:
        write_section(Path(opts.write), table, opts)


def write_section(path: Path, table: str, opts: argparse.Namespace) -> None:
    import platform

    body = (
        "## Producer overhead\n\n"
        f"`bench/producer_overhead.py` (dbt-core + dbt-duckdb, generated projects with 1 test per model, "
        f"{opts.threads} threads, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{opts.repeat} alternated runs per in-process variant, {opts.subprocess_repeat} per subprocess "
        "variant, each in a fresh interpreter after one warm-up run). Goal: in-process ratio ≤ 1.02.\n\n"
        "- *in-process*: `Producer(\"memory://…\").invoke(build)` ÷ `dbtRunner().invoke(build)`.\n"
        "- *`cli-*` / `subprocess`*: the `dbt build` CLI with stdout drained through a pipe, with the JSON\n"
        "  log flags shown, and the subprocess producer end to end, ÷ plain `dbt build`.\n\n"
        f"{table}\n"
    )
    replace_doc_section(path, "## Producer overhead", body)


if __name__ == "__main__":
    main()
