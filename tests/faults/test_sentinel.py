"""Issue #30 item 4: Redis Sentinel. One master, one replica, three sentinels (quorum 2) on loopback, reached
through ``redis+sentinel://``; the master is SIGKILLed while a real dbt build runs.

What must hold: the producer and every waiter carry on against the promoted replica; each waiter's answer is
dbt's own (``target/run_results.json``) or, for a node whose record died with the master before it reached
the replica, ``data_lost`` — never a false final answer; and a record is lost only if dbt finished its node
inside the asynchronous-replication window before the kill (docs/backends.md, "Redis Sentinel").
"""

from __future__ import annotations

import json
import subprocess
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

import dbtbus
from dbtbus.backends import Append, Backend, backend_from_url
from dbtbus.backends._sentinel import MIN_REDIS_PY, _version_tuple
from dbtbus.events import NodeResult
from dbtbus.testing.backend_contract import BackendContract
from dbtbus.testing.redis_server import LOOPBACK, RedisServer, free_port

from ._outcomes import census, until_started
from ._sentinel import SERVICE, SentinelDeployment, SentinelProcess
from .conftest import SlowProject, run_id, slow_project, start_producer

#: dbt's status in run_results.json -> the outcome a waiter must get for that node.
# Below MIN_REDIS_PY dbtbus refuses a Sentinel URL (tests/backends/test_sentinel_url.py proves the refusal): the
# lowest-dependencies suite runs redis-py 7.3, where there is no Sentinel deployment to test.
pytestmark = pytest.mark.skipif(
    _version_tuple(redis.__version__) < MIN_REDIS_PY,
    reason=f"Redis Sentinel needs redis-py >= {MIN_REDIS_PY} (installed {redis.__version__}): refused, tested there",
)

_KIND_OF_STATUS = {"success": "success", "error": "failed", "skipped": "upstream_failed"}
#: Seconds before the kill inside which dbt may have finished a node whose record is then lost: the
#: replication lag (well under a millisecond on loopback) plus the producer's hand-off from dbt's callback to
#: its append, generous for a machine shared with other jobs. A loss of anything older is a failure.
_WINDOW = 1.0


class Answers:
    """Waiters' answers with the wall-clock time each came (``(kind, at)`` per waiter, per node)."""

    def __init__(self) -> None:
        self.got: dict[str, list[tuple[str, float]]] = {}

    async def wait_all(self, bus: dbtbus.Bus, run: str, uids: Sequence[str], per_node: int = 1) -> None:
        async def one(uid: str) -> None:
            try:
                kind = (await bus.outcome(run, uid, timeout=150)).kind.value
            except dbtbus.BackendError as exc:  # reaches a waiter as its class name: never an answer
                kind = type(exc).__name__
            self.got.setdefault(uid, []).append((kind, time.time()))

        async with anyio.create_task_group() as tg:
            for uid in uids:
                for _ in range(per_node):
                    tg.start_soon(one, uid)

    def kinds(self) -> dict[str, list[str]]:
        return {uid: sorted(kind for kind, _ in got) for uid, got in sorted(self.got.items())}


def _dbt_statuses(project: SlowProject) -> dict[str, dict[str, Any]]:
    data = json.loads((project.path / "target" / "run_results.json").read_text())
    return {r["unique_id"]: r for r in data["results"]}


def _completed_at(result: dict[str, Any]) -> float:
    """When dbt finished the node (its last timing's completed_at; a skipped node has none: its start)."""
    from datetime import datetime, timezone

    stamps = [t["completed_at"] for t in result.get("timing", []) if t.get("completed_at")]
    if not stamps:
        return 0.0
    return datetime.fromisoformat(max(stamps).rstrip("Z")).replace(tzinfo=timezone.utc).timestamp()


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["sigkill", "sentinel failover"])
async def test_sentinel_master_failover_mid_run_gives_no_false_answer(tmp_path: Path, fault: str) -> None:
    """``sigkill``: the master dies (SIGKILL); the sentinels promote the replica once they agree it is down.
    ``sentinel failover``: SENTINEL FAILOVER while the master lives: the replica is promoted and the old master
    demoted, so connections still open to it get READONLY (blocked XREADs an UNBLOCKED error) and must move."""
    never = tmp_path / "never-created"
    project = slow_project(tmp_path / "p", chains=2, length=8, sleep=0.6, failing={"c1_4": str(never)})
    run = run_id("sentinel")
    before, during, after = Answers(), Answers(), Answers()
    with SentinelDeployment(tmp_path / "sentinel") as deployment, anyio.fail_after(150):
        url = deployment.url()
        old, replica = deployment.master, deployment.replica
        producer = start_producer(url, run, project, heartbeat=5.0)
        async with dbtbus.connect(url) as bus, anyio.create_task_group() as tg:
            tg.start_soon(before.wait_all, bus, run, project.nodes, 3)
            await until_started(bus, run, nodes=3)
            struck = time.time()
            if fault == "sigkill":
                await anyio.to_thread.run_sync(lambda: old.stop(kill=True))
            else:
                assert "OK" in deployment.sentinels[0].cli("sentinel", "failover", SERVICE)
            # Waiters arriving mid-failover (for a SIGKILL: while the sentinels still name the dead master).
            tg.start_soon(during.wait_all, bus, run, project.nodes, 1)
            await anyio.to_thread.run_sync(deployment.wait_for_master, replica.port)
            promoted = time.time()
            if fault != "sigkill":  # the old master takes writes until the sentinels demote it
                await anyio.to_thread.run_sync(deployment.wait_for_replica, old)
            demoted = time.time() if fault != "sigkill" else struck
            report = await anyio.to_thread.run_sync(producer.result)
        async with dbtbus.connect(url) as late_bus:  # a waiter arriving after the run, on a fresh client
            await after.wait_all(late_bus, run, project.nodes)
        async with dbtbus.connect(url) as reader:
            entries = [(entry.cursor, entry.record) async for entry in reader.history(run)]

    dbt = _dbt_statuses(project)
    expected = {uid: _KIND_OF_STATUS[dbt[uid]["status"]] for uid in project.nodes}
    assert set(expected.values()) == {"success", "failed", "upstream_failed"}, expected  # the run really mixed
    seen = census([record for _, record in entries])
    lost = {uid for uid in project.nodes if seen["per_node"][uid] == 0}
    stored_at: dict[str, float] = {}  # when each node's first record was stored (its stream id's milliseconds)
    for cursor, record in entries:
        if isinstance(record, NodeResult):
            stored_at.setdefault(record.unique_id, int(cursor.split("-")[0]) / 1000)
    # The producer's view: the first record it stored on the promoted replica (once promoted, the final log's
    # records are all the new master's).
    resumed = min((at for at in stored_at.values() if at > promoted), default=None)
    # The waiters' view: how long after a record stored on the new master its last live waiter had it.
    lag = max(
        (at - stored_at[uid] for uid, got in before.got.items() if stored_at.get(uid, 0) > promoted for _, at in got),
        default=None,
    )
    nan = float("nan")
    print(
        f"sentinel {fault}: replica promoted {promoted - struck:.2f} s after the fault, old master out "
        f"{demoted - struck:.2f} s after it; the producer's first record on the new master "
        f"{resumed - struck if resumed else nan:.2f} s after it; live waiters had those records within "
        f"{lag if lag is not None else nan:.3f} s; records lost: {len(lost)} {sorted(lost)}"
    )
    for answers, per_node in ((before, 3), (during, 1), (after, 1)):
        assert sorted(answers.got) == sorted(project.nodes)
        for uid, kinds in answers.kinds().items():
            # A waiter may have had a lost record's true answer before the loss; otherwise it hears data_lost.
            allowed = {expected[uid], "data_lost"} if uid in lost else {expected[uid]}
            assert len(kinds) == per_node and set(kinds) <= allowed, (uid, kinds, dbt[uid]["status"], sorted(lost))
    for uid in lost:  # only what dbt finished inside the window may be lost
        assert struck - _WINDOW < _completed_at(dbt[uid]) < demoted + _WINDOW, (uid, dbt[uid]["timing"], struck)
    assert resumed is not None  # the producer carried on against the promoted replica...
    assert report.get("crashed") is False and report.get("exit_code") == 1, report  # ...to dbt's own end
    # It noticed the master change, took it for a possible loss and republished its start and every terminal
    # record: whatever the old master had not replicated is back, so in the end nothing is lost.
    assert (report.get("claims_lost") or 0) >= 1 and "failover" in report["stderr"], report
    assert not lost, sorted(lost)
    assert seen["ended"] == 1 and len(seen["producers"]) == 1, seen


# ---------------------------------------------------------------------------------------------- contract


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelDeployment]:
    with SentinelDeployment(tmp_path_factory.mktemp("sentinel")) as running:
        yield running


class TestSentinelBackendContract(BackendContract):
    """The public backend contract, through the sentinels (no failover: the same guarantees, read and written
    on the master they name)."""

    blocking_slack = 0.3

    @pytest.fixture
    async def backend(self, deployment: SentinelDeployment) -> AsyncIterator[Backend]:
        backend = backend_from_url(deployment.url(), prefix=f"t{uuid.uuid4().hex[:10]}:")
        await backend.open()
        try:
            yield backend
        finally:
            with anyio.CancelScope(shield=True):
                for run in await backend.list_runs():
                    await backend.delete_run(run)
                await backend.aclose()


def _ours(port: int) -> int:
    """dbtbus's connections to the server or sentinel on ``port`` (they carry the client name ``dbtbus``)."""
    lines = subprocess.run(["redis-cli", "-p", str(port), "client", "list"], capture_output=True, text=True,
                           check=True).stdout.splitlines()  # fmt: skip
    return sum(" name=dbtbus " in f" {line} " for line in lines)


@pytest.mark.anyio
async def test_closing_the_backend_closes_its_connections_to_the_sentinels_and_the_master(
    deployment: SentinelDeployment,
) -> None:
    ports = [s.port for s in deployment.sentinels] + [deployment.master.port]
    backend = backend_from_url(deployment.url(), prefix=f"t{uuid.uuid4().hex[:10]}:")
    await backend.open()
    await backend.append("r", [Append(b"x", key="k")])
    assert [e.data for e in await backend.read("r", None, timeout=0.1)] == [b"x"]
    assert sum(_ours(port) for port in ports[:3]) >= 1 and _ours(ports[3]) >= 1  # it talked to both kinds
    await backend.delete_run("r")
    await backend.aclose()
    assert await anyio.to_thread.run_sync(_settled, ports) == [0, 0, 0, 0]


def _settled(ports: list[int], timeout: float = 10) -> list[int]:
    """dbtbus's connections to each port once none is left (or at ``timeout``): a server notices a closed
    socket at its next event loop turn, so the counts are polled, not read once."""
    deadline = time.monotonic() + timeout
    while any(now := [_ours(port) for port in ports]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return now


@pytest.mark.anyio
async def test_sentinels_refusing_the_credentials_fail_at_once_and_show_no_secret(tmp_path: Path) -> None:
    """A wrong or missing sentinel_password is final (AuthenticationFailed, not retried), as for redis://;
    redis-py alone reports it as "no master found", a connection error the backend would retry forever."""
    secret, wrong = "s3nt1nel-Pw-4k", "wr0ng-Pw-9z"
    sentinel = SentinelProcess(tmp_path / "s", free_port(), down_after_ms=1000, failover_timeout_ms=3000,
                               extra=f"requirepass {secret}")  # fmt: skip
    sentinel.start()
    try:
        for given, expected in ((wrong, dbtbus.AuthenticationFailed), (None, dbtbus.AuthenticationFailed),
                                (secret, dbtbus.BackendUnavailable)):  # fmt: skip
            query = f"sentinel_password={given}&" if given else ""
            url = f"redis+sentinel://{LOOPBACK}:{sentinel.port}/{SERVICE}/0?{query}retries=1&socket_connect_timeout=0.5"
            backend = backend_from_url(url)
            await backend.open()
            started = time.monotonic()
            try:
                with pytest.raises(dbtbus.BackendError) as caught:
                    await backend.append("r", [Append(b"x")])
            finally:
                await backend.aclose()
            text = repr(caught.value) + "".join(traceback.format_exception(caught.value))
            assert type(caught.value) is expected, (given, text[-2000:])
            assert time.monotonic() - started < 5, given  # at once: refused, not retried
            assert secret not in text and wrong not in text
    finally:
        sentinel.stop()


@pytest.mark.anyio
async def test_a_sentinel_acl_user_needs_exactly_sentinel_masters_and_client_setname(tmp_path: Path) -> None:
    """docs/backends.md's rule for sentinels with ACLs: ``+sentinel|masters +client|setname`` is enough for a
    whole append and read; without ``sentinel|masters`` the user is refused at once (PermissionDenied)."""
    master_dir = tmp_path / "master"
    master_dir.mkdir()
    with RedisServer(directory=master_dir) as master:
        rules = {"enough": "+sentinel|masters +client|setname", "without masters": "+client|setname"}
        users = "\n".join(f"user u{i} on >pw{i} -@all {rule}" for i, rule in enumerate(rules.values()))
        sentinel = SentinelProcess(tmp_path / "s", master.port, down_after_ms=1000, failover_timeout_ms=3000,
                                   quorum=1, extra=users)  # fmt: skip
        sentinel.start()
        try:
            for i, name in enumerate(rules):
                url = (f"redis+sentinel://{LOOPBACK}:{sentinel.port}/{SERVICE}/0"
                       f"?sentinel_username=u{i}&sentinel_password=pw{i}&retries=1")  # fmt: skip
                backend = backend_from_url(url, prefix=f"t{uuid.uuid4().hex[:10]}:")
                await backend.open()
                try:
                    if name == "enough":
                        await backend.append("r", [Append(b"x", key="k")])
                        assert [e.data for e in await backend.read("r", None, timeout=0.1)] == [b"x"]
                        await backend.delete_run("r")
                    else:
                        started = time.monotonic()
                        with pytest.raises(dbtbus.PermissionDenied):
                            await backend.append("r", [Append(b"x")])
                        assert time.monotonic() - started < 5  # refused, not retried
                finally:
                    await backend.aclose()
        finally:
            sentinel.stop()
