from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbtbus import DecodeError
from dbtbus._dbt.rules import SKIP_CHILDREN_ON
from dbtbus.events import (
    COMPILED_CODE_LIMIT,
    FAILURE_STATUSES,
    SCHEMA_VERSION,
    SUCCESS_STATUSES,
    GraphNode,
    Heartbeat,
    NodeResult,
    NodeStarted,
    NodeStatus,
    ProducerInfo,
    RunCrashed,
    RunFinished,
    RunStarted,
    decode,
    encode,
    parse_timestamp,
)

T0 = datetime(2026, 11, 21, 10, 2, 46, 906456, tzinfo=timezone.utc)


def full_result(status: NodeStatus) -> NodeResult:
    return NodeResult(
        run_id="run-1",
        unique_id="model.shop.orders",
        status=status,
        resource_type="model",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=1.5),
        execution_time=1.5,
        message="OK" if status.is_success else "boom",
        adapter_response={"_message": "OK", "rows_affected": 3, "code": "INSERT"},
        failures=2 if status is NodeStatus.FAIL else None,
        thread="Thread-1 (worker)",
        attempt=2,
        skip_cause="model.shop.stg" if status is NodeStatus.SKIPPED else None,
        compiled_code="select 1",
        relation_name='"shop"."main"."orders"',
    )


@pytest.mark.parametrize("status", list(NodeStatus))
def test_node_result_round_trips_for_every_status(status: NodeStatus) -> None:
    record = full_result(status)
    assert decode(encode(record)) == record


def test_every_dbt_status_is_covered() -> None:
    dbt_statuses = {
        "success", "error", "fail", "warn", "skipped", "pass", "runtime error", "partial success", "no-op", "reused",
    }  # fmt: skip
    assert {s.value for s in NodeStatus} == dbt_statuses | {"not_run"}
    assert SUCCESS_STATUSES.isdisjoint(FAILURE_STATUSES)
    neither = set(NodeStatus) - SUCCESS_STATUSES - FAILURE_STATUSES
    assert neither == {NodeStatus.SKIPPED, NodeStatus.NOT_RUN}


@pytest.mark.parametrize(
    "record",
    [
        RunStarted(
            run_id="run-1",
            producer=ProducerInfo(id="p1", host="h", pid=42, dbtbus_version="0.1.0", kind="dbtRunner"),
            started_at=T0,
            command="build",
            args=("build", "--select", "tag:x"),
            dbt_version="1.11.16",
            invocation_id="abc",
            graph={"seed.s.a": GraphNode("seed"), "model.s.b": GraphNode("model", ("seed.s.a",))},
            skip_children_on=SKIP_CHILDREN_ON["build"],
            continue_on_error=frozenset({"model.s.b"}),
            heartbeat_interval=2.5,
            attempt=3,
        ),
        RunStarted(run_id="run-1", producer=ProducerInfo(id="p"), started_at=T0),
        NodeStarted(run_id="run-1", unique_id="model.s.b", resource_type="model", started_at=T0, thread="Thread-2"),
        Heartbeat(run_id="run-1", at=T0, running=3, done=10, peak_rss=123456789),
        RunFinished(
            run_id="run-1",
            success=False,
            exit_code=1,
            counts={"success": 3, "error": 1},
            elapsed=9.5,
            peak_rss=10,
            finished_at=T0,
            peak_rss_scope="invocation",
        ),
        RunCrashed(run_id="run-1", error="KeyboardInterrupt", elapsed=1.0, finished_at=T0, exit_code=-9,
                   peak_rss_scope="process"),
    ],
    ids=lambda r: type(r).__name__,
)
def test_lifecycle_records_round_trip(record: object) -> None:
    assert decode(encode(record)) == record  # type: ignore[arg-type]


def test_wire_form_is_versioned_compact_json() -> None:
    obj = orjson.loads(encode(full_result(NodeStatus.SUCCESS)))
    assert obj["v"] == SCHEMA_VERSION
    assert obj["type"] == "node_result"
    assert obj["started_at"] == "2026-11-21T10:02:46.906456Z"


def test_naive_timestamps_are_taken_as_utc() -> None:
    naive = datetime(2026, 11, 21, 10, 0, 0)
    record = NodeStarted(run_id="r", unique_id="m", started_at=naive)
    decoded = decode(encode(record))
    assert isinstance(decoded, NodeStarted)
    assert decoded.started_at == naive.replace(tzinfo=timezone.utc)
    assert parse_timestamp("2026-11-21T10:02:46.906456").tzinfo is timezone.utc
    assert parse_timestamp("2026-11-21T11:00:00+01:00") == datetime(2026, 11, 21, 10, tzinfo=timezone.utc)


def test_compiled_code_is_capped() -> None:
    record = NodeResult(
        run_id="r", unique_id="m", status=NodeStatus.SUCCESS, compiled_code="x" * (COMPILED_CODE_LIMIT + 10)
    )
    assert record.compiled_code is not None and len(record.compiled_code) == COMPILED_CODE_LIMIT
    assert record.compiled_code_truncated
    decoded = decode(encode(record))
    assert isinstance(decoded, NodeResult) and decoded.compiled_code_truncated


def test_unknown_fields_are_tolerated() -> None:
    obj = orjson.loads(encode(full_result(NodeStatus.WARN)))
    obj["added_in_a_later_minor"] = {"anything": [1, 2]}
    assert decode(orjson.dumps(obj)) == full_result(NodeStatus.WARN)


def test_missing_optional_fields_take_defaults() -> None:
    record = decode(b'{"v":1,"type":"node_result","run_id":"r","unique_id":"m","status":"pass"}')
    assert record == NodeResult(run_id="r", unique_id="m", status=NodeStatus.PASS)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        (b"[1,2]", "a JSON list, not an object"),
        (b'{"type":"node_result"}', "no integer schema version"),
        (b'{"v":"1","type":"node_result"}', "no integer schema version"),
        (b'{"v":2,"type":"node_result"}', "newer than this dbtbus understands"),
        (b'{"v":0,"type":"node_result"}', "invalid schema version"),
        (b'{"v":1,"type":"gossip"}', "unknown record type 'gossip'"),
        (b'{"v":1,"type":"node_result","run_id":"r","unique_id":"m","status":"meh"}', "unknown node status 'meh'"),
        (b'{"v":1,"type":"node_result","unique_id":"m","status":"pass"}', "field 'run_id' must be a string"),
        (b'{"v":1,"type":"node_result","run_id":"r","unique_id":"m","status":"pass","failures":"2"}', "'failures'"),
        (
            b'{"v":1,"type":"node_result","run_id":"r","unique_id":"m","status":"pass","started_at":"yesterday"}',
            "bad timestamp",
        ),
        (b'{"v":1,"type":"run_started","run_id":"r","graph":{"m":{"parents":"a"}}}', "graph node 'm' is malformed"),
        (b'{"v":1,"type":"run_finished","run_id":"r"}', "'success' must be a boolean"),
        (b'{"v":1,"type":"run_finished","run_id":"r","success":true,"counts":{"a":"b"}}', "'counts'"),
        (b'{"dbt": "log line", "info": {"name": "NodeFinished"}}', "no integer schema version"),
    ],
)
def test_malformed_and_foreign_bytes_raise_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message) as info:
        decode(data)
    assert info.value.data == data[:200]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
record_like = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 2, 0, -1, "1", None])},
    optional={
        "type": st.sampled_from(
            ["node_result", "run_started", "node_started", "heartbeat", "run_finished", "run_crashed", "x"]
        ),
        "run_id": json_values,
        "unique_id": json_values,
        "status": st.sampled_from([s.value for s in NodeStatus]) | json_values,
        "started_at": st.sampled_from(["2026-11-21T10:00:00Z", "nope", None]) | json_values,
        "graph": json_values,
        "producer": json_values,
        "success": json_values,
        "counts": json_values,
        "error": json_values,
        "adapter_response": json_values,
        "failures": json_values,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_never_crashes_on_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


@settings(max_examples=600, deadline=None)
@given(record_like)
def test_decoder_never_crashes_on_record_like_objects(obj: dict[str, object]) -> None:
    try:
        record = decode(orjson.dumps(obj))
    except DecodeError:
        return
    # Whatever decodes must encode again to something that decodes to the same record.
    assert decode(encode(record)) == record



def _ok_or(value: object) -> st.SearchStrategy[object]:
    """Mostly a well-typed ``value`` (the decoder's usual path), sometimes anything JSON holds."""
    return st.just(value) | st.none() | json_values


node_result_like = st.fixed_dictionaries(
    {"v": st.just(1), "type": st.just("node_result")},
    optional={
        "run_id": _ok_or("r"),
        "unique_id": _ok_or("model.p.m"),
        "status": st.sampled_from([s.value for s in NodeStatus]) | json_values,
        "resource_type": _ok_or("model"),
        "started_at": st.sampled_from(["2026-11-21T10:00:00Z", "2026-11-21T10:00:00", "nope"]) | json_values,
        "finished_at": _ok_or("2026-11-21T10:00:01.5+01:00"),
        "execution_time": _ok_or(1.5) | st.just(2) | st.just(True),
        "message": _ok_or("OK"),
        "adapter_response": _ok_or({"rows_affected": 3}),
        "failures": _ok_or(0) | st.just(False),
        "thread": _ok_or("Thread-1"),
        "attempt": _ok_or(2) | st.just(True),
        "skip_cause": _ok_or("model.p.up"),
        "compiled_code": _ok_or("select 1"),
        "compiled_code_truncated": _ok_or(True),
        "relation_name": _ok_or('"db"."main"."m"'),
        "timing": _ok_or([{"name": "execute", "started_at": "2026-11-21T10:00:00Z", "completed_at": None}]),
    },
)


def _checked(obj: dict[str, object]) -> object:
    from dbtbus.events import _CODECS, _Fields

    try:
        return _CODECS["node_result"].checked(_Fields(obj, "node_result", None))
    except DecodeError as exc:
        return str(exc)


@settings(max_examples=800, deadline=None)
@given(node_result_like)
def test_the_node_result_fast_path_decodes_as_the_field_by_field_one(obj: dict[str, object]) -> None:
    try:
        fast: object = decode(orjson.dumps(obj))
    except DecodeError as exc:
        fast = str(exc)
    assert fast == _checked(obj)

@settings(max_examples=200, deadline=None)
@given(
    status=st.sampled_from(list(NodeStatus)),
    message=st.none() | st.text(),
    failures=st.none() | st.integers(min_value=0, max_value=2**40),
    execution_time=st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False),
    adapter_response=st.dictionaries(
        st.text(max_size=10), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10), max_size=5
    ),
    when=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)),
)
def test_node_results_round_trip(
    status: NodeStatus,
    message: str | None,
    failures: int | None,
    execution_time: float | None,
    adapter_response: dict[str, object],
    when: datetime,
) -> None:
    record = NodeResult(
        run_id="r",
        unique_id="model.p.m",
        status=status,
        message=message,
        failures=failures,
        execution_time=execution_time,
        adapter_response=adapter_response,
        started_at=when,
        finished_at=when,
    )
    assert decode(encode(record)) == record


def test_values_json_cannot_hold_are_stringified_not_fatal() -> None:
    from decimal import Decimal

    record = NodeResult(
        run_id="r",
        unique_id="m",
        status=NodeStatus.SUCCESS,
        adapter_response={"rows": 2**70, "cost": Decimal("1.5"), "nested": {"when": T0, "set": {1}}},
    )
    decoded = decode(encode(record))
    assert isinstance(decoded, NodeResult)
    assert decoded.adapter_response == {
        "rows": str(2**70),
        "cost": "1.5",
        "nested": {"when": T0.isoformat(), "set": "{1}"},
    }


@pytest.mark.parametrize(("announced", "clamped"), [(1e308, 600.0), (0.0, 0.2), (-3.0, 0.2), (float("nan"), 5.0)])
def test_a_decoded_heartbeat_interval_is_clamped(announced: float, clamped: float) -> None:
    from dbtbus.events import HEARTBEAT_RANGE, ProducerInfo, RunStarted, from_dict, to_dict

    obj = to_dict(RunStarted(run_id="r", producer=ProducerInfo(id="p")))
    obj["heartbeat_interval"] = announced  # JSON cannot carry a NaN; a mapping handed to from_dict can
    record = from_dict(obj) if announced != announced else decode(orjson.dumps(obj))
    assert isinstance(record, RunStarted) and record.heartbeat_interval == clamped
    assert HEARTBEAT_RANGE[0] <= record.heartbeat_interval <= HEARTBEAT_RANGE[1]


def test_to_dict_and_from_dict_round_trip_every_record_type() -> None:
    from dbtbus.events import Heartbeat, RunCrashed, RunFinished, from_dict, to_dict

    for record in (Heartbeat(run_id="r", attempt=2), RunFinished(run_id="r", success=True, attempt=3),
                   RunCrashed(run_id="r", error="boom", attempt=None)):
        assert from_dict(to_dict(record)) == record


def test_a_well_formed_node_result_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import dbtbus.events as events

    record = NodeResult(
        run_id="r",
        unique_id="model.p.m",
        status=NodeStatus.WARN,
        resource_type="model",
        started_at=datetime(2026, 11, 21, 10, tzinfo=timezone.utc),
        execution_time=2.0,
        message="OK",
        adapter_response={"rows_affected": 3},
        failures=1,
        thread="Thread-1",
        attempt=2,
        compiled_code="select 1",
        relation_name="m",
    )
    data = encode(record)

    def refuse(fields: object) -> NodeResult:
        raise AssertionError("took the field-by-field path")

    monkeypatch.setattr(events._CODECS["node_result"], "checked", refuse)
    assert decode(data) == record
    with pytest.raises(AssertionError, match="field-by-field"):
        decode(data.replace(b'"attempt":2', b'"attempt":"2"'))
