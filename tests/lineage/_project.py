"""A small hand-made manifest (every kind of node dbt-ol names) and two profile outputs, for tests without dbt."""

from __future__ import annotations

from typing import Any


def node(uid: str, resource_type: str, *, depends_on: tuple[str, ...] = (), materialized: str = "table",
         alias: str | None = None) -> dict[str, Any]:
    name = uid.rsplit(".", 1)[1]
    return {
        "unique_id": uid, "resource_type": resource_type, "name": name, "alias": alias or name,
        "database": "warehouse", "schema": "analytics", "config": {"materialized": materialized},
        "depends_on": {"nodes": list(depends_on)}, "columns": {},
    }  # fmt: skip


MANIFEST: dict[str, Any] = {
    "metadata": {"project_name": "p"},
    "nodes": {
        "seed.p.raw": node("seed.p.raw", "seed", materialized="seed"),
        "model.p.staged": node("model.p.staged", "model", depends_on=("seed.p.raw", "source.p.app.users")),
        "model.p.inlined": node("model.p.inlined", "model", depends_on=("model.p.staged",), materialized="ephemeral"),
        "model.p.mart": {
            **node("model.p.mart", "model", depends_on=("model.p.inlined", "seed.p.raw"), alias="mart_v2"),
            "columns": {"id": {"name": "id", "data_type": "integer", "description": "the key"}},
            "description": "The mart.",
        },
        "snapshot.p.history": node("snapshot.p.history", "snapshot", depends_on=("model.p.staged",)),
        "test.p.not_null_mart_id": {
            **node("test.p.not_null_mart_id", "test", depends_on=("model.p.mart",)),
            "attached_node": "model.p.mart",
            "test_metadata": {"name": "not_null", "kwargs": {"column_name": "id", "model": "{{ ref('mart') }}"}},
            "config": {"severity": "ERROR", "error_if": "!= 0"},
        },
    },
    "sources": {"source.p.app.users": {**node("source.p.app.users", "source"), "identifier": "users"}},
}
DUCKDB = {"type": "duckdb", "path": "/data/warehouse.duckdb", "threads": 4}
POSTGRES = {"type": "postgres", "host": "db.internal", "port": 5432, "user": "dbt", "password": "hunter2",
            "dbname": "warehouse", "schema": "analytics"}  # fmt: skip
