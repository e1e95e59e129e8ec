"""Backends: where a run's records are stored and how they travel. Chosen by URL scheme.

Built in: ``memory://`` (in-process, the default), ``redis://`` / ``rediss://`` / ``unix://`` /
``redis+sentinel://`` (Redis Streams) and ``xcom://`` (Airflow). Third-party backends register under the
entry-point group ``dbtbus.backends`` (name = URL scheme, value = a :class:`~dbtbus.backends.base.Backend` subclass).
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from .._exceptions import ConfigurationError, UnknownBackend
from .._format import redact_url
from .base import Append, Backend, Entry, Lease

__all__ = ["Append", "Backend", "Entry", "Lease", "backend_from_url", "registered_schemes"]

ENTRY_POINT_GROUP = "dbtbus.backends"

_BUILTIN: dict[str, str] = {
    "memory": "dbtbus.backends.memory:MemoryBackend",
    "redis": "dbtbus.backends.redis:RedisBackend",
    "rediss": "dbtbus.backends.redis:RedisBackend",
    "unix": "dbtbus.backends.redis:RedisBackend",
    "redis+sentinel": "dbtbus.backends.redis:RedisBackend",
    "rediss+sentinel": "dbtbus.backends.redis:RedisBackend",
    "xcom": "dbtbus.backends.xcom:XComBackend",
}

_EXTRA_FOR: dict[str, str] = {
    "redis": "redis", "rediss": "redis", "unix": "redis", "redis+sentinel": "redis", "rediss+sentinel": "redis",
    "xcom": "airflow",
}  # fmt: skip


def _entry_point_targets() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def registered_schemes() -> list[str]:
    """Every URL scheme a backend is available for, built in or registered by entry point."""
    return sorted(set(_BUILTIN) | set(_entry_point_targets()))


def _load_builtin(scheme: str) -> type[Backend]:
    module_name, _, attr = _BUILTIN[scheme].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = _EXTRA_FOR.get(scheme)
        hint = f": pip install 'dbtbus[{extra}]'" if extra else ""
        raise ConfigurationError(
            f"the {scheme}:// backend needs a package that is not installed ({exc}){hint}"
        ) from exc
    backend: type[Backend] = getattr(module, attr)
    return backend


def backend_class(scheme: str) -> type[Backend]:
    """Return the backend class registered for ``scheme``."""
    if scheme in _BUILTIN:
        return _load_builtin(scheme)
    entry_point = _entry_point_targets().get(scheme)
    if entry_point is None:
        raise UnknownBackend(f"no dbtbus backend for URL scheme {scheme!r} (known: {', '.join(registered_schemes())})")
    loaded = entry_point.load()
    if not (isinstance(loaded, type) and issubclass(loaded, Backend)):
        raise ConfigurationError(f"entry point {entry_point.value!r} for {scheme!r} is not a dbtbus Backend subclass")
    return loaded


def backend_from_url(url: str, **options: Any) -> Backend:
    """Build the (unopened) backend a URL names, e.g. ``memory://demo`` or ``redis://localhost:6379/0``."""
    if not isinstance(url, str) or "://" not in url:
        shown = redact_url(url) if isinstance(url, str) else url
        raise ConfigurationError(f"a bus URL looks like 'memory://' or 'redis://host:6379/0', got {shown!r}")
    scheme = urlsplit(url).scheme.lower()
    return backend_class(scheme).from_url(url, **options)
