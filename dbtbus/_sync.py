"""Blocking twins of the bus's waits, for code without an event loop (classic Airflow operators, scripts)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anyio

from ._bus import connect
from ._exceptions import DbtBusError, WaitError
from .events import NodeResult

__all__ = ["wait_many_sync", "wait_sync"]


def _run_blocking(func: Any, *args: Any) -> Any:
    try:
        return anyio.run(func, *args)
    except RuntimeError as exc:
        if "already running" in str(exc).lower():
            raise DbtBusError(
                "dbtbus.wait_sync() cannot run inside an event loop; use 'await bus.wait(...)' there"
            ) from exc
        raise


def wait_sync(
    url: str,
    run_id: str,
    unique_id: str,
    *,
    timeout: float | None = None,
    include_tests: bool = False,
    **options: Any,
) -> NodeResult:
    """Block until a node's outcome is known; same results and errors as :meth:`dbtbus.Bus.wait`."""

    async def main() -> NodeResult:
        async with connect(url, **options) as bus:
            return await bus.wait(run_id, unique_id, timeout=timeout, include_tests=include_tests)

    result: NodeResult = _run_blocking(main)
    return result


def wait_many_sync(
    url: str,
    run_id: str,
    unique_ids: Iterable[str],
    *,
    timeout: float | None = None,
    include_tests: bool = False,
    return_exceptions: bool = False,
    **options: Any,
) -> dict[str, NodeResult | WaitError]:
    """Block until several nodes' outcomes are known; same as :meth:`dbtbus.Bus.wait_many`."""
    wanted = list(unique_ids)

    async def main() -> dict[str, NodeResult | WaitError]:
        async with connect(url, **options) as bus:
            return await bus.wait_many(
                run_id, wanted, timeout=timeout, include_tests=include_tests, return_exceptions=return_exceptions
            )

    result: dict[str, NodeResult | WaitError] = _run_blocking(main)
    return result
