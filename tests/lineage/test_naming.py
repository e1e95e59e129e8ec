"""Dataset naming: dbt-ol's namespace and names, which nodes have a relation, what a node reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbtbus.lineage import (
    DatasetName,
    DatasetNaming,
    LineageUnavailable,
    dataset_name,
    dataset_namespace,
    load_profile_output,
)

from ..test_import import imported_modules
from ._project import DUCKDB, MANIFEST, POSTGRES


def test_the_namespace_is_dbt_ols_and_never_holds_the_password() -> None:
    assert dataset_namespace(DUCKDB) == "duckdb:///data/warehouse.duckdb"
    assert dataset_namespace(POSTGRES) == "postgres://db.internal:5432"
    assert "hunter2" not in dataset_namespace(POSTGRES)


def test_names_are_database_schema_alias_and_a_source_its_name() -> None:
    naming = DatasetNaming(MANIFEST, POSTGRES)
    assert naming.dataset("model.p.mart") == DatasetName("postgres://db.internal:5432", "warehouse.analytics.mart_v2")
    assert naming.dataset("source.p.app.users") == DatasetName(naming.namespace, "warehouse.analytics.users")
    assert naming.dataset("seed.p.raw") == DatasetName(naming.namespace, "warehouse.analytics.raw")
    assert naming.dataset("snapshot.p.history") == DatasetName(naming.namespace, "warehouse.analytics.history")
    assert dataset_name(MANIFEST["nodes"]["model.p.staged"], POSTGRES) == naming.dataset("model.p.staged")
    assert str(naming.dataset("seed.p.raw")) == "postgres://db.internal:5432/warehouse.analytics.raw"
    assert naming.adapter_type == "postgres"


def test_tests_ephemeral_models_and_unknown_nodes_have_no_dataset() -> None:
    naming = DatasetNaming(MANIFEST, DUCKDB)
    assert naming.dataset("test.p.not_null_mart_id") is None
    assert naming.dataset("model.p.inlined") is None
    assert naming.dataset("model.p.nowhere") is None
    assert naming.model_node("model.p.inlined") is None


def test_a_node_reads_through_an_ephemeral_model_to_its_parents() -> None:
    naming = DatasetNaming(MANIFEST, DUCKDB)
    assert naming.parents("model.p.mart") == ["model.p.staged", "seed.p.raw"]
    assert naming.parents("model.p.staged") == ["seed.p.raw", "source.p.app.users"]
    assert [d.name for d in naming.inputs("test.p.not_null_mart_id")] == ["warehouse.analytics.mart_v2"]


def test_an_adapter_dbt_ol_does_not_know_is_a_typed_error() -> None:
    with pytest.raises(LineageUnavailable, match="adapters are supported"):
        dataset_namespace({"type": "exasol", "host": "x"})
    with pytest.raises(LineageUnavailable, match="lacks 'host'"):
        dataset_namespace({"type": "postgres", "port": 5432})


def test_profiles_yml_is_read_with_env_var_as_dbt_ol_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "profiles.yml").write_text(
        "shop:\n  target: dev\n  outputs:\n"
        "    dev: {type: duckdb, path: \"{{ env_var('WAREHOUSE_FILE') }}\"}\n"
        "    prod: {type: postgres, host: pg, port: 5433, password: \"{{ env_var('PGPASS', 'x') }}\"}\n"
    )
    monkeypatch.setenv("WAREHOUSE_FILE", "/srv/shop.duckdb")
    assert dataset_namespace(load_profile_output(tmp_path, "shop")) == "duckdb:///srv/shop.duckdb"
    assert dataset_namespace(load_profile_output(tmp_path, "shop", "prod")) == "postgres://pg:5433"
    with pytest.raises(LineageUnavailable, match="no output"):
        load_profile_output(tmp_path, "shop", "staging")
    with pytest.raises(LineageUnavailable, match="no profile"):
        load_profile_output(tmp_path, "other")


def test_importing_dbtbus_lineage_imports_no_openlineage() -> None:
    modules = imported_modules("import dbtbus.lineage")
    assert "dbtbus.lineage" in modules
    assert not [m for m in modules if m.split(".")[0] in {"openlineage", "openlineage_sql", "yaml", "jinja2"}]
