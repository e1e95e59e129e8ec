from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.serialization.serialized_objects import BaseSerialization, DagSerialization

from dbtbus.airflow import DbtNodeSensor

ALL_FIELDS = ("bus_url", "dbtbus_run_id", "unique_id")


def _serialized_task(dag: DAG, task_id: str) -> dict[str, Any]:
    tasks = DagSerialization.to_dict(dag)["dag"]["tasks"]
    found: dict[str, Any] = next(t["__var"] for t in tasks if t["__var"]["task_id"] == task_id)
    return found


def test_fields_that_render_to_themselves_are_left_out_of_the_serialized_dag() -> None:
    """Airflow serializes every template field's value into each task (a configuration lookup per field, on
    every parse) and the triggerer deserializes the DAG once per trigger: a plain bus URL and unique id are
    neither templates nor worth that."""
    with DAG("plain", schedule=None) as dag:
        sensor = DbtNodeSensor(task_id="m1", unique_id="model.p.m1", bus_url="redis://h:1/0")
    assert tuple(sensor.template_fields) == ()
    serialized = _serialized_task(dag, "m1")
    assert "bus_url" not in serialized and "unique_id" not in serialized
    assert serialized["template_fields"] == []
    # the trigger still gets all it needs
    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag)).get_task("m1")
    kwargs = BaseSerialization.deserialize(restored.start_trigger_args.trigger_kwargs)  # as the triggerer does
    assert (kwargs["bus_url"], kwargs["unique_id"]) == ("redis://h:1/0", "model.p.m1")


def test_a_field_holding_a_template_stays_one_and_renders() -> None:
    with DAG("templated", schedule=None) as dag:
        sensor = DbtNodeSensor(task_id="m1", unique_id="model.p.m1", bus_url="{{ 'redis://h:1/' ~ 2 }}",
                               dbtbus_run_id="{# a comment #}run-7")
    assert tuple(sensor.template_fields) == ("bus_url", "dbtbus_run_id")
    assert _serialized_task(dag, "m1")["template_fields"] == ["bus_url", "dbtbus_run_id"]
    sensor.render_template_fields({})
    assert (sensor.bus_url, sensor.dbtbus_run_id, sensor.unique_id) == ("redis://h:1/2", "run-7", "model.p.m1")


@pytest.mark.parametrize("dag_kwargs", [{"jinja_environment_kwargs": {"variable_start_string": "[["}},
                                        {"render_template_as_native_obj": True}],
                         ids=["own delimiters", "native rendering"])
def test_a_dag_with_its_own_jinja_settings_keeps_every_field(dag_kwargs: dict[str, Any]) -> None:
    """Another syntax can make a plain-looking string a template, and native rendering can turn one into
    another type: there, every field stays a template."""
    with DAG("own_jinja", schedule=None, **dag_kwargs):
        sensor = DbtNodeSensor(task_id="m1", unique_id="model.p.m1", bus_url="redis://h:1/0")
    assert tuple(sensor.template_fields) == ALL_FIELDS


def test_a_sensor_made_outside_a_dag_keeps_every_field() -> None:
    sensor = DbtNodeSensor(task_id="m1", unique_id="model.p.m1", bus_url="redis://h:1/0")
    assert tuple(sensor.template_fields) == ALL_FIELDS


def test_a_subclass_reading_templates_from_files_keeps_every_field() -> None:
    class FromFiles(DbtNodeSensor):
        template_ext = (".url",)

    with DAG("files", schedule=None):
        sensor = FromFiles(task_id="m1", unique_id="model.p.m1", bus_url="redis://h:1/0")
    assert tuple(sensor.template_fields) == ALL_FIELDS
