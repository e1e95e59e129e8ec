"""``DbtBusHook``: the ``dbtbus`` connection type (a bus URL kept in Airflow's connections)."""

from __future__ import annotations

from typing import Any

from airflow.sdk.bases.hook import BaseHook

from ._urls import CONN_TYPE, bus_url_from_connection

__all__ = ["DbtBusHook"]


class DbtBusHook(BaseHook):  # type: ignore[misc,unused-ignore]
    """The bus URL of connection ``bus_conn_id``: a ``dbtbus`` connection (``extra.url``) or a ``redis`` one."""

    conn_name_attr = "bus_conn_id"
    default_conn_name = "dbtbus_default"
    conn_type = CONN_TYPE
    hook_name = "dbtbus bus"

    def __init__(self, bus_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bus_conn_id = bus_conn_id

    def get_url(self) -> str:
        return bus_url_from_connection(self.get_connection(self.bus_conn_id))

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["port", "schema", "login", "password"],
            "relabeling": {"host": "Bus URL"},
            "placeholders": {"host": "xcom://  or  redis://redis.internal:6379/0"},
        }
