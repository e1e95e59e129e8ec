"""Blocking twins of the bus's waits, for code without an event loop (classic Airflow operators, scripts).

``dbtbus.wait`` and ``dbtbus.wait_many`` block; :meth:`dbtbus.Bus.wait` and :meth:`dbtbus.Bus.wait_many` are
their coroutines. Each call opens a bus, waits, and closes it again — every connection it opened included.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anyio

from ._bus import connect
from ._exceptions import DbtBusError
from ._outcome import WaitError
from .events import NodeResult

__all__ = ["wait", "wait_many"]


def run_blocking(func: Any, *args: Any, call: str = "dbtbus.wait()", instead: str = "await bus.wait(...)") -> Any:
    """``anyio.run(func, *args)`` for a blocking twin; called inside an event loop, a :class:`DbtBusError`
    that names the coroutine to await there (``call`` blocks; use ``instead``)."""
    try:
        return anyio.run(func, *args)
    except RuntimeError as exc:
        if "already running" in str(exc).lower():
            raise DbtBusError(f"{call} blocks and cannot run inside an event loop; use '{instead}' there") from exc
        raise


def wait(
    url: str,
    run_id: str,
    unique_id: str,
    *,
    timeout: float | None = None,
    include_tests: bool = False,
    min_attempt: int | None = None,
    **options: Any,
) -> NodeResult:
    """Block until a node's outcome is known; same results and errors as :meth:`dbtbus.Bus.wait`."""

    async def main() -> NodeResult:
        async with connect(url, **options) as bus:
            return await bus.wait(
                run_id, unique_id, timeout=timeout, include_tests=include_tests, min_attempt=min_attempt
            )

    result: NodeResult = run_blocking(main)
    return result


def wait_many(
    url: str,
    run_id: str,
    unique_ids: Iterable[str],
    *,
    timeout: float | None = None,
    include_tests: bool = False,
    min_attempt: int | None = None,
    return_exceptions: bool = False,
    **options: Any,
) -> dict[str, NodeResult | WaitError]:
    """Block until several nodes' outcomes are known; same as :meth:`dbtbus.Bus.wait_many`."""
    wanted = list(unique_ids)

    async def main() -> dict[str, NodeResult | WaitError]:
        async with connect(url, **options) as bus:
            return await bus.wait_many(
                run_id,
                wanted,
                timeout=timeout,
                include_tests=include_tests,
                min_attempt=min_attempt,
                return_exceptions=return_exceptions,
            )

    result: dict[str, NodeResult | WaitError] = run_blocking(main)
    return result

