"""How the fault tests ask the bus: outcome kinds per waiter, records of a run's log."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio

import dbtbus
from dbtbus.events import NodeResult, Record, RunCrashed, RunFinished, RunStarted


async def outcome_kind(bus: dbtbus.Bus, run_id: str, uid: str, *, timeout: float = 120, **options: Any) -> str:
    """The kind of the outcome a waiter gets (``"success"``, ``"producer_lost"``, ``"timeout"``, ...).

    A BackendError reaches the waiter as its exception's class name.
    """
    try:
        outcome = await bus.outcome(run_id, uid, timeout=timeout, **options)
    except dbtbus.BackendError as exc:
        return type(exc).__name__
    return str(outcome.kind.value)


async def waiters(
    bus: dbtbus.Bus, run_id: str, uids: Sequence[str], *, per_node: int = 1, timeout: float = 120, **options: Any
) -> dict[str, list[str]]:
    """Start ``per_node`` waiters on every node at once; return each node's outcome kinds."""
    kinds: dict[str, list[str]] = {uid: [] for uid in uids}

    async def one(uid: str) -> None:
        kinds[uid].append(await outcome_kind(bus, run_id, uid, timeout=timeout, **options))

    async with anyio.create_task_group() as tg:
        for uid in uids:
            for _ in range(per_node):
                tg.start_soon(one, uid)
    return kinds


@contextlib.asynccontextmanager
async def waiting(
    bus: dbtbus.Bus, run_id: str, uids: Sequence[str], **options: Any
) -> AsyncIterator[dict[str, list[str]]]:
    """``async with waiting(bus, run, nodes) as kinds:`` — :func:`waiters` run in the background while the block
    does its damage; ``kinds`` holds every node's outcome kinds once the block and the waiters are done."""
    kinds: dict[str, list[str]] = {}

    async def wait_all() -> None:
        kinds.update(await waiters(bus, run_id, uids, **options))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_all)
        yield kinds


async def log_records(url: str, run_id: str) -> list[Record]:
    """Every record of the run's log, decoded (what any later reader would see)."""
    async with dbtbus.connect(url) as bus:
        return [entry.record async for entry in bus.history(run_id)]


def census(records: Sequence[Record]) -> dict[str, Any]:
    """Who started the run (producer ids and attempts of its RunStarted records — the producer announces an
    attempt at once and again with dbt's graph), how many endings, and how many terminal records per node."""
    return {
        "producers": {(r.producer.id, r.attempt) for r in records if isinstance(r, RunStarted)},
        "ended": sum(isinstance(r, (RunFinished, RunCrashed)) for r in records),
        "per_node": Counter(r.unique_id for r in records if isinstance(r, NodeResult)),
    }


async def until_started(bus: dbtbus.Bus, run_id: str, *, nodes: int = 0, timeout: float = 180) -> None:
    """Return once the run's RunStarted (and ``nodes`` terminal node records) are stored."""
    with anyio.fail_after(timeout):
        while True:
            try:
                state = await bus.run_state(run_id)
            except dbtbus.BackendUnavailable:
                state = None
            if state is not None and state.started is not None and len(state.results) >= nodes:
                return
            await anyio.sleep(0.1)


__all__ = ["census", "log_records", "outcome_kind", "until_started", "waiters"]
