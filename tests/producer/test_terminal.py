"""dbtbus.producer._results: each node's terminal record kept as the bytes the producer published."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbtbus.backends.memory import get_store
from dbtbus.events import NodeResult, NodeStatus, encode
from dbtbus.producer import publish_log
from dbtbus.producer._terminal import TerminalRecords

from ._helpers import node_results, read_records

SHOP_LOG = Path(__file__).parent.parent / "cli" / "data" / "shop_build.jsonl"


def test_records_are_kept_encoded_and_decoded_on_access() -> None:
    ok = NodeResult(run_id="r", unique_id="model.p.a", status=NodeStatus.SUCCESS, message="SELECT 1",
                    adapter_response={"rows_affected": 1}, execution_time=0.5)
    never_published = NodeResult(run_id="r", unique_id="model.p.b", status=NodeStatus.ERROR, message="x" * 10)
    kept = TerminalRecords()
    kept.keep(ok, encode(ok))
    kept.keep(never_published, None)
    assert len(kept) == 2 and list(kept) == ["model.p.a", "model.p.b"] and "model.p.a" in kept
    assert kept["model.p.a"] == ok and kept["model.p.a"] is not kept["model.p.a"]  # decoded each time
    assert kept["model.p.b"] is never_published
    assert dict(kept) == {"model.p.a": ok, "model.p.b": never_published} and kept == dict(kept)
    assert "model.p.c" not in kept and kept.get("model.p.c") is None
    with pytest.raises(KeyError):
        kept["model.p.c"]
    assert repr(kept) == "<TerminalRecords of 2 nodes>"


def test_a_runs_results_are_what_it_published_and_on_memory_the_same_bytes(memory_url: str) -> None:
    result = publish_log(SHOP_LOG.read_bytes().splitlines(), memory_url, run_id="kept")
    published = node_results(read_records(memory_url, "kept"))
    assert isinstance(result.results, TerminalRecords) and len(published) > 20
    assert dict(result.results) == published
    # memory:// holds the very bytes the summary keeps: keeping them costs a dict entry per node
    run = get_store(memory_url.removeprefix("memory://"))._runs["kept"]
    kept = result.results._kept
    assert all(kept[uid] is run.nodes[uid] for uid in published)
