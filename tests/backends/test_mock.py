"""The mock backend (dbtbus/backends/mock.py): the memory backend with every call counted and hookable."""

from __future__ import annotations

import anyio
import pytest

import dbtbus
from dbtbus.backends.mock import MockBackend, MockCall

from .._records import RUN, result

pytestmark = pytest.mark.anyio


async def test_mock_backend_hooks_can_slow_calls_down() -> None:
    async def slow_appends(call: MockCall) -> None:
        if call.method == "append":
            await anyio.sleep(0.05)

    backend = MockBackend(hook=slow_appends)
    async with dbtbus.connect(backend) as bus:
        start = anyio.current_time()
        await bus.publish(result("model.a"))
        assert anyio.current_time() - start >= 0.05
        assert (await bus.wait(RUN, "model.a", timeout=1)).ok
    assert backend.calls["append"] == 1
    assert backend.calls["open"] == backend.calls["aclose"] == 1
