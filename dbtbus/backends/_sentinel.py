"""Redis Sentinel for the Redis backend: the ``redis+sentinel://`` URL and the client that follows the master.

The URL form is the one redis-sentinel-url, Prefect/docket and RedisVL accept (redis-py itself has none)::

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db][?options]
    rediss+sentinel://...                       TLS to the data nodes and to the sentinels

* the hosts are the sentinels (port 26379 when omitted); ``service_name`` is the master's name in their
  ``sentinel monitor`` line; ``db`` defaults to 0;
* the userinfo's credentials are the data nodes' (master and replicas), as in a ``redis://`` URL;
* ``sentinel_username`` / ``sentinel_password`` authenticate to the sentinels themselves (Redis's
  ``requirepass`` / ACL on a sentinel is separate from the master's);
* every other option is a ``redis://`` option and means the same (``prefix``, ``retries``, ``ssl_*``, ...),
  except ``cluster``, which a Sentinel deployment is not.

Only parsing lives here, plus building the client (redis-py is imported lazily, in :func:`sentinel_client`),
so the Redis backend keeps one branch for Sentinel. Secrets never appear in
:attr:`~dbtbus.backends._redis_url.RedisSettings.display_url`, in errors or in reprs.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

from .._exceptions import ConfigurationError
from .._format import redact_url
from ._redis_url import RedisSettings, _as_str, parse_hosts, parse_redis_url, query_options

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "SENTINEL_SCHEMES",
    "FailoverWatch",
    "SentinelSettings",
    "parse_sentinel_url",
    "sentinel_client",
]

SENTINEL_SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT: Final = 26379
#: Options for the sentinels' own connections (not the data nodes').
_SENTINEL_OPTIONS: Final = {"sentinel_username": _as_str, "sentinel_password": _as_str}
#: The oldest redis-py whose Sentinel dbtbus is tested on (and correct on: see :func:`sentinel_client`).
MIN_REDIS_PY: Final = (8, 2)
#: Seconds between two questions to the sentinels about who is master, at most one per client.
MASTER_CHECK_INTERVAL: Final = 1.0


@dataclass(repr=False)
class SentinelSettings(RedisSettings):
    """A Redis backend's settings plus where its sentinels are and which master they watch."""

    service: str = ""
    sentinels: tuple[tuple[str, int], ...] = ()
    #: Extra keyword arguments for the sentinels' connections (``username`` / ``password``).
    sentinel_client: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # the client options hold the passwords: show the masked URL only
        return f"SentinelSettings({self.display_url!r}, service={self.service!r}, sentinels={self.sentinels!r})"


def parse_sentinel_url(url: str, options: Mapping[str, Any]) -> SentinelSettings:
    """Validate a ``redis+sentinel://`` URL and ``options`` (which override its query string)."""
    scheme_text, sep, rest = url.partition("://")
    scheme = scheme_text.lower()
    if not sep or scheme not in SENTINEL_SCHEMES:
        raise ConfigurationError(
            f"not a Redis Sentinel URL (redis+sentinel://, rediss+sentinel://): {redact_url(url)!r}"
        )
    # Split by hand: urlsplit reads "a:1,b:2" as one host with a bad port, and refuses a list holding "[::1]".
    cut = min([i for i in (rest.find(c) for c in "/?#") if i >= 0], default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, _, hosts = netloc.rpartition("@")
    parts = urlsplit("x://h" + tail)
    shown = redact_url(url)
    if parts.fragment:
        raise ConfigurationError(f"a Redis Sentinel URL has no #fragment: {shown!r}")
    if not hosts:
        raise ConfigurationError(f"a Redis Sentinel URL needs at least one sentinel host[:port]: {shown!r}")
    sentinels = parse_hosts(hosts, default_port=DEFAULT_SENTINEL_PORT, what="sentinel", shown=shown)
    segments = [unquote(s) for s in parts.path.strip("/").split("/")] if parts.path.strip("/") else []
    if not segments or not segments[0] or len(segments) > 2:
        raise ConfigurationError(
            f"a Redis Sentinel URL names the master after the hosts, /service_name[/db] "
            f"(e.g. redis+sentinel://host:26379/mymaster/0): {shown!r}"
        )
    service, db = segments[0], (segments[1] if len(segments) == 2 else "")
    if db and not db.isdigit():
        raise ConfigurationError(f"the database after the service name must be a number, got {db!r}: {shown!r}")

    merged = query_options(parts.query, options, shown)
    sentinel_client = {
        name.removeprefix("sentinel_"): _SENTINEL_OPTIONS[name](name, merged.pop(name))
        for name in list(merged)
        if name in _SENTINEL_OPTIONS
    }
    if "cluster" in merged:
        raise ConfigurationError(
            f"option 'cluster' does not apply to a Redis Sentinel URL (Sentinel watches one master): {shown!r}"
        )
    # Every other option is validated exactly as for redis:// — by parse_redis_url, on a stand-in URL holding
    # the data nodes' credentials and database. Its errors would name the stand-in, so they are re-raised
    # with the real URL (masked).
    data_scheme = scheme.partition("+")[0]
    stand_in_userinfo = (userinfo + "@") if userinfo else ""
    stand_in = f"{data_scheme}://{stand_in_userinfo}sentinel-master/{quote(db)}"
    try:
        settings = parse_redis_url(stand_in, merged)
        username, password = urlsplit(stand_in).username, urlsplit(stand_in).password
    except ConfigurationError as exc:
        raise ConfigurationError(str(exc).replace(redact_url(stand_in), shown)) from None
    client = dict(settings.client)
    # redis-py's Sentinel pools take keyword arguments, not a URL: carry the credentials and the db over.
    if username:
        client.setdefault("username", unquote(username))
    if password:
        client.setdefault("password", unquote(password))
    client.setdefault("db", int(db) if db else 0)
    if scheme == "rediss+sentinel":
        client["ssl"] = True
        # One CA for the whole topology: the sentinels speak TLS too and present certificates from the same CA.
        sentinel_client.update({k: v for k, v in client.items() if k.startswith("ssl")})
    # Every setting parse_redis_url made (whatever fields RedisSettings grows), then the Sentinel ones.
    common = {f.name: getattr(settings, f.name) for f in fields(RedisSettings)}
    common.update(url=shown, display_url=shown, scheme=scheme, cluster=False, client=client)
    # url: never handed to redis-py as a URL (the pool is built from keyword arguments), so the masked one.
    return SentinelSettings(**common, service=service, sentinels=sentinels, sentinel_client=sentinel_client)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def sentinel_client(settings: SentinelSettings, kwargs: Mapping[str, Any], *, pool_timeout: float | None) -> Any:
    """A ``redis.asyncio.Redis`` on the master the sentinels name now, following it through failovers.

    ``kwargs`` are the data-node connection options the backend builds for a ``redis://`` client.
    Connections ask the sentinels for the master's address when they (re)connect; one still open to a master
    that was demoted gets ``READONLY`` (or, blocked in ``XREAD``, an ``UNBLOCKED`` error), which redis-py's
    Sentinel connection turns into a ``ConnectionError`` after dropping itself: transient, so the backend's
    retry reconnects to the promoted replica. The pool blocks callers beyond ``max_connections``, as the
    ``redis://`` backend's does.
    """
    import redis
    import redis.asyncio as aioredis
    import redis.exceptions as rexc
    from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

    if _version_tuple(redis.__version__) < MIN_REDIS_PY:
        # Older redis-py Sentinels neither close their own connections nor let a refusal of the credentials
        # through in time (found by the lowest-dependencies suite on 7.3: 5 connections left open, 34 s to fail
        # on a wrong sentinel_password): refused, not half-working.
        raise ConfigurationError(
            f"Redis Sentinel needs redis-py >= {'.'.join(map(str, MIN_REDIS_PY))} "
            f"(installed: {redis.__version__}): pip install 'redis>={'.'.join(map(str, MIN_REDIS_PY))}'"
        )

    class RefusalTellingSentinel(Sentinel):
        """redis-py's Sentinel, except that sentinels which all refuse us say so.

        redis-py folds every sentinel's failure into one ``MasterNotFoundError`` — a ``ConnectionError``,
        transient — so a wrong ``sentinel_password`` or an ACL without ``SENTINEL MASTERS`` would be retried
        forever, as if the sentinels were mid-failover. When no master is found, each sentinel is asked once
        more; if every one refused the credentials (or the command), that refusal is raised instead: final,
        as for a ``redis://`` URL.
        """

        async def discover_master(self, service_name: str) -> Any:
            try:
                return await super().discover_master(service_name)
            except MasterNotFoundError:
                refusals: list[rexc.RedisError] = []
                for sentinel in self.sentinels:
                    try:
                        await sentinel.sentinel_masters()
                    except (rexc.AuthenticationError, rexc.AuthorizationError, rexc.NoPermissionError) as exc:
                        refusals.append(exc)
                    except (rexc.RedisError, OSError):
                        pass
                if refusals and len(refusals) == len(self.sentinels):
                    first = refusals[0]
                    raise type(first)(f"every sentinel refused dbtbus: {first}") from None
                raise

    class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
        """Sentinel's master discovery with the blocking pool's wait for a free connection, and no connection
        handed out to a master the sentinels have replaced.

        redis-py asks the sentinels only when a connection (re)connects, and drops only the *idle* connections
        to a replaced master: one in use at that moment goes back to the pool still connected to it. A master
        that is replaced while it lives (SENTINEL FAILOVER, a partition) keeps taking writes until the sentinels
        demote it — 11 s in the test — and a demoted master's data is resynchronised away: every write in
        between would be lost. So each connection handed out is checked against the master last named.
        """

        async def ensure_connection(self, connection: Any) -> None:
            if (
                self.master_address is not None
                and connection.is_connected
                and (connection.host, connection.port) != tuple(self.master_address)
            ):
                await connection.disconnect()  # reconnects to the master the sentinels name now
            await super().ensure_connection(connection)

    class SentinelMaster(aioredis.Redis):
        """The master's client; closing it closes the sentinels' connections too (redis-py leaves those
        open: its ``Sentinel`` owns them, and nothing else would close them)."""

        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            try:
                await super().aclose(close_connection_pool)
            finally:
                pool = self.connection_pool
                assert isinstance(pool, SentinelConnectionPool)
                await pool.sentinel_manager.aclose()

    connection = dict(kwargs)
    sentinel_kwargs = {
        key: connection[key]
        for key in ("socket_timeout", "socket_connect_timeout", "socket_keepalive", "client_name")
        if key in connection
    }
    sentinel_kwargs.update(settings.sentinel_client)
    manager = RefusalTellingSentinel(list(settings.sentinels), sentinel_kwargs=sentinel_kwargs, **connection)
    return manager.master_for(
        settings.service, redis_class=SentinelMaster, connection_pool_class=BlockingSentinelPool, timeout=pool_timeout
    )


class FailoverWatch:
    """Notices that the sentinels named another master, and tells the producer its writes may be lost.

    :meth:`follow` asks the sentinels who is master (at most every :data:`MASTER_CHECK_INTERVAL` s per
    client) before the backend's commands, so connections move to a promoted replica within about a second
    of the sentinels' decision even when the old master still answers. A switch of the writing client's
    master counts as a possible loss for every run claimed before it: writes acknowledged by the old master
    may not have reached the new one (replication is asynchronous). :meth:`writes_kept` says so once per run,
    and the backend's ``renew_lease`` then answers as for a vanished claim — the producer claims again and
    republishes the run's start and every terminal record (idempotency keys make that safe).
    """

    def __init__(self) -> None:
        self.switches = 0
        self._masters: dict[int, tuple[str, int]] = {}  # id(client) -> the master it was last told of
        self._asked: dict[int, float] = {}
        self._claimed: dict[str, int] = {}  # run id -> switches seen when its lease was claimed or renewed

    async def follow(self, client: Any, *, writes: bool) -> None:
        """Ask the sentinels who is master (rate-limited); count a switch of the ``writes`` client's master."""
        pool = client.connection_pool
        now = time.monotonic()
        if now < self._asked.get(id(client), 0.0):
            return
        self._asked[id(client)] = now + MASTER_CHECK_INTERVAL
        import redis.exceptions as rexc

        # No answer from any sentinel is not this check's to report: the command that follows fails or not.
        with contextlib.suppress(rexc.ConnectionError, rexc.TimeoutError, OSError):
            master = tuple(await pool.get_master_address())  # drops idle connections to a replaced master
            before = self._masters.get(id(client))
            self._masters[id(client)] = master
            if writes and before is not None and before != master:
                self.switches += 1

    def claimed(self, run_id: str) -> None:
        self._claimed[run_id] = self.switches

    def writes_kept(self, run_id: str) -> bool:
        """False once after the master changed since ``run_id`` was claimed (then it counts as claimed again)."""
        seen = self._claimed.setdefault(run_id, self.switches)
        self._claimed[run_id] = self.switches
        return seen == self.switches
