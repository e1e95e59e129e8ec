from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from dbtbus.backends.memory import drop_store

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
