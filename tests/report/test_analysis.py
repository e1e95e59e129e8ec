"""The report's pure computations on graphs and schedules whose answers are known by hand."""

from __future__ import annotations

import pytest

from dbtbus.report import CriticalPath, Interval, critical_path, slowest, utilisation


def test_critical_path_of_a_diamond_takes_the_heavier_branch() -> None:
    #     a(1)
    #    /    \
    #  b(5)   c(2)
    #    \    /
    #     d(1)
    parents = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    durations = {"a": 1.0, "b": 5.0, "c": 2.0, "d": 1.0}
    assert critical_path(parents, durations) == CriticalPath(("a", "b", "d"), 7.0)


def test_a_long_chain_beats_one_heavy_node() -> None:
    parents = {"x": [], "y": ["x"], "z": ["y"], "heavy": []}
    durations = {"x": 2.0, "y": 2.0, "z": 2.0, "heavy": 5.0}
    assert critical_path(parents, durations) == CriticalPath(("x", "y", "z"), 6.0)


def test_one_heavy_node_beats_a_light_chain() -> None:
    parents = {"x": [], "y": ["x"], "heavy": []}
    durations = {"x": 1.0, "y": 1.0, "heavy": 5.0}
    assert critical_path(parents, durations) == CriticalPath(("heavy",), 5.0)


def test_missing_durations_count_zero_and_unknown_parents_are_ignored() -> None:
    parents = {"a": ["outside.the.selection"], "b": ["a"], "c": ["b"]}
    durations = {"a": 1.5, "c": 0.5}  # b never ran (skipped): weight 0, the chain still goes through it
    assert critical_path(parents, durations) == CriticalPath(("a", "b", "c"), 2.0)


def test_zero_duration_nodes_at_the_end_are_left_off() -> None:
    parents = {"a": [], "b": ["a"], "skipped": ["b"]}
    assert critical_path(parents, {"a": 1.0, "b": 2.0}) == CriticalPath(("a", "b"), 3.0)


def test_ties_are_broken_by_the_smallest_id() -> None:
    parents = {"root": [], "m2": ["root"], "m1": ["root"], "end": ["m1", "m2"]}
    durations = dict.fromkeys(parents, 1.0)
    assert critical_path(parents, durations).nodes == ("root", "m1", "end")


def test_empty_graph() -> None:
    assert critical_path({}, {}) == CriticalPath((), 0.0)


def test_a_10000_deep_chain_needs_no_recursion() -> None:
    n = 10_000
    parents = {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(n)}
    path = critical_path(parents, dict.fromkeys(parents, 0.5))
    assert len(path.nodes) == n
    assert path.nodes[0] == "n0"
    assert path.nodes[-1] == f"n{n - 1}"
    assert path.total == pytest.approx(n * 0.5)


def test_a_cycle_is_an_error() -> None:
    with pytest.raises(ValueError, match="cycle"):
        critical_path({"a": ["b"], "b": ["a"]}, {})


def test_utilisation_of_two_threads() -> None:
    # T1 busy 0-4, T2 busy 1-3: 2 threads for 4 s, 6 busy thread-seconds of 8 → 75 %.
    u = utilisation([Interval("T1", 0, 4), Interval("T2", 1, 3)], threads=2)
    assert u.span == 4
    assert u.threads == 2
    assert u.steps == ((0.0, 1), (1, 2), (3, 1), (4, 0))
    assert dict(u.busy_seconds) == {"T1": 4, "T2": 2}
    assert u.fraction == pytest.approx(0.75)
    assert u.peak_busy == 2


def test_idle_threads_and_gaps_count_against_utilisation() -> None:
    # A pool of 4 where only one thread ever worked, with a gap: 2 busy seconds of 4 × 4.
    u = utilisation([Interval("T1", 0, 1), Interval("T1", 3, 4)], threads=4)
    assert u.steps == ((0.0, 1), (1, 0), (3, 1), (4, 0))
    assert u.fraction == pytest.approx(2 / 16)
    assert u.peak_busy == 1


def test_utilisation_span_extends_to_the_runs_end() -> None:
    u = utilisation([Interval("T1", 0, 2)], threads=1, span=8)
    assert u.steps == ((0.0, 1), (2, 0), (8, 0))
    assert u.fraction == pytest.approx(0.25)


def test_back_to_back_nodes_on_one_thread_keep_it_busy() -> None:
    u = utilisation([Interval("T1", 0, 1), Interval("T1", 1, 2)], threads=1)
    assert u.steps == ((0.0, 1), (1, 1), (2, 0))
    assert u.fraction == pytest.approx(1.0)


def test_utilisation_of_nothing() -> None:
    u = utilisation([], threads=2)
    assert u.fraction == 0.0
    assert u.peak_busy == 0


def test_slowest_first_ties_by_id() -> None:
    assert slowest({"a": 1.0, "b": 3.0, "c": 3.0, "d": 2.0}, 3) == [("b", 3.0), ("c", 3.0), ("d", 2.0)]
