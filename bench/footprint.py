"""Footprint: memory per waiting consumer at 10,000 waiters, and the cost of ``import dbtbus``.

Waiters (asyncio, ``memory://`` bus, one run whose reader already exists), each scenario in a fresh
interpreter, measured twice — Python heap with ``tracemalloc`` (one child) and the process's RSS delta (another
child, without tracemalloc):

* ``bare``          — baseline without dbtbus: a bare task parked on an ``anyio.Event``;
* ``wait``          — a task per waiter: ``bus.wait(run, node)`` (no timeout);
* ``wait-timeout``  — a task per waiter: ``bus.wait(run, node, timeout=3600)``;
* ``as_completed``  — one ``bus.as_completed(run, nodes)`` over all the nodes (one task).

dbtbus's share of a task-per-waiter scenario is its total minus the bare task's.

Import: the median over fresh interpreters of ``python -X importtime -c "import dbtbus"`` (cumulative µs of
the ``dbtbus`` line), the wall of ``python -c "import dbtbus"`` against ``python -c "pass"``, and the RSS delta
of the import.

    python -m bench.footprint [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import time
import tracemalloc
from typing import Any

from bench._harness import PY, Measured, Options, benchmark, child_json, emit, log, run_child, standalone, stat, vm_rss

NAME = "footprint"
SCENARIOS = ("bare", "wait", "wait-timeout", "as_completed")
METHODS = ("tracemalloc", "rss")
WAITERS = 10_000
HEAVY = ("dbt", "redis", "rich", "psutil", "airflow", "google.protobuf", "agate", "trio", "hiredis")


# ------------------------------------------------------------------------------------------ waiters (child)


async def _measure(scenario: str, method: str, waiters: int) -> float:
    import anyio

    import dbtbus
    from bench.redis_backend import _prepare_run

    run_id = "footprint"
    uids = [f"model.m{i}" for i in range(waiters)]
    async with dbtbus.connect("memory://footprint", linger=60) as producer, \
            dbtbus.connect("memory://footprint", linger=60) as bus:
        await _prepare_run(producer, run_id, uids)
        keep = asyncio.ensure_future(bus.wait(run_id, "model.never"))  # the run's reader exists before measuring
        await asyncio.sleep(0.1)
        gate = anyio.Event()

        def start(n: int) -> list[Any]:
            if scenario == "bare":
                return [asyncio.ensure_future(gate.wait()) for _ in range(n)]
            if scenario == "wait":
                return [asyncio.ensure_future(bus.wait(run_id, uid)) for uid in uids[:n]]
            if scenario == "wait-timeout":
                return [asyncio.ensure_future(bus.wait(run_id, uid, timeout=3600)) for uid in uids[:n]]
            iterator = bus.as_completed(run_id, uids[:n], timeout=3600)
            return [asyncio.ensure_future(iterator.__anext__()), iterator]

        async def settle(n: int) -> None:
            await asyncio.sleep(0.05)
            if scenario != "bare":
                while bus.statistics().readers.get(run_id, 0) < n + 1:  # noqa: ASYNC110 - a benchmark polls
                    await asyncio.sleep(0.01)

        async def stop(items: list[Any]) -> None:
            for item in items:
                if isinstance(item, asyncio.Future):
                    item.cancel()
            await asyncio.gather(*(i for i in items if isinstance(i, asyncio.Future)), return_exceptions=True)
            for item in items:
                if not isinstance(item, asyncio.Future):
                    await item.aclose()

        # warm the code paths (lazy imports, caches) with a few waiters first
        warm = start(10)
        await settle(10)
        await stop(warm)
        await asyncio.sleep(0.05)
        gc.collect()
        if method == "tracemalloc":
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
        else:
            base = vm_rss() or 0
        items = start(waiters)
        await settle(waiters)
        gc.collect()
        used = (tracemalloc.get_traced_memory()[0] if method == "tracemalloc" else vm_rss() or 0) - base
        if method == "tracemalloc":
            tracemalloc.stop()
        await stop(items)
        keep.cancel()
        await asyncio.gather(keep, return_exceptions=True)
    return used / waiters


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--waiters", type=int, default=WAITERS)
    opts = parser.parse_args(argv)
    emit({"bytes_per_waiter": asyncio.run(_measure(opts.child, opts.method, opts.waiters))})


# ------------------------------------------------------------------------------------------ import

_RSS_OF_IMPORT = (
    "import json, sys\n"
    "def rss():\n"
    "    with open('/proc/self/status', 'rb') as fh:\n"
    "        for line in fh:\n"
    "            if line.startswith(b'VmRSS:'):\n"
    "                return int(line.split()[1]) * 1024\n"
    "before = rss()\n"
    "import dbtbus\n"
    "after = rss()\n"
    f"heavy = {HEAVY!r}\n"
    "print('RESULT ' + json.dumps({'rss_delta': after - before, 'heavy': [m for m in heavy if m in sys.modules]}))\n"
)


def import_cost(runs: int) -> dict[str, Any]:
    cumulative_us: list[float] = []
    self_us: list[float] = []
    walls: dict[str, list[float]] = {"pass": [], "import dbtbus": []}
    rss: list[int] = []
    heavy: set[str] = set()
    subprocess.run([PY, "-c", "import dbtbus"], check=True)  # warm the OS caches and the bytecode
    for _ in range(runs):
        out = subprocess.run([PY, "-X", "importtime", "-c", "import dbtbus"], capture_output=True, text=True,
                             check=True)
        for line in out.stderr.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[2].strip() == "dbtbus":
                self_us.append(float(parts[0].split(":")[1]))
                cumulative_us.append(float(parts[1]))
        for code in ("pass", "import dbtbus"):
            start = time.perf_counter()
            subprocess.run([PY, "-c", code], check=True)
            walls[code].append(time.perf_counter() - start)
        data = child_json(run_child([PY, "-c", _RSS_OF_IMPORT]), "import rss")
        rss.append(int(data["rss_delta"]))
        heavy.update(data["heavy"])
    return {
        "runs": runs,
        "importtime_cumulative_ms": stat([u / 1000 for u in cumulative_us]),
        "importtime_self_ms": stat([u / 1000 for u in self_us]),
        "interpreter_wall_ms": {k: stat([w * 1000 for w in v]) for k, v in walls.items()},
        "rss_delta_bytes": stat(rss),
        "heavy_modules_imported": sorted(heavy),
    }


# ------------------------------------------------------------------------------------------ parent


@benchmark(name=NAME, order=10)
def run(opts: Options) -> Measured:
    count = 500 if opts.tiny else WAITERS
    waiters: dict[str, dict[str, float]] = {}
    for scenario in SCENARIOS:
        waiters[scenario] = {}
        for method in METHODS:
            cmd = [PY, "-m", "bench.footprint", "--child", scenario, "--method", method, "--waiters", str(count)]
            data = child_json(run_child(cmd, timeout=600), f"footprint {scenario} {method}")
            waiters[scenario][method] = data["bytes_per_waiter"]
        log(f"footprint: {scenario:>13}: {waiters[scenario]['tracemalloc']:,.0f} B (tracemalloc), "
            f"{waiters[scenario]['rss']:,.0f} B (RSS)")
    share = {
        scenario: {
            method: waiters[scenario][method] - (waiters["bare"][method] if scenario != "as_completed" else 0.0)
            for method in METHODS
        }
        for scenario in SCENARIOS if scenario != "bare"
    }
    imp = import_cost(2 if opts.tiny else 7 if opts.quick else 21)
    log(f"footprint: import dbtbus {imp['importtime_cumulative_ms']['median']:.2f} ms (importtime), "
        f"RSS +{imp['rss_delta_bytes']['median'] / 1024:.0f} KiB, heavy modules: {imp['heavy_modules_imported']}")
    return Measured(
        params={"waiters": count},
        figures={"bytes_per_waiter": waiters, "dbtbus_share_bytes_per_waiter": share, "import": imp},
    )


def main(argv: list[str] | None = None) -> None:
    standalone(NAME, argv, child=child_main)


if __name__ == "__main__":
    main()
