"""Records that fit (dbtbus/_limits.py): cutting the text of a record over the maximum size, visibly."""

from __future__ import annotations

from dbtbus._limits import TRUNCATION_MARKER, RecordFitter
from dbtbus.events import NodeResult, NodeStatus, RunStarted, encode


def test_oversized_text_is_truncated_with_a_marker() -> None:
    fitter = RecordFitter(64 * 1024)
    huge = NodeResult(run_id="r", unique_id="model.p.a", status=NodeStatus.ERROR, message="é\"x" * 100_000,
                      adapter_response={"blob": "y" * 200_000})
    fit = fitter.fit_encoded(huge)
    assert fit is not None
    fitted, data = fit
    assert isinstance(fitted, NodeResult) and data == encode(fitted)
    assert len(encode(fitted)) <= 64 * 1024 and fitter.truncated == 1
    assert fitted.message is not None and fitted.message.startswith("é\"x")
    assert TRUNCATION_MARKER.split("{")[0] in fitted.message and "of 300000 characters kept]" in fitted.message
    assert "_dbtbus_truncated" in fitted.adapter_response
    small = NodeResult(run_id="r", unique_id="model.p.b", status=NodeStatus.SUCCESS, message="OK")
    kept = fitter.fit_encoded(small)
    assert kept is not None and kept[0] is small and kept[1] == encode(small)


def test_an_oversized_batch_record_is_truncated_like_a_node_result() -> None:
    from dbtbus.events import BatchResult

    fitter = RecordFitter(64 * 1024)
    huge = BatchResult(run_id="r", unique_id="model.p.a", status=NodeStatus.ERROR, batch="2026-01-02",
                       message="boom " * 100_000, adapter_response={"blob": "y" * 200_000})
    fit = fitter.fit_encoded(huge)
    assert fit is not None
    fitted, data = fit
    assert isinstance(fitted, BatchResult) and len(data) <= 64 * 1024 and data == encode(fitted)
    assert fitted.message is not None and "of 500000 characters kept]" in fitted.message
    assert "_dbtbus_truncated" in fitted.adapter_response and fitted.batch == "2026-01-02"


def test_a_run_started_too_big_for_its_graph_goes_without_it() -> None:
    from dbtbus.events import GraphNode, ProducerInfo

    graph = {f"model.p.m{i:05d}": GraphNode("model", (f"model.p.m{i - 1:05d}",)) for i in range(2000)}
    started = RunStarted(run_id="r", producer=ProducerInfo(id="x"), graph=graph)
    fit = RecordFitter(8192).fit_encoded(started)
    assert fit is not None
    fitted = fit[0]
    assert isinstance(fitted, RunStarted) and fitted.graph is None
