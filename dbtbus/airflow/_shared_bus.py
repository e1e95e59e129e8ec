"""One bus per (event loop, URL) in a process, shared by every trigger that waits on it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from .._exceptions import DbtBusError
from .._format import redact_url
from ._compat import in_process_test_comms

__all__ = ["shared_bus"]


class _Shared:
    """One bus per (event loop, URL) in a process, shared by every trigger that waits on it.

    A triggerer runs hundreds of triggers in one event loop: sharing the bus gives them one reader per run
    (one ``XREAD BLOCK`` stream read for Redis, one poll per interval for XCom) and one connection pool,
    instead of one per waiting task. The bus lives in a holder task and closes ``LINGER`` seconds after its
    last user left.
    """

    LINGER = 5.0

    def __init__(self) -> None:
        self.users = 0
        self.closing = False
        self.idle: asyncio.Event = asyncio.Event()
        self.ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None


_SHARED: dict[tuple[int, str, str], _Shared] = {}


async def _hold(key: tuple[int, str, str], entry: _Shared, url: str, options: dict[str, Any]) -> None:
    from .._bus import connect

    try:
        async with connect(url, **options) as bus:
            entry.ready.set_result(bus)
            while True:
                await entry.idle.wait()
                entry.idle.clear()
                await asyncio.sleep(entry.LINGER)
                if entry.users == 0:
                    entry.closing = True
                    break
    except BaseException as exc:
        if not entry.ready.done():
            entry.ready.set_exception(exc if isinstance(exc, Exception) else DbtBusError(repr(exc)))
        if not isinstance(exc, Exception):
            raise
    finally:
        entry.closing = True
        if _SHARED.get(key) is entry:
            del _SHARED[key]


@contextlib.asynccontextmanager
async def shared_bus(url: str, options: dict[str, Any] | None = None) -> AsyncIterator[Any]:
    """``async with shared_bus(url) as bus``: the process's shared bus for ``url`` on this event loop.

    Outside asyncio (trio) or in a worker, a private ``connect(url)``.
    """
    from .._bus import connect

    options = dict(options or {})
    try:
        loop = asyncio.get_running_loop()
        if in_process_test_comms():
            raise RuntimeError("dag.test(): one event loop per inline trigger, nothing to share")
    except RuntimeError:
        async with connect(url, **options) as bus:
            yield bus
        return
    key = (id(loop), url, repr(sorted(options.items())))
    entry = _SHARED.get(key)
    if entry is None or entry.closing:
        entry = _Shared()
        _SHARED[key] = entry
        entry.task = loop.create_task(_hold(key, entry, url, options), name=f"dbtbus shared bus {redact_url(url)}")
    entry.users += 1
    try:
        bus = await asyncio.shield(entry.ready)
        yield bus
    finally:
        entry.users -= 1
        if entry.users == 0:
            entry.idle.set()
