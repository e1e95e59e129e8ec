"""Where a dbtbus task finds its bus: ``bus_url``, an Airflow connection (``bus_conn_id``), a bare ``xcom://``.

* a ``redis`` connection (the Redis provider's type, fields as that provider reads them: host, port,
  login, password, ``extra.db``, ``extra.ssl``) becomes ``redis://`` / ``rediss://``;
* a ``dbtbus`` connection holds a full bus URL in ``extra.url`` (or ``host``), e.g. ``xcom://``; its login
  and password fields, when set, go into a URL that names none;
* a bare ``xcom://`` is filled in with the task instance carrying the run's XComs.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from .._exceptions import ConfigurationError
from ..backends.xcom import is_bare_xcom_url, resolve_xcom_url
from ._compat import AirflowException

__all__ = ["aconnection_url", "bus_url_for", "bus_url_from_connection", "connection_url", "resolve_bus_url"]

CONN_TYPE = "dbtbus"


def _extra(conn: Any) -> dict[str, Any]:
    extra = getattr(conn, "extra_dejson", None)
    if isinstance(extra, dict):
        return extra
    raw = getattr(conn, "extra", None)
    if not raw:
        return {}
    try:
        loaded = json.loads(raw)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def bus_url_from_connection(conn: Any) -> str:
    """The bus URL an Airflow connection describes (see the module docstring)."""
    conn_type = (getattr(conn, "conn_type", None) or "").lower()
    extra = _extra(conn)
    if conn_type == "redis":
        ssl = str(extra.get("ssl", "")).lower() in ("1", "true", "yes")
        user = getattr(conn, "login", None) or ""
        password = getattr(conn, "password", None) or ""
        auth = ""
        if user or password:
            auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else f":{quote(password, safe='')}@"
        host = getattr(conn, "host", None) or "localhost"
        port = getattr(conn, "port", None) or 6379
        db = extra.get("db", 0) or 0
        return f"{'rediss' if ssl else 'redis'}://{auth}{host}:{port}/{db}"
    if conn_type == CONN_TYPE:
        url = extra.get("url") or getattr(conn, "host", None)
        if not url:
            raise ConfigurationError(f"dbtbus connection {getattr(conn, 'conn_id', '?')!r} has no url")
        return _with_credentials(str(url), getattr(conn, "login", None) or "", getattr(conn, "password", None) or "")
    raise ConfigurationError(
        f"connection {getattr(conn, 'conn_id', '?')!r} has type {conn_type!r}: a dbtbus bus needs a 'redis' or "
        f"'{CONN_TYPE}' connection"
    )


def _with_credentials(url: str, login: str, password: str) -> str:
    """The connection's login and password in its URL, where the URL names none: the password field is where
    Airflow keeps a secret masked (the UI, the logs), so it need never be typed into the URL itself."""
    if not (login or password):
        return url
    parts = urlsplit(url)
    if "@" in parts.netloc or not parts.netloc:
        return url
    auth = f"{quote(login, safe='')}:{quote(password, safe='')}" if login else f":{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{auth}@{parts.netloc}"))


def connection_url(conn_id: str) -> str:
    """The bus URL of Airflow connection ``conn_id`` (in a task)."""
    from airflow.sdk import Connection

    return bus_url_from_connection(Connection.get(conn_id))


async def aconnection_url(conn_id: str) -> str:
    """The same, from a trigger's event loop."""
    from airflow.sdk import Connection

    return bus_url_from_connection(await Connection.async_get(conn_id))


def resolve_bus_url(bus_url: str, ti: Any, carrier_task_id: str | None, *, dag_id: str | None = None) -> str:
    """Fill a bare ``xcom://`` with the carrier task instance of ``ti``'s DAG run; other URLs are unchanged.

    ``dag_id``: the DAG holding the carrier, when it is not ``ti``'s (a node task in a DAG of its own).
    """
    if not is_bare_xcom_url(bus_url):
        return bus_url
    return resolve_xcom_url(
        bus_url,
        dag_id=dag_id or ti.dag_id,
        task_id=carrier_task_id or ti.task_id,
        run_id=ti.run_id,
        map_index=getattr(ti, "map_index", -1) if carrier_task_id is None else -1,
    )


def bus_url_for(bus_url: str | None, bus_conn_id: str | None, ti: Any, carrier_task_id: str | None,
                *, dag_id: str | None = None) -> str:
    """The bus URL a task uses: ``bus_url`` or connection ``bus_conn_id``, a bare ``xcom://`` filled in."""
    if bus_conn_id:
        bus_url = connection_url(bus_conn_id)
    if not bus_url:
        raise AirflowException("a dbtbus task needs bus_url or bus_conn_id")
    return resolve_bus_url(bus_url, ti, carrier_task_id, dag_id=dag_id)
