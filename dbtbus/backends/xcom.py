"""The XCom backend: ``xcom://<dag_id>/<task_id>/<airflow_run_id>`` — a run's records as Airflow XComs.

For one Airflow deployment without Redis. Every record is its own XCom row on a *carrier* task instance
(one of the DAG run's task instances, named by the URL); nothing is ever rewritten as a whole:

=================================  ================================================================
XCom key                           value
=================================  ================================================================
``dbtbus:<run>:log:<seq:09d>``     the seq-th record of the run's log (a JSON string), written once
``dbtbus:<run>:node:<unique_id>``  the node's latest terminal record (replaced: one row per node)
``dbtbus:<run>:lease``             ``{"holder": ..., "expires": <unix time>}``, replaced each heartbeat
=================================  ================================================================

So a run of N nodes costs O(N) single-row writes in total — one log row per record plus one node row per
terminal record — never a re-serialisation of the accumulated state (cosmos's O(N²) Variable backup).

Reads go through the Airflow Task SDK (``XCom.get_one``/``XCom.set`` over the supervisor's comms channel),
so the backend works wherever that channel exists: inside a running task (the producer writes, a sensor
reads) and inside the triggerer (a deferred sensor's trigger reads). It does **not** work in a plain
process outside Airflow. XCom has no push: :meth:`read` polls the next log key every ``poll`` seconds
(default 0.5 s), one API call per poll per run reader. Redis stays the recommended backend.

The carrier must be a task instance that does not run (and so does not have its XComs cleared by Airflow)
after the producer started writing: Airflow deletes a task instance's XComs when it starts a new try. The
rendered task group uses a dedicated ``EmptyOperator`` upstream of the producer; a producer used on its own
carries the log on its own task instance, which loses the log on a producer retry (no resume then).

``expire_run`` is a no-op (XComs live as long as the DAG run; ``airflow db clean`` removes them) and
``list_runs`` lists only the run(s) this backend has touched — the Task SDK cannot list XCom keys.
Appends assume one writer per run at a time (the producer), as Airflow's task retries guarantee.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import anyio
import anyio.to_thread
import orjson

from .._exceptions import BackendError, ConfigurationError, InvalidCursor
from .base import Append, Backend, Entry, Lease

__all__ = ["XComBackend", "resolve_xcom_url", "xcom_url"]

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


class XComBackend(Backend):
    """Runs stored as XCom rows on one carrier task instance (see the module docstring)."""

    schemes: tuple[str, ...] = ("xcom",)

    #: One lock per process: the task runner's comms channel is shared by every thread of the task.
    _lock = threading.Lock()

    def __init__(self, *, dag_id: str, task_id: str, run_id: str, map_index: int = -1, poll: float = 0.5) -> None:
        if poll <= 0:
            raise ConfigurationError("xcom:// poll must be positive")
        self.dag_id = dag_id
        self.task_id = task_id
        self.airflow_run_id = run_id
        self.map_index = map_index
        self.poll = poll
        self._next_seq: dict[str, int] = {}
        self._append_lock: anyio.Lock | None = None
        self._xcom: Any = None
        self._touched: set[str] = set()

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
        unknown = set(options) - {"dag_id", "task_id", "run_id", "map_index", "poll"}
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
        try:
            from airflow.sdk.bases.xcom import BaseXCom
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                f"the xcom:// backend needs Apache Airflow 3: pip install 'dbtbus[airflow]' ({exc})"
            ) from exc
        try:
            from airflow.sdk.execution_time.xcom import XCom

            self._xcom = XCom
        except ImportError:  # pragma: no cover - older task SDKs
            self._xcom = BaseXCom
        self._append_lock = anyio.Lock()

    async def _call(self, func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        def call() -> _T:
            with self._lock:
                return func(*args, **kwargs)

        try:
            return await anyio.to_thread.run_sync(call)
        except (BackendError, anyio.get_cancelled_exc_class()):
            raise
        except Exception as exc:
            raise BackendError(f"XCom call failed: {type(exc).__name__}: {exc}") from exc

    def _where(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id, "task_id": self.task_id, "run_id": self.airflow_run_id, "map_index": self.map_index
        }

    async def _get(self, key: str) -> Any:
        return await self._call(self._xcom.get_one, key=key, **self._where())

    async def _set(self, key: str, value: Any) -> None:
        await self._call(self._xcom.set, key, value, **self._where())

    async def _delete(self, key: str) -> None:
        await self._call(self._xcom.delete, key=key, **self._where())

    @staticmethod
    def _bytes(value: Any) -> bytes:
        if isinstance(value, str):
            return value.encode("utf-8", "surrogateescape")
        return orjson.dumps(value)  # a value some other tool stored as JSON

    async def _has(self, run_id: str, seq: int) -> bool:
        return await self._get(_key(run_id, "log", f"{seq:09d}")) is not None

    async def _log_length(self, run_id: str) -> int:
        """Find how many log entries exist: exponential probe then binary search (O(log N) lookups)."""
        if not await self._has(run_id, 1):
            return 0
        low, high = 1, 2
        while await self._has(run_id, high):
            low, high = high, high * 2
        while high - low > 1:  # entries 1..low exist, high does not
            mid = (low + high) // 2
            if await self._has(run_id, mid):
                low = mid
            else:
                high = mid
        return low

    # ------------------------------------------------------------------------------------------ Backend

    async def append(self, run_id: str, items: Sequence[Append]) -> list[str]:
        assert self._append_lock is not None, "the backend is not open"
        async with self._append_lock:
            seq = self._next_seq.get(run_id)
            if seq is None:
                seq = await self._log_length(run_id)
            cursors = []
            for item in items:
                text = item.data.decode("utf-8", "surrogateescape")
                if item.node is not None:  # the node key first: a reader that sees the log entry finds it
                    await self._set(_key(run_id, "node", item.node), text)
                seq += 1
                await self._set(_key(run_id, "log", f"{seq:09d}"), text)
                self._next_seq[run_id] = seq
                cursors.append(str(seq))
            self._touched.add(run_id)
            return cursors

    async def read(
        self, run_id: str, after: str | None, *, limit: int = 1000, timeout: float | None = 0
    ) -> list[Entry]:
        if after is None:
            start = 0
        elif after.isdigit():
            start = int(after)
        else:
            raise InvalidCursor(f"not an xcom-backend cursor: {after!r}")
        deadline = None if timeout is None else anyio.current_time() + timeout
        while True:
            entries: list[Entry] = []
            seq = start
            while len(entries) < limit:
                value = await self._get(_key(run_id, "log", f"{seq + 1:09d}"))
                if value is None:
                    break
                seq += 1
                entries.append(Entry(str(seq), self._bytes(value)))
            if entries:
                return entries
            if deadline is not None and anyio.current_time() >= deadline:
                return []
            delay = self.poll if deadline is None else min(self.poll, deadline - anyio.current_time())
            await anyio.sleep(max(delay, 0))

    async def get_node(self, run_id: str, unique_id: str) -> bytes | None:
        value = await self._get(_key(run_id, "node", unique_id))
        return None if value is None else self._bytes(value)

    async def renew_lease(self, run_id: str, holder: str, ttl: float) -> None:
        await self._set(_key(run_id, "lease"), {"holder": holder, "expires": time.time() + ttl})

    async def get_lease(self, run_id: str) -> Lease | None:
        value = await self._get(_key(run_id, "lease"))
        if not isinstance(value, dict) or not value.get("holder"):
            return None
        remaining = float(value.get("expires", 0)) - time.time()
        return Lease(str(value["holder"]), remaining) if remaining > 0 else None

    async def release_lease(self, run_id: str, holder: str) -> None:
        lease = await self.get_lease(run_id)
        if lease is not None and lease.holder == holder:
            await self._set(_key(run_id, "lease"), {"holder": "", "expires": 0})

    async def expire_run(self, run_id: str, ttl: float) -> None:
        """No-op: XComs live as long as their DAG run (``airflow db clean`` removes them)."""

    async def delete_run(self, run_id: str) -> None:
        length = await self._log_length(run_id)
        nodes: set[str] = set()
        for seq in range(1, length + 1):
            key = _key(run_id, "log", f"{seq:09d}")
            value = await self._get(key)
            try:
                record = orjson.loads(self._bytes(value)) if value is not None else None
            except orjson.JSONDecodeError:
                record = None
            if isinstance(record, dict) and record.get("type") == "node_result":
                nodes.add(str(record.get("unique_id")))
            await self._delete(key)
        for node in nodes:
            await self._delete(_key(run_id, "node", node))
        await self._delete(_key(run_id, "lease"))
        self._next_seq.pop(run_id, None)
        self._touched.discard(run_id)

    async def list_runs(self) -> list[str]:
        """Only the runs this backend instance touched: the Task SDK cannot list XCom keys."""
        return sorted(self._touched)
