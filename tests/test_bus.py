"""The bus (dbtbus/_bus.py): publishing, waiting, subscribing (its run reader: tests/test_reader.py)."""

from __future__ import annotations

import gc
import threading
from typing import Any

import anyio
import pytest

import dbtbus
from dbtbus import (
    Bus,
    ConfigurationError,
    DbtBusError,
    NodeFailed,
    NodeNotInRun,
    NodeNotRun,
    UnknownBackend,
    UpstreamFailed,
    WaitTimeout,
)
from dbtbus.backends.base import Append
from dbtbus.backends.memory import MemoryBackend, get_store
from dbtbus.events import Heartbeat, NodeStarted, NodeStatus, RunCrashed, RunFinished

from ._records import DIAMOND, RUN, result, started

pytestmark = pytest.mark.anyio


async def outcome_of(bus: Bus, uid: str, **kwargs: Any) -> object:
    try:
        return await bus.wait(RUN, uid, **kwargs)
    except dbtbus.WaitError as exc:
        return exc


# ------------------------------------------------------------------------------------------------ basics


async def test_late_waiter_returns_at_once(bus: Bus) -> None:
    await bus.publish([started(DIAMOND), result("seed.s"), result("model.a", message="OK")])
    record = await bus.wait(RUN, "model.a", timeout=1)
    assert record.status is NodeStatus.SUCCESS and record.message == "OK"
    assert not bus.statistics().readers  # answered from the node key, no log replay


async def test_early_waiter_waits_for_the_run_to_start(bus: Bus) -> None:
    async with anyio.create_task_group() as tg:
        got: list[object] = []

        async def waiter() -> None:
            got.append(await bus.wait(RUN, "model.a", timeout=5))

        tg.start_soon(waiter)
        await anyio.sleep(0.05)
        assert not got
        await bus.publish(started(DIAMOND))
        await anyio.sleep(0.05)
        assert not got
        await bus.publish([result("seed.s"), result("model.a")])
    assert len(got) == 1


async def test_success_like_statuses_return(bus: Bus) -> None:
    spec = {f"model.{s.name}": [] for s in NodeStatus if s.is_success}
    await bus.publish(started(spec))
    await bus.publish([result(uid, NodeStatus[uid.split(".")[1]]) for uid in spec])
    for uid in spec:
        assert (await bus.wait(RUN, uid, timeout=1)).status.is_success


@pytest.mark.parametrize("status", sorted(s.value for s in NodeStatus if s.is_failure))
async def test_failing_statuses_raise_node_failed(bus: Bus, status: str) -> None:
    await bus.publish([started({"model.a": []}), result("model.a", status, message="boom")])
    with pytest.raises(NodeFailed, match="boom") as info:
        await bus.wait(RUN, "model.a", timeout=1)
    assert info.value.record.status.value == status
    assert info.value.run_id == RUN and info.value.unique_id == "model.a"


# ------------------------------------------------------------------------------------------------ upstream


async def test_upstream_failure_raises_before_dbt_skips_the_node(bus: Bus) -> None:
    await bus.publish([started(DIAMOND), result("seed.s"), result("model.a"), result("test.a_ok", "pass")])
    async with anyio.create_task_group() as tg:
        outcomes: dict[str, object] = {}

        async def waiter(uid: str) -> None:
            outcomes[uid] = await outcome_of(bus, uid, timeout=5)

        for uid in ("model.b", "test.b_fails", "model.c"):
            tg.start_soon(waiter, uid)
        await anyio.sleep(0.05)
        await bus.publish(result("model.b", "error", message="syntax error"))
    assert isinstance(outcomes["model.b"], NodeFailed)
    for uid in ("test.b_fails", "model.c"):  # dbt has not skipped them yet
        error = outcomes[uid]
        assert isinstance(error, UpstreamFailed)
        assert error.cause == "model.b"
        assert error.cause_record is not None and error.cause_record.message == "syntax error"
        assert error.record is None


async def test_failing_test_dooms_the_models_children_in_build(bus: Bus) -> None:
    await bus.publish([started(DIAMOND), result("seed.s"), result("model.a"), result("test.a_ok", "pass")])
    await bus.publish([result("model.b"), result("test.b_fails", "fail", failures=3)])
    error = await outcome_of(bus, "model.c", timeout=1)
    assert isinstance(error, UpstreamFailed) and error.cause == "test.b_fails"
    assert (await bus.wait(RUN, "model.b", timeout=1)).ok


async def test_run_command_does_not_propagate_test_failures(bus: Bus) -> None:
    spec = {"model.a": [], "model.b": ["model.a"]}
    await bus.publish([started(spec, command="run"), result("model.a", "partial success")])
    error = await outcome_of(bus, "model.b", timeout=1)
    assert isinstance(error, UpstreamFailed)
    await bus.publish(started(spec, command="run", run_id="run-2"))
    await bus.publish(result("model.a", "fail", run_id="run-2"))
    with pytest.raises(WaitTimeout):
        await bus.wait("run-2", "model.b", timeout=0.1)


async def test_on_error_continue_does_not_doom_children(bus: Bus) -> None:
    spec = {"model.a": [], "model.b": ["model.a"]}
    await bus.publish([started(spec, continue_on_error=frozenset({"model.a"})), result("model.a", "error")])
    with pytest.raises(WaitTimeout):
        await bus.wait(RUN, "model.b", timeout=0.1)
    await bus.publish(result("model.b"))
    assert (await bus.wait(RUN, "model.b", timeout=1)).ok


async def test_skip_record_names_the_root_cause_through_a_chain(bus: Bus) -> None:
    # No graph (a bare log replay): only dbt's own skip records tell.
    await bus.publish(
        [
            started(None),
            result("model.a", "error"),
            result("model.b", "skipped", skip_cause="model.a"),
            result("model.c", "skipped", skip_cause="model.b"),
        ]
    )
    error = await outcome_of(bus, "model.c", timeout=1)
    assert isinstance(error, UpstreamFailed)
    assert error.cause == "model.a"
    assert error.record is not None and error.record.status is NodeStatus.SKIPPED


async def test_grandchildren_waiting_through_the_reader_get_the_root_cause(bus: Bus) -> None:
    spec = {"model.a": [], "model.b": ["model.a"], "model.c": ["model.b"], "model.d": ["model.c"]}
    await bus.publish([started(spec), result("model.a", "error")])
    for uid in ("model.b", "model.c", "model.d"):
        error = await outcome_of(bus, uid, timeout=1)
        assert isinstance(error, UpstreamFailed) and error.cause == "model.a"


# ------------------------------------------------------------------------------------------------ run ends


async def test_node_not_in_run_is_raised_as_soon_as_the_run_starts(bus: Bus) -> None:
    async with anyio.create_task_group() as tg:
        outcomes: list[object] = []

        async def waiter() -> None:
            outcomes.append(await outcome_of(bus, "model.elsewhere", timeout=5))

        tg.start_soon(waiter)
        await anyio.sleep(0.05)
        await bus.publish(started(DIAMOND))
    assert isinstance(outcomes[0], NodeNotInRun)


async def test_finished_run_without_the_node_raises_not_run(bus: Bus) -> None:
    await bus.publish([started(DIAMOND), RunFinished(run_id=RUN, success=False, exit_code=2)])
    error = await outcome_of(bus, "model.x", timeout=1)
    assert isinstance(error, NodeNotRun) and isinstance(error.ending, RunFinished)


async def test_not_run_and_causeless_skips_raise_not_run(bus: Bus) -> None:
    await bus.publish(
        [
            started(DIAMOND),
            result("seed.s", "not_run", message="Skipping due to fail_fast"),
            result("model.x", "skipped", message="Skipping due to fail_fast"),
        ]
    )
    for uid in ("seed.s", "model.x"):
        error = await outcome_of(bus, uid, timeout=1)
        assert isinstance(error, NodeNotRun)
        assert error.record is not None and "fail_fast" in str(error)


async def test_crash_resolves_every_pending_waiter(bus: Bus) -> None:
    await bus.publish(started(DIAMOND))
    outcomes: dict[str, object] = {}
    async with anyio.create_task_group() as tg:

        async def waiter(uid: str) -> None:
            outcomes[uid] = await outcome_of(bus, uid, timeout=5)

        for uid in DIAMOND:
            tg.start_soon(waiter, uid)
        await anyio.sleep(0.05)
        await bus.publish([result("seed.s"), RunCrashed(run_id=RUN, error="KeyboardInterrupt")])
    assert getattr(outcomes.pop("seed.s"), "ok", False)
    for error in outcomes.values():
        assert isinstance(error, NodeNotRun)
        assert "crashed: KeyboardInterrupt" in str(error)


async def test_a_later_attempt_resumes_the_run(bus: Bus) -> None:
    spec = {"model.a": [], "model.b": ["model.a"]}
    await bus.publish([started(spec), result("model.a"), RunCrashed(run_id=RUN, error="SIGKILL")])
    assert isinstance(await outcome_of(bus, "model.b", timeout=1), NodeNotRun)
    await bus.publish(started(spec, attempt=2))
    assert (await bus.wait(RUN, "model.a", timeout=1)).ok  # earlier success stands
    async with anyio.create_task_group() as tg:
        tg.start_soon(bus.publish, result("model.b", attempt=2))
        record = await bus.wait(RUN, "model.b", timeout=2)
    assert record.attempt == 2


# ------------------------------------------------------------------------------------------------ tests


async def test_include_tests_waits_for_and_checks_attached_tests(bus: Bus) -> None:
    await bus.publish([started(DIAMOND), result("seed.s"), result("model.a")])
    with pytest.raises(WaitTimeout):
        await bus.wait(RUN, "model.a", include_tests=True, timeout=0.1)
    await bus.publish(result("test.a_ok", "warn"))
    assert (await bus.wait(RUN, "model.a", include_tests=True, timeout=1)).unique_id == "model.a"
    await bus.publish([result("model.b"), result("test.b_fails", "fail", failures=2)])
    assert (await bus.wait(RUN, "model.b", timeout=1)).ok
    with pytest.raises(NodeFailed) as info:
        await bus.wait(RUN, "model.b", include_tests=True, timeout=1)
    assert info.value.unique_id == "model.b"
    assert info.value.record.unique_id == "test.b_fails" and info.value.record.failures == 2


# ------------------------------------------------------------------------------------------------ timeouts


async def test_timeout_raises_wait_timeout_which_is_a_timeout_error(bus: Bus) -> None:
    with pytest.raises(TimeoutError) as info:
        await bus.wait(RUN, "model.a", timeout=0.05)
    assert isinstance(info.value, WaitTimeout) and info.value.timeout == 0.05


async def test_negative_timeout_is_rejected(bus: Bus) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        await bus.wait(RUN, "model.a", timeout=-1)


async def test_cancelled_waiters_leave_nothing_behind(bus: Bus) -> None:
    with anyio.move_on_after(0.1):
        async with anyio.create_task_group() as tg:
            for uid in DIAMOND:
                tg.start_soon(bus.wait, RUN, uid)
    assert bus.statistics().readers == {RUN: 0}  # every waiter gone, the reader lingers
    await anyio.sleep(0.4)  # linger is 0.05 s
    assert RUN not in bus.statistics().readers


async def test_closing_the_bus_fails_pending_waiters_instead_of_hanging(memory_url: str) -> None:
    errors: list[BaseException] = []
    async with anyio.create_task_group() as tg, dbtbus.connect(memory_url) as bus:

        async def waiter() -> None:
            try:
                await bus.wait(RUN, "model.a")
            except DbtBusError as exc:
                errors.append(exc)

        tg.start_soon(waiter)
        await anyio.sleep(0.05)
    assert len(errors) == 1 and "closed" in str(errors[0])


# ------------------------------------------------------------------------------------------------ many


async def test_as_completed_yields_each_node_once_in_completion_order(bus: Bus) -> None:
    await bus.publish(started(DIAMOND))
    seen: list[tuple[str, bool]] = []
    async with anyio.create_task_group() as tg:

        async def publish() -> None:
            await anyio.sleep(0.05)
            await bus.publish([result("seed.s"), result("model.a", "error")])

        tg.start_soon(publish)
        async for item in bus.as_completed(RUN, ["model.c", "model.a", "seed.s", "model.x", "seed.s"], timeout=0.5):
            seen.append((item.unique_id, item.ok))
    assert seen[:3] == [("seed.s", True), ("model.a", False), ("model.c", False)]
    assert seen[3][0] == "model.x" and isinstance(  # timed out
        await anext_error(bus), WaitTimeout
    )


async def anext_error(bus: Bus) -> object:
    async for item in bus.as_completed(RUN, ["model.x"], timeout=0.01):
        return item.error()
    return None


async def test_wait_many_raises_first_error_or_returns_all(bus: Bus) -> None:
    await bus.publish([started(DIAMOND), result("seed.s"), result("model.a"), result("model.x", "error")])
    with pytest.raises(NodeFailed):
        await bus.wait_many(RUN, ["seed.s", "model.x"], timeout=1)
    got = await bus.wait_many(RUN, ["seed.s", "model.a", "model.x", "model.c"], timeout=0.2, return_exceptions=True)
    assert set(got) == {"seed.s", "model.a", "model.x", "model.c"}
    assert isinstance(got["model.x"], NodeFailed) and isinstance(got["model.c"], WaitTimeout)


# ------------------------------------------------------------------------------------------------ subscribe


async def test_subscribe_yields_every_record_in_order_and_ends(bus: Bus) -> None:
    records = [started(DIAMOND), NodeStarted(run_id=RUN, unique_id="seed.s"), result("seed.s"), Heartbeat(run_id=RUN)]
    await bus.publish(records)
    got: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def finish() -> None:
            await anyio.sleep(0.05)
            await bus.publish([result("model.a"), RunFinished(run_id=RUN, success=True)])

        tg.start_soon(finish)
        async for entry in bus.subscribe(RUN):
            got.append(entry)
    assert [e.record for e in got[:4]] == records
    assert isinstance(got[-1].record, RunFinished) and len(got) == 6
    resumed = [e.record async for e in bus.subscribe(RUN, from_cursor=got[3].cursor)]
    assert resumed == [got[4].record, got[5].record]


async def test_subscribe_raises_run_lost(bus: Bus) -> None:
    await bus.renew_lease(RUN, "p", ttl=0.1)
    await bus.publish(started(DIAMOND, heartbeat_interval=0.1))
    with pytest.raises(dbtbus.RunLost):
        async for _ in bus.subscribe(RUN):
            pass


# ------------------------------------------------------------------------------------------------ threads


async def test_publishing_from_foreign_threads(memory_url: str) -> None:
    """dbt's workers publish from their own threads (each with its own loop here); waiters see all."""
    threads_n, per_thread = 8, 50
    nodes = [f"model.t{t}_{i}" for t in range(threads_n) for i in range(per_thread)]
    async with dbtbus.connect(memory_url) as bus:
        await bus.renew_lease(RUN, "test-producer", ttl=60)
        await bus.publish(started({uid: [] for uid in nodes}))

        def worker(t: int) -> None:
            async def publish() -> None:
                async with dbtbus.connect(memory_url) as own:
                    for i in range(per_thread):
                        await own.publish(result(f"model.t{t}_{i}", message=str(i)))

            anyio.run(publish)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
        got = {}
        async with anyio.create_task_group() as tg:

            async def collect() -> None:
                async for item in bus.as_completed(RUN, nodes, timeout=30):
                    got[item.unique_id] = item.unwrap()

            tg.start_soon(collect)
            for thread in threads:
                thread.start()
            await anyio.to_thread.run_sync(lambda: [th.join() for th in threads])
        assert len(got) == len(nodes)
        await bus.publish(RunFinished(run_id=RUN, success=True))
        # Each thread's records keep their order in the log.
        log = [e.record async for e in bus.subscribe(RUN) if hasattr(e.record, "message")]
        for t in range(threads_n):
            mine = [int(r.message) for r in log if r.unique_id.startswith(f"model.t{t}_")]
            assert mine == list(range(per_thread))


# ------------------------------------------------------------------------------------------------ connect


async def test_a_bus_must_be_entered(memory_url: str) -> None:
    bus = dbtbus.connect(memory_url)
    with pytest.raises(DbtBusError, match="not open"):
        await bus.wait(RUN, "model.a", timeout=1)
    async with bus:
        pass
    with pytest.raises(DbtBusError, match="closed"):
        await bus.wait(RUN, "model.a", timeout=1)


@pytest.mark.parametrize(
    ("url", "error", "message"),
    [
        ("nope://x", UnknownBackend, "no dbtbus backend for URL scheme 'nope'"),
        ("localhost:6379", ConfigurationError, "looks like"),
        ("memory://x?y=1", None, None),
    ],
)
def test_connect_validates_urls(url: str, error: type[Exception] | None, message: str | None) -> None:
    if error is None:
        assert isinstance(dbtbus.connect(url).backend, MemoryBackend)
    else:
        with pytest.raises(error, match=message):
            dbtbus.connect(url)


def test_memory_backend_rejects_options() -> None:
    with pytest.raises(ConfigurationError, match="takes no options"):
        dbtbus.connect("memory://x", pool_size=3)


class PluginBackend(MemoryBackend):
    @classmethod
    def from_url(cls, url: str, **options: Any) -> PluginBackend:
        return cls(get_store("plugin"))


def test_third_party_backends_plug_in_by_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    import dbtbus.backends as registry

    entry_point = EntryPoint(name="acme", value=f"{__name__}:PluginBackend", group="dbtbus.backends")
    monkeypatch.setattr(registry, "_entry_point_targets", lambda: {"acme": entry_point})
    assert isinstance(dbtbus.connect("acme://anything").backend, PluginBackend)
    assert "acme" in registry.registered_schemes()
    bogus = EntryPoint(name="bogus", value="dbtbus.events:encode", group="dbtbus.backends")
    monkeypatch.setattr(registry, "_entry_point_targets", lambda: {"bogus": bogus})
    with pytest.raises(ConfigurationError, match="not a dbtbus Backend subclass"):
        dbtbus.connect("bogus://x")


def test_missing_optional_backend_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import dbtbus.backends as registry

    monkeypatch.setitem(registry._BUILTIN, "xcom", "dbtbus.backends.does_not_exist:XComBackend")
    with pytest.raises(ConfigurationError, match=r"dbtbus\[airflow\]"):
        dbtbus.connect("xcom://")


# ------------------------------------------------------------------------------------------------ failures


async def test_no_tasks_leak(memory_url: str) -> None:
    async with dbtbus.connect(memory_url, linger=0) as bus:
        await bus.renew_lease(RUN, "test-producer", ttl=60)
        await bus.publish([started(DIAMOND), result("seed.s")])
        for _ in range(20):
            with pytest.raises(WaitTimeout):
                await bus.wait(RUN, "model.a", timeout=0.01)
        await anyio.sleep(0.3)
        assert not bus.statistics().readers
    gc.collect()



# asyncio only: trio randomises, on purpose, the order of tasks made runnable in the same batch.
async def test_waiters_on_one_failed_node_each_get_their_own_exception(bus: Bus) -> None:
    await bus.publish(started(DIAMOND))
    errors: list[BaseException] = []
    async with anyio.create_task_group() as tg:

        async def waiter() -> None:
            try:
                await bus.wait(RUN, "model.x", timeout=5)
            except NodeFailed as exc:
                errors.append(exc)

        for _ in range(3):
            tg.start_soon(waiter)
        await anyio.sleep(0.05)
        await bus.publish(result("model.x", "error", message="boom"))
    assert len({id(e) for e in errors}) == 3
    assert all(isinstance(e, NodeFailed) and e.record.message == "boom" and str(e) == str(errors[0]) for e in errors)


# ---------------------------------------------------------------------------------------------- truth under faults


async def test_outcome_returns_data_and_timeout_is_a_kind(bus: Bus) -> None:
    await bus.publish([started(DIAMOND), result("seed.s"), result("model.a", "error")])
    assert (await bus.outcome(RUN, "seed.s", timeout=5)).ok
    failed = await bus.outcome(RUN, "model.a", timeout=5)
    assert failed.kind is dbtbus.OutcomeKind.FAILED and isinstance(failed.error(), NodeFailed)
    doomed = await bus.outcome(RUN, "model.c", timeout=5)
    assert doomed.kind is dbtbus.OutcomeKind.UPSTREAM_FAILED and doomed.cause == "model.a"
    late = await bus.outcome(RUN, "model.x", timeout=0.05)
    assert late.kind is dbtbus.OutcomeKind.TIMEOUT and late.timeout == 0.05 and not late.terminal


async def test_timeout_zero_answers_what_is_known_now(bus: Bus) -> None:
    await bus.publish([started(DIAMOND), result("seed.s"), result("model.a", "error")])
    assert (await bus.wait(RUN, "seed.s", timeout=0)).unique_id == "seed.s"
    with pytest.raises(NodeFailed):
        await bus.wait(RUN, "model.a", timeout=0)
    with pytest.raises(UpstreamFailed):
        await bus.wait(RUN, "model.b", timeout=0, include_tests=True)
    with pytest.raises(WaitTimeout):
        await bus.wait(RUN, "model.x", timeout=0)


async def test_probe_answers_successes_from_keys_only(bus: Bus) -> None:
    await bus.publish([started(DIAMOND), result("seed.s"), result("model.a"), result("model.b", "error")])
    probed = await bus.probe(RUN, "model.a")
    assert probed is not None and probed.ok and probed.record is not None
    assert await bus.probe(RUN, "model.a", include_tests=True) is None  # test.a_ok has not run
    await bus.publish(result("test.a_ok", "pass"))
    assert await bus.probe(RUN, "model.a", include_tests=True) is not None
    assert await bus.probe(RUN, "model.b") is None  # a failure may be retried: only the log can tell
    assert await bus.probe(RUN, "model.zzz") is None


async def test_min_attempt_ignores_an_earlier_attempts_answer(bus: Bus) -> None:
    await bus.publish([started(DIAMOND), result("model.a", "error"), RunFinished(run_id=RUN, success=False)])
    with pytest.raises(NodeFailed):
        await bus.wait(RUN, "model.a", timeout=5)
    async with anyio.create_task_group() as tg:

        async def retry() -> None:
            await anyio.sleep(0.2)
            await bus.publish([started(DIAMOND, attempt=2), result("model.a", attempt=2)])

        tg.start_soon(retry)
        record = await bus.wait(RUN, "model.a", timeout=10, min_attempt=2)
    assert record.attempt == 2


async def test_records_over_the_size_limit_are_truncated_refused_or_skipped(
    memory_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with dbtbus.connect(memory_url, max_record_size=4096) as bus:
        # Free text is cut, visibly, to fit.
        await bus.publish([started(DIAMOND), result("seed.s", message="x" * 10_000)])
        record = await bus.wait(RUN, "seed.s", timeout=5)
        assert "truncated by dbtbus" in (record.message or "") and len(dbtbus.events.encode(record)) <= 4096
        # What cutting text cannot shrink is refused before anything of the call is stored.
        with pytest.raises(dbtbus.RecordTooLarge):
            await bus.publish([result("model.a", run_id="other"), result("model." + "z" * 5000, run_id="other")])
        assert await bus.backend.read("other", None, timeout=0) == []
        # An oversized entry already stored (by a foreign writer) is skipped on read, and the cursor moves on.
        await bus.backend.append(RUN, [Append(dbtbus.events.encode(result("model.a", message="y" * 10_000)))])
        await bus.publish(result("model.a"))
        state = await bus.run_state(RUN)
        assert state.results["model.a"].message is None
    assert "over the 4096-byte record limit" in caplog.text
    with pytest.raises(ValueError):
        dbtbus.connect("memory://", max_record_size=10)


