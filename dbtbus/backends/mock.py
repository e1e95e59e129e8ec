"""A backend for tests: the in-memory backend with every call counted and open to interception.

Like httpx's ``MockTransport``, it lets tests of code built on dbtbus script what the storage does —
fail the third append, make reads slow, drop the lease — without a server::

    async def flaky(call: MockCall) -> None:
        if call.method == "append" and call.number <= 2:
            raise dbtbus.BackendUnavailable("connection refused")

    backend = MockBackend(hook=flaky)
    async with dbtbus.connect(backend) as bus:
        ...
    assert backend.calls["append"] >= 3
"""

from __future__ import annotations

import inspect
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .base import Append, Entry, Lease
from .memory import MemoryBackend, get_store

__all__ = ["MockBackend", "MockCall"]

_anonymous = itertools.count()


@dataclass(frozen=True, slots=True)
class MockCall:
    """One backend call as the hook sees it: the method, its run, its other arguments, and how many so far."""

    method: str
    run_id: str | None
    args: tuple[Any, ...]
    number: int


Hook = Callable[[MockCall], Awaitable[None] | None]


class MockBackend(MemoryBackend):
    """In-memory storage (a private store unless ``store`` names one) plus a ``hook`` run before every call.

    The hook may raise (the call then fails with that exception), sleep (the call is slow) or record.
    ``calls`` counts calls per method name.
    """

    schemes = ()

    def __init__(self, store: str | None = None, *, hook: Hook | None = None) -> None:
        super().__init__(get_store(store if store is not None else f"mock-{next(_anonymous)}"))
        self.hook = hook
        self.calls: Counter[str] = Counter()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MockBackend:
        raise NotImplementedError("construct MockBackend directly and pass it to dbtbus.connect()")

    async def _intercept(self, method: str, run_id: str | None, *args: Any) -> None:
        self.calls[method] += 1
        if self.hook is not None:
            outcome = self.hook(MockCall(method, run_id, args, self.calls[method]))
            if inspect.isawaitable(outcome):
                await outcome

    async def open(self) -> None:
        await self._intercept("open", None)

    async def aclose(self) -> None:
        await self._intercept("aclose", None)

    async def append(self, run_id: str, items: Sequence[Append]) -> list[str]:
        await self._intercept("append", run_id, items)
        return await super().append(run_id, items)

    async def read(
        self, run_id: str, after: str | None, *, limit: int = 1000, timeout: float | None = 0
    ) -> list[Entry]:
        await self._intercept("read", run_id, after, limit, timeout)
        return await super().read(run_id, after, limit=limit, timeout=timeout)

    async def get_node(self, run_id: str, unique_id: str) -> bytes | None:
        await self._intercept("get_node", run_id, unique_id)
        return await super().get_node(run_id, unique_id)

    async def acquire_lease(
        self, run_id: str, holder: str, ttl: float, attempt: int = 1, *, expire_after: float | None = None
    ) -> None:
        await self._intercept("acquire_lease", run_id, holder, ttl, attempt)
        await super().acquire_lease(run_id, holder, ttl, attempt, expire_after=expire_after)

    async def renew_lease(self, run_id: str, holder: str, ttl: float) -> bool:
        await self._intercept("renew_lease", run_id, holder, ttl)
        return await super().renew_lease(run_id, holder, ttl)

    async def get_lease(self, run_id: str) -> Lease | None:
        await self._intercept("get_lease", run_id)
        return await super().get_lease(run_id)

    async def release_lease(self, run_id: str, holder: str) -> None:
        await self._intercept("release_lease", run_id, holder)
        await super().release_lease(run_id, holder)

    async def expire_run(self, run_id: str, ttl: float) -> None:
        await self._intercept("expire_run", run_id, ttl)
        await super().expire_run(run_id, ttl)

    async def delete_run(self, run_id: str) -> None:
        await self._intercept("delete_run", run_id)
        await super().delete_run(run_id)

    async def run_gone(self, run_id: str) -> bool:
        await self._intercept("run_gone", run_id)
        return await super().run_gone(run_id)

    async def list_runs(self) -> list[str]:
        await self._intercept("list_runs", None)
        return await super().list_runs()
