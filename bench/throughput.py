"""Publish throughput, records/s, per backend: one by one and batched, through the bus and the bare backend.

The function is ``bench_throughput`` of ``bench/redis_backend.py``; here it runs on ``memory://`` and on a
throw-away ``redis-server``, three times each (median, min, max).

    python -m bench.throughput [--quick]
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from bench._harness import Measured, Options, benchmark, log, redis_url, standalone, stat

NAME = "throughput"
BATCH = 1000
RUNS = 3


@benchmark(name=NAME, order=40, redis=True)
def run(opts: Options) -> Measured:
    from bench.redis_backend import bench_throughput

    one_by_one, batched = (200, 2000) if opts.tiny else (2000, 20_000) if opts.quick else (10_000, 100_000)
    backends: dict[str, Any] = {}
    with redis_url(opts) as url:
        for name, bus_url in (("memory", f"memory://bench-tp-{uuid.uuid4().hex[:6]}"), ("redis", url)):
            prefix = f"bench{uuid.uuid4().hex[:6]}:"
            runs = [asyncio.run(bench_throughput(bus_url, prefix, one_by_one, batched, BATCH)) for _ in range(RUNS)]
            backends[name] = {path: stat([r[path] for r in runs]) for path in runs[0]}
            for path, s in backends[name].items():
                log(f"throughput {name}: {path}: {s['median']:,.0f}/s")
    return Measured(
        params={"records_one_by_one": one_by_one, "records_batched": batched, "batch": BATCH, "runs": RUNS},
        figures={"backends": backends},
    )


def main(argv: list[str] | None = None) -> None:
    standalone(NAME, argv)


if __name__ == "__main__":
    main()
