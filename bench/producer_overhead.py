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
from pathlib import Path

from bench._harness import ROOT, Run

PY = sys.executable
DBT = str(Path(PY).parent / "dbt")


def one(variant: str, project: str, threads: int) -> dict[str, float]:
    """Run one measurement in this process (called in a fresh interpreter): wall and CPU seconds (user +
    system of every thread and of the waited-for dbt CLI processes)."""
    from dbt.cli.main import dbtRunner  # imported before the clock starts

    import dbtbus
    from bench._harness import Clock
    from dbtbus.producer import Producer

    args = ["build", "--project-dir", project, "--profiles-dir", project, "--threads", str(threads)]
    run_id = f"bench-{os.getpid()}"
    clock = Clock()
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
    measured = clock.read()
    if not ok:
        raise SystemExit(f"{variant}: dbt crashed")
    del dbtbus
    return measured


def measure(variant: str, project: Path, threads: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(
        [PY, "-m", "bench.producer_overhead", "--one", variant, "--project", str(project), "--threads", str(threads)],
        capture_output=True, text=True, check=True, cwd=project, env=env,
    )
    data: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


def series(variants: list[str], project: Path, threads: int, repeat: int) -> list[Run]:
    """Each variant once as a warm-up, then ``repeat`` rounds alternating them (forward, then backward)."""
    runs: list[Run] = []
    for v in variants:  # warm-up: partial parse file, DuckDB file, OS caches
        measure(v, project, threads)
    for i in range(repeat):
        order = variants if i % 2 == 0 else list(reversed(variants))
        for v in order:
            m = measure(v, project, threads)
            runs.append(Run(variant=v, round=i, wall_s=m["wall"], cpu_s=m["cpu"], labels={"project": project.name}))
            print(f"  {v:>24} {m['wall']:7.2f}s wall {m['cpu']:7.2f}s CPU", flush=True)
    return runs


def main() -> None:
    """The child's entry: ``--one VARIANT --project DIR [--threads N]`` prints ``{"wall": seconds}``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--threads", type=int, default=4)
    opts = parser.parse_args()
    print(json.dumps(one(opts.one, opts.project, opts.threads)))


if __name__ == "__main__":
    main()
