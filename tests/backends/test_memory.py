"""The backend contract on the in-memory backend (asyncio and trio)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from dbtbus.backends.base import Backend
from dbtbus.backends.memory import MemoryBackend, drop_store
from dbtbus.testing.backend_contract import BackendContract

_names = itertools.count()


class TestMemoryBackend(BackendContract):
    @pytest.fixture
    async def backend(self) -> AsyncIterator[Backend]:
        name = f"contract-{next(_names)}"
        backend = MemoryBackend.from_url(f"memory://{name}")
        await backend.open()
        try:
            yield backend
        finally:
            await backend.aclose()
            drop_store(name)
