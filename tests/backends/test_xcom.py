"""The backend contract on the XCom backend, against an in-process stand-in for Airflow's XCom API.

The stand-in keeps XCom rows in a dict and counts every read of a missing key that Airflow would log at
error level (``get`` of an absent key): the backend must never make one.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from dbtbus.backends.base import Append, Backend
from dbtbus.backends.xcom import Carrier, XComBackend
from dbtbus.testing.backend_contract import BackendContract


class StandInXCom:
    """What the Task SDK offers, in memory: ``get`` logs a miss as Airflow does, ``get_quiet`` does not."""

    def __init__(self, *, started: bool = True) -> None:
        self.rows: dict[tuple[Carrier, str], Any] = {}
        self.loud_misses: list[str] = []
        self.calls: list[str] = []
        self.started = started
        self.lock = threading.Lock()
        self.gate: threading.Event | None = None  # when set, writes of log rows block until it is set

    def get(self, carrier: Carrier, key: str) -> Any:
        with self.lock:
            self.calls.append(f"get {key}")
            if (carrier, key) not in self.rows:
                self.loud_misses.append(key)
                return None
            return self.rows[carrier, key]

    def get_quiet(self, carrier: Carrier, key: str) -> Any:
        with self.lock:
            self.calls.append(f"get_quiet {key}")
            return self.rows.get((carrier, key))

    def set(self, carrier: Carrier, key: str, value: Any) -> None:
        if ":row:" in key and self.gate is not None:
            self.gate.wait(10)
        with self.lock:
            self.calls.append(f"set {key}")
            self.rows[carrier, key] = value

    def delete(self, carrier: Carrier, key: str) -> None:
        with self.lock:
            self.rows.pop((carrier, key), None)

    def carrier_started(self, carrier: Carrier) -> bool:
        return self.started


def _backend(api: StandInXCom, **kwargs: Any) -> XComBackend:
    return XComBackend.from_url("xcom://dag/carrier/run-1?poll=0.02", api=api, **kwargs)


class TestXComBackend(BackendContract):
    blocking_slack = 1.0  # a polling backend whose calls go through worker threads
    foreign_cursors = ("not-a-cursor", "", "1.5", "abc-def", "0.0", "9.0")

    @pytest.fixture
    async def backend(self) -> AsyncIterator[Backend]:
        api = StandInXCom()
        backend = _backend(api)
        await backend.open()
        try:
            yield backend
        finally:
            await backend.aclose()
        assert api.loud_misses == []


@pytest.mark.anyio
async def test_one_row_per_append_call() -> None:
    api = StandInXCom()
    backend = _backend(api)
    await backend.open()
    await backend.append("r", [Append(f"x{i}".encode(), node=f"n{i}") for i in range(100)])
    writes = [c for c in api.calls if c.startswith("set")]
    assert writes == ["set dbtbus:r:row:000000001", "set dbtbus:r:head"]
    assert await backend.get_node("r", "n42") == b"x42"


@pytest.mark.anyio
async def test_a_reader_before_the_carrier_ran_asks_for_nothing() -> None:
    api = StandInXCom(started=False)
    backend = _backend(api)
    await backend.open()
    assert await backend.read("r", None, timeout=0.1) == []
    assert await backend.get_node("r", "n") is None
    assert await backend.get_lease("r") is None
    assert api.calls == []
    assert api.loud_misses == []


@pytest.mark.anyio
async def test_a_reader_in_another_process_sees_what_the_carrier_created() -> None:
    api = StandInXCom()
    carrier, reader = _backend(api), _backend(api)
    await carrier.open()
    await reader.open()
    await carrier.ensure_run("r")
    assert await reader.read("r", None, timeout=0) == []
    assert await reader.get_lease("r") is None
    await carrier.append("r", [Append(b"a", node="n")])
    assert [e.data for e in await reader.read("r", None)] == [b"a"]
    assert await reader.get_node("r", "n") == b"a"
    assert api.loud_misses == []


@pytest.mark.anyio
async def test_the_lease_does_not_wait_behind_record_writes() -> None:
    api = StandInXCom()
    api.gate = threading.Event()
    backend = _backend(api)
    await backend.open()
    async with anyio.create_task_group() as tg:
        tg.start_soon(backend.append, "r", [Append(b"a")])
        await anyio.sleep(0.1)  # the append is now stuck writing its row
        with anyio.fail_after(5):
            await backend.renew_lease("r", "me", 30)
        lease = await backend.get_lease("r")
        assert lease is not None and lease.holder == "me"
        api.gate.set()


@pytest.mark.anyio
async def test_concurrent_readers_of_one_run_see_every_entry_once() -> None:
    api = StandInXCom()
    writer, reader = _backend(api), _backend(api)
    await writer.open()
    await reader.open()
    expected = [f"e{i}".encode() for i in range(60)]

    async def write() -> None:
        for i in range(0, 60, 3):
            await writer.append("r", [Append(d, node=d.decode()) for d in expected[i:i + 3]])
            await anyio.sleep(0.001)

    async def probe() -> None:
        for _ in range(100):
            await reader.get_node("r", "e0")
            await anyio.lowlevel.checkpoint()

    got: list[bytes] = []

    async def follow() -> None:
        cursor = None
        while len(got) < len(expected):
            entries = await reader.read("r", cursor, timeout=1)
            got.extend(e.data for e in entries)
            cursor = entries[-1].cursor if entries else cursor

    async with anyio.create_task_group() as tg:
        tg.start_soon(write)
        for _ in range(5):
            tg.start_soon(probe)
        tg.start_soon(follow)
    assert got == expected
    assert await reader.get_node("r", "e59") == b"e59"
