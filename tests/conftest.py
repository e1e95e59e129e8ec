from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest

import dbtbus
from dbtbus.backends.memory import drop_store

from ._records import RUN

_store_names = itertools.count()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def memory_url() -> Iterator[str]:
    """A memory:// URL naming a store no other test shares; dropped afterwards."""
    name = f"test-{next(_store_names)}"
    yield f"memory://{name}"
    drop_store(name)


@pytest.fixture
async def bus(memory_url: str) -> AsyncIterator[dbtbus.Bus]:
    """An open bus on this test's memory store (the core tests': test_bus.py, test_reader.py)."""
    async with dbtbus.connect(memory_url, linger=0.05, read_block=0.2) as bus:
        # A real producer holds this lease while the run is open; tests about losing it shorten it.
        for run_id in (RUN, "run-2"):
            await bus.renew_lease(run_id, "test-producer", ttl=60)
        yield bus
