"""A device's summary from its events: busy and idle time, categories (stated or read from
the op name), self time with nesting, modules, achieved against peak."""

from __future__ import annotations

import pytest

from ray_tpu_profile.analysis.devices import DeviceEvent, busy_ns, category_of, device_summary

MS = 1_000_000


def test_categories_come_from_the_trace_else_from_the_op_name():
    assert category_of("fusion.12", {"hlo_category": "loop fusion"}) == "loop fusion"
    assert [
        category_of(n, {})
        for n in ("all-reduce.3", "all-gather-start.1", "dot.4", "loop_fusion.2", "fusion.7", "copy-start.2", "send.1")
    ] == ["all-reduce", "all-gather", "convolution", "loop fusion", "fusion", "copy", "send/recv"]
    assert category_of("wrapped_scatter", {"hlo_op": "custom-call.5"}) == "custom-call"
    assert category_of("tanh.1", {}) == "other"


def test_busy_time_is_the_union_of_ops_within_the_window():
    assert busy_ns([(0, 10), (5, 15), (20, 30), (28, 40)], (0, 35)) == 15 + 15
    assert busy_ns([(-5, 5)], (0, 100)) == 5


def test_a_device_summary_counts_self_time_per_category_and_module_executions():
    ops = [
        DeviceEvent(
            "XLA Ops", "fusion.1", 0, 4 * MS, {"hlo_category": "loop fusion", "flops": 4e9, "bytes_accessed": 1e9}
        ),
        DeviceEvent(
            "XLA Ops", "dot.2", 1 * MS, 2 * MS, {"hlo_category": "convolution", "flops": 8e9}
        ),  # inside fusion.1
        DeviceEvent("XLA Ops", "all-reduce.3", 6 * MS, 3 * MS, {"hlo_category": "all-reduce"}),
        DeviceEvent("XLA Modules", "jit_step(1)", 0, 9 * MS),
        DeviceEvent("XLA Modules", "jit_step(1)", 10 * MS, 5 * MS),
        DeviceEvent("XLA TraceMe", "barrier-cores", 4 * MS, 2 * MS),
    ]
    s = device_summary("h0", "/device:TPU:0", "TPU", ops, (0, 20 * MS), {"peak_teraflops_per_second": 900.0})
    assert s["busy_ms"] == 7.0 and s["idle_ms"] == 13.0 and s["window_ms"] == 20.0
    assert s["categories_ms"] == {"all-reduce": 3.0, "loop fusion": 2.0, "convolution": 2.0}
    assert sum(s["categories_ms"].values()) == pytest.approx(s["busy_ms"])  # nesting counted once
    assert [o["name"] for o in s["top_ops"]] == ["all-reduce.3", "fusion.1", "dot.2"]
    assert s["modules"] == [{"name": "jit_step(1)", "executions": 2, "total_ms": 14.0, "mean_ms": 7.0, "max_ms": 9.0}]
    assert s["flops_per_s"] == pytest.approx(12e9 / 7e-3) and s["peak_flops_per_s"] == 900e12
    assert s["hbm_bytes_per_s"] == pytest.approx(1e9 / 7e-3) and s["peak_hbm_bytes_per_s"] is None
