"""Wake a task of any event loop from any thread without blocking the caller; read that loop's clock cheaply.

anyio has no public "call soon, thread-safe, don't wait" primitive, and ``anyio.from_thread.run_sync`` blocks
the calling thread until the loop runs the function — unacceptable on dbt's worker threads. This module
captures the current loop (asyncio or trio) when a waiter registers, and later schedules ``callback`` on it
from whichever thread publishes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import sniffio


def capture_scheduler() -> Callable[[Callable[[], Any]], None]:
    """Return a thread-safe, non-blocking ``schedule(callback)`` for the event loop running this call."""
    library = sniffio.current_async_library()
    if library == "asyncio":
        import asyncio

        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        def schedule_asyncio(callback: Callable[[], Any]) -> None:
            if threading.get_ident() == loop_thread:
                callback()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(callback)

        return schedule_asyncio
    if library == "trio":
        import trio

        token = trio.lowlevel.current_trio_token()
        trio_thread = threading.get_ident()

        def schedule_trio(callback: Callable[[], Any]) -> None:
            if threading.get_ident() == trio_thread:
                callback()
                return
            with contextlib.suppress(trio.RunFinishedError):  # the loop is gone: nobody left to wake
                token.run_sync_soon(callback)

        return schedule_trio
    raise RuntimeError(f"unsupported async library: {library}")


def capture_clock() -> Callable[[], float]:
    """The clock of the event loop running this call: what ``anyio.current_time`` returns, without its
    lookup of the running backend on every call (a reader reads the clock on each record it is woken for)."""
    library = sniffio.current_async_library()
    if library == "asyncio":
        import asyncio

        return asyncio.get_running_loop().time
    if library == "trio":
        import trio

        return trio.current_time
    import anyio

    return anyio.current_time
