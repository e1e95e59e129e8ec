"""The run reader (dbtbus/_reader.py): one read loop per run, serving every waiter of that run in a bus."""

from __future__ import annotations

import traceback

import anyio
import pytest

import dbtbus
from dbtbus.backends.mock import MockBackend, MockCall

from ._records import RUN

pytestmark = pytest.mark.anyio


async def test_each_waiter_gets_its_own_exception_object() -> None:
    """Waiters failed together each raise their own copy: one object raised in several tasks would gather
    every task's frames on its traceback (and keep only the last task's context)."""

    def deny_reads(call: MockCall) -> None:
        if call.method == "read":
            raise dbtbus.PermissionDenied("NOPERM this user has no permissions to access the key")

    caught: list[BaseException] = []
    async with dbtbus.connect(MockBackend(hook=deny_reads)) as bus:

        async def waiter(**kwargs: object) -> None:
            try:
                await bus.wait(RUN, "model.a", timeout=60, **kwargs)  # type: ignore[arg-type]
            except dbtbus.PermissionDenied as exc:
                caught.append(exc)

        async def collector() -> None:
            try:
                async for _ in bus.as_completed(RUN, ["model.a"], timeout=60):
                    pass
            except dbtbus.PermissionDenied as exc:
                caught.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(waiter)
            tg.start_soon(collector)
    assert len(caught) == 4 and len({id(exc) for exc in caught}) == 4
    assert {str(exc) for exc in caught} == {"NOPERM this user has no permissions to access the key"}
    for exc in caught:
        frames = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
        assert frames.count("waiter") + frames.count("collector") == 1, frames
