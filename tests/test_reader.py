"""The run reader (dbtbus/_reader.py): one read loop per run, serving every waiter of that run in a bus."""

from __future__ import annotations

import traceback

import anyio
import pytest

import dbtbus
from dbtbus import Bus, NodeFailed, ProducerLost, WaitTimeout
from dbtbus.backends.base import Append
from dbtbus.backends.mock import MockBackend, MockCall
from dbtbus.events import Heartbeat, RunFinished

from ._records import DIAMOND, RUN, result, started
from .test_bus import outcome_of

pytestmark = pytest.mark.anyio


async def test_each_waiter_gets_its_own_exception_object() -> None:
    """Waiters failed together each raise their own copy: one object raised in several tasks would gather
    every task's frames on its traceback (and keep only the last task's context)."""

    def deny_reads(call: MockCall) -> None:
        if call.method == "read":
            raise dbtbus.PermissionDenied("NOPERM this user has no permissions to access the key")

    caught: list[BaseException] = []
    async with dbtbus.connect(MockBackend(hook=deny_reads)) as bus:

        async def waiter(**kwargs: object) -> None:
            try:
                await bus.wait(RUN, "model.a", timeout=60, **kwargs)  # type: ignore[arg-type]
            except dbtbus.PermissionDenied as exc:
                caught.append(exc)

        async def collector() -> None:
            try:
                async for _ in bus.as_completed(RUN, ["model.a"], timeout=60):
                    pass
            except dbtbus.PermissionDenied as exc:
                caught.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(waiter)
            tg.start_soon(collector)
    assert len(caught) == 4 and len({id(exc) for exc in caught}) == 4
    assert {str(exc) for exc in caught} == {"NOPERM this user has no permissions to access the key"}
    for exc in caught:
        frames = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
        assert frames.count("waiter") + frames.count("collector") == 1, frames


async def test_producer_lost_after_its_lease_and_one_heartbeat_of_grace(bus: Bus) -> None:
    interval = 0.2
    await bus.renew_lease(RUN, "producer", ttl=1.5 * interval)
    await bus.publish(started(DIAMOND, heartbeat_interval=interval))
    start = anyio.current_time()
    with pytest.raises(ProducerLost):
        await bus.wait(RUN, "model.a", timeout=30)
    waited = anyio.current_time() - start
    # Never before the lease (1.5 intervals) plus the grace (1 interval) passed; noticed long before the
    # timeout (the bound of 3 intervals is a benchmark figure, not a timed assertion).
    assert waited >= 2.5 * interval
    # A late waiter learns it at once from the reader's state or its own check.
    with pytest.raises(ProducerLost):
        await bus.wait(RUN, "model.b", timeout=2)


async def test_a_run_deleted_under_its_waiters_answers_run_not_found(bus: Bus) -> None:
    """The reader saw the run; its producer is gone and so is the run (deleted, expired, flushed): the node
    already decided keeps its answer, the others get RunNotFound — not ProducerLost, not the timeout."""
    interval = 0.2
    await bus.renew_lease(RUN, "producer", ttl=1.5 * interval)
    await bus.publish([started(DIAMOND, heartbeat_interval=interval), result("seed.s")])
    async with anyio.create_task_group() as tg:
        got: dict[str, str] = {}

        async def wait(uid: str) -> None:
            got[uid] = (await bus.outcome(RUN, uid, timeout=30)).kind.value

        for uid in ("seed.s", "model.a"):
            tg.start_soon(wait, uid)
        await anyio.sleep(0.1)  # both waiters are on the reader, which has read the run
        start = anyio.current_time()
        await bus.delete_run(RUN)
    assert got == {"seed.s": "success", "model.a": "run_not_found"}
    assert anyio.current_time() - start < 3 * interval + 1.0
    with pytest.raises(dbtbus.RunNotFound, match="no longer on the bus"):  # the lingering reader remembers
        await bus.wait(RUN, "model.b", timeout=5)


async def test_subscribe_raises_run_gone_for_a_run_deleted_mid_run(bus: Bus) -> None:
    interval = 0.2
    await bus.publish(started(DIAMOND, heartbeat_interval=interval))
    seen = []

    async def follow() -> None:
        async for entry in bus.subscribe(RUN):
            seen.append(entry.record)
            await bus.delete_run(RUN)

    with pytest.raises(dbtbus.RunGone, match="deleted, expired or flushed"):
        await follow()
    assert len(seen) == 1


async def test_a_waiter_that_comes_after_the_run_was_deleted_gets_run_not_found_at_once(memory_url: str) -> None:
    """Issue #27 item 4: a bus that never read the run asks the backend's tombstone once, on an empty log,
    and answers RunNotFound at once — before, it waited out its timeout (a run not started yet looks the
    same). A run id used again is answered as usual."""
    async with dbtbus.connect(memory_url) as producer:
        await producer.publish([started(DIAMOND), result("seed.s")])
        await producer.delete_run(RUN)
    async with dbtbus.connect(memory_url) as late:
        start = anyio.current_time()
        with pytest.raises(dbtbus.RunNotFound, match=r"no longer on the bus \(a tombstone says so\)"):
            await late.wait(RUN, "model.a", timeout=30)
        assert anyio.current_time() - start < 1.0
        got = await late.outcome(RUN, "seed.s", timeout=0)  # the snapshot path says so too
        assert got.kind is dbtbus.OutcomeKind.RUN_NOT_FOUND
        assert (await late.run_state(RUN)).status is dbtbus.RunStatus.GONE
        with pytest.raises(dbtbus.RunGone, match="deleted or expired"):
            async for _ in late.subscribe(RUN):
                pass
        # Used again: a new producer appends, and the same (lingering) reader answers from its records.
        waiting = []
        async with anyio.create_task_group() as tg:

            async def wait_b() -> None:
                waiting.append(await late.wait(RUN, "model.b", timeout=10))

            await late.publish([started(DIAMOND, attempt=1)])
            tg.start_soon(wait_b)
            await anyio.sleep(0.1)
            await late.publish(result("model.b"))
        assert [r.unique_id for r in waiting] == ["model.b"]
    async with dbtbus.connect(memory_url) as fresh:
        assert (await fresh.wait(RUN, "model.b", timeout=5)).unique_id == "model.b"


async def test_a_run_never_started_is_still_waited_for_and_asked_about_once() -> None:
    """No tombstone, no answer: a consumer that starts before its producer waits, as it always did, and the
    backend is asked once, not at every read."""
    backend = MockBackend()
    async with dbtbus.connect(backend, read_block=0.05) as bus:
        with pytest.raises(WaitTimeout):
            await bus.wait("not-yet", "model.a", timeout=0.5)
    assert backend.calls["run_gone"] == 1 and backend.calls["read"] > 3


async def test_a_snapshot_dates_a_dead_producer_by_its_records(bus: Bus) -> None:
    """run_state reads once: a run with no lease whose last record is older than one heartbeat plus 2.5
    lease periods is lost; a fresh record, or a live lease, keeps it running."""
    from datetime import datetime, timedelta, timezone

    await bus.release_lease(RUN, "test-producer")  # the fixture's producer: this one died
    long_ago = datetime.now(timezone.utc) - timedelta(seconds=3)
    await bus.publish(started(DIAMOND, heartbeat_interval=0.2, started_at=long_ago))  # 0.2 + 2.5 x 0.2 s
    assert (await bus.run_state(RUN)).status is dbtbus.RunStatus.LOST
    await bus.renew_lease(RUN, "test-producer", ttl=30)
    assert (await bus.run_state(RUN)).status is dbtbus.RunStatus.RUNNING  # the lease says it lives
    await bus.release_lease(RUN, "test-producer")
    await bus.publish(Heartbeat(run_id=RUN))  # written now: it may just be late
    assert (await bus.run_state(RUN)).status is dbtbus.RunStatus.RUNNING


async def test_a_heartbeating_producer_is_not_lost(bus: Bus) -> None:
    interval = 0.1
    await bus.publish(started(DIAMOND, heartbeat_interval=interval))
    async with anyio.create_task_group() as tg:

        async def heartbeat() -> None:
            while True:
                await bus.renew_lease(RUN, "producer", ttl=1.5 * interval)
                await bus.publish(Heartbeat(run_id=RUN))
                await anyio.sleep(interval)

        tg.start_soon(heartbeat)
        with pytest.raises(WaitTimeout):
            await bus.wait(RUN, "model.a", timeout=0.6)
        tg.cancel_scope.cancel()


async def test_ten_thousand_waiters_share_one_reader(memory_url: str) -> None:
    backend = MockBackend(memory_url.removeprefix("memory://"))
    nodes = [f"model.m{i}" for i in range(100)]
    got: list[str] = []
    async with dbtbus.connect(backend, read_block=5) as bus:

        async def waiter(uid: str) -> None:
            got.append((await bus.wait(RUN, uid, timeout=30)).unique_id)

        async with anyio.create_task_group() as tg:
            for i in range(10_000):
                tg.start_soon(waiter, nodes[i % len(nodes)])
            await anyio.sleep(0.2)
            await bus.renew_lease(RUN, "test-producer", ttl=60)
            await bus.publish(started({uid: [] for uid in nodes}))
            await bus.publish([result(uid) for uid in nodes])
    assert len(got) == 10_000
    assert backend.calls["get_node"] <= 16  # the bounded probe, then everyone joins the reader
    assert backend.calls["read"] <= 10
    assert not bus.statistics().readers


async def test_undecodable_entries_are_skipped_and_kept(bus: Bus, caplog: pytest.LogCaptureFixture) -> None:
    await bus.backend.append(RUN, [Append(b"garbage"), Append(b'{"v":9,"type":"node_result"}')])
    await bus.publish([started(DIAMOND), result("seed.s")])
    await bus.backend.append(
        RUN, [Append(b'{"v":1,"type":"node_result","run_id":"other","unique_id":"model.a","status":"success"}')]
    )
    assert (await bus.wait(RUN, "seed.s", timeout=1)).ok
    with pytest.raises(WaitTimeout):
        await bus.wait(RUN, "model.a", timeout=0.1)
    state = await bus.run_state(RUN)
    assert set(state.results) == {"seed.s"}
    assert "invalid JSON" in caplog.text and "newer than this dbtbus" in caplog.text and "of run 'other'" in caplog.text
    assert len(await bus.backend.read(RUN, None)) == 5


async def test_the_reader_retries_a_failing_backend_from_its_cursor(memory_url: str) -> None:
    def refuse_three_reads(call: MockCall) -> None:
        if call.method == "read" and call.number <= 3:
            raise dbtbus.BackendUnavailable("connection refused")

    backend = MockBackend(hook=refuse_three_reads)
    async with dbtbus.connect(backend) as bus:
        await bus.publish([started(DIAMOND), result("seed.s", "error")])
        assert isinstance(await outcome_of(bus, "seed.s", timeout=5), NodeFailed)


async def test_a_crashing_reader_fails_its_waiters_instead_of_hanging(memory_url: str) -> None:
    def a_bug(call: MockCall) -> None:
        if call.method == "read":
            raise RuntimeError("a bug")

    async with dbtbus.connect(MockBackend(hook=a_bug)) as bus:
        with pytest.raises(dbtbus.DbtBusError, match="reader of run 'run-1' failed"):
            await bus.wait(RUN, "model.a", timeout=5)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_woken_waiter_returns_before_the_reader_reads_again() -> None:
    # The reader's next read is none of the woken waiter's business: on memory:// its setup was a third of
    # the wake-up.
    backend = MockBackend()
    async with dbtbus.connect(backend, read_block=5) as bus:
        await bus.renew_lease(RUN, "test-producer", ttl=60)
        await bus.publish(started(DIAMOND))
        reads_when_returned: list[int] = []

        async def waiter() -> None:
            await bus.wait(RUN, "model.a", timeout=30)
            reads_when_returned.append(backend.calls["read"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(bus.wait, RUN, "model.b")  # keeps the reader reading after model.a
            tg.start_soon(waiter)
            await anyio.sleep(0.1)  # both registered, the reader blocked in a read
            reads_before = backend.calls["read"]
            await bus.publish([result("seed.s"), result("model.a")])
            await anyio.sleep(0.1)
            assert reads_when_returned == [reads_before]
            assert backend.calls["read"] == reads_before + 1  # the reader did read again, after the waiter
            await bus.publish(result("model.b"))


async def test_subscribe_rides_out_a_backend_outage() -> None:
    def flaky(call: MockCall) -> None:
        if call.method == "read" and 2 <= call.number <= 4:
            raise dbtbus.BackendUnavailable("connection reset")

    async with dbtbus.connect(MockBackend(hook=flaky)) as bus:
        await bus.renew_lease(RUN, "p", 60)
        await bus.publish([started(DIAMOND), result("seed.s")])
        got = []
        async with anyio.create_task_group() as tg:

            async def finish() -> None:
                await anyio.sleep(0.3)
                await bus.publish([result("model.a"), RunFinished(run_id=RUN, success=True)])

            tg.start_soon(finish)
            async for entry in bus.subscribe(RUN):
                got.append(type(entry.record).__name__)
    assert got == ["RunStarted", "NodeResult", "NodeResult", "RunFinished"]


async def test_a_permanent_backend_error_reaches_waiters_at_once() -> None:
    async def deny(call: MockCall) -> None:
        if call.method in ("read", "get_node"):
            raise dbtbus.PermissionDenied("NOPERM this user has no permissions to access the key")

    async with dbtbus.connect(MockBackend(hook=deny)) as bus:
        start = anyio.current_time()
        with pytest.raises(dbtbus.PermissionDenied):
            await bus.wait(RUN, "model.a", timeout=60)
        with pytest.raises(dbtbus.PermissionDenied):  # and never a WaitTimeout, for any later waiter either
            await bus.wait(RUN, "model.b", timeout=60)
        assert anyio.current_time() - start < 30  # far from the timeout: nothing was retried


async def test_a_reader_cut_off_from_the_backend_does_not_conclude_loss() -> None:
    """The lease lapses while the reader itself cannot reach the backend; the producer renews right after."""
    interval = 0.2
    down = anyio.Event()
    state = {"down": False}

    async def outage(call: MockCall) -> None:
        if state["down"] and call.method in ("read", "get_lease", "get_node"):
            raise dbtbus.BackendUnavailable("connection refused")

    backend = MockBackend(hook=outage)
    async with dbtbus.connect(backend) as bus:
        await bus.renew_lease(RUN, "producer", ttl=1.5 * interval)
        await bus.publish(started(DIAMOND, heartbeat_interval=interval))

        async def producer() -> None:
            await anyio.sleep(0.1)
            state["down"] = True
            down.set()
            await anyio.sleep(6 * interval)  # the lease (0.3 s) lapses during the outage
            state["down"] = False
            await anyio.sleep(0.3 * interval)  # the producer renews soon after the backend is back
            await bus.renew_lease(RUN, "producer", ttl=1.5 * interval)
            for _ in range(10):
                await bus.publish(Heartbeat(run_id=RUN))
                await bus.renew_lease(RUN, "producer", ttl=1.5 * interval)
                await anyio.sleep(interval / 2)
            await bus.publish([result("seed.s"), RunFinished(run_id=RUN, success=True)])

        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            record = await bus.wait(RUN, "seed.s", timeout=30)
    assert record.ok and down.is_set()
