"""The Redis Streams backend: ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs, one server or a cluster.

Layout of one run (all its keys share the hash tag ``{<run_id>}``, so a run lives on one Redis Cluster slot)::

    <prefix>{<run_id>}:log     STREAM  every record, one entry each, field ``d`` = the encoded record
    <prefix>{<run_id>}:nodes   HASH    unique_id -> the node's latest terminal record (late waiter: one HGET)
    <prefix>{<run_id>}:lease   STRING  the producer's liveness lease: holder, with a PX expiry
    <prefix>runs               ZSET    run index for list_runs: score = expiry (ms since epoch), +inf = kept

Node records live in one HASH rather than one key per node: a run has a fixed set of three keys, so
``expire_run`` and ``delete_run`` touch them without tracking node keys, and Redis spends less memory.
The run index is the one key outside the run's slot; on a cluster it is written with a separate command.

Every write is one server-side Lua script (one round trip, atomic — readers see a batch all or none): an
append XADDs each item (``MAXLEN ~ cap``), HSETs the node records of the batch and PERSISTs the run's
keys. Concurrent appends to one run coalesce (``coalesce=true``, the default): while a script call is in
flight the next calls queue, then go together in one call (each call's items contiguous, in order).

Reads are ``XREAD [BLOCK ms] COUNT n STREAMS log <cursor>``; cursors are stream IDs. A blocking read takes a
dedicated connection from its own pool for at most ``block_ms`` per round trip (longer waits loop), so
blocked readers never starve the commands of the producer and of ``get_node``. The bus runs one reader per
run, so 10,000 waiters on a run still mean one blocked connection.

Failures: redis-py retries a command ``retries`` times on connection errors and timeouts (exponential
backoff with jitter, capped at 1 s); after that the backend raises :class:`dbtbus.BackendUnavailable` —
promptly, within roughly ``socket_connect_timeout`` plus the backoff when the server is down — and any
other Redis error as :class:`dbtbus.BackendError`. The bus's reader then retries from the same cursor, so
readers lose nothing and deliver nothing twice. A write that failed after the server executed it but
before the reply arrived may be applied twice if the caller retries it (at-least-once appends); the bus
treats a repeated terminal record of a node as the same outcome.

URL options (query string; keyword options to ``dbtbus.connect`` override them): ``prefix`` (default
``dbtbus:``), ``maxlen`` (stream cap, default 1,000,000, 0 = none), ``block_ms`` (longest BLOCK per read
round trip, default 1000), ``cluster=true`` (Redis Cluster), ``retries`` (default 3), ``max_blocking``
(blocking-read connections, default 1000), ``retention`` (seconds a finished run is kept, default 7 days —
exposed as :attr:`RedisBackend.default_retention` for the producer), ``db``, ``username``, ``password``,
``coalesce`` (default true), ``socket_timeout``, ``socket_connect_timeout`` (default 2 s),
``max_connections`` (default 64; callers beyond it wait for a free connection), ``client_name``,
``health_check_interval`` and, for ``rediss://``, ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_cert_reqs`` (none/optional/required) and ``ssl_check_hostname``.

redis-py's asyncio client is asyncio-only: use this backend under asyncio (anyio on its asyncio backend).
List and delete runs from a shell with ``python -m dbtbus.backends.redis list|delete URL [RUN_ID...]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import anyio
import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from .._exceptions import BackendError, BackendUnavailable, ConfigurationError, InvalidCursor
from ._redis_url import DEFAULT_RETENTION, RedisSettings, parse_redis_url
from .base import Append, Backend, Entry, Lease

__all__ = ["RedisBackend"]

_CURSOR: Final = re.compile(r"\d{1,20}-\d{1,20}")
_FIELD: Final = b"d"
#: Connections of the pool serving every non-blocking command (``max_connections`` overrides it).
_DEFAULT_MAX_CONNECTIONS: Final = 64
#: HSET fields flushed per call inside the append script (Lua's unpack() has a stack limit).
_HSET_CHUNK: Final = 1000

_APPEND: Final = """
local log, nodes = KEYS[1], KEYS[2]
local maxlen = tonumber(ARGV[1])
local ids, fields, nf = {}, {}, 0
local n = 0
for i = 3, #ARGV, 2 do
  local data = ARGV[i + 1]
  n = n + 1
  if maxlen > 0 then
    ids[n] = redis.call('XADD', log, 'MAXLEN', '~', maxlen, '*', 'd', data)
  else
    ids[n] = redis.call('XADD', log, '*', 'd', data)
  end
  local node = ARGV[i]
  if node ~= '' then
    fields[nf + 1] = string.sub(node, 2)
    fields[nf + 2] = data
    nf = nf + 2
    if nf >= HSET_CHUNK then
      redis.call('HSET', nodes, unpack(fields, 1, nf))
      nf = 0
    end
  end
end
if nf > 0 then redis.call('HSET', nodes, unpack(fields, 1, nf)) end
redis.call('PERSIST', log)
redis.call('PERSIST', nodes)
if #KEYS > 2 then redis.call('ZADD', KEYS[3], 'inf', ARGV[2]) end
return ids
""".replace("HSET_CHUNK", str(2 * _HSET_CHUNK))

_RENEW_LEASE: Final = """
local ms = tonumber(ARGV[2])
if ms > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ms) else redis.call('DEL', KEYS[1]) end
if #KEYS > 1 and ms > 0 then redis.call('ZADD', KEYS[2], 'GT', ARGV[4], ARGV[3]) end
return 1
"""

_GET_LEASE: Final = "return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}"

_RELEASE_LEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# The lease keeps its own, shorter expiry (LT): expiring a run must never make a dead producer look alive.
_EXPIRE_RUN: Final = """
local ms = tonumber(ARGV[1])
redis.call('PEXPIRE', KEYS[1], ms)
redis.call('PEXPIRE', KEYS[2], ms)
redis.call('PEXPIRE', KEYS[3], ms, 'LT')
if #KEYS > 3 then redis.call('ZADD', KEYS[4], 'XX', ARGV[3], ARGV[2]) end
return 1
"""

_DELETE_RUN: Final = """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if #KEYS > 3 then redis.call('ZREM', KEYS[4], ARGV[1]) end
return 1
"""

_LIST_RUNS: Final = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

_UNAVAILABLE: Final = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.ClusterDownError,
    rexc.TryAgainError,
    rexc.MasterDownError,
    OSError,
)


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


def _tag(run_id: str) -> str:
    """The run id as it appears inside the key's hash tag: braces (and ``%``) percent-escaped."""
    if not isinstance(run_id, str) or not run_id:
        raise ConfigurationError(f"a run id must be a non-empty string, got {run_id!r}")
    if "{" in run_id or "}" in run_id or "%" in run_id:
        return run_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return run_id


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ms(seconds: float) -> int:
    return max(0, math.ceil(seconds * 1000)) if seconds < math.inf else 2**62


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _parse_xread(response: Any) -> list[Entry]:
    if not response:
        return []
    # RESP3 with legacy_responses=False: {stream: [...]}; otherwise [[stream, [(id, {field: value}), ...]]]
    items = next(iter(response.values())) if isinstance(response, dict) else response[0][1]
    entries = []
    for entry_id, fields in items:
        if isinstance(fields, dict):
            data = fields.get(_FIELD)
        else:  # a flat [field, value, ...] list
            data = dict(zip(fields[::2], fields[1::2], strict=False)).get(_FIELD)
        if data is not None:
            entries.append(Entry(_text(entry_id), data))
    return entries


_LEAD: Final = object()  # the result handed to a queued append that is to send the next batch
#: Most items one coalesced script call carries (a longer script would hold up the server).
_COALESCE_MAX: Final = 5000


class _Call:
    __slots__ = ("future", "items")

    def __init__(self, items: Sequence[Append], future: asyncio.Future[Any]) -> None:
        self.items = items
        self.future = future


class _Group:
    """The appends of one run waiting for (or sending) a script call."""

    __slots__ = ("busy", "pending")

    def __init__(self) -> None:
        self.pending: deque[_Call] = deque()
        self.busy = False


class RedisBackend(Backend):
    """Runs stored in Redis Streams. Build it with :func:`dbtbus.connect` or :meth:`from_url`."""

    schemes = ("redis", "rediss", "unix")
    #: How long (seconds) a finished run is kept by default: the producer passes it to ``expire_run``.
    default_retention: float = DEFAULT_RETENTION

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.prefix = settings.prefix
        self.maxlen = settings.maxlen
        self.block_ms = settings.block_ms
        self.cluster = settings.cluster
        self.default_retention = settings.retention
        self.index_key = f"{settings.prefix}runs"
        self._client: Any = None  # redis.asyncio.Redis | RedisCluster
        self._blocking: Any = None  # the client whose connections serve blocking reads
        self._closed = False
        self.coalesce = settings.coalesce
        self._groups: dict[str, _Group] = {}

    def __repr__(self) -> str:
        return f"<RedisBackend {self.settings.display_url} prefix={self.prefix!r}>"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBackend:
        return cls(parse_redis_url(url, options))

    # ------------------------------------------------------------------------------------------ keys

    def log_key(self, run_id: str) -> str:
        return f"{self.prefix}{{{_tag(run_id)}}}:log"

    def nodes_key(self, run_id: str) -> str:
        return f"{self.prefix}{{{_tag(run_id)}}}:nodes"

    def lease_key(self, run_id: str) -> str:
        return f"{self.prefix}{{{_tag(run_id)}}}:lease"

    def _run_keys(self, run_id: str) -> list[str]:
        tag = _tag(run_id)
        base = f"{self.prefix}{{{tag}}}"
        return [f"{base}:log", f"{base}:nodes", f"{base}:lease"]

    # ------------------------------------------------------------------------------------------ lifecycle

    def _client_kwargs(self, socket_timeout: float) -> dict[str, Any]:
        s = self.settings
        kwargs: dict[str, Any] = {
            "client_name": "dbtbus",
            **{key: value for key, value in s.client.items() if key != "max_connections"},
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": s.socket_connect_timeout,
            "decode_responses": False,
            "retry": Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), s.retries),
        }
        if s.scheme != "unix":
            kwargs["socket_keepalive"] = True
        return kwargs

    async def open(self) -> None:
        import sniffio

        if sniffio.current_async_library() != "asyncio":
            raise ConfigurationError("the Redis backend runs on asyncio only (redis-py's asyncio client)")
        if self._client is not None:
            return
        s = self.settings
        # A blocked XREAD must return (after at most block_ms) before its socket times out.
        blocking_timeout = s.socket_timeout + s.block_ms / 1000
        max_connections = s.client.get("max_connections", _DEFAULT_MAX_CONNECTIONS)
        if s.cluster:
            self._client = RedisCluster.from_url(
                s.url, max_connections=max_connections, **self._client_kwargs(s.socket_timeout)
            )
            self._blocking = RedisCluster.from_url(s.url, **self._client_kwargs(blocking_timeout))
        else:
            # A burst of commands (many probes of late waiters) queues for a connection instead of failing
            # with MaxConnectionsError, as redis-py's default pool does.
            pool = aioredis.BlockingConnectionPool.from_url(
                s.url,
                max_connections=max_connections,
                timeout=s.socket_timeout,
                **self._client_kwargs(s.socket_timeout),
            )
            self._client = aioredis.Redis(connection_pool=pool)
            # Its own pool: waits for a free connection instead of failing when max_blocking readers block.
            blocking_pool = aioredis.BlockingConnectionPool.from_url(
                s.url, max_connections=s.max_blocking, timeout=None, **self._client_kwargs(blocking_timeout)
            )
            self._blocking = aioredis.Redis(connection_pool=blocking_pool)

    async def aclose(self) -> None:
        self._closed = True
        clients, self._client, self._blocking = (self._client, self._blocking), None, None
        for client in clients:
            if client is not None:
                with contextlib.suppress(Exception):  # closing a broken connection must not raise
                    await client.aclose()

    def _require(self) -> Any:
        if self._client is None:
            state = "closed" if self._closed else "not open"
            raise BackendError(f"the Redis backend {self.settings.display_url} is {state}")
        return self._client

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (BackendError, ConfigurationError):
            raise
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(
                f"Redis at {self.settings.display_url} is unreachable ({what}): {_describe(exc)}"
            ) from exc
        except rexc.RedisError as exc:
            raise BackendError(
                f"Redis at {self.settings.display_url} failed ({what}): {_describe(exc)}"
            ) from exc

    async def _script(self, client: Any, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        sha = _SHAS[script]
        try:
            return await client.evalsha(sha, len(keys), *keys, *args)
        except rexc.NoScriptError:  # first use on this server (or it restarted): send the source once
            return await client.eval(script, len(keys), *keys, *args)

    def _index_in_script(self) -> bool:
        return not self.cluster

    # ------------------------------------------------------------------------------------------ writing

    async def append(self, run_id: str, items: Sequence[Append]) -> list[str]:
        self._run_keys(run_id)  # validates the run id before queueing anything
        if not items:
            return []
        self._require()
        if not self.coalesce:
            return await self._append_now(run_id, items)
        # Concurrent appends to one run coalesce: while one script call is in flight, later calls queue
        # and the next one to go sends them all in one round trip (each call's items stay contiguous and
        # in order). One caller at a time is the "leader" that talks to Redis; it hands over when done.
        group = self._groups.get(run_id)
        if group is None:
            group = self._groups[run_id] = _Group()
        call = _Call(items, asyncio.get_running_loop().create_future())
        group.pending.append(call)
        if group.busy:
            try:
                outcome = await call.future
            except asyncio.CancelledError:
                if call in group.pending:
                    group.pending.remove(call)
                if call.future.done() and not call.future.cancelled() and call.future.result() is _LEAD:
                    self._hand_over(run_id, group)
                raise
            if outcome is not _LEAD:
                cursors: list[str] = outcome
                return cursors
        group.busy = True
        try:
            return await self._lead(run_id, group, call)
        finally:
            self._hand_over(run_id, group)

    async def _lead(self, run_id: str, group: _Group, own: _Call) -> list[str]:
        batch: list[_Call] = []
        size = 0
        while group.pending and (not batch or size + len(group.pending[0].items) <= _COALESCE_MAX):
            call = group.pending.popleft()
            batch.append(call)
            size += len(call.items)
        if own not in batch:  # cannot happen: the leader's own call is first in line
            raise BackendError("internal error: an append leader lost its own call")
        try:
            ids = await self._append_now(run_id, [item for call in batch for item in call.items])
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else BackendUnavailable(
                "the append was interrupted and may or may not have been applied"
            )
            for call in batch:
                if call is not own and not call.future.done():
                    call.future.set_exception(error)
            raise
        result: list[str] = []
        offset = 0
        for call in batch:
            part = ids[offset : offset + len(call.items)]
            offset += len(call.items)
            if call is own:
                result = part
            elif not call.future.done():
                call.future.set_result(part)
        return result

    def _hand_over(self, run_id: str, group: _Group) -> None:
        group.busy = False
        while group.pending:
            successor = group.pending[0]
            if successor.future.done():  # cancelled while queued
                group.pending.popleft()
                continue
            group.busy = True
            successor.future.set_result(_LEAD)
            return
        if self._groups.get(run_id) is group:
            del self._groups[run_id]

    async def _append_now(self, run_id: str, items: Sequence[Append]) -> list[str]:
        client = self._require()
        keys = self._run_keys(run_id)[:2]
        args: list[Any] = [self.maxlen, run_id]
        for item in items:
            args.append("" if item.node is None else "+" + item.node)
            args.append(item.data)
        with self._errors("append"):
            if self._index_in_script():
                ids = await self._script(client, _APPEND, [*keys, self.index_key], args)
            else:
                # The index lives on another slot: write it in parallel, not in the same script.
                ids, _ = await asyncio.gather(
                    self._script(client, _APPEND, keys, args), client.zadd(self.index_key, {run_id: math.inf})
                )
        return [_text(entry_id) for entry_id in ids]

    async def renew_lease(self, run_id: str, holder: str, ttl: float) -> None:
        client = self._require()
        keys = [self.lease_key(run_id)]
        ms = _ms(ttl) if ttl > 0 else 0
        args = [holder, ms, run_id, _now_ms() + ms]
        with self._errors("renew_lease"):
            if self._index_in_script():
                await self._script(client, _RENEW_LEASE, [*keys, self.index_key], args)
            else:
                await self._script(client, _RENEW_LEASE, keys, args)
                if ms > 0:
                    await client.zadd(self.index_key, {run_id: args[3]}, gt=True)

    async def release_lease(self, run_id: str, holder: str) -> None:
        client = self._require()
        with self._errors("release_lease"):
            await self._script(client, _RELEASE_LEASE, [self.lease_key(run_id)], [holder])

    async def expire_run(self, run_id: str, ttl: float) -> None:
        client = self._require()
        keys = self._run_keys(run_id)
        ms = _ms(ttl) if ttl > 0 else 0
        args = [ms, run_id, _now_ms() + ms]
        with self._errors("expire_run"):
            if self._index_in_script():
                await self._script(client, _EXPIRE_RUN, [*keys, self.index_key], args)
            else:
                await self._script(client, _EXPIRE_RUN, keys, args)
                await client.zadd(self.index_key, {run_id: args[2]}, xx=True)

    async def delete_run(self, run_id: str) -> None:
        client = self._require()
        keys = self._run_keys(run_id)
        with self._errors("delete_run"):
            if self._index_in_script():
                await self._script(client, _DELETE_RUN, [*keys, self.index_key], [run_id])
            else:
                await self._script(client, _DELETE_RUN, keys, [run_id])
                await client.zrem(self.index_key, run_id)

    # ------------------------------------------------------------------------------------------ reading

    async def read(
        self,
        run_id: str,
        after: str | None,
        *,
        limit: int = 1000,
        timeout: float | None = 0,
    ) -> list[Entry]:
        if after is None:
            start = "0-0"
        elif isinstance(after, str) and _CURSOR.fullmatch(after):
            start = after
        else:
            raise InvalidCursor(f"not a Redis stream cursor: {after!r}")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        key = self.log_key(run_id)
        client = self._require()
        if timeout is not None and timeout <= 0:
            with self._errors("read"):
                return _parse_xread(await client.xread({key: start}, count=limit))
        blocking = self._blocking
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        target = self._target(blocking, key)
        while True:
            remaining = deadline - anyio.current_time()
            block = (
                self.block_ms if remaining >= self.block_ms / 1000 else max(1, math.ceil(remaining * 1000))
            )
            with self._errors("read"):
                if target:
                    response = await blocking.execute_command(
                        "XREAD", "COUNT", limit, "BLOCK", block, "STREAMS", key, start, **target
                    )
                else:
                    response = await blocking.xread({key: start}, count=limit, block=block)
            entries = _parse_xread(response)
            if entries or anyio.current_time() >= deadline:
                return entries

    def _target(self, client: Any, key: str) -> dict[str, Any]:
        # On a cluster, route XREAD by its key ourselves (redis-py would ask COMMAND GETKEYS every time).
        if not self.cluster:
            return {}
        return {"target_nodes": client.get_node_from_key(key)} if client.nodes_manager.slots_cache else {}

    async def get_node(self, run_id: str, unique_id: str) -> bytes | None:
        client = self._require()
        with self._errors("get_node"):
            data = await client.hget(self.nodes_key(run_id), unique_id)
        return bytes(data) if data is not None else None

    async def get_lease(self, run_id: str) -> Lease | None:
        client = self._require()
        with self._errors("get_lease"):
            holder, pttl = await self._script(client, _GET_LEASE, [self.lease_key(run_id)], [])
        if holder is None or pttl == -2 or pttl == 0:
            return None
        remaining = math.inf if pttl < 0 else pttl / 1000
        return Lease(_text(holder), remaining)

    async def list_runs(self) -> list[str]:
        client = self._require()
        with self._errors("list_runs"):
            runs = await self._script(client, _LIST_RUNS, [self.index_key], [_now_ms()])
        return [_text(run_id) for run_id in runs]


_SHAS: Final = {
    script: _sha(script)
    for script in (_APPEND, _RENEW_LEASE, _GET_LEASE, _RELEASE_LEASE, _EXPIRE_RUN, _DELETE_RUN, _LIST_RUNS)
}


# ---------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dbtbus.backends.redis list URL | delete URL (RUN_ID...|--all) | expire URL RUN_ID S``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m dbtbus.backends.redis", description="List and delete dbtbus runs."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    list_cmd = commands.add_parser("list", help="print the id of every stored run, one per line")
    list_cmd.add_argument("url")
    delete_cmd = commands.add_parser("delete", help="delete runs (log, node records and lease)")
    delete_cmd.add_argument("url")
    delete_cmd.add_argument("run_ids", nargs="*")
    delete_cmd.add_argument("--all", action="store_true", help="delete every run under the URL's prefix")
    expire_cmd = commands.add_parser("expire", help="make a run disappear SECONDS from now")
    expire_cmd.add_argument("url")
    expire_cmd.add_argument("run_id")
    expire_cmd.add_argument("seconds", type=float)
    args = parser.parse_args(argv)

    async def run() -> int:
        backend = RedisBackend.from_url(args.url)
        await backend.open()
        try:
            if args.command == "list":
                for run_id in sorted(await backend.list_runs()):
                    print(run_id)
            elif args.command == "delete":
                if not args.run_ids and not args.all:
                    parser.error("name the runs to delete, or pass --all")
                targets = sorted(await backend.list_runs()) if args.all else args.run_ids
                for run_id in targets:
                    await backend.delete_run(run_id)
                    print(f"deleted {run_id}")
            else:
                await backend.expire_run(args.run_id, args.seconds)
        finally:
            await backend.aclose()
        return 0

    try:
        return anyio.run(run)
    except (BackendError, ConfigurationError) as exc:
        print(f"error: {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
