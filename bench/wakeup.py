"""Wake-up latency: the producer's ``publish`` call → the waiter's ``bus.wait`` returns, per backend.

Producer and consumer are two ``Bus`` objects (two connections for Redis) on one asyncio loop in one process.
Scenarios, for ``memory://`` and a throw-away ``redis-server`` on loopback:

* 1 waiter, 10,000 events: register one waiter, let the reader block, publish its node, time the return;
  alternated in blocks of 100 events with the same hand-off between bare asyncio tasks (the machine's floor);
* 100 and 10,000 concurrent waiters on distinct nodes (one waiter per node): publish the nodes one by one and
  time each node's waiter from the publish call to its return (100 waiters: 100 rounds, i.e. 10,000 samples;
  10,000 waiters: the first 10,000 — all — of them);
* many waiters on ONE node (100 and 10,000): one record wakes them all; first and last return, alternated
  with the asyncio floor (as many bare tasks, each awaiting its own future, released in one loop).

The functions are those of ``bench/redis_backend.py`` (which also runs them alone, with its own page section).

    python -m bench.wakeup [--quick]
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from bench._harness import Measured, Options, benchmark, latency_summary, log, redis_url, standalone
from bench.redis_backend import PAUSE_S

NAME = "wakeup"


def _realtime() -> bool:
    return hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) in (os.SCHED_FIFO, os.SCHED_RR)


def events_one_waiter(opts: Options) -> int:
    return 200 if opts.tiny else 1000 if opts.quick else 10_000


def fan_out_rounds(opts: Options) -> int:
    return 1 if opts.tiny else 3 if opts.quick else 20


async def measure_backend(url: str, opts: Options) -> dict[str, Any]:
    from bench.redis_backend import bench_fan_out, bench_latency_many_waiters, bench_latency_one_waiter

    prefix = f"bench{uuid.uuid4().hex[:6]}:"
    events = events_one_waiter(opts)
    rounds = fan_out_rounds(opts)
    out: dict[str, Any] = {"distinct_nodes": {}, "one_node": {}}
    one, publish_calls, oversleep, handoffs = await bench_latency_one_waiter(url, prefix, events)
    out["distinct_nodes"]["1"] = latency_summary(one)
    out["controls"] = {
        "publish_call": latency_summary(publish_calls),
        "sleep_lateness": latency_summary(oversleep),
        "bare_handoff": latency_summary(handoffs),
    }
    for waiters in (100, 10_000):
        # as many samples as the 1-waiter case: 100 waiters are released round after round
        samples: list[float] = []
        for _ in range(max(events // waiters, 1)):
            samples += await bench_latency_many_waiters(url, prefix, waiters, min(waiters, events))
        out["distinct_nodes"][str(waiters)] = latency_summary(samples)
    for waiters in (100, 10_000):
        firsts, lasts, floors = await bench_fan_out(url, prefix, waiters, rounds)
        out["one_node"][str(waiters)] = {"first": latency_summary(firsts), "last": latency_summary(lasts),
                                         "asyncio_floor": latency_summary(floors)}
    return out


@benchmark(name=NAME, order=30, redis=True)
def run(opts: Options) -> Measured:
    backends: dict[str, Any] = {}
    load = list(os.getloadavg())
    with redis_url(opts) as url:
        for name, bus_url in (("memory", f"memory://bench-wakeup-{uuid.uuid4().hex[:6]}"), ("redis", url)):
            log(f"wakeup: {name}")
            backends[name] = asyncio.run(measure_backend(bus_url, opts))
            for n, s in backends[name]["distinct_nodes"].items():
                log(f"  {n:>6} waiters: p50 {s['p50_ms']:.3f} p99 {s['p99_ms']:.3f} max {s['max_ms']:.3f} ms")
    return Measured(
        params={"events_one_waiter": events_one_waiter(opts), "fan_out_rounds": fan_out_rounds(opts),
                "pause_ms": PAUSE_S * 1000,
                "realtime_priority": _realtime()},
        figures={"load_average_at_start": load, "backends": backends},
    )


def main(argv: list[str] | None = None) -> None:
    standalone(NAME, argv)


if __name__ == "__main__":
    main()
