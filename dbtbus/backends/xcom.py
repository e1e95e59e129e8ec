"""The XCom backend: ``xcom://<dag_id>/<task_id>/<airflow_run_id>`` — a run's records as Airflow XComs.

For one Airflow deployment without Redis. A run lives in XCom rows of a *carrier* task instance (one of the
DAG run's task instances, named by the URL); nothing is ever rewritten as a whole:

=================================  ================================================================
XCom key                           value
=================================  ================================================================
``dbtbus:<run>:head``              ``{"rows": R, "expires": <unix time> | null}``: how many log rows exist
``dbtbus:<run>:row:<n:09d>``       the n-th append: ``[[node | null, data], ...]``, written once
``dbtbus:<run>:lease``             ``{"holder": ..., "expires": <unix time>}``, replaced each heartbeat
=================================  ================================================================

**One row per append call**, not per record: the producer's batch of N records costs two API round trips
(its row, then the head), so a run costs O(batches) single-row writes in total — never a re-serialisation
of the accumulated state (cosmos's O(N²) Variable backup) and never one call per record. A reader sees a
row only once the head counts it, so an append is atomic for readers. The node of each item travels in the
row beside its bytes: :meth:`get_node` answers from an index the backend keeps of the rows it has read,
without parsing a record (the backend stays dumb) and without one XCom key per node.

**No expected misses.** Airflow's API logs every read of a missing XCom at error level. So a reader never
asks for a key that may be absent: rows it reads are counted by the head, and the head itself is created
by the carrier (:class:`dbtbus.airflow.DbtBusCarrierOperator`, or the producer on its own task instance)
before anyone reads it. Inside a task process a missing head is probed quietly (``XCom.get_all``); inside
the triggerer — whose comms have no quiet read — the backend first asks Airflow whether the carrier task
instance has finished (``get_task_states``) and reads the head only then. A carrier that is still running
may not have created the head yet, so a reader in the triggerer needs a carrier that finishes before the
run's records matter: a dedicated :class:`~dbtbus.airflow.DbtBusCarrierOperator`, never the producer's own
task instance (whose run a triggerer reader would see only once the producer ended).

**Liveness never waits behind records.** Appends are serialised among themselves (one writer's rows in
order); the lease is written on its own, so a heartbeat waits at most for the one API call in flight on the
task's comms channel (one call at a time per process, as the Task SDK's comms need), never for a queue of
record writes — and a batch of records is one call, not one per record.

**No tombstones** (:attr:`~dbtbus.backends.base.Backend.tombstones` is false: ``run_gone`` keeps the base
class's ``False``): a run deleted or expired leaves nothing behind, so a waiter that starts after it cannot
tell it from a run not started yet and waits out its timeout. (XComs go with their DAG run anyway.)

**No fenced leases, no fenced appends** (:attr:`~dbtbus.backends.base.Backend.fenced_leases` and
:attr:`~dbtbus.backends.base.Backend.fenced_appends` are false): the lease is read, then written (two API
calls), there is no claim, and :attr:`~dbtbus.backends.base.Append.holder` is ignored. XCom offers no atomic
read-and-write to build a fence on, so a superseded producer (a worker frozen while Airflow retried its task
elsewhere, then thawed) has its records stored until it stops; readers ignore an earlier attempt's records.

Reads go through the Airflow Task SDK (the supervisor's comms channel), so the backend works wherever that
channel exists: inside a running task (the producer writes, a sensor reads) and inside the triggerer (a
deferred sensor's trigger reads). XCom has no push: :meth:`read` polls the head every ``poll`` seconds
(default 0.5 s) — with the bus's one reader per run, one call per poll per run per process. Redis stays the
recommended backend.

The carrier must be a task instance that does not start a new try after the producer started writing:
Airflow deletes a task instance's XComs when it starts a new try. The rendered task group uses a dedicated
carrier task upstream of the producer.

``list_runs`` lists only the run(s) this backend has touched — the Task SDK cannot list XCom keys.
Appends assume one writer per run at a time (the producer), as Airflow's task retries guarantee.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import anyio
import anyio.to_thread

from .._exceptions import BackendError, ConfigurationError, InvalidCursor
from .base import Append, Backend, Entry, Lease

__all__ = ["Carrier", "TaskSdkXComApi", "XComApi", "XComBackend", "is_bare_xcom_url", "resolve_xcom_url", "xcom_url"]

_T = TypeVar("_T")
_KEY_SAFE = "._-+@=,~"


def xcom_url(dag_id: str, task_id: str, run_id: str, *, map_index: int = -1, poll: float | None = None) -> str:
    """The URL of an XCom bus carried by task ``task_id`` of DAG run ``run_id`` of ``dag_id``."""
    query: dict[str, str] = {}
    if map_index != -1:
        query["map_index"] = str(map_index)
    if poll is not None:
        query["poll"] = repr(float(poll))
    base = f"xcom://{quote(dag_id, safe='')}/{quote(task_id, safe='')}/{quote(run_id, safe='')}"
    return f"{base}?{urlencode(query)}" if query else base


def is_bare_xcom_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "xcom" and not parts.netloc and parts.path.strip("/") == ""


def resolve_xcom_url(url: str, *, dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> str:
    """Fill a bare ``xcom://`` (optionally with ``?poll=``) with a carrier; leave any other URL unchanged."""
    if not is_bare_xcom_url(url):
        return url
    query = parse_qs(urlsplit(url).query)
    poll = float(query["poll"][0]) if "poll" in query else None
    return xcom_url(dag_id, task_id, run_id, map_index=map_index, poll=poll)


def _key(*parts: str) -> str:
    return "dbtbus:" + ":".join(quote(p, safe=_KEY_SAFE) for p in parts)


@dataclass(frozen=True)
class Carrier:
    """The task instance whose XCom rows hold the runs."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1


class XComApi(Protocol):
    """What the backend needs from Airflow (blocking calls; the backend runs them in worker threads).

    :class:`TaskSdkXComApi` is the real one; the contract tests use an in-process stand-in.
    """

    def get(self, carrier: Carrier, key: str) -> Any:
        """The value of a key that exists."""

    def get_quiet(self, carrier: Carrier, key: str) -> Any:
        """The value of a key that may be missing (``None``), without Airflow logging an error, if it can."""

    def set(self, carrier: Carrier, key: str, value: Any) -> None: ...

    def delete(self, carrier: Carrier, key: str) -> None: ...

    def carrier_started(self, carrier: Carrier) -> bool:
        """Whether the carrier task instance has run (so the keys it creates exist)."""


class TaskSdkXComApi:
    """The Airflow 3 Task SDK: ``XCom.get_one`` / ``set`` / ``delete`` over the supervisor's comms channel.

    One call at a time per process (``dag.test()``'s in-process comms swap a module global on every call):
    a lock held for one API call, never for a batch, so a heartbeat waits for at most the call in flight.
    """

    # States a task instance reaches only after its ``execute`` ended: a *running* carrier may not have created
    # the head yet (sensors start beside it, not after it), and a read of a missing key is an error line.
    _RAN = frozenset({"success", "failed", "up_for_retry"})
    _lock = threading.Lock()

    @classmethod
    def comms_lock(cls) -> threading.Lock:
        """The lock every Task SDK call of this process takes (shared with dbtbus's other SDK calls)."""
        return cls._lock

    def __init__(self) -> None:
        try:
            from airflow.sdk.execution_time.xcom import XCom
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                f"the xcom:// backend needs Apache Airflow 3: pip install 'dbtbus[airflow]' ({exc})"
            ) from exc
        self._xcom: Any = XCom

    @staticmethod
    def _where(carrier: Carrier) -> dict[str, Any]:
        return {"dag_id": carrier.dag_id, "task_id": carrier.task_id, "run_id": carrier.run_id}

    @staticmethod
    def _in_triggerer() -> bool:
        from airflow.sdk.execution_time import task_runner

        return type(getattr(task_runner, "SUPERVISOR_COMMS", None)).__name__ == "TriggerCommsDecoder"

    def get(self, carrier: Carrier, key: str) -> Any:
        with self._lock:
            return self._xcom.get_one(key=key, map_index=carrier.map_index, **self._where(carrier))

    def get_quiet(self, carrier: Carrier, key: str) -> Any:
        if self._in_triggerer():  # no quiet read there: only asked once the carrier has created the key
            return self.get(carrier, key)
        with self._lock:
            values = self._xcom.get_all(key=key, **self._where(carrier))  # an empty slice, not a logged 404
        if not values:
            return None
        return values[0] if carrier.map_index < 0 or len(values) <= carrier.map_index else values[carrier.map_index]

    def set(self, carrier: Carrier, key: str, value: Any) -> None:
        with self._lock:
            self._xcom.set(key, value, map_index=carrier.map_index, **self._where(carrier))

    def delete(self, carrier: Carrier, key: str) -> None:
        with self._lock:
            self._xcom.delete(key=key, map_index=carrier.map_index, **self._where(carrier))

    def carrier_started(self, carrier: Carrier) -> bool:
        if not self._in_triggerer():
            return True  # a task process reads quietly
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        with self._lock:
            states = RuntimeTaskInstance.get_task_states(
                dag_id=carrier.dag_id, task_ids=[carrier.task_id], run_ids=[carrier.run_id],
                map_index=carrier.map_index if carrier.map_index >= 0 else None,
            )
        found = states.get(carrier.run_id, {})
        return any(str(state) in self._RAN for state in found.values())


def _pack(data: bytes) -> Any:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(data).decode("ascii")}


def _unpack(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and isinstance(value.get("b64"), str):
        return base64.b64decode(value["b64"])
    raise BackendError(f"an XCom row item that dbtbus did not write: {type(value).__name__}")


@dataclass
class _Run:
    """What this process knows of one run: the rows read so far, where each starts, each node's latest data."""

    rows: list[list[tuple[str | None, bytes]]] = field(default_factory=list)
    nodes: dict[str, bytes] = field(default_factory=dict)
    head_seen: bool = False
    #: One fetch of missing rows at a time: concurrent readers of the run (its reader, probes) share it.
    syncing: anyio.Lock = field(default_factory=anyio.Lock)


class XComBackend(Backend):
    """Runs stored as XCom rows on one carrier task instance (see the module docstring)."""

    schemes: tuple[str, ...] = ("xcom",)

    def __init__(self, *, dag_id: str, task_id: str, run_id: str, map_index: int = -1, poll: float = 0.5,
                 api: XComApi | None = None) -> None:
        if poll <= 0:
            raise ConfigurationError("xcom:// poll must be positive")
        self.carrier = Carrier(dag_id, task_id, run_id, map_index)
        self.poll = poll
        self._api = api
        self._runs: dict[str, _Run] = {}
        self._append_lock: anyio.Lock | None = None
        self._carrier_started = False
        self._touched: set[str] = set()

    # Kept for callers that read these (the URL's parts).
    @property
    def dag_id(self) -> str:
        return self.carrier.dag_id

    @property
    def task_id(self) -> str:
        return self.carrier.task_id

    @property
    def airflow_run_id(self) -> str:
        return self.carrier.run_id

    @classmethod
    def from_url(cls, url: str, **options: Any) -> XComBackend:
        parts = urlsplit(url)
        if parts.scheme != "xcom":
            raise ConfigurationError(f"not an xcom:// URL: {url!r}")
        segments = [unquote(s) for s in (parts.netloc, *parts.path.strip("/").split("/")) if s]
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        kwargs: dict[str, Any] = {}
        if len(segments) == 3:
            kwargs.update(dag_id=segments[0], task_id=segments[1], run_id=segments[2])
        elif segments:
            raise ConfigurationError(f"an XCom bus URL is xcom://<dag_id>/<task_id>/<airflow_run_id>, got {url!r}")
        try:
            if "map_index" in query:
                kwargs["map_index"] = int(query.pop("map_index"))
            if "poll" in query:
                kwargs["poll"] = float(query.pop("poll"))
        except ValueError as exc:
            raise ConfigurationError(f"bad xcom:// URL {url!r}: {exc}") from None
        if query:
            raise ConfigurationError(f"unknown xcom:// URL parameters: {sorted(query)}")
        unknown = set(options) - {"dag_id", "task_id", "run_id", "map_index", "poll", "api"}
        if unknown:
            raise ConfigurationError(f"unknown xcom:// options: {sorted(unknown)}")
        kwargs.update(options)
        missing = {"dag_id", "task_id", "run_id"} - set(kwargs)
        if missing:
            raise ConfigurationError(
                "a bare xcom:// URL needs its carrier task instance: the dbtbus Airflow operators fill it in; "
                f"elsewhere use xcom://<dag_id>/<task_id>/<airflow_run_id> (missing {sorted(missing)})"
            )
        return cls(**kwargs)

    # ------------------------------------------------------------------------------------------ plumbing

    async def open(self) -> None:
        if self._api is None:
            self._api = TaskSdkXComApi()
        self._append_lock = anyio.Lock()

    async def _call(self, func: Callable[..., _T], *args: Any) -> _T:
        try:
            return await anyio.to_thread.run_sync(func, *args)
        except (BackendError, anyio.get_cancelled_exc_class()):
            raise
        except Exception as exc:
            raise BackendError(f"XCom call failed: {type(exc).__name__}: {exc}") from exc

    @property
    def api(self) -> XComApi:
        assert self._api is not None, "the backend is not open"
        return self._api

    def _run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = _Run()
        return run

    async def _quiet(self, key: str) -> Any:
        """A key that may be missing, read without an error-level miss (None while the carrier has not run)."""
        if not self._carrier_started:
            self._carrier_started = await self._call(self.api.carrier_started, self.carrier)
            if not self._carrier_started:
                return None
        return await self._call(self.api.get_quiet, self.carrier, key)

    async def _head(self, run_id: str) -> dict[str, Any] | None:
        """The run's head, or None when the run does not exist (yet)."""
        run = self._run(run_id)
        key = _key(run_id, "head")
        value = await (self._call(self.api.get, self.carrier, key) if run.head_seen else self._quiet(key))
        if not isinstance(value, dict):
            return None
        run.head_seen = True
        expires = value.get("expires")
        if isinstance(expires, (int, float)) and expires <= time.time() and int(value.get("rows", 0)):
            await self._delete_rows(run_id, int(value.get("rows", 0)))
            return {"rows": 0, "expires": None}
        return value

    async def ensure_run(self, run_id: str) -> None:
        """Create the run's head if it is missing (the carrier calls this before any reader looks)."""
        assert self._append_lock is not None, "the backend is not open"
        async with self._append_lock:
            head = await self._call(self.api.get_quiet, self.carrier, _key(run_id, "head"))
            if not isinstance(head, dict):
                await self._call(self.api.set, self.carrier, _key(run_id, "lease"), {"holder": "", "expires": 0})
                await self._call(self.api.set, self.carrier, _key(run_id, "head"), {"rows": 0, "expires": None})
            self._run(run_id).head_seen = True

    async def _sync(self, run_id: str, rows: int) -> _Run:
        """Read the rows this process has not seen yet, up to ``rows`` (they all exist: the head counts them)."""
        run = self._run(run_id)
        if rows < len(run.rows):  # deleted or expired behind our back: start over
            self._runs[run_id] = run = _Run(head_seen=True)
        if rows == len(run.rows):
            return run
        async with run.syncing:
            while len(run.rows) < rows:
                n = len(run.rows) + 1
                value = await self._call(self.api.get, self.carrier, _key(run_id, "row", f"{n:09d}"))
                if not isinstance(value, list):
                    raise BackendError(f"XCom row {n} of run {run_id!r} is missing or not a dbtbus row")
                items: list[tuple[str | None, bytes]] = []
                for item in value:
                    node, data = item[0], _unpack(item[1])
                    items.append((node, data))
                    if node is not None:
                        run.nodes[node] = data
                run.rows.append(items)
        return run

    # ------------------------------------------------------------------------------------------ Backend

    async def append(self, run_id: str, items: Sequence[Append]) -> list[str]:
        assert self._append_lock is not None, "the backend is not open"
        if not items:
            return []
        async with self._append_lock:
            run = self._run(run_id)
            head: Any = None
            if run.head_seen:
                head = await self._call(self.api.get, self.carrier, _key(run_id, "head"))
            else:
                head = await self._quiet(_key(run_id, "head"))
            rows = int(head.get("rows", 0)) if isinstance(head, dict) else 0
            expires = head.get("expires") if isinstance(head, dict) else None
            if isinstance(expires, (int, float)) and expires <= time.time() and rows:
                await self._delete_rows(run_id, rows)
                rows = 0
            run = await self._sync(run_id, rows)
            n = rows + 1
            packed = [[item.node, _pack(item.data)] for item in items]
            await self._call(self.api.set, self.carrier, _key(run_id, "row", f"{n:09d}"), packed)
            # Appending cancels a pending expiry (the contract): the head is rewritten without one.
            await self._call(self.api.set, self.carrier, _key(run_id, "head"), {"rows": n, "expires": None})
            run.head_seen = True
            async with run.syncing:
                if len(run.rows) == n - 1:  # a concurrent reader may have fetched the row already
                    run.rows.append([(item.node, item.data) for item in items])
                    for item in items:
                        if item.node is not None:
                            run.nodes[item.node] = item.data
            self._touched.add(run_id)
            return [f"{n}.{i}" for i in range(len(items))]

    @staticmethod
    def _parse_cursor(after: str) -> tuple[int, int]:
        row, sep, index = after.partition(".")
        if not (sep and row.isdigit() and index.isdigit()) or int(row) < 1:
            raise InvalidCursor(f"not an xcom-backend cursor: {after!r}")
        return int(row), int(index)

    async def read(
        self, run_id: str, after: str | None, *, limit: int = 1000, timeout: float | None = 0
    ) -> list[Entry]:
        parsed = None if after is None else self._parse_cursor(after)
        deadline = None if timeout is None else anyio.current_time() + timeout
        while True:
            head = await self._head(run_id)
            run = await self._sync(run_id, int(head.get("rows", 0)) if head else 0)
            position = (1, 0)
            if parsed is not None:
                row, index = parsed
                if row > len(run.rows) or index >= len(run.rows[row - 1]):
                    raise InvalidCursor(f"not a cursor of run {run_id!r}: {after!r}")
                position = (row, index + 1)
            entries: list[Entry] = []
            row, index = position
            while row <= len(run.rows) and len(entries) < limit:
                items = run.rows[row - 1]
                while index < len(items) and len(entries) < limit:
                    entries.append(Entry(f"{row}.{index}", items[index][1]))
                    index += 1
                if index >= len(items):
                    row, index = row + 1, 0
            if entries:
                return entries
            if deadline is not None and anyio.current_time() >= deadline:
                return []
            delay = self.poll if deadline is None else min(self.poll, deadline - anyio.current_time())
            await anyio.sleep(max(delay, 0))

    async def get_node(self, run_id: str, unique_id: str) -> bytes | None:
        head = await self._head(run_id)
        if not head:
            return None
        run = await self._sync(run_id, int(head.get("rows", 0)))
        return run.nodes.get(unique_id)

    async def renew_lease(self, run_id: str, holder: str, ttl: float) -> None:
        # Not under the append lock: a heartbeat never queues behind the producer's record writes.
        await self._call(self.api.set, self.carrier, _key(run_id, "lease"),
                         {"holder": holder, "expires": time.time() + ttl})
        self._touched.add(run_id)

    async def get_lease(self, run_id: str) -> Lease | None:
        value = await self._quiet(_key(run_id, "lease"))
        if not isinstance(value, dict) or not value.get("holder"):
            return None
        remaining = float(value.get("expires", 0)) - time.time()
        return Lease(str(value["holder"]), remaining) if remaining > 0 else None

    async def release_lease(self, run_id: str, holder: str) -> None:
        value = await self._quiet(_key(run_id, "lease"))
        if isinstance(value, dict) and value.get("holder") == holder:
            await self._call(self.api.set, self.carrier, _key(run_id, "lease"), {"holder": "", "expires": 0})

    async def expire_run(self, run_id: str, ttl: float) -> None:
        """Mark the run to vanish ``ttl`` seconds from now (the next reader or writer past then deletes it).

        XComs also go with their DAG run (``airflow db clean``).
        """
        head = await self._head(run_id)
        if not head or not int(head.get("rows", 0)):
            return
        assert self._append_lock is not None, "the backend is not open"
        async with self._append_lock:
            await self._call(self.api.set, self.carrier, _key(run_id, "head"),
                             {"rows": int(head["rows"]), "expires": time.time() + ttl})

    async def _delete_rows(self, run_id: str, rows: int) -> None:
        for n in range(1, rows + 1):
            await self._call(self.api.delete, self.carrier, _key(run_id, "row", f"{n:09d}"))
        await self._call(self.api.set, self.carrier, _key(run_id, "head"), {"rows": 0, "expires": None})
        await self._call(self.api.set, self.carrier, _key(run_id, "lease"), {"holder": "", "expires": 0})
        self._runs[run_id] = _Run(head_seen=True)
        self._touched.discard(run_id)

    async def delete_run(self, run_id: str) -> None:
        run = self._run(run_id)
        key = _key(run_id, "head")
        head = await (self._call(self.api.get, self.carrier, key) if run.head_seen else self._quiet(key))
        if isinstance(head, dict):
            await self._delete_rows(run_id, int(head.get("rows", 0)))
        self._touched.discard(run_id)

    async def list_runs(self) -> list[str]:
        """Only the runs this backend instance touched: the Task SDK cannot list XCom keys."""
        return sorted(self._touched)
