"""Parse a ``redis://`` / ``rediss://`` / ``unix://`` bus URL into the backend's settings.

Pure Python, no ``redis`` import: the backend's own options (``prefix``, ``maxlen``, ``block_ms``,
``cluster``, ...) are taken out of the query string, the connection options redis-py understands are typed
and validated, and anything else raises :class:`dbtbus.ConfigurationError`. Keyword options given to
``dbtbus.connect`` override the URL's. Passwords never appear in :attr:`RedisSettings.display_url`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from .._exceptions import ConfigurationError
from .._format import redact_url
from .base import DEFAULT_TOMBSTONE_PERIOD, tombstone_period_option

__all__ = [
    "DEFAULT_MAXLEN",
    "DEFAULT_MAX_RECORD_BYTES",
    "DEFAULT_PREFIX",
    "RedisSettings",
    "check_prefix",
    "parse_redis_url",
    "split_seeds",
    "with_password",
]

DEFAULT_PREFIX: Final = "dbtbus:"
#: Approximate cap on one run's stream (``XADD MAXLEN ~``). Generous on purpose: trimming the head of a
#: run's log drops its ``RunStarted`` record, which late readers need. ~370 B per entry → ≤ ~400 MB.
DEFAULT_MAXLEN: Final = 1_000_000
#: The largest record (bytes) an append accepts and a read hands out: a record is one node's result.
DEFAULT_MAX_RECORD_BYTES: Final = 8 * 1024 * 1024
SCHEMES: Final = ("redis", "rediss", "unix")
#: The port of a seed node named without one (``redis://a,b:7001/0``), as redis-py's own default.
DEFAULT_PORT: Final = 6379

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigurationError(f"option {name!r} must be a boolean (true/false), got {value!r}")


def _as_int(name: str, value: Any, minimum: int = 0) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"option {name!r} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or number < minimum:
        raise ConfigurationError(f"option {name!r} must be an integer >= {minimum}, got {value!r}")
    return number


def _as_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"option {name!r} must be a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not number > 0 or number == float("inf"):
        raise ConfigurationError(f"option {name!r} must be a positive number of seconds, got {value!r}")
    return number


def _as_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"option {name!r} must be a string, got {value!r}")
    return value


def check_prefix(value: Any) -> str:
    """``prefix`` if it can stand for one tenant's keys, else :class:`~dbtbus.ConfigurationError` saying why.

    It must end with the delimiter ``:``: tenants are kept apart by ACL key patterns ``~<prefix>*``, and
    without a delimiter one tenant's prefix prefixes another's (``team1`` matches ``team10...``), so each
    could read, list and delete the other's runs.
    """
    prefix = _as_str("prefix", value)
    if "{" in prefix or "}" in prefix:
        raise ConfigurationError(
            f"the key prefix must not contain braces (they would capture the hash tag): {prefix!r}"
        )
    if not prefix.endswith(":"):
        raise ConfigurationError(
            f"the key prefix must end with ':' (got {prefix!r}): without the delimiter one tenant's prefix "
            f"prefixes another's ({prefix + '0'!r} starts with {prefix!r}), and an ACL pattern ~{prefix}* would "
            "give each tenant the other's runs"
        )
    return prefix


def _as_prefix(name: str, value: Any) -> str:
    return check_prefix(value)


def _as_cert_reqs(name: str, value: Any) -> str:
    text = _as_str(name, value).lower()
    if text not in ("none", "optional", "required"):
        raise ConfigurationError(f"option {name!r} must be none, optional or required, got {value!r}")
    return text


def _as_eviction(name: str, value: Any) -> str:
    text = _as_str(name, value).lower()
    if text not in ("warn", "error", "ignore"):
        raise ConfigurationError(f"option {name!r} must be warn, error or ignore, got {value!r}")
    return text


# Backend options (not passed to redis-py).
_BACKEND_OPTIONS: Final[dict[str, Callable[[str, Any], Any]]] = {
    "prefix": _as_prefix,
    "maxlen": lambda n, v: _as_int(n, v, 0),
    "block_ms": lambda n, v: _as_int(n, v, 1),
    "cluster": _as_bool,
    "retries": lambda n, v: _as_int(n, v, 0),
    "max_blocking": lambda n, v: _as_int(n, v, 1),
    "max_record_bytes": lambda n, v: _as_int(n, v, 1),
    "eviction": _as_eviction,
    "tombstone_period": lambda n, v: tombstone_period_option(v),
}
# Connection options, handed to redis-py.
_CLIENT_OPTIONS: Final[dict[str, Callable[[str, Any], Any]]] = {
    "db": lambda n, v: _as_int(n, v, 0),
    "username": _as_str,
    "password": _as_str,
    "socket_timeout": _as_float,
    "socket_connect_timeout": _as_float,
    "max_connections": lambda n, v: _as_int(n, v, 1),
    "client_name": _as_str,
    "health_check_interval": _as_float,
    "ssl_ca_certs": _as_str,
    "ssl_certfile": _as_str,
    "ssl_keyfile": _as_str,
    "ssl_cert_reqs": _as_cert_reqs,
    "ssl_check_hostname": _as_bool,
}
_SSL_OPTIONS: Final = frozenset(name for name in _CLIENT_OPTIONS if name.startswith("ssl_"))


@dataclass
class RedisSettings:
    """Everything a URL plus keyword options say about a Redis backend."""

    url: str  # the URL for redis-py: scheme, credentials, host, port / socket path, db — no query string
    display_url: str  # the same without the password, for messages and repr
    scheme: str
    prefix: str = DEFAULT_PREFIX
    maxlen: int = DEFAULT_MAXLEN  # 0: no cap
    block_ms: int = 1000
    cluster: bool = False
    retries: int = 3
    max_blocking: int = 1000
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    #: What ``open`` does when the server may evict dbtbus's keys (a maxmemory policy other than noeviction).
    eviction: str = "warn"
    #: Seconds a deleted or expired run's tombstone outlives its keys (0: none).
    tombstone_period: float = DEFAULT_TOMBSTONE_PERIOD
    #: A cluster's seed nodes after the URL's first host (``redis://a:7000,b:7001/0?cluster=true``): redis-py's
    #: ``startup_nodes``. ``url`` names the first one only, in the form redis-py parses.
    seeds: tuple[tuple[str, int], ...] = ()
    socket_timeout: float = 5.0
    socket_connect_timeout: float = 2.0
    client: dict[str, Any] = field(default_factory=dict)  # further redis-py keyword arguments


#: ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``: one member of a URL's comma-separated host list.
_HOST: Final = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\[\]:/?#@,]+))(?::(?P<port>\d{1,5}))?")


def parse_hosts(hosts: str, *, default_port: int, what: str, shown: str) -> tuple[tuple[str, int], ...]:
    """The ``(host, port)`` of every member of ``hosts`` (``a:7000,[::1]:7001,c``), in order.

    The one reader of a URL's host list — a cluster's seed nodes, a Sentinel deployment's sentinels — which
    ``urlsplit`` cannot read (it takes ``a:1,b:2`` for one host with a bad port). ``what`` names a member in
    errors, ``shown`` is the URL as errors show it (masked).
    """
    members = []
    for member in hosts.split(","):
        match = _HOST.fullmatch(member.strip())
        if match is None:
            raise ConfigurationError(f"not a {what} host[:port] in {shown!r}: {member!r} (hosts are separated by ',')")
        port = int(match["port"]) if match["port"] else default_port
        if not 0 < port < 65536:
            raise ConfigurationError(f"{what} port out of range in {shown!r}: {member!r}")
        members.append((match["v6"] or match["host"], port))
    return tuple(members)


def query_options(query: str, options: Mapping[str, Any], shown: str) -> dict[str, Any]:
    """A URL's query options, each given once, then ``options`` (which override them)."""
    merged: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in merged:
            raise ConfigurationError(f"option {name!r} given twice in {shown!r}")
        merged[name] = value
    merged.update(options)
    return merged


def split_seeds(url: str) -> tuple[str, tuple[tuple[str, int], ...]]:
    """``url`` with its first host only, and the ``(host, port)`` of every host after it.

    ``redis://user:pw@a:7000,b:7001,[::1]:7002/0?cluster=true`` names three seed nodes of one cluster: the
    credentials, database and options hold for all of them (redis-py's ``startup_nodes`` share one set of
    connection options too). A host without a port gets 6379. A URL with one host comes back unchanged.
    """
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if "," not in hosts:
        return url, ()
    seeds = parse_hosts(hosts, default_port=DEFAULT_PORT, what="seed node", shown=redact_url(url))
    first = hosts.split(",", 1)[0]
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{userinfo}{at}{first}{parts.path}{query}", seeds[1:]


def parse_redis_url(url: str, options: Mapping[str, Any]) -> RedisSettings:
    """Validate ``url`` and ``options`` (which override the URL's query string) into settings."""
    shown = redact_url(url)
    try:
        url, seeds = split_seeds(url)
        parts = urlsplit(url)
        parts.port  # noqa: B018 - validates the port
    except ConfigurationError:  # a ValueError too, already saying what is wrong
        raise
    except ValueError as exc:
        raise ConfigurationError(f"not a valid Redis URL {shown!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigurationError(f"not a Redis URL (redis://, rediss://, unix://): {shown!r}")
    merged = query_options(parts.query, options, shown)
    # Spelled out, not urlunsplit: that writes unix:///path as "unix:/path" (no authority, no "//"), which
    # redis-py >= 8.2 refuses.
    base = f"{scheme}://{parts.netloc}{parts.path}"
    if scheme == "unix" and not parts.path:
        raise ConfigurationError(
            f"a unix:// URL needs a socket path, e.g. unix:///run/redis.sock: {shown!r}"
        )
    settings = RedisSettings(url=base, display_url=shown, scheme=scheme, seeds=seeds)
    for name, value in merged.items():
        if name in _BACKEND_OPTIONS:
            setattr(settings, name, _BACKEND_OPTIONS[name](name, value))
        elif name in ("socket_timeout", "socket_connect_timeout"):
            setattr(settings, name, _as_float(name, value))
        elif name in _CLIENT_OPTIONS:
            if name in _SSL_OPTIONS and scheme != "rediss":
                raise ConfigurationError(f"option {name!r} needs a rediss:// URL, got {shown!r}")
            settings.client[name] = _CLIENT_OPTIONS[name](name, value)
        else:
            known = sorted({*_BACKEND_OPTIONS, *_CLIENT_OPTIONS})
            raise ConfigurationError(f"unknown Redis backend option {name!r} (known: {', '.join(known)})")
    if settings.cluster and (scheme == "unix" or settings.client.get("db", 0)):
        raise ConfigurationError("cluster=true needs a redis:// or rediss:// URL on database 0")
    if settings.cluster and parts.path.strip("/") not in ("", "0"):
        raise ConfigurationError("cluster=true needs a redis:// or rediss:// URL on database 0")
    if seeds and not settings.cluster:
        # One server has one address: several hosts name the seed nodes of a cluster (Sentinel aside).
        raise ConfigurationError(f"several hosts need cluster=true (they are a cluster's seed nodes): {shown!r}")
    return settings


def with_password(url: str, username: str | None, password: str) -> str:
    """``url`` (no query) with credentials set: used by tests and tools building URLs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    cred = quote(username or "", safe="") + ":" + quote(password, safe="")
    netloc = f"{cred}@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
