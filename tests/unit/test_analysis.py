"""Latency statistics and self-time arithmetic (pure)."""

import pytest

from ray_tpu_profile.analysis.summary_stats import latency_stats, self_times, top_operations


def test_latency_stats():
    s = latency_stats([1.0, 2.0, 3.0, 4.0, 10.0])
    assert (s["n"], s["mean"], s["p50"], s["p90"], s["max"]) == (5, 4.0, 3.0, 10.0, 10.0)
    assert s["std"] == pytest.approx(3.1623, abs=1e-4)
    assert latency_stats([]) is None


def test_self_time_subtracts_nested_events_per_track():
    intervals = [
        ("t1", "step", 0, 10),
        ("t1", "matmul", 1, 4),
        ("t1", "attn", 5, 3),
        ("t1", "inner", 6, 1),
        ("t2", "step", 0, 2),  # another track: not nested in t1's step
    ]
    assert self_times(intervals) == {"step": 10 - 4 - 3 + 2, "matmul": 4, "attn": 3 - 1, "inner": 1}


def test_top_operations_share():
    top = top_operations({"a": 6.0, "b": 3.0, "c": 1.0}, count=2)
    assert [(t["name"], t["share"]) for t in top] == [("a", 0.6), ("b", 0.3)]
