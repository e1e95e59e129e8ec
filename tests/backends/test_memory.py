"""The backend contract on the in-memory backend (asyncio and trio)."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import AsyncIterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dbtbus import ConfigurationError
from dbtbus.backends.base import Append, Backend
from dbtbus.backends.memory import MemoryBackend, MemoryStore, _KeyIndex, drop_store
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


def test_the_tombstone_period_is_an_option() -> None:
    assert MemoryBackend.from_url("memory://").tombstone_period == 7 * 24 * 3600
    assert MemoryBackend.from_url("memory://", tombstone_period="30").tombstone_period == 30
    for bad in (-1, "soon", float("inf"), True):
        with pytest.raises(ConfigurationError, match="tombstone_period"):
            MemoryBackend.from_url("memory://", tombstone_period=bad)


@pytest.mark.anyio
async def test_deleting_a_run_only_waited_for_leaves_no_tombstone() -> None:
    """A blocked reader keeps a placeholder for a run not started yet; deleting that (``gc`` lists it) must not
    make the run look deleted to the waiters that come next."""
    import anyio

    backend = MemoryBackend(MemoryStore("placeholder"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: backend.read("later", None, timeout=5))
        await anyio.sleep(0.05)
        await backend.delete_run("later")  # wakes the reader, which finds the log empty
    assert await backend.run_gone("later") is False
    await backend.append("later", [Append(b"x")])
    await backend.delete_run("later")
    assert await backend.run_gone("later") is True


# ------------------------------------------------------------------------------------------ idempotency keys


_keys = st.one_of(
    st.builds(lambda h, n: f"{h}:{n}", st.sampled_from(["p", "q", "a:b", ""]), st.integers(0, 12)),
    st.sampled_from(["p:07", "p:00", "p:", "p", ":", "p:²", "p:-1", "p:+1", "k"]),
)


@given(st.lists(st.tuples(_keys, st.integers(0, 10**12)), max_size=60))
@example([("p:0", 1), ("p:2", 2), ("p:1", 3), ("p:2", 4)])  # a key stored past a gap, then reached in sequence
@example([("p:3", 1), ("p:1", 2), ("p:4", 3), ("p:1", 4)])  # a key before its holder's first
@settings(max_examples=500)
def test_the_key_index_answers_as_a_plain_dict_would(steps: list[tuple[str, int]]) -> None:
    """Sequences, gaps, repeats, lookalikes ("p:07" is not "p:7") and foreign keys: the same as a dict."""
    index, model = _KeyIndex(), dict[str, int]()
    for key, position in steps:
        assert index.setdefault(key, position) == model.setdefault(key, position)
    assert len(index) == len(model)
    for key, position in model.items():
        assert index.setdefault(key, -1) == position


def test_a_producers_numbered_keys_cost_a_few_bytes_a_record() -> None:
    store = MemoryStore("keys")
    data = [b"x" * 600 for _ in range(2000)]
    store.append("warm", [Append(data[0], key="w:0")])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, 2000, 20):
            store.append("r", [Append(data[n], key=f"holder:{n}") for n in range(start, start + 20)])
        per_record = (tracemalloc.get_traced_memory()[0] - before) / 2000
    finally:
        tracemalloc.stop()
    assert per_record < 40  # the log's slot and the position; a dict of key and cursor strings was ~170
    # and a retried batch still gets the first cursors back without storing anything again
    again = store.append("r", [Append(data[n], key=f"holder:{n}") for n in (5, 1999, 0)])
    assert again == ["6", "2000", "1"]
    assert len(store.read_now("r", 0, 10_000)) == 2000
