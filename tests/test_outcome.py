"""Outcome (dbtbus/_outcome.py): a node's outcome as data, its words, its wire form and its exceptions."""

from __future__ import annotations

import pytest

from dbtbus import DecodeError, NodeFailed, Outcome, OutcomeKind, UpstreamFailed

from ._records import DIAMOND, RUN, result, started
from .test_state import fold

K = OutcomeKind


def test_the_outcome_round_trips_and_raises_its_own_kind() -> None:
    state = fold(started(DIAMOND), result("seed.s", "error", message="no file"))
    outcome = state.outcome("model.c")
    assert outcome.kind is K.UPSTREAM_FAILED and outcome.cause == "seed.s"
    assert Outcome.from_dict(outcome.to_dict()) == outcome
    error = outcome.error()
    assert isinstance(error, UpstreamFailed) and error.kind is outcome.kind and error.outcome is outcome
    assert "no file" in str(error)
    with pytest.raises(UpstreamFailed):
        outcome.unwrap()
    success = fold(started(DIAMOND), result("seed.s")).outcome("seed.s")
    assert success.unwrap().unique_id == "seed.s"
    with pytest.raises(ValueError):
        success.error()


@pytest.mark.parametrize("kind", [K.SUCCESS, K.FAILED])
def test_a_success_or_a_failure_carries_its_record(kind: OutcomeKind) -> None:
    """Checked where the data is made, not asserted where it is read (asserts vanish under ``python -O``)."""
    with pytest.raises(ValueError, match=f"a {kind.value} outcome carries its record"):
        Outcome(kind, RUN, "model.a")
    with pytest.raises(DecodeError, match=f"a {kind.value} outcome carries its record"):
        Outcome.from_dict({"kind": kind.value, "run_id": RUN, "unique_id": "model.a"})
    not_in_run = Outcome(K.NOT_IN_RUN, RUN, "model.a")
    with pytest.raises(ValueError, match="carries the failing record"):
        NodeFailed(not_in_run)


def test_an_exception_carries_the_outcome_s_data() -> None:
    failed = Outcome(K.FAILED, RUN, "model.a", record=result("model.a", "error", message="boom"))
    error = failed.error()
    assert isinstance(error, NodeFailed) and error.outcome is failed and error.record is failed.record
    assert (error.run_id, error.unique_id, error.kind) == (RUN, "model.a", K.FAILED)
    assert str(error) == failed.message == "model.a finished with status 'error': boom"
