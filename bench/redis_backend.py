"""The bus's measurements on any backend, shared by the benchmarks that run them: wake-up latency and fan-out
(``bench/wakeup.py``), publish throughput (``bench/throughput.py``), and the Redis append shapes (one writer
batching vs concurrent writers: wall, client CPU and the redis-server's CPU), a benchmark of its own here.

Wake-up latency is measured from just before the producer's ``publish`` call to the moment the waiter's
``bus.wait`` returns, producer and consumer being two separate ``Bus`` objects (separate connections) on
one asyncio loop in one process.

    python -m bench.redis_backend [--quick]        # the append shapes, on a throw-away redis-server
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dbtbus
from bench._harness import Measured, Options, benchmark, standalone, stat
from dbtbus.backends.base import Append
from dbtbus.events import NodeResult, NodeStatus, ProducerInfo, RunStarted, encode
from dbtbus.testing.redis_server import RedisServer

#: The pause before each wake-up sample (the waiter registers, the reader blocks), and the control of how late
#: such a sleep returns on the machine at the time.
PAUSE_S = 0.0005


def _started(run_id: str, uids: Sequence[str]) -> RunStarted:
    from dbtbus.testing.records import run_started

    # model.never keeps the readers busy
    return run_started({uid: [] for uid in [*uids, "model.never"]}, run_id=run_id, command="run",
                       producer=ProducerInfo(id="bench"), heartbeat_interval=3600)


def _result(run_id: str, uid: str) -> NodeResult:
    from dbtbus.testing.records import node_result

    return node_result(uid, NodeStatus.SUCCESS, run_id=run_id, resource_type="model", execution_time=0.1)


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - polling the bus's internals is fine in a benchmark
        await asyncio.sleep(0.05)


def _connect(url: str, prefix: str, **options: float) -> dbtbus.Bus:
    """A bus on ``url``; the key prefix only where the backend has keys (not ``memory://``)."""
    if not url.startswith("memory:"):
        return dbtbus.connect(url, prefix=prefix, **options)
    return dbtbus.connect(url, **options)


async def _open_pair(url: str, prefix: str) -> tuple[dbtbus.Bus, dbtbus.Bus]:
    producer = _connect(url, prefix)
    consumer = _connect(url, prefix, linger=60)
    await producer.__aenter__()
    await consumer.__aenter__()
    return producer, consumer


async def _close(*buses: dbtbus.Bus) -> None:
    for bus in reversed(buses):  # task groups exit in the reverse order of entry
        await bus.__aexit__(None, None, None)


async def _prepare_run(producer: dbtbus.Bus, run_id: str, uids: Sequence[str]) -> None:
    await producer.renew_lease(run_id, "bench", 3600)
    await producer.publish(_started(run_id, uids))


Samples = list[float]


_HANDOFF_BLOCK = 100


async def bench_latency_one_waiter(
    url: str, prefix: str, events: int
) -> tuple[Samples, Samples, Samples, Samples]:
    """One waiter at a time: register, let the reader block, publish, measure publish-call → wait-return.

    Alternated in blocks of 100 events with the floor of that hand-off on this loop (fourth list): a bare future set
    where ``publish`` would be, a relay task that wakes and sets the waiter's future (the bus's reader), a
    bare task that returns (the waiter), after the same 0.5 ms sleep."""
    producer, consumer = await _open_pair(url, prefix)
    run_id = f"lat1-{uuid.uuid4().hex[:6]}"
    uids = [f"model.m{i}" for i in range(events)]
    await _prepare_run(producer, run_id, uids)
    # warm the run's reader with a first node so later waiters skip the direct probe and join the reader
    samples: list[float] = []
    publish_calls: list[float] = []  # control: the publish call alone (one round trip to Redis)
    oversleep: list[float] = []  # control: how late asyncio.sleep(PAUSE_S) returns on this machine now
    done = asyncio.Event()
    returned = 0.0

    async def waiter(uid: str) -> None:
        nonlocal returned
        await consumer.wait(run_id, uid)
        returned = time.perf_counter()
        done.set()

    loop = asyncio.get_running_loop()
    relay_in: list[asyncio.Future[None]] = [loop.create_future()]
    relay_out: list[asyncio.Future[None]] = []
    handoffs: list[float] = []  # control: the same hand-off between bare asyncio tasks

    async def relay() -> None:
        while True:
            await relay_in[0]
            relay_in[0] = loop.create_future()
            relay_out.pop().set_result(None)

    async def bare_waiter(future: asyncio.Future[None], returned_at: list[float]) -> None:
        await future
        returned_at.append(time.perf_counter())

    relaying = asyncio.ensure_future(relay())
    keep = asyncio.ensure_future(consumer.wait(run_id, "model.never", timeout=None))  # keeps the reader alive
    await asyncio.sleep(0.05)
    for i, uid in enumerate(uids):
        if i % _HANDOFF_BLOCK == 0:
            # Alternated in blocks: a bare sample between every two of the bus's took the bus's code out of
            # the CPU's caches and made its samples ~40 % slower than the bus alone.
            for _ in range(_HANDOFF_BLOCK):
                out: asyncio.Future[None] = loop.create_future()
                relay_out.append(out)
                bare_returned: list[float] = []
                bare = asyncio.ensure_future(bare_waiter(out, bare_returned))
                await asyncio.sleep(PAUSE_S)
                start = time.perf_counter()
                relay_in[0].set_result(None)
                await bare
                handoffs.append(bare_returned[0] - start)
        done.clear()
        task = asyncio.ensure_future(waiter(uid))
        slept = time.perf_counter()
        await asyncio.sleep(PAUSE_S)  # let the waiter register and the reader block in XREAD
        start = time.perf_counter()
        oversleep.append(start - slept - PAUSE_S)
        await producer.publish(_result(run_id, uid))
        publish_calls.append(time.perf_counter() - start)
        await done.wait()
        samples.append(returned - start)
        await task
    keep.cancel()
    relaying.cancel()
    await asyncio.gather(keep, relaying, return_exceptions=True)
    await producer.delete_run(run_id)
    await _close(producer, consumer)
    return samples, publish_calls, oversleep, handoffs


async def bench_latency_many_waiters(url: str, prefix: str, waiters: int, events: int) -> list[float]:
    """``waiters`` pending waiters on distinct nodes; publish ``events`` of them one by one."""
    producer, consumer = await _open_pair(url, prefix)
    run_id = f"latN-{uuid.uuid4().hex[:6]}"
    uids = [f"model.m{i}" for i in range(waiters)]
    await _prepare_run(producer, run_id, uids)
    returned: dict[str, float] = {}
    current: asyncio.Event = asyncio.Event()

    async def waiter(uid: str) -> None:
        await consumer.wait(run_id, uid)
        returned[uid] = time.perf_counter()
        current.set()

    tasks = [asyncio.ensure_future(waiter(uid)) for uid in uids]
    await _until(lambda: consumer.statistics().readers.get(run_id, 0) >= waiters)
    samples: list[float] = []
    for uid in uids[:events]:
        current.clear()
        await asyncio.sleep(PAUSE_S)
        start = time.perf_counter()
        await producer.publish(_result(run_id, uid))
        await current.wait()
        samples.append(returned[uid] - start)
    # release the rest at once
    rest = uids[events:]
    for i in range(0, len(rest), 1000):
        await producer.publish([_result(run_id, uid) for uid in rest[i : i + 1000]])
    await asyncio.gather(*tasks)
    await producer.delete_run(run_id)
    await _close(producer, consumer)
    return samples


async def asyncio_floor(waiters: int) -> tuple[float, float]:
    """The floor under a fan-out on this machine: ``waiters`` bare asyncio tasks, each awaiting its own future
    (as each ``bus.wait`` does, so that cancelling one never wakes the others), all set in one loop; the
    clock runs from the first ``set_result`` to the first and the last task's return."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(waiters)]
    times: list[float] = []

    async def task(future: asyncio.Future[None]) -> None:
        await future
        times.append(time.perf_counter())

    tasks = [asyncio.ensure_future(task(f)) for f in futures]
    await asyncio.sleep(0.05)
    start = time.perf_counter()
    for future in futures:
        future.set_result(None)
    await asyncio.gather(*tasks)
    return min(times) - start, max(times) - start


async def bench_fan_out(
    url: str, prefix: str, waiters: int, rounds: int
) -> tuple[list[float], list[float], list[float]]:
    """``waiters`` waiters on ONE node: publish → first and last waiter return; alternated round by round with
    :func:`asyncio_floor` (its last return, third list)."""
    producer, consumer = await _open_pair(url, prefix)
    firsts: list[float] = []
    lasts: list[float] = []
    floors: list[float] = []
    for _ in range(rounds):
        floors.append((await asyncio_floor(waiters))[1])
        run_id = f"fan-{uuid.uuid4().hex[:6]}"
        await _prepare_run(producer, run_id, ["model.hot"])
        times: list[float] = []

        async def waiter(rid: str = run_id, sink: list[float] = times) -> None:
            await consumer.wait(rid, "model.hot")
            sink.append(time.perf_counter())

        tasks = [asyncio.ensure_future(waiter()) for _ in range(waiters)]
        await _until(lambda: consumer.statistics().readers.get(run_id, 0) >= waiters)  # noqa: B023
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        await producer.publish(_result(run_id, "model.hot"))
        await asyncio.gather(*tasks)
        firsts.append(min(times) - start)
        lasts.append(max(times) - start)
        await producer.delete_run(run_id)
    await _close(producer, consumer)
    return firsts, lasts, floors


async def bench_throughput(
    url: str, prefix: str, one_by_one: int, batched: int, batch: int
) -> dict[str, float]:
    producer = _connect(url, prefix)
    await producer.__aenter__()
    backend = producer.backend
    out: dict[str, float] = {}
    run_id = f"tp-{uuid.uuid4().hex[:6]}"
    records = [_result(run_id, f"model.m{i}") for i in range(max(one_by_one, batched))]
    items = [Append(encode(r), r.unique_id) for r in records]

    start = time.perf_counter()
    for record in records[:one_by_one]:
        await producer.publish(record)
    out["bus.publish one by one"] = one_by_one / (time.perf_counter() - start)
    await producer.delete_run(run_id)

    start = time.perf_counter()
    for i in range(0, batched, batch):
        await producer.publish(records[i : i + batch])
    out[f"bus.publish batched ×{batch}"] = batched / (time.perf_counter() - start)
    await producer.delete_run(run_id)

    start = time.perf_counter()
    for item in items[:one_by_one]:
        await backend.append(run_id, [item])
    out["backend.append one by one (pre-encoded)"] = one_by_one / (time.perf_counter() - start)
    await producer.delete_run(run_id)

    start = time.perf_counter()
    for i in range(0, batched, batch):
        await backend.append(run_id, items[i : i + batch])
    out[f"backend.append batched ×{batch} (pre-encoded)"] = batched / (time.perf_counter() - start)
    await producer.delete_run(run_id)

    # concurrent one-by-one publishers (as dbt's threads do: many nodes finishing around the same time)
    start = time.perf_counter()
    per = one_by_one // 8

    async def worker(k: int) -> None:
        for record in records[k * per : (k + 1) * per]:
            await producer.publish(record)

    await asyncio.gather(*(worker(k) for k in range(8)))
    out["bus.publish one by one, 8 concurrent publishers"] = 8 * per / (time.perf_counter() - start)
    await producer.delete_run(run_id)
    await _close(producer)
    return out


APPEND_SHAPES: dict[str, tuple[int, int, int]] = {  # name: (writers, records per writer, records per call)
    "the producer's shape: 1 writer, batches of 100": (1, 20_000, 100),
    "1 writer, one record per call": (1, 3000, 1),
    "8 concurrent writers, one record per call": (8, 500, 1),
    "64 concurrent writers, one record per call": (64, 60, 1),
}


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (psutil)."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def bench_append_shapes(url: str, prefix: str, rounds: int, server_pid: int | None) -> dict[str, Any]:
    """Wall, client CPU and server CPU per append shape; shapes alternate within each round."""
    bus = _connect(url, prefix)
    await bus.__aenter__()
    backend = bus.backend
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in APPEND_SHAPES}

    async def once(writers: int, per_writer: int, per_call: int) -> None:
        run_id = f"shape-{uuid.uuid4().hex[:6]}"
        items = [Append(encode(_result(run_id, f"model.m{i}")), f"model.m{i}") for i in range(writers * per_writer)]

        async def writer(k: int) -> None:
            mine = items[k * per_writer : (k + 1) * per_writer]
            for start in range(0, len(mine), per_call):
                await backend.append(run_id, mine[start : start + per_call])

        await asyncio.gather(*(writer(k) for k in range(writers)))
        await backend.delete_run(run_id)

    for round_ in range(rounds):
        names = list(APPEND_SHAPES) if round_ % 2 == 0 else list(reversed(APPEND_SHAPES))
        for name in names:
            server0 = _process_cpu(server_pid) if server_pid else math.nan
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await once(*APPEND_SHAPES[name])
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            server = _process_cpu(server_pid) - server0 if server_pid else math.nan
            samples[name].append((wall, cpu, server))
    await _close(bus)

    out: dict[str, Any] = {}
    for name, (writers, per_writer, per_call) in APPEND_SHAPES.items():
        walls, cpus, servers = (list(column) for column in zip(*samples[name], strict=True))
        out[name] = {"writers": writers, "records_per_writer": per_writer, "records_per_call": per_call,
                     "records_per_s": stat(writers * per_writer / w for w in walls),
                     "wall_s": stat(walls), "client_cpu_s": stat(cpus),
                     "server_cpu_s": stat(servers) if server_pid else None}
    return out


@benchmark(name="redis_append", order=45)
def run(opts: Options) -> Measured:
    """Redis append shapes: one writer batching vs concurrent writers; wall, client and server CPU."""
    rounds = 2 if opts.tiny else 4 if opts.quick else 10
    with RedisServer() as server:  # its own server: its CPU is measured (psutil), no other client on it
        pid = server.process.pid if server.process is not None else None
        shapes = asyncio.run(bench_append_shapes(server.url, f"bench{uuid.uuid4().hex[:6]}:", rounds, pid))
    return Measured(params={"rounds": rounds}, figures={"shapes": shapes})


def section(data: dict[str, Any]) -> list[str]:
    """The page's block: each append shape's rate, wall, and the client's and the server's CPU."""
    def cell(value: dict[str, Any] | None) -> str:
        if not value:
            return "n/a"
        return f"{value['median'] * 1000:.0f} ({value['min'] * 1000:.0f}–{value['max'] * 1000:.0f})"

    lines = [
        "## Redis append shapes",
        "",
        f"`bench/redis_backend.py`: the same records appended in each shape, {data['rounds']} rounds alternating "
        "the shapes, on a throw-away redis-server; medians (min–max), ms.",
        "",
        "| appends | records/s | wall ms | client CPU ms | server CPU ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, shape in data["shapes"].items():
        lines.append(f"| {name} | {shape['records_per_s']['median']:,.0f} | {cell(shape['wall_s'])} | "
                     f"{cell(shape['client_cpu_s'])} | {cell(shape['server_cpu_s'])} |")
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> None:
    standalone("redis_append", argv)


if __name__ == "__main__":
    main()
