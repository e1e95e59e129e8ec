"""The Redis Streams backend: ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs, one server or a cluster;
``redis+sentinel://`` / ``rediss+sentinel://`` for a master watched by Redis Sentinel (``_sentinel.py``).

Layout of one run (all its keys share the hash tag ``{<run_id>}``, so a run lives on one Redis Cluster slot)::

    <prefix>{<run_id>}:log       STREAM  every record, one entry each, field ``d`` = the encoded record
    <prefix>{<run_id>}:nodes     HASH    unique_id -> the node's latest terminal record (late waiter: one HGET)
    <prefix>{<run_id>}:lease     STRING  the producer's liveness lease: holder, with a PX expiry
    <prefix>{<run_id>}:claim     HASH    the latest acquire_lease: holder, attempt (the fence; expires with the run)
    <prefix>{<run_id>}:appended  HASH    idempotency key -> stream id of the entry it stored
    <prefix>{<run_id>}:gone      STRING  the tombstone: set by delete_run, expire_run or an expiring append, with
                                         a PX expiry of tombstone_period (plus the retention), removed by an
                                         append that keeps the run
    <prefix>runs                 ZSET    run index for list_runs: score = expiry (ms since epoch), +inf = kept

A run has a fixed set of keys, so ``expire_run`` and ``delete_run`` touch them without tracking node keys.
The tombstone shares the run's hash tag, so every script stays on one Cluster slot. ``run_gone`` is true
while the tombstone is there and the log is not; it uses no command the scripts did not already (GET, SET,
DEL, PTTL), so the documented ACL rule is unchanged. ``FLUSHDB`` (or a restart without persistence)
removes the tombstone too: a run flushed before a reader saw it reads as not started.
The run index is the one key outside the run's slot: on one server every script updates it in the same
call; on a cluster the same index statement runs as a second script on the index's own slot.

Every write is one server-side Lua script (one round trip, atomic — readers see a batch all or none): an
append XADDs each item (``MAXLEN ~ cap``) whose idempotency key the run has not stored yet, HSETs the node
records and keys of the batch and PERSISTs the run's keys (or, given the run's retention, sets their expiry and
tombstone as ``expire_run`` does: expiring appends). Leases are fenced (``acquire_lease`` claims an
attempt; a superseded holder's renewal fails with :class:`dbtbus.RunClaimed`), and so are appends: the append
script reads the claim (passed as one of its keys: it shares the run's hash tag) and refuses a batch whose
holder is not the claim's before it writes anything.

Reads are ``XREAD [BLOCK ms] COUNT n STREAMS log <cursor>``; cursors are stream IDs. A blocking read takes a
dedicated connection from its own pool for at most ``block_ms`` per round trip (longer waits loop), so
blocked readers never starve the commands of the producer and of ``get_node``. The bus runs one reader per
run, so 10,000 waiters on a run still mean one blocked connection. Entries without the ``d`` field, or over
``max_record_bytes``, are skipped with one warning each; a read never returns early on them, and the next
read from the same cursor starts past them (no busy loop on a junk tail).

Failures: redis-py retries a command ``retries`` times on connection errors and timeouts (exponential
backoff with jitter, capped at 1 s); after that the backend raises :class:`dbtbus.BackendUnavailable` —
promptly, within roughly ``socket_connect_timeout`` plus the backoff when the server is down. A replica
promoted mid-failover (READONLY, CLUSTERDOWN, TRYAGAIN, LOADING, MASTERDOWN) and OOM are transient too.
Permanent errors are final and never retried: wrong credentials → :class:`dbtbus.AuthenticationFailed`,
an ACL denial (NOPERM) → :class:`dbtbus.PermissionDenied`, any other error reply (WRONGTYPE, an unknown
command on a server too old, ...) → :class:`dbtbus.BackendRejected`. With idempotency keys, a write that
failed after the server executed it but before the reply arrived is safe to retry: it is stored once.

URL options (query string; keyword options to ``dbtbus.connect`` override them): ``prefix`` (default
``dbtbus:``), ``maxlen`` (stream cap, default 1,000,000, 0 = none), ``block_ms`` (longest BLOCK per read
round trip, default 1000), ``cluster=true`` (Redis Cluster; the URL may name several seed nodes,
``redis://a:7000,b:7000/0?cluster=true``, and ``open`` learns the slot map from them or raises
:class:`dbtbus.BackendUnavailable`), ``retries`` (default 3), ``max_blocking``
(blocking-read connections, default 1000), ``max_record_bytes`` (default 8 MiB), ``db``, ``username``,
``tombstone_period`` (seconds a deleted or expired run's tombstone outlives its keys, default 604800 = 7 days;
0: leave none), ``password``, ``socket_timeout``, ``socket_connect_timeout`` (default 2 s), ``max_connections`` (default
64; callers beyond it wait for a free connection), ``client_name``, ``health_check_interval`` and, for
``rediss://``, ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``
(none/optional/required) and ``ssl_check_hostname``.
``eviction`` (``warn``, ``error``, ``ignore``): what ``open`` does when the server's maxmemory-policy can
evict dbtbus's keys.

redis-py's asyncio client is asyncio-only: use this backend under asyncio (anyio on its asyncio backend).
List and delete runs with ``dbtbus runs`` and ``dbtbus gc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from .._exceptions import (
    AuthenticationFailed,
    BackendError,
    BackendRejected,
    BackendUnavailable,
    ConfigurationError,
    InvalidCursor,
    PermissionDenied,
    RunClaimed,
)
from ._redis_url import DEFAULT_PORT, RedisSettings, check_prefix, parse_redis_url
from ._sentinel import SENTINEL_SCHEMES, FailoverWatch, SentinelSettings, parse_sentinel_url, sentinel_client
from .base import (
    Append,
    Backend,
    Entry,
    Lease,
    append_expiry,
    append_holders,
    check_record_sizes,
    claimed_message,
)

__all__ = ["ACL_CLUSTER_COMMANDS", "ACL_COMMANDS", "RedisBackend", "acl_rule"]

logger = logging.getLogger("dbtbus.backends.redis")

_CURSOR: Final = re.compile(r"\d{1,20}-\d{1,20}")
_FIELD: Final = b"d"
#: Connections of the pool serving every non-blocking command (``max_connections`` overrides it).
_DEFAULT_MAX_CONNECTIONS: Final = 64
#: HSET fields flushed per call inside the append script (Lua's unpack() has a stack limit).
_HSET_CHUNK: Final = 1000
#: Seconds aclose() waits for a client's connections to close.
_CLOSE_TIMEOUT: Final = 5.0
#: Read positions remembered as "only skipped entries follow up to X" (per backend, least recent dropped).
_SKIP_MEMORY: Final = 4096
#: Error-reply codes that say "not now" rather than "never": a failover, a restart, memory pressure.
_TRANSIENT_CODES: Final = frozenset(
    {"READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "OOM", "BUSY", "NOREPLICAS"}
)
_AUTH_CODES: Final = frozenset({"WRONGPASS", "NOAUTH"})
#: (server, maxmemory-policy) pairs the eviction check already reported in this process.
_EVICTION_SAID: set[tuple[str, str | None]] = set()
#: How Redis 7.0 words an ACL denial of a command a script calls (an ERR reply, no NOPERM code).
_SCRIPT_NOPERM: Final = "user executing the script can't run this command"


#: Every command the backend sends: what an ACL user needs (``-@all`` plus these, keys ``~<prefix>*``).
#: Scripts count too — Redis checks the commands a script calls against the user's ACL.
ACL_COMMANDS: Final = (
    "client|setname", "evalsha", "eval", "xread", "hget",  # sent by the client
    "xadd", "hset", "hmget", "persist", "zadd", "zrem", "zrange", "zremrangebyscore",  # called by scripts
    "get", "set", "del", "pexpire", "pttl",
)  # fmt: skip
#: Redis Cluster adds the commands redis-py uses to learn the slot map.
ACL_CLUSTER_COMMANDS: Final = ("cluster|slots", "cluster|shards", "command", "readonly")


def acl_rule(prefix: str = "dbtbus:", *, cluster: bool = False) -> str:
    """The ACL rules (after ``user <name> on >password``) a user needs to run dbtbus under ``prefix``.

    ``prefix`` must end with ``:`` (:class:`~dbtbus.ConfigurationError` otherwise): ``~team1*`` would also
    match ``team10``'s keys. One tenant's prefix must never be a prefix of another's.
    """
    check_prefix(prefix)
    commands = (*ACL_COMMANDS, *(ACL_CLUSTER_COMMANDS if cluster else ()))
    return f"resetkeys ~{prefix}* resetchannels -@all " + " ".join(f"+{command}" for command in commands)


class _Retry(Retry):
    """redis-py's retry minus wrong credentials (ConnectionError subclasses that no retry fixes)."""

    async def call_with_retry(
        self, do: Any, fail: Any, is_retryable: Any = None, with_failure_count: bool = False
    ) -> Any:
        def retryable(error: Exception) -> bool:
            if isinstance(error, (rexc.AuthenticationError, rexc.AuthorizationError)):
                return False
            return bool(is_retryable(error)) if is_retryable is not None else True

        return await super().call_with_retry(do, fail, retryable, with_failure_count)


@dataclass(frozen=True)
class _Script:
    """A write: a statement on the run's keys (it sets ``result``) and, optionally, one on the run index.

    Each script's ARGV starts with the run id and the index score, so the index statement can run on its
    own (a cluster keeps the index on another slot) with just those two arguments. KEYS[#KEYS] is the index.
    """

    body: str
    index: str | None = None

    @property
    def alone(self) -> str:
        return f"{self.body}\nreturn result"

    @property
    def with_index(self) -> str:
        return f"{self.body}\n{self.index}\nreturn result"

    @property
    def index_only(self) -> str:
        return f"{self.index}\nreturn 1"


# ARGV: run_id, index score ('inf': kept), maxlen, expiry ms (-1: kept), tombstone ms (0: none), h (count of
# holders), the h holders, then (node, key, data) triples; KEYS: log, nodes, appended, gone, claim[, index]. An
# append keeps the run's keys for ever and removes its tombstone (the run id is in use again: a retry, a run id
# used again) — or, given an expiry (expiring appends), sets them as _EXPIRE_RUN does, in the same step: a
# producer killed right after an append leaves a run that still expires. Fenced appends: when the run has a
# claim, a holder that is not the claim's refuses the whole call before any write (and before the index
# statement, on one server), returning {0, holder, owner, owner's attempt} — an integer first, where a stored
# batch returns its stream ids. A run without a claim (never claimed, or its keys lost) takes any holder: the
# producer re-claims at its renewal.
_APPEND: Final = _Script(
    """
local log, nodes, appended = KEYS[1], KEYS[2], KEYS[3]
local maxlen = tonumber(ARGV[3])
local first = 7 + tonumber(ARGV[6])
if first > 7 then
  local owner = redis.call('HMGET', KEYS[5], 'holder', 'attempt')
  if owner[1] then
    for i = 7, first - 1 do
      if ARGV[i] ~= owner[1] then return {0, ARGV[i], owner[1], owner[2]} end
    end
  end
end
local result, fields, nf = {}, {}, 0
local n = 0
for i = first, #ARGV, 3 do
  local node, key, data = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  n = n + 1
  local id = false
  if key ~= '' then id = redis.call('HGET', appended, key) end
  if id then
    result[n] = id
  else
    if maxlen > 0 then
      id = redis.call('XADD', log, 'MAXLEN', '~', maxlen, '*', 'd', data)
    else
      id = redis.call('XADD', log, '*', 'd', data)
    end
    result[n] = id
    if key ~= '' then redis.call('HSET', appended, key, id) end
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
end
if nf > 0 then redis.call('HSET', nodes, unpack(fields, 1, nf)) end
local ms = tonumber(ARGV[4])
if ms < 0 then
  redis.call('PERSIST', log)
  redis.call('PERSIST', nodes)
  redis.call('PERSIST', appended)
  redis.call('DEL', KEYS[4])
else
  for _, key in ipairs({log, nodes, appended, KEYS[5]}) do redis.call('PEXPIRE', key, ms) end
  if ARGV[5] ~= '0' then pcall(redis.call, 'SET', KEYS[4], '1', 'PX', ARGV[5]) else redis.call('DEL', KEYS[4]) end
end
""".replace("HSET_CHUNK", str(2 * _HSET_CHUNK)),
    "redis.call('ZADD', KEYS[#KEYS], ARGV[2], ARGV[1])",
)

# ARGV: run_id, index score (expiry ms), holder, ttl ms, attempt, the claim's expiry ms (-1: kept for ever);
# KEYS: lease, claim[, index].
# Returns {1} or {0, owner, owner_attempt or false}.
_ACQUIRE_LEASE: Final = _Script(
    """
local holder, ms, attempt = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local live = redis.call('GET', KEYS[1])
local owner = redis.call('HMGET', KEYS[2], 'holder', 'attempt')
local owner_holder, owner_attempt = owner[1], tonumber(owner[2])
local result = {1}
if live and live ~= holder and live ~= owner_holder then
  result = {0, live, false}
elseif owner_holder and owner_holder ~= holder and owner_attempt
    and (owner_attempt > attempt or (live == owner_holder and owner_attempt >= attempt)) then
  result = {0, owner_holder, owner[2]}
else
  if owner_holder == holder and owner_attempt and owner_attempt > attempt then attempt = owner_attempt end
  redis.call('HSET', KEYS[2], 'holder', holder, 'attempt', attempt)
  if ARGV[6] == '-1' then redis.call('PERSIST', KEYS[2]) else redis.call('PEXPIRE', KEYS[2], ARGV[6]) end
  if ms > 0 then redis.call('SET', KEYS[1], holder, 'PX', ms) else redis.call('DEL', KEYS[1]) end
end
""",
    "if tonumber(ARGV[2]) > 0 then redis.call('ZADD', KEYS[#KEYS], 'GT', ARGV[2], ARGV[1]) end",
)

# ARGV: run_id, index score, holder, ttl ms; KEYS: lease, claim[, index]. Returns {1}, {2} (no claim: the
# run's keys were lost; the lease is set anyway) or {0, owner, attempt}.
# A full Redis (maxmemory with noeviction) refuses SET and ZADD but not PEXPIRE: a live lease is extended
# with PEXPIRE and the index is moved in a pcall (it catches up at the next renewal), so a producer that is
# alive and retrying its appends through the outage never looks dead to its readers.
_RENEW_LEASE: Final = _Script(
    """
local holder, ms = ARGV[3], tonumber(ARGV[4])
local owner = redis.call('HMGET', KEYS[2], 'holder', 'attempt')
local result = {1}
if not owner[1] then result = {2} end
if owner[1] and owner[1] ~= holder then
  result = {0, owner[1], owner[2]}
elseif ms > 0 then
  if redis.call('GET', KEYS[1]) == holder then
    redis.call('PEXPIRE', KEYS[1], ms)
  else
    redis.call('SET', KEYS[1], holder, 'PX', ms)
  end
else
  redis.call('DEL', KEYS[1])
end
""",
    "if tonumber(ARGV[2]) > 0 then pcall(redis.call, 'ZADD', KEYS[#KEYS], 'GT', ARGV[2], ARGV[1]) end",
)

# KEYS: lease, claim. Returns {holder, pttl, claimed attempt (when the holder is the claim's)}.
_GET_LEASE: Final = _Script(
    """
local holder = redis.call('GET', KEYS[1])
local owner = redis.call('HMGET', KEYS[2], 'holder', 'attempt')
local attempt = false
if holder and owner[1] == holder then attempt = owner[2] end
local result = {holder, redis.call('PTTL', KEYS[1]), attempt}
"""
)

# ARGV: run_id, (unused), holder; KEYS: lease.
_RELEASE_LEASE: Final = _Script(
    """
local result = 0
if redis.call('GET', KEYS[1]) == ARGV[3] then result = redis.call('DEL', KEYS[1]) end
"""
)

# ARGV: run_id, index score, ttl ms, tombstone ms (ttl + period; 0: none); KEYS: log, nodes, lease, claim,
# appended, gone[, index]. The lease keeps its own, shorter expiry (LT): expiring a run must never make a dead
# producer look alive. The tombstone is set now, for a run that exists, as no call is left once keys expire;
# in a pcall, as a full Redis refuses SET but not PEXPIRE (the expiry must not fail: the next one sets it).
_EXPIRE_RUN: Final = _Script(
    """
local ms = tonumber(ARGV[3])
local kept = 0
for _, key in ipairs({KEYS[1], KEYS[2], KEYS[4], KEYS[5]}) do kept = kept + redis.call('PEXPIRE', key, ms) end
redis.call('PEXPIRE', KEYS[3], ms, 'LT')
if kept > 0 and ARGV[4] ~= '0' then pcall(redis.call, 'SET', KEYS[6], '1', 'PX', ARGV[4]) end
local result = 1
""",
    "redis.call('ZADD', KEYS[#KEYS], 'XX', ARGV[2], ARGV[1])",
)

# ARGV: run_id, (unused), tombstone ms (0: none); KEYS: the run's keys (gone last)[, index]. A run that had
# keys leaves a tombstone lasting at least the period from now (an unknown run leaves none).
_DELETE_RUN: Final = _Script(
    """
local existed = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
if existed > 0 and ARGV[3] ~= '0' and redis.call('PTTL', KEYS[6]) < tonumber(ARGV[3]) then
  redis.call('SET', KEYS[6], '1', 'PX', ARGV[3])
end
local result = 1
""",
    "redis.call('ZREM', KEYS[#KEYS], ARGV[1])",
)

# KEYS: gone, log. 1 when the tombstone is there and the log is not (an expiry set it before the keys went).
_RUN_GONE: Final = _Script(
    """
local result = 0
if redis.call('GET', KEYS[1]) and redis.call('PTTL', KEYS[2]) == -2 then result = 1 end
"""
)

# ARGV: now ms; KEYS: index.
_LIST_RUNS: Final = _Script(
    """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local result = redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)

_UNAVAILABLE: Final = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.ClusterDownError,
    rexc.TryAgainError,
    rexc.MasterDownError,
    rexc.ReadOnlyError,
    rexc.OutOfMemoryError,
    rexc.RedisClusterException,  # "cannot connect to any startup node", slots not covered
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


def _raised_in_redis_py(exc: BaseException) -> bool:
    """True when ``exc`` was raised inside redis-py (or the asyncio streams it drives), not in dbtbus."""
    tb = exc.__traceback__
    inside = False
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.startswith(_REDIS_PY):
            inside = True
        elif name.startswith(_HERE):
            inside = False
        tb = tb.tb_next
    return inside


_REDIS_PY: Final = os.path.dirname(rexc.__file__) + os.sep
_HERE: Final = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _error_code(exc: BaseException) -> str:
    """The error reply's code (``NOPERM``, ``WRONGTYPE``, ...), also when a script relays it."""
    text = str(exc)
    # Redis 7 relays an error raised inside a script with its own code; older servers wrap it in "ERR ...".
    match = re.match(r"(?:ERR )?(?:Error running script[^:]*: )?(?:@\S+: )?([A-Z]{3,})\b", text)
    return match.group(1) if match else ""


class RedisBackend(Backend):
    """Runs stored in Redis Streams. Build it with :func:`dbtbus.connect` or :meth:`from_url`."""

    schemes = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)
    idempotent_appends = True
    fenced_leases = True
    fenced_appends = True
    expiring_appends = True
    tombstones = True

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.tombstone_period = settings.tombstone_period
        self.prefix = settings.prefix
        self.maxlen = settings.maxlen
        self.block_ms = settings.block_ms
        self.cluster = settings.cluster
        self.max_record_bytes = settings.max_record_bytes
        self.index_key = f"{settings.prefix}runs"
        self._client: Any = None  # redis.asyncio.Redis | RedisCluster
        self._blocking: Any = None  # the client whose connections serve blocking reads
        self._closed = False
        # (log key, cursor) -> the id of the last entry of a run of skipped entries just after that cursor
        self._skipped: OrderedDict[tuple[str, str], str] = OrderedDict()
        #: Behind Redis Sentinel: follows the master and tells a producer when a failover may have lost writes.
        self._failover = FailoverWatch() if isinstance(settings, SentinelSettings) else None

    def __repr__(self) -> str:
        return f"<RedisBackend {self.settings.display_url} prefix={self.prefix!r}>"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBackend:
        if url.partition("://")[0].lower() in SENTINEL_SCHEMES:
            return cls(parse_sentinel_url(url, options))
        return cls(parse_redis_url(url, options))

    # ------------------------------------------------------------------------------------------ keys

    def _key(self, run_id: str, name: str) -> str:
        return f"{self.prefix}{{{_tag(run_id)}}}:{name}"

    def log_key(self, run_id: str) -> str:
        return self._key(run_id, "log")

    def nodes_key(self, run_id: str) -> str:
        return self._key(run_id, "nodes")

    def lease_key(self, run_id: str) -> str:
        return self._key(run_id, "lease")

    def _run_keys(self, run_id: str) -> list[str]:
        """Every key of a run: log, nodes, lease, claim, appended, gone (the order the scripts expect)."""
        return [self._key(run_id, name) for name in ("log", "nodes", "lease", "claim", "appended", "gone")]

    def _expiry(self, ttl: float) -> tuple[int, int, int]:
        """A run's keys expiring ``ttl`` seconds from now, as the scripts take it: their PX, the run index's score
        (ms since the epoch) and the tombstone's PX (0: none) — for ``expire_run`` and an expiring append alike."""
        ms = _ms(ttl) if ttl > 0 else 0
        return ms, _now_ms() + ms, self._tombstone_ms(ms)

    def _tombstone_ms(self, ttl_ms: int) -> int:
        """The PX of a tombstone set now for keys that go in ``ttl_ms`` (0: no tombstones), capped as _ms."""
        if self.tombstone_period <= 0:
            return 0
        return min(ttl_ms + _ms(self.tombstone_period), 2**62)

    # ------------------------------------------------------------------------------------------ lifecycle

    def _new_client(self, *, blocking: bool) -> Any:
        """A client of the URL's server or cluster; ``blocking``: for XREAD BLOCK (longer socket timeout)."""
        s = self.settings
        # A blocked XREAD must return (after at most block_ms) before its socket times out.
        socket_timeout = s.socket_timeout + s.block_ms / 1000 if blocking else s.socket_timeout
        max_connections = s.max_blocking if blocking else s.client.get("max_connections", _DEFAULT_MAX_CONNECTIONS)
        kwargs: dict[str, Any] = {
            "client_name": "dbtbus",
            **{key: value for key, value in s.client.items() if key != "max_connections"},
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": s.socket_connect_timeout,
            "decode_responses": False,
            "retry": _Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), s.retries),
            "max_connections": max_connections,
        }
        if s.scheme != "unix":
            kwargs["socket_keepalive"] = True
        if isinstance(s, SentinelSettings):  # the master the sentinels name, followed through failovers
            return sentinel_client(s, kwargs, pool_timeout=None if blocking else socket_timeout)
        try:
            if s.cluster:
                # The URL's first host plus the seeds after it: redis-py tries each until one answers.
                seeds = [ClusterNode(host, port) for host, port in s.seeds]
                return RedisCluster.from_url(s.url, **({"startup_nodes": seeds} if seeds else {}), **kwargs)
            # Callers beyond max_connections wait for a free connection (a burst of late waiters' probes, more
            # blocked readers than max_blocking) instead of failing with MaxConnectionsError as redis-py's
            # default pool does. from_pool: closing the client disconnects every connection of its pool.
            pool = aioredis.BlockingConnectionPool.from_url(
                s.url, timeout=None if blocking else socket_timeout, **kwargs
            )
        except ValueError as exc:  # redis-py's own URL checks, which change between its releases
            raise ConfigurationError(f"redis-py refused the URL {s.display_url!r}: {exc}") from None
        return aioredis.Redis.from_pool(pool)

    async def open(self) -> None:
        import sniffio

        if sniffio.current_async_library() != "asyncio":
            raise ConfigurationError("the Redis backend runs on asyncio only (redis-py's asyncio client)")
        if self._client is not None:
            return
        self._client = self._new_client(blocking=False)
        self._blocking = self._new_client(blocking=True)
        if self.cluster:
            await self._discover()
        if self.settings.eviction != "ignore":
            await self._check_eviction()

    async def _check_eviction(self) -> None:
        """Warn (or, with ``eviction=error``, refuse) when the server may evict dbtbus's keys.

        Any policy but ``noeviction`` can, once ``maxmemory`` is reached: ``allkeys-*`` any key (a run's log and
        node records: data lost; its claim and lease), and ``volatile-*`` every key with an expiry — always the
        producers' leases (``volatile-ttl`` takes the shortest first: a live producer's lease evicted looks
        like its death) and every key of a run with a retention. ``maxmemory 0`` never evicts. CONFIG GET may
        be refused (an ACL, a managed Redis that renames CONFIG): then INFO memory; if both are, the check is
        skipped with one info line. Best effort and bounded: an unreachable server is not this check's to
        report (the first real command says so).
        """
        policy, maxmemory = None, None
        with anyio.move_on_after(self.settings.socket_connect_timeout):
            try:
                reply = await self._client.config_get("maxmemory*")
                values = {_text(key): _text(value) for key, value in dict(reply).items()}
                policy, maxmemory = values.get("maxmemory-policy"), values.get("maxmemory")
            except Exception:  # refused (NOPERM, CONFIG renamed) or not now: try INFO
                with contextlib.suppress(Exception):
                    info = await self._client.info("memory")
                    policy, maxmemory = info.get("maxmemory_policy"), info.get("maxmemory")
        policy = None if policy is None else _text(policy)
        if policy == "noeviction" or str(maxmemory) == "0":
            return
        said = (self.settings.display_url, policy)
        if said in _EVICTION_SAID and self.settings.eviction == "warn":
            return  # once per process, server and policy: a sensor's every poke opens a backend
        _EVICTION_SAID.add(said)
        if policy is None:
            logger.info("dbtbus: could not read the maxmemory-policy of %s (grant +config|get or +info to check "
                        "that it cannot evict dbtbus's keys)", self.settings.display_url)
            return
        message = (
            f"Redis at {self.settings.display_url} has maxmemory-policy {policy} (maxmemory {maxmemory}): when it "
            "fills up it can evict dbtbus's keys — a run's records (answered as data_lost), its claim, a live "
            "producer's lease (a false producer_lost). Set maxmemory-policy noeviction (a full Redis is then an "
            "outage dbtbus rides out), or pass eviction=ignore to silence this (eviction=error to refuse)"
        )
        if self.settings.eviction == "error":
            await self.aclose()  # open fails: nothing of it may stay connected
            raise ConfigurationError(message)
        logger.warning("dbtbus: %s", message)

    async def _discover(self) -> None:
        """Learn the cluster's slot map from its seed nodes now, or raise :class:`~dbtbus.BackendUnavailable`.

        A cluster client can send nothing before it has the map, and only the seeds lead to it: left to the
        first command, a dead seed list made every read fail and be retried until the waiter's timeout (a
        silent :class:`~dbtbus.WaitTimeout`). Asked here, it is one typed error from ``connect``, within
        about ``socket_connect_timeout`` per seed and retry. Once open, the client knows every node (redis-py
        makes all discovered nodes its seeds), so a later outage is retried as on one server.
        """
        try:
            with self._errors("reaching a seed node of the cluster"):
                for client in (self._client, self._blocking):
                    await client.initialize()
        except BackendError as exc:
            await self.aclose()
            self._closed = False  # not closed by the caller: open() may be tried again
            if not isinstance(exc, BackendUnavailable):
                raise
            seeds = ", ".join(self._seed_names())
            cause = _describe(exc.__cause__) if exc.__cause__ is not None else str(exc)
            raise BackendUnavailable(
                f"no seed node of the Redis Cluster at {self.settings.display_url} answered ({seeds}): {cause}"
            ) from exc

    def _seed_names(self) -> list[str]:
        """``host:port`` of every seed node the URL names (no credentials: they are not part of a seed)."""
        first = urlsplit(self.settings.url)
        names = [(first.hostname or "", first.port or DEFAULT_PORT), *self.settings.seeds]
        return [f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in names]

    async def aclose(self) -> None:
        self._closed = True
        clients, self._client, self._blocking = (self._client, self._blocking), None, None
        for client in clients:
            if client is not None:
                # Closing a broken connection must not raise, nor hang on a peer that died (a cluster node
                # killed mid-failover): give up on it after a bound and let the OS reclaim the socket.
                with contextlib.suppress(Exception), anyio.move_on_after(_CLOSE_TIMEOUT) as scope:
                    await client.aclose()
                if scope.cancelled_caught:
                    logger.warning("dbtbus: closing %r took over %s s; abandoned", self, _CLOSE_TIMEOUT)

    def _require(self) -> Any:
        if self._client is None:
            state = "closed" if self._closed else "not open"
            raise BackendError(f"the Redis backend {self.settings.display_url} is {state}")
        return self._client

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        where = f"Redis at {self.settings.display_url}"
        try:
            yield
        except (BackendError, ConfigurationError):
            raise
        except (rexc.AuthenticationError, rexc.AuthorizationError) as exc:  # ConnectionError subclasses
            raise AuthenticationFailed(f"{where} refused the credentials ({what}): {_describe(exc)}") from exc
        except rexc.NoPermissionError as exc:
            raise PermissionDenied(f"{where} denied {what} to this user (ACL): {_describe(exc)}") from exc
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{where} is unreachable ({what}): {_describe(exc)}") from exc
        except rexc.ResponseError as exc:
            code = _error_code(exc)
            if code in _AUTH_CODES:
                raise AuthenticationFailed(f"{where} refused the credentials ({what}): {_describe(exc)}") from exc
            if code == "NOPERM" or _SCRIPT_NOPERM in str(exc):
                raise PermissionDenied(f"{where} denied {what} to this user (ACL): {_describe(exc)}") from exc
            if code in _TRANSIENT_CODES:
                raise BackendUnavailable(f"{where} is not serving writes now ({what}): {_describe(exc)}") from exc
            raise BackendRejected(f"{where} rejected {what}: {_describe(exc)}") from exc
        except rexc.RedisError as exc:
            raise BackendError(f"{where} failed ({what}): {_describe(exc)}") from exc
        except (AttributeError, TypeError) as exc:
            if not _raised_in_redis_py(exc):
                raise
            # redis-py 8.1 leaks these from a write on a connection closed under it (its issue #4287): a
            # broken connection, as transient as a ConnectionError. Seen during cluster failovers.
            raise BackendUnavailable(f"{where} dropped a connection ({what}): {_describe(exc)}") from exc

    async def _eval(self, client: Any, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await client.evalsha(_SHAS[script], len(keys), *keys, *args)
        except rexc.NoScriptError:  # first use on this server (or it restarted): send the source once
            return await client.eval(script, len(keys), *keys, *args)

    async def _run(
        self, what: str, script: _Script, keys: Sequence[str], args: Sequence[Any], *, index_after: bool = False
    ) -> Any:
        """Run a write on a run's keys and, where it has one, its run-index statement.

        On a cluster the index statement runs on its own slot, in parallel — or, with ``index_after``, once the
        run's script has answered with a list whose first element is not an integer (a write it refused,
        answered as ``{0, ...}``, leaves the index alone).
        """
        client = self._require()
        with self._errors(what):
            if self._failover is not None:
                await self._failover.follow(client, writes=True)
            if script.index is None:
                return await self._eval(client, script.alone, keys, args)
            if not self.cluster:
                return await self._eval(client, script.with_index, [*keys, self.index_key], args)
            if index_after:
                result = await self._eval(client, script.alone, keys, args)
                if not (result and isinstance(result[0], int)):
                    await self._eval(client, script.index_only, [self.index_key], args[:2])
                return result
            result, _ = await asyncio.gather(
                self._eval(client, script.alone, keys, args),
                self._eval(client, script.index_only, [self.index_key], args[:2]),
            )
            return result

    # ------------------------------------------------------------------------------------------ writing

    async def append(self, run_id: str, items: Sequence[Append]) -> list[str]:
        keys = self._run_keys(run_id)
        if not items:
            return []
        check_record_sizes(run_id, items, self.max_record_bytes)
        holders = append_holders(items)
        expire_after = append_expiry(items)
        ms, score, tombstone = (-1, "inf", 0) if expire_after is None else self._expiry(expire_after)
        args: list[Any] = [run_id, score, self.maxlen, ms, tombstone, len(holders), *holders]
        for item in items:
            args += ("" if item.node is None else "+" + item.node, item.key or "", item.data)
        # A fenced append on a cluster runs its index statement only once the run's script stored the batch: in
        # parallel, a refused stale append would still mark the run kept in the index (one more round trip).
        ids = await self._run(
            "append", _APPEND, [keys[0], keys[1], keys[4], keys[5], keys[3]], args, index_after=bool(holders)
        )
        if ids and isinstance(ids[0], int):  # refused: the run is claimed by another holder
            owner_attempt = int(ids[3]) if ids[3] else None
            raise RunClaimed(claimed_message(run_id, _text(ids[1]), None, _text(ids[2]), owner_attempt))
        return [_text(entry_id) for entry_id in ids]

    def _lease_keys(self, run_id: str) -> list[str]:
        keys = self._run_keys(run_id)
        return [keys[2], keys[3]]

    async def acquire_lease(
        self, run_id: str, holder: str, ttl: float, attempt: int = 1, *, expire_after: float | None = None
    ) -> None:
        ms = _ms(ttl) if ttl > 0 else 0
        claim_ms = -1 if expire_after is None else self._expiry(expire_after)[0]
        args = [run_id, _now_ms() + ms if ms else 0, holder, ms, attempt, claim_ms]
        reply = await self._run("acquire_lease", _ACQUIRE_LEASE, self._lease_keys(run_id), args)
        if int(reply[0]) != 1:
            owner_attempt = int(reply[2]) if reply[2] else None
            raise RunClaimed(claimed_message(run_id, holder, attempt, _text(reply[1]), owner_attempt))
        if self._failover is not None:
            self._failover.claimed(run_id)

    async def renew_lease(self, run_id: str, holder: str, ttl: float) -> bool:
        ms = _ms(ttl) if ttl > 0 else 0
        args = [run_id, _now_ms() + ms if ms else 0, holder, ms]
        reply = await self._run("renew_lease", _RENEW_LEASE, self._lease_keys(run_id), args)
        if int(reply[0]) == 0:
            owner_attempt = int(reply[2]) if reply[2] else None
            raise RunClaimed(claimed_message(run_id, holder, None, _text(reply[1]), owner_attempt))
        if self._failover is not None and not self._failover.writes_kept(run_id):
            return False  # a Sentinel failover since the claim: writes may be lost, as with a vanished claim
        return int(reply[0]) == 1

    async def release_lease(self, run_id: str, holder: str) -> None:
        await self._run("release_lease", _RELEASE_LEASE, [self.lease_key(run_id)], [run_id, 0, holder])

    async def expire_run(self, run_id: str, ttl: float) -> None:
        ms, score, tombstone = self._expiry(ttl)
        args = [run_id, score, ms, tombstone]
        await self._run("expire_run", _EXPIRE_RUN, self._run_keys(run_id), args)
        self._forget_skips(self.log_key(run_id))

    async def delete_run(self, run_id: str) -> None:
        await self._run("delete_run", _DELETE_RUN, self._run_keys(run_id), [run_id, 0, self._tombstone_ms(0)])
        self._forget_skips(self.log_key(run_id))

    async def run_gone(self, run_id: str) -> bool:
        keys = self._run_keys(run_id)
        return int(await self._run("run_gone", _RUN_GONE, [keys[5], keys[0]], [])) == 1

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
        self._require()
        deadline = math.inf if timeout is None else anyio.current_time() + max(timeout, 0)
        while True:
            origin = start = self._skipped.get((key, start), start)
            if timeout is not None and timeout <= 0:
                response = await self._xread(key, start, limit, block=None)
            else:
                remaining = deadline - anyio.current_time()
                block = self.block_ms if remaining >= self.block_ms / 1000 else max(1, math.ceil(remaining * 1000))
                response = await self._xread(key, start, limit, block=block)
            entries, last = self._parse(run_id, response)
            if entries:
                return entries
            if last is not None:  # only skipped entries: remember, and read on from past them
                self._remember_skip(key, origin, last)
                start = last
                continue
            if timeout is not None and anyio.current_time() >= deadline:
                return []

    async def _xread(self, key: str, start: str, limit: int, *, block: int | None) -> Any:
        with self._errors("read"):
            if self._failover is not None:
                await self._failover.follow(self._client if block is None else self._blocking, writes=block is None)
            if block is None:
                return await self._client.xread({key: start}, count=limit)
            blocking = self._blocking
            if self.cluster and blocking.nodes_manager.slots_cache:
                # Route XREAD by its key ourselves (redis-py would ask COMMAND GETKEYS every time).
                node = blocking.get_node_from_key(key)
                return await blocking.execute_command(
                    "XREAD", "COUNT", limit, "BLOCK", block, "STREAMS", key, start, target_nodes=node
                )
            return await blocking.xread({key: start}, count=limit, block=block)

    def _parse(self, run_id: str, response: Any) -> tuple[list[Entry], str | None]:
        """The usable entries of an XREAD reply and the id of the last entry in it (usable or not)."""
        if not response:
            return [], None
        # RESP3 with legacy_responses=False: {stream: [...]}; otherwise [[stream, [(id, {field: value}), ...]]]
        items = next(iter(response.values())) if isinstance(response, dict) else response[0][1]
        entries = []
        last: str | None = None
        for raw_id, fields in items:
            last = _text(raw_id)
            if isinstance(fields, dict):
                data = fields.get(_FIELD)
            else:  # a flat [field, value, ...] list
                data = dict(zip(fields[::2], fields[1::2], strict=False)).get(_FIELD)
            if data is None:
                logger.warning("dbtbus: entry %s of run %r has no %r field (not written by dbtbus); skipped",
                               last, run_id, _FIELD.decode())
            elif self.max_record_bytes is not None and len(data) > self.max_record_bytes:
                logger.warning("dbtbus: entry %s of run %r is %s bytes, over max_record_bytes=%s; skipped",
                               last, run_id, f"{len(data):,}", f"{self.max_record_bytes:,}")
            else:
                entries.append(Entry(last, bytes(data)))
        return entries, last

    def _remember_skip(self, key: str, origin: str, last: str) -> None:
        self._skipped[(key, origin)] = last
        self._skipped.move_to_end((key, origin))
        while len(self._skipped) > _SKIP_MEMORY:
            self._skipped.popitem(last=False)

    def _forget_skips(self, key: str) -> None:
        for position in [position for position in self._skipped if position[0] == key]:
            del self._skipped[position]

    def stored_at(self, cursor: str) -> float | None:
        # A stream id is "<ms>-<seq>", ms from the server's clock when XADD * ran: Redis's time, not the writer's.
        ms, _, _ = cursor.partition("-")
        return int(ms) / 1000 if ms.isdigit() else None

    async def get_node(self, run_id: str, unique_id: str) -> bytes | None:
        client = self._require()
        with self._errors("get_node"):
            data = await client.hget(self.nodes_key(run_id), unique_id)
        return bytes(data) if data is not None else None

    async def get_lease(self, run_id: str) -> Lease | None:
        holder, pttl, attempt = await self._run("get_lease", _GET_LEASE, self._lease_keys(run_id), [])
        if holder is None or pttl == -2 or pttl == 0:
            return None
        remaining = math.inf if pttl < 0 else pttl / 1000
        return Lease(_text(holder), remaining, int(attempt) if attempt else None)

    async def list_runs(self) -> list[str]:
        runs = await self._run("list_runs", _LIST_RUNS, [self.index_key], [_now_ms()])
        return [_text(run_id) for run_id in runs]


_SCRIPTS: Final = (
    _APPEND, _ACQUIRE_LEASE, _RENEW_LEASE, _GET_LEASE, _RELEASE_LEASE, _EXPIRE_RUN, _DELETE_RUN, _RUN_GONE,
    _LIST_RUNS,
)
_SHAS: Final = {
    text: _sha(text)
    for script in _SCRIPTS
    for text in ((script.alone, script.with_index, script.index_only) if script.index else (script.alone,))
}
