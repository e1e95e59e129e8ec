"""The behaviour every dbtbus backend must show, whatever stores it: the public backend contract suite.

Third-party backend authors run it against their backend (it needs pytest and anyio's pytest plugin)::

    from dbtbus.testing.backend_contract import BackendContract

    class TestMyBackend(BackendContract):
        @pytest.fixture
        async def backend(self) -> AsyncIterator[Backend]:
            backend = MyBackend.from_url("my://...")
            await backend.open()
            yield backend            # fresh, isolated storage for each test
            await backend.aclose()

Every test is an anyio test; the module's ``anyio_backend`` fixture decides which event loops it runs on.
``blocking_slack`` (seconds) is how late a woken or timed-out read may return (polling backends raise it).

The opt-in guarantees (:attr:`Backend.idempotent_appends`, :attr:`Backend.fenced_leases`,
:attr:`Backend.fenced_appends`, :attr:`Backend.expiring_appends`, :attr:`Backend.tombstones`,
:attr:`Backend.max_record_bytes`) are checked as the backend declares them: a backend that declares a
guarantee must keep it, and one that does not must show the documented default behaviour instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import anyio
import pytest

from dbtbus._exceptions import BackendError, BackendRejected, InvalidCursor, RecordTooLarge, RunClaimed
from dbtbus.backends.base import Append, Backend, Entry

__all__ = ["BackendContract"]


def _data(entries: list[Entry]) -> list[bytes]:
    return [entry.data for entry in entries]


class BackendContract:
    """Mixin of contract tests; subclasses provide a ``backend`` fixture yielding an opened backend."""

    blocking_slack: float = 0.5
    #: A cursor of the right shape for this backend that it never handed out (or None to skip the check).
    foreign_cursors: tuple[str, ...] = ("not-a-cursor", "", "1.5", "abc-def")

    @pytest.fixture
    def run_id(self) -> str:
        return f"run-{uuid.uuid4().hex[:10]}"

    @pytest.fixture
    def new_run(self) -> Callable[[], str]:
        return lambda: f"run-{uuid.uuid4().hex[:10]}"

    # ------------------------------------------------------------------------------------------ append / read

    @pytest.mark.anyio
    async def test_append_returns_one_cursor_per_item_in_order(self, backend: Backend, run_id: str) -> None:
        cursors = await backend.append(run_id, [Append(b"a"), Append(b"b"), Append(b"c")])
        assert len(cursors) == 3
        assert len(set(cursors)) == 3
        entries = await backend.read(run_id, None)
        assert [e.cursor for e in entries] == cursors
        assert _data(entries) == [b"a", b"b", b"c"]

    @pytest.mark.anyio
    async def test_empty_append(self, backend: Backend, run_id: str) -> None:
        assert await backend.append(run_id, []) == []
        assert await backend.read(run_id, None) == []

    @pytest.mark.anyio
    async def test_read_resumes_just_past_each_cursor(self, backend: Backend, run_id: str) -> None:
        payloads = [f"r{i}".encode() for i in range(10)]
        cursors = []
        for chunk in (payloads[:3], payloads[3:4], payloads[4:]):
            cursors += await backend.append(run_id, [Append(p) for p in chunk])
        for index, cursor in enumerate(cursors):
            assert _data(await backend.read(run_id, cursor)) == payloads[index + 1 :]

    @pytest.mark.anyio
    async def test_read_limit_pages_through_the_log(self, backend: Backend, run_id: str) -> None:
        payloads = [f"p{i}".encode() for i in range(25)]
        await backend.append(run_id, [Append(p) for p in payloads])
        seen: list[bytes] = []
        cursor = None
        while True:
            page = await backend.read(run_id, cursor, limit=7)
            assert len(page) <= 7
            if not page:
                break
            seen += _data(page)
            cursor = page[-1].cursor
        assert seen == payloads

    @pytest.mark.anyio
    async def test_binary_data_round_trips(self, backend: Backend, run_id: str) -> None:
        blobs = [bytes(range(256)), b"", b"\x00\r\n*1\r\n", "é✓".encode()]
        await backend.append(run_id, [Append(b, node=f"n{i}") for i, b in enumerate(blobs)])
        assert _data(await backend.read(run_id, None)) == blobs
        assert await backend.get_node(run_id, "n0") == blobs[0]

    @pytest.mark.anyio
    async def test_unknown_run_reads_empty(self, backend: Backend, run_id: str) -> None:
        assert await backend.read(run_id, None) == []
        assert await backend.read(run_id, None, timeout=0.05) == []

    @pytest.mark.anyio
    async def test_runs_are_separate(self, backend: Backend, new_run: Callable[[], str]) -> None:
        one, two = new_run(), new_run()
        await backend.append(one, [Append(b"1", node="n")])
        await backend.append(two, [Append(b"2", node="n")])
        assert _data(await backend.read(one, None)) == [b"1"]
        assert _data(await backend.read(two, None)) == [b"2"]
        assert await backend.get_node(one, "n") == b"1"

    @pytest.mark.anyio
    async def test_concurrent_appends_do_not_interleave_within_a_call(
        self, backend: Backend, run_id: str
    ) -> None:
        async def writer(tag: str) -> None:
            for batch in range(5):
                await backend.append(run_id, [Append(f"{tag}:{batch}:{i}".encode()) for i in range(20)])

        async with anyio.create_task_group() as tg:
            for tag in "abcd":
                tg.start_soon(writer, tag)
        data = [d.decode() for d in _data(await backend.read(run_id, None, limit=10_000))]
        assert len(data) == 4 * 5 * 20
        for start in range(0, len(data), 20):  # every call's 20 items sit together, in order
            chunk = data[start : start + 20]
            prefix = chunk[0].rsplit(":", 1)[0]
            assert chunk == [f"{prefix}:{i}" for i in range(20)]

    @pytest.mark.anyio
    async def test_invalid_cursor(self, backend: Backend, run_id: str) -> None:
        await backend.append(run_id, [Append(b"x")])
        for cursor in self.foreign_cursors:
            with pytest.raises(InvalidCursor):
                await backend.read(run_id, cursor)
        assert issubclass(InvalidCursor, BackendError)

    # ------------------------------------------------------------------------------------------ blocking

    @pytest.mark.anyio
    async def test_blocking_read_wakes_on_append(self, backend: Backend, run_id: str) -> None:
        cursor = (await backend.append(run_id, [Append(b"first")]))[0]
        got: list[Entry] = []
        woke_after = 0.0

        async def reader() -> None:
            nonlocal got, woke_after
            start = anyio.current_time()
            got = await backend.read(run_id, cursor, timeout=10)
            woke_after = anyio.current_time() - start

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.sleep(0.1)
            await backend.append(run_id, [Append(b"second"), Append(b"third")])
        assert _data(got)[0] == b"second"
        assert woke_after < 0.1 + self.blocking_slack

    @pytest.mark.anyio
    async def test_blocking_read_from_none_on_a_run_not_yet_started(
        self, backend: Backend, run_id: str
    ) -> None:
        got: list[Entry] = []

        async def reader() -> None:
            nonlocal got
            got = await backend.read(run_id, None, timeout=None)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await anyio.sleep(0.1)
                await backend.append(run_id, [Append(b"hello")])
        assert _data(got) == [b"hello"]

    @pytest.mark.anyio
    async def test_blocking_read_honours_timeout(self, backend: Backend, run_id: str) -> None:
        cursor = (await backend.append(run_id, [Append(b"x")]))[0]
        for timeout in (0.05, 0.3):
            start = anyio.current_time()
            assert await backend.read(run_id, cursor, timeout=timeout) == []
            elapsed = anyio.current_time() - start
            assert timeout - 0.01 <= elapsed < timeout + self.blocking_slack

    @pytest.mark.anyio
    async def test_cancelled_blocked_read_leaves_backend_usable(self, backend: Backend, run_id: str) -> None:
        cursor = (await backend.append(run_id, [Append(b"x")]))[0]
        for _ in range(3):
            with anyio.move_on_after(0.05) as scope:
                await backend.read(run_id, cursor, timeout=None)
            assert scope.cancelled_caught
        async with anyio.create_task_group() as tg:
            tg.start_soon(backend.read, run_id, cursor)
            tg.cancel_scope.cancel()
        await backend.append(run_id, [Append(b"y")])
        with anyio.fail_after(5):
            assert _data(await backend.read(run_id, cursor, timeout=None)) == [b"y"]

    @pytest.mark.anyio
    async def test_many_blocked_readers_on_different_runs(
        self, backend: Backend, new_run: Callable[[], str]
    ) -> None:
        runs = [new_run() for _ in range(20)]
        results: dict[str, list[bytes]] = {}

        async def reader(run: str) -> None:
            results[run] = _data(await backend.read(run, None, timeout=10))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for run in runs:
                    tg.start_soon(reader, run)
                await anyio.sleep(0.1)
                for run in runs:
                    await backend.append(run, [Append(run.encode())])
        assert results == {run: [run.encode()] for run in runs}

    # ------------------------------------------------------------------------------------------ node records

    @pytest.mark.anyio
    async def test_get_node(self, backend: Backend, run_id: str) -> None:
        assert await backend.get_node(run_id, "model.a") is None
        await backend.append(
            run_id, [Append(b"start"), Append(b"a1", node="model.a"), Append(b"b1", node="model.b")]
        )
        assert await backend.get_node(run_id, "model.a") == b"a1"
        assert await backend.get_node(run_id, "model.b") == b"b1"
        assert await backend.get_node(run_id, "model.c") is None
        await backend.append(run_id, [Append(b"a2", node="model.a")])
        assert await backend.get_node(run_id, "model.a") == b"a2"
        await backend.append(run_id, [Append(b"a3", node="model.a"), Append(b"a4", node="model.a")])
        assert await backend.get_node(run_id, "model.a") == b"a4"
        assert _data(await backend.read(run_id, None)) == [b"start", b"a1", b"b1", b"a2", b"a3", b"a4"]

    # ------------------------------------------------------------------------------------------ leases

    @pytest.mark.anyio
    async def test_lease_renew_get_release(self, backend: Backend, run_id: str) -> None:
        assert await backend.get_lease(run_id) is None
        await backend.renew_lease(run_id, "producer-1", 30)
        lease = await backend.get_lease(run_id)
        assert lease is not None
        assert lease.holder == "producer-1"
        assert lease.alive
        assert 25 < lease.remaining <= 30
        await backend.release_lease(run_id, "someone-else")
        assert await backend.get_lease(run_id) is not None
        # a run never claimed with acquire_lease accepts any holder's renewal (the unfenced path)
        await backend.renew_lease(run_id, "producer-2", 10)
        lease = await backend.get_lease(run_id)
        assert lease is not None
        assert lease.holder == "producer-2"
        assert lease.remaining <= 10
        await backend.release_lease(run_id, "producer-2")
        assert await backend.get_lease(run_id) is None
        await backend.release_lease(run_id, "producer-2")  # releasing twice is harmless

    @pytest.mark.anyio
    async def test_lease_expires(self, backend: Backend, run_id: str) -> None:
        await backend.renew_lease(run_id, "p", 0.15)
        assert await backend.get_lease(run_id) is not None
        await anyio.sleep(0.3)
        assert await backend.get_lease(run_id) is None
        await backend.renew_lease(run_id, "p", 0.15)  # renewing after expiry takes it again
        assert await backend.get_lease(run_id) is not None

    @pytest.mark.anyio
    async def test_lease_does_not_touch_the_log(self, backend: Backend, run_id: str) -> None:
        await backend.append(run_id, [Append(b"x")])
        await backend.renew_lease(run_id, "p", 5)
        assert _data(await backend.read(run_id, None)) == [b"x"]

    # ------------------------------------------------------------------------------------------ one producer

    @pytest.mark.anyio
    async def test_acquire_lease_one_producer_per_attempt(self, backend: Backend, run_id: str) -> None:
        assert issubclass(RunClaimed, BackendRejected)
        await backend.acquire_lease(run_id, "first", 30, attempt=1)
        lease = await backend.get_lease(run_id)
        assert lease is not None
        assert lease.holder == "first"
        if backend.fenced_leases:
            assert lease.attempt == 1
        with pytest.raises(RunClaimed, match="first"):
            await backend.acquire_lease(run_id, "second", 30, attempt=1)
        lease = await backend.get_lease(run_id)
        assert lease is not None
        assert lease.holder == "first"  # the refused producer changed nothing
        await backend.acquire_lease(run_id, "first", 30, attempt=1)  # the holder itself: a renewal
        await backend.renew_lease(run_id, "first", 30)

    @pytest.mark.anyio
    async def test_renewing_a_claim_that_vanished_says_so(self, backend: Backend, run_id: str) -> None:
        """A fenced backend tells the holder when the run's claim is gone (its keys were lost or deleted)."""
        await backend.acquire_lease(run_id, "holder", 30, attempt=1)
        assert await backend.renew_lease(run_id, "holder", 30) in (True, None)
        await backend.delete_run(run_id)
        renewed = await backend.renew_lease(run_id, "holder", 30)
        if backend.fenced_leases:
            assert renewed is False
        assert await backend.get_lease(run_id) is not None  # the lease is held again all the same

    @pytest.mark.anyio
    async def test_a_later_attempt_takes_over_and_fences_the_earlier(self, backend: Backend, run_id: str) -> None:
        await backend.acquire_lease(run_id, "attempt-1", 30, attempt=1)
        if not backend.fenced_leases:
            # The documented default: a live lease taken with renew_lease has no attempt, so it blocks
            # every other producer until it lapses; nothing fences the earlier holder.
            with pytest.raises(RunClaimed):
                await backend.acquire_lease(run_id, "attempt-2", 30, attempt=2)
            return
        await backend.acquire_lease(run_id, "attempt-2", 30, attempt=2)
        lease = await backend.get_lease(run_id)
        assert lease is not None
        assert (lease.holder, lease.attempt) == ("attempt-2", 2)
        with pytest.raises(RunClaimed):  # the superseded producer learns it at its next heartbeat
            await backend.renew_lease(run_id, "attempt-1", 30)
        with pytest.raises(RunClaimed):
            await backend.acquire_lease(run_id, "attempt-1", 30, attempt=1)
        await backend.release_lease(run_id, "attempt-2")
        assert await backend.get_lease(run_id) is None
        with pytest.raises(RunClaimed):  # the claim outlives the lease: a stale attempt cannot come back
            await backend.acquire_lease(run_id, "attempt-1", 30, attempt=1)
        await backend.acquire_lease(run_id, "attempt-3", 30, attempt=3)

    @pytest.mark.anyio
    async def test_a_lapsed_lease_is_renewed_by_its_holder_or_taken_over(self, backend: Backend, run_id: str) -> None:
        await backend.acquire_lease(run_id, "producer", 0.15, attempt=1)
        await anyio.sleep(0.3)
        assert await backend.get_lease(run_id) is None
        # the backend was unreachable past the lease: the holder renews the moment it can
        await backend.renew_lease(run_id, "producer", 0.15)
        lease = await backend.get_lease(run_id)
        assert lease is not None
        assert lease.holder == "producer"
        await anyio.sleep(0.3)
        # a dead producer's attempt can be taken over once its lease has lapsed
        await backend.acquire_lease(run_id, "replacement", 30, attempt=1)
        if backend.fenced_leases:
            with pytest.raises(RunClaimed, match="replacement"):
                await backend.renew_lease(run_id, "producer", 30)

    @pytest.mark.anyio
    async def test_concurrent_acquires_one_wins(self, backend: Backend, run_id: str) -> None:
        winners: list[str] = []
        refused: list[str] = []

        async def contender(name: str) -> None:
            try:
                await backend.acquire_lease(run_id, name, 30, attempt=1)
            except RunClaimed:
                refused.append(name)
            else:
                winners.append(name)

        async with anyio.create_task_group() as tg:
            for k in range(10):
                tg.start_soon(contender, f"p{k}")
        assert len(winners) + len(refused) == 10
        if backend.fenced_leases:
            assert len(winners) == 1
        lease = await backend.get_lease(run_id)
        assert lease is not None
        assert lease.holder in winners

    # ------------------------------------------------------------------------------------------ fenced appends

    @pytest.mark.anyio
    async def test_a_superseded_holders_append_is_refused_whole(self, backend: Backend, run_id: str) -> None:
        """With :attr:`Backend.fenced_appends`, once a later attempt claimed the run, the earlier holder's
        append stores nothing — no log entry, no node record replaced — and raises :class:`RunClaimed`."""
        await backend.acquire_lease(run_id, "attempt-1", 30, attempt=1)
        await backend.append(run_id, [Append(b"s1", node="run", holder="attempt-1"),
                                      Append(b"a1", node="model.a", holder="attempt-1")])
        if not backend.fenced_leases:
            pytest.skip("the backend declares no fenced leases: no claim to fence appends with")
        await backend.acquire_lease(run_id, "attempt-2", 30, attempt=2)
        await backend.append(run_id, [Append(b"s2", node="run", holder="attempt-2"),
                                      Append(b"a2", node="model.a", key="attempt-2:1", holder="attempt-2")])
        stale = [Append(b"b1", node="model.b", key="attempt-1:9", holder="attempt-1"),
                 Append(b"a1-late", node="model.a", key="attempt-1:10", holder="attempt-1")]
        if not backend.fenced_appends:
            # The documented default: holders are ignored, a superseded producer's records land.
            await backend.append(run_id, stale)
            assert await backend.get_node(run_id, "model.a") == b"a1-late"
            return
        with pytest.raises(RunClaimed, match="attempt-1") as refused:
            await backend.append(run_id, stale)
        assert "attempt-2" in str(refused.value) and "superseded" in str(refused.value)
        with pytest.raises(RunClaimed):  # a holder-less item in the same call does not let it through
            await backend.append(run_id, [Append(b"free"), Append(b"b1", node="model.b", holder="attempt-1")])
        assert _data(await backend.read(run_id, None)) == [b"s1", b"a1", b"s2", b"a2"]
        assert await backend.get_node(run_id, "model.a") == b"a2"  # attempt 2's record, untouched
        assert await backend.get_node(run_id, "model.b") is None
        assert await backend.get_node(run_id, "run") == b"s2"
        # its keys were not stored either: the refused items are not "already appended" for anyone
        await backend.append(run_id, [Append(b"b2", node="model.b", key="attempt-1:9", holder="attempt-2")])
        assert await backend.get_node(run_id, "model.b") == b"b2"
        # the current holder appends as before, with or without its holder
        await backend.append(run_id, [Append(b"c2", node="model.c", holder="attempt-2"), Append(b"plain")])
        assert _data(await backend.read(run_id, None))[-3:] == [b"b2", b"c2", b"plain"]

    @pytest.mark.anyio
    async def test_a_refused_append_leaves_the_runs_expiry_and_lease_alone(self, backend: Backend, run_id: str) -> None:
        """A refused append changes nothing: an expiry set by the current producer still applies (an append
        would cancel it), its lease stays its own."""
        if not backend.fenced_appends:
            pytest.skip("the backend declares no fenced appends")
        await backend.acquire_lease(run_id, "attempt-1", 30, attempt=1)
        await backend.acquire_lease(run_id, "attempt-2", 30, attempt=2)
        await backend.append(run_id, [Append(b"end", node="model.a", holder="attempt-2")])
        await backend.expire_run(run_id, 0.3)
        with pytest.raises(RunClaimed):
            await backend.append(run_id, [Append(b"stale", node="model.a", holder="attempt-1")])
        lease = await backend.get_lease(run_id)
        assert lease is not None
        assert lease.holder == "attempt-2"
        await anyio.sleep(0.6)
        assert await backend.read(run_id, None) == []  # expired as set: the refused append did not keep it
        assert run_id not in await backend.list_runs()

    @pytest.mark.anyio
    async def test_the_fence_follows_the_latest_claim(self, backend: Backend, run_id: str) -> None:
        """The same attempt taken over after the lease lapsed (a frozen producer's replacement) fences too."""
        if not backend.fenced_appends:
            pytest.skip("the backend declares no fenced appends")
        await backend.acquire_lease(run_id, "frozen", 0.1, attempt=1)
        await backend.append(run_id, [Append(b"f", node="model.a", holder="frozen")])
        await anyio.sleep(0.2)
        await backend.append(run_id, [Append(b"f2", holder="frozen")])  # lapsed but not superseded: accepted
        await backend.acquire_lease(run_id, "replacement", 30, attempt=1)
        with pytest.raises(RunClaimed, match="replacement"):
            await backend.append(run_id, [Append(b"thawed", node="model.a", holder="frozen")])
        await backend.append(run_id, [Append(b"r", node="model.a", holder="replacement")])
        assert _data(await backend.read(run_id, None)) == [b"f", b"f2", b"r"]
        assert await backend.get_node(run_id, "model.a") == b"r"

    @pytest.mark.anyio
    async def test_appends_without_a_holder_or_on_an_unclaimed_run_are_not_fenced(
        self, backend: Backend, new_run: Callable[[], str]
    ) -> None:
        claimed, unclaimed, vanished = new_run(), new_run(), new_run()
        await backend.acquire_lease(claimed, "owner", 30, attempt=1)
        await backend.append(claimed, [Append(b"x", node="n")])  # no holder: not checked (as before)
        assert await backend.get_node(claimed, "n") == b"x"
        # a run never claimed (or only leased with renew_lease, the legacy path) takes any holder
        await backend.renew_lease(unclaimed, "someone", 30)
        await backend.append(unclaimed, [Append(b"1", node="n", holder="anyone"), Append(b"2", holder="another")])
        assert _data(await backend.read(unclaimed, None)) == [b"1", b"2"]
        # a claim that vanished with the run's keys does not lock its producer out: it appends, its renewal
        # says False, it claims again — and from then on the run is fenced again
        await backend.acquire_lease(vanished, "owner", 30, attempt=1)
        await backend.delete_run(vanished)
        await backend.append(vanished, [Append(b"kept", node="n", holder="owner")])
        assert await backend.get_node(vanished, "n") == b"kept"
        if backend.fenced_leases:
            assert await backend.renew_lease(vanished, "owner", 30) is False
        await backend.acquire_lease(vanished, "owner", 30, attempt=1)
        await backend.append(vanished, [Append(b"again", node="n", holder="owner")])
        if backend.fenced_appends:
            with pytest.raises(RunClaimed):
                await backend.append(vanished, [Append(b"intruder", node="n", holder="intruder")])
        assert await backend.get_node(vanished, "n") == b"again"

    # ------------------------------------------------------------------------------------------ idempotency

    @pytest.mark.anyio
    async def test_retried_append_is_stored_once(self, backend: Backend, run_id: str) -> None:
        first = await backend.append(run_id, [Append(b"a", key="p:1"), Append(b"b", node="n", key="p:2")])
        # the reply was lost: the producer sends the same batch again, plus what came next
        again = await backend.append(
            run_id, [Append(b"a", key="p:1"), Append(b"b", node="n", key="p:2"), Append(b"c", key="p:3")]
        )
        stored = _data(await backend.read(run_id, None))
        if not backend.idempotent_appends:
            assert stored == [b"a", b"b", b"a", b"b", b"c"]  # declared honestly: keys are ignored
            return
        assert stored == [b"a", b"b", b"c"]
        assert again[:2] == first
        assert await backend.get_node(run_id, "n") == b"b"
        # within one call too, and items without a key are always stored
        await backend.append(run_id, [Append(b"d", key="p:4"), Append(b"d", key="p:4"), Append(b"e"), Append(b"e")])
        assert _data(await backend.read(run_id, None)) == [b"a", b"b", b"c", b"d", b"e", b"e"]

    @pytest.mark.anyio
    async def test_idempotency_keys_are_per_run(self, backend: Backend, new_run: Callable[[], str]) -> None:
        one, two = new_run(), new_run()
        await backend.append(one, [Append(b"1", key="k")])
        await backend.append(two, [Append(b"2", key="k")])
        assert _data(await backend.read(two, None)) == [b"2"]

    # ------------------------------------------------------------------------------------------ limits

    @pytest.mark.anyio
    async def test_record_over_the_size_limit_is_refused_whole(self, backend: Backend, run_id: str) -> None:
        limit = backend.max_record_bytes
        if limit is None:
            await backend.append(run_id, [Append(b"x" * 1_000_000)])  # no limit of its own: stored
            assert len(_data(await backend.read(run_id, None))[0]) == 1_000_000
            return
        assert issubclass(RecordTooLarge, BackendRejected)
        await backend.append(run_id, [Append(b"ok")])
        with pytest.raises(RecordTooLarge, match=r"model\.big"):
            await backend.append(run_id, [Append(b"small"), Append(b"x" * (limit + 1), node="model.big")])
        assert _data(await backend.read(run_id, None)) == [b"ok"]  # nothing of the refused call
        assert await backend.get_node(run_id, "model.big") is None

    # ------------------------------------------------------------------------------------------ retention

    @pytest.mark.anyio
    async def test_expire_run(self, backend: Backend, new_run: Callable[[], str]) -> None:
        doomed, kept = new_run(), new_run()
        await backend.append(doomed, [Append(b"d", node="n")])
        await backend.append(kept, [Append(b"k", node="n")])
        await backend.renew_lease(doomed, "p", 60)
        await backend.expire_run(doomed, 0.2)
        assert _data(await backend.read(doomed, None)) == [b"d"]  # still there until the ttl passes
        await anyio.sleep(0.4)
        assert await backend.read(doomed, None) == []
        assert await backend.get_node(doomed, "n") is None
        assert await backend.get_lease(doomed) is None
        assert doomed not in await backend.list_runs()
        assert _data(await backend.read(kept, None)) == [b"k"]
        assert kept in await backend.list_runs()
        await backend.expire_run(new_run(), 1)  # an unknown run: nothing to do

    @pytest.mark.anyio
    async def test_the_latest_expire_run_wins(self, backend: Backend, new_run: Callable[[], str]) -> None:
        """A producer with a retention re-arms its run's expiry after every append and renewal (lease +
        retention: a producer that dies leaves keys that still expire), then sets the plain retention when it
        ends: each ``expire_run`` replaces the previous one, later or sooner."""
        later, sooner = new_run(), new_run()
        for run in (later, sooner):
            await backend.append(run, [Append(b"x", node="n")])
        await backend.expire_run(later, 0.2)
        await backend.expire_run(later, 30)  # moved later: it must outlive the first ttl
        await backend.expire_run(sooner, 30)
        await backend.expire_run(sooner, 0.2)  # moved sooner: the run ended, its plain retention applies
        await anyio.sleep(0.4)
        assert _data(await backend.read(later, None)) == [b"x"]
        assert await backend.get_node(later, "n") == b"x"
        assert await backend.read(sooner, None) == []
        assert await backend.get_node(sooner, "n") is None
        assert sooner not in await backend.list_runs()

    @pytest.mark.anyio
    async def test_append_cancels_expiry(self, backend: Backend, run_id: str) -> None:
        await backend.append(run_id, [Append(b"a", node="n")])
        await backend.expire_run(run_id, 0.2)
        await backend.append(run_id, [Append(b"b")])
        await anyio.sleep(0.4)
        assert _data(await backend.read(run_id, None)) == [b"a", b"b"]
        assert await backend.get_node(run_id, "n") == b"a"
        assert run_id in await backend.list_runs()

    @pytest.mark.anyio
    async def test_an_expiring_append_sets_the_runs_expiry_with_its_writes(
        self, backend: Backend, new_run: Callable[[], str]
    ) -> None:
        """With :attr:`Backend.expiring_appends`, an append carrying ``expire_after`` expires the run as
        ``expire_run`` with that ttl would — its first append, or one after a plain append kept it — with no
        other call; a later plain append keeps the run again. (A producer killed right after an append must
        not leave a run kept for ever.)"""
        if not backend.expiring_appends:
            pytest.skip("the backend declares no expiring appends (its producer calls expire_run after each append)")
        fresh, kept, taken_back = new_run(), new_run(), new_run()
        await backend.append(kept, [Append(b"k", node="n")])
        for run in (fresh, kept, taken_back):
            await backend.append(run, [Append(b"x", node="m", expire_after=0.2), Append(b"y", expire_after=0.2)])
            assert await backend.run_gone(run) is False  # its expiry is pending: still there
        await backend.append(taken_back, [Append(b"z")])
        await anyio.sleep(0.4)
        for run in (fresh, kept):
            assert await backend.read(run, None) == []
            assert await backend.get_node(run, "m") is None
            assert run not in await backend.list_runs()
            assert await backend.run_gone(run) is backend.tombstones
        assert _data(await backend.read(taken_back, None)) == [b"x", b"y", b"z"]
        assert taken_back in await backend.list_runs()
        assert await backend.run_gone(taken_back) is False

    @pytest.mark.anyio
    async def test_an_expiring_append_moves_the_expiry_either_way(
        self, backend: Backend, new_run: Callable[[], str]
    ) -> None:
        """Like ``expire_run``, each expiring append replaces the run's expiry, later or sooner."""
        if not backend.expiring_appends:
            pytest.skip("the backend declares no expiring appends (its producer calls expire_run after each append)")
        later, sooner = new_run(), new_run()
        await backend.append(later, [Append(b"a", expire_after=0.2)])
        await backend.append(later, [Append(b"b", expire_after=30)])
        await backend.append(sooner, [Append(b"a", expire_after=30)])
        await backend.append(sooner, [Append(b"b", expire_after=0.2)])
        await anyio.sleep(0.4)
        assert _data(await backend.read(later, None)) == [b"a", b"b"]
        assert await backend.read(sooner, None) == []

    @pytest.mark.anyio
    async def test_a_claim_with_an_expiry_goes_with_no_append_after_it(
        self, backend: Backend, new_run: Callable[[], str]
    ) -> None:
        """With :attr:`Backend.expiring_appends` and :attr:`Backend.fenced_leases`, ``acquire_lease`` given
        ``expire_after`` lets the claim expire as the appends would: a producer killed after its claim and
        before its first append leaves no fence (nothing) behind for good. Given none, the claim is kept."""
        if not (backend.expiring_appends and backend.fenced_leases):
            pytest.skip("the backend declares no expiring appends or no fenced leases: no claim to expire")
        expiring, kept = new_run(), new_run()
        await backend.acquire_lease(expiring, "attempt-2", 0.1, attempt=2, expire_after=0.3)
        await backend.acquire_lease(kept, "attempt-2", 0.1, attempt=2)
        await anyio.sleep(0.5)
        await backend.acquire_lease(expiring, "attempt-1", 60, attempt=1)  # no claim left to fence it out
        with pytest.raises(RunClaimed):
            await backend.acquire_lease(kept, "attempt-1", 60, attempt=1)

    @pytest.mark.anyio
    async def test_delete_run(self, backend: Backend, new_run: Callable[[], str]) -> None:
        doomed, kept = new_run(), new_run()
        await backend.append(doomed, [Append(b"d", node="n")])
        await backend.append(kept, [Append(b"k", node="n")])
        await backend.renew_lease(doomed, "p", 60)
        await backend.delete_run(doomed)
        assert await backend.read(doomed, None) == []
        assert await backend.get_node(doomed, "n") is None
        assert await backend.get_lease(doomed) is None
        assert doomed not in await backend.list_runs()
        assert kept in await backend.list_runs()
        await backend.delete_run(doomed)  # again: not an error
        await backend.delete_run(new_run())  # unknown: not an error

    # ------------------------------------------------------------------------------------------ tombstones

    @pytest.mark.anyio
    async def test_a_deleted_run_is_gone_until_appended_again(
        self, backend: Backend, new_run: Callable[[], str]
    ) -> None:
        """With :attr:`Backend.tombstones`, ``run_gone`` tells a deleted run from one never started; an append
        (the run id used again) takes it back. Without, it is always False (the documented default)."""
        run, unknown = new_run(), new_run()
        await backend.append(run, [Append(b"r", node="n")])
        await backend.renew_lease(run, "p", 60)
        assert await backend.run_gone(run) is False  # there
        assert await backend.run_gone(unknown) is False  # never started
        await backend.delete_run(run)
        assert await backend.read(run, None) == []
        assert await backend.run_gone(run) is backend.tombstones
        assert run not in await backend.list_runs()  # a tombstone is not a run
        await backend.delete_run(run)  # deleting it again keeps it gone
        assert await backend.run_gone(run) is backend.tombstones
        await backend.delete_run(unknown)  # a run that never existed leaves no tombstone
        assert await backend.run_gone(unknown) is False
        await backend.append(run, [Append(b"again")])
        assert await backend.run_gone(run) is False
        assert _data(await backend.read(run, None)) == [b"again"]

    @pytest.mark.anyio
    async def test_an_expired_run_is_gone_once_its_keys_are(
        self, backend: Backend, new_run: Callable[[], str]
    ) -> None:
        run, retried = new_run(), new_run()
        for each in (run, retried):
            await backend.append(each, [Append(b"x", node="n")])
            await backend.expire_run(each, 0.2)
        assert await backend.run_gone(run) is False  # its expiry is pending: still there
        await backend.append(retried, [Append(b"y")])  # cancels the expiry and the tombstone with it
        await anyio.sleep(0.4)
        assert await backend.read(run, None) == []
        assert await backend.run_gone(run) is backend.tombstones
        assert await backend.run_gone(retried) is False
        assert _data(await backend.read(retried, None)) == [b"x", b"y"]
        await backend.expire_run(new_run(), 0.1)  # an unknown run: no keys, so no tombstone either
        await anyio.sleep(0.2)
        assert await backend.run_gone(new_run()) is False

    @pytest.mark.anyio
    async def test_a_tombstone_lapses_after_its_period(self, backend: Backend, new_run: Callable[[], str]) -> None:
        if not backend.tombstones:
            pytest.skip("the backend declares no tombstones")
        backend.tombstone_period = 0.3
        deleted, expired, untracked = new_run(), new_run(), new_run()
        for run in (deleted, expired, untracked):
            await backend.append(run, [Append(b"x")])
        await backend.delete_run(deleted)
        await backend.expire_run(expired, 0.2)  # keys gone at 0.2 s, its tombstone at 0.5 s
        await anyio.sleep(0.25)
        assert await backend.run_gone(deleted) is True
        assert await backend.run_gone(expired) is True
        await anyio.sleep(0.45)
        assert await backend.run_gone(deleted) is False  # a bounded marker, not a key kept forever
        assert await backend.run_gone(expired) is False
        backend.tombstone_period = 0  # none at all
        await backend.delete_run(untracked)
        assert await backend.run_gone(untracked) is False

    @pytest.mark.anyio
    async def test_list_runs(self, backend: Backend, new_run: Callable[[], str]) -> None:
        runs = {new_run() for _ in range(5)}
        for run in runs:
            await backend.append(run, [Append(b"x")])
        assert runs <= set(await backend.list_runs())
        assert all(isinstance(run, str) for run in await backend.list_runs())

    @pytest.mark.anyio
    async def test_odd_run_ids(self, backend: Backend) -> None:
        suffix = uuid.uuid4().hex[:6]
        odd = [
            f"a{{b}}c-{suffix}",
            f"}}{{-{suffix}",
            f"50%-{suffix}",
            f"über run/1 {suffix}",
            f"x:y:{{z-{suffix}",
        ]
        for run in odd:
            await backend.append(run, [Append(run.encode(), node="n")])
        for run in odd:
            assert _data(await backend.read(run, None)) == [run.encode()]
            assert await backend.get_node(run, "n") == run.encode()
        assert set(odd) <= set(await backend.list_runs())
        for run in odd:
            await backend.delete_run(run)
        assert not set(odd) & set(await backend.list_runs())
