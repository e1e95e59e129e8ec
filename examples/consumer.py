"""A custom consumer: react to each node of a dbt run the moment its outcome is known.

Start it before, during or after the run — from any machine that reaches the bus::

    python examples/consumer.py --bus redis://localhost:6379/0 --run-id nightly
    python examples/consumer.py --bus redis://localhost:6379/0 --run-id nightly model.shop.orders_enriched

With no node given it follows every node of the run's selected graph (read from its ``RunStarted``
record). Each outcome is dispatched to a handler — here they print; in real life they would refresh a
dashboard, publish a dataset, open an incident. The exit code is 0 when every awaited node succeeded.

Produce a run to watch with, e.g.::

    dbtbus run --bus redis://localhost:6379/0 --run-id nightly -- build --project-dir examples/shop \\
        --profiles-dir examples/shop
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

import anyio

import dbtbus


def on_success(result: dbtbus.NodeResult) -> str:
    seconds = f" in {result.execution_time:.2f}s" if result.execution_time is not None else ""
    return f"ready     {result.unique_id} ({result.status.value}{seconds}): refresh what reads it"


def on_error(unique_id: str, error: dbtbus.WaitError) -> str:
    if isinstance(error, dbtbus.NodeFailed):
        return f"FAILED    {unique_id}: {error.record.message or error.record.status.value}: alert its owner"
    if isinstance(error, dbtbus.UpstreamFailed):
        return f"blocked   {unique_id}: upstream {error.cause} failed; keep yesterday's data"
    if isinstance(error, dbtbus.ProducerLost):
        return f"LOST      {unique_id}: the dbt process died; retry the run"
    if isinstance(error, dbtbus.NodeNotRun):
        return f"not run   {unique_id}"
    if isinstance(error, dbtbus.WaitTimeout):
        return f"TIMEOUT   {unique_id}"
    return f"error     {unique_id}: {error}"


async def selected_nodes(bus: dbtbus.Bus, run_id: str) -> list[str]:
    """The run's selected graph (waits for the run to start).

    A producer announces its attempt at once, before dbt knows the graph, then refines that RunStarted
    with dbt's graph before the first node record: take the first graph, or none once nodes start.
    """
    async for entry in bus.subscribe(run_id):
        record = entry.record
        if isinstance(record, dbtbus.RunStarted) and record.graph is not None:
            return list(record.graph)
        if isinstance(record, (dbtbus.NodeStarted, dbtbus.NodeResult, dbtbus.RunFinished, dbtbus.RunCrashed)):
            return []
    return []


async def consume(url: str, run_id: str, nodes: Sequence[str] = (), *, timeout: float | None = None) -> int:
    """Handle each node's outcome as it arrives; return how many nodes did not succeed."""
    bad = 0
    async with dbtbus.connect(url) as bus:
        wanted = list(nodes)
        if not wanted:
            with anyio.move_on_after(math.inf if timeout is None else timeout):
                wanted = await selected_nodes(bus, run_id)
            if not wanted:
                print(f"run {run_id} did not start (or selected nothing)", flush=True)
                return 1
        print(f"waiting for {len(wanted)} node(s) of run {run_id}", flush=True)
        async for outcome in bus.as_completed(run_id, wanted, timeout=timeout):
            if outcome.ok:
                print(on_success(outcome.unwrap()), flush=True)
            else:
                bad += 1
                print(on_error(outcome.unique_id, outcome.error()), flush=True)
    return bad


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("nodes", nargs="*", help="unique_ids to wait for (default: every selected node)")
    parser.add_argument("--bus", default=os.environ.get("DBTBUS_URL"), help="bus URL (default: $DBTBUS_URL)")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait at most")
    args = parser.parse_args(argv)
    if not args.bus:
        parser.error("pass --bus URL or set DBTBUS_URL")
    bad = anyio.run(lambda: consume(args.bus, args.run_id, args.nodes, timeout=args.timeout))
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
