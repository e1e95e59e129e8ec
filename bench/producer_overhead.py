"""Producer overhead, the measuring half: one ``dbt build`` variant in a fresh interpreter, and alternated series.

``bench/callback_cost.py`` runs :func:`series` (its ``overhead`` figures): the in-process producer (memory bus)
÷ a bare ``dbtRunner`` build, and the subprocess producer and dbt's debug-level JSON log on stdout (which the
subprocess producer needs: NodeStart/NodeFinished are debug-level events) ÷ the text CLI. Every measurement
runs in a fresh Python process (imports done before the clock starts), the variants alternate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

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
    """The child's entry: ``--one VARIANT --project DIR [--threads N]`` prints ``{"wall": seconds}``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--threads", type=int, default=4)
    opts = parser.parse_args()
    print(json.dumps({"wall": one(opts.one, opts.project, opts.threads)}))


if __name__ == "__main__":
    main()
