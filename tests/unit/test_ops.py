"""Which trace events are operations, steps, or the profiler's and the tool's own (ops.py),
on synthetic events shaped as the real traces are (names seen in this tool's runs)."""

from __future__ import annotations

import pytest

from ray_tpu_profile.analysis.ops import operation_profile

MS = 1_000_000


def test_torch_profiler_span_and_step_annotations_are_not_operations():
    events = [
        ("main", "PyTorch Profiler (0)", 0, 100 * MS),  # encloses everything
        ("main", "execute_context_4(64)_generation_0(0)", 10 * MS, 30 * MS),
        ("main", "aten::linear", 12 * MS, 20 * MS),
        ("main", "execute_context_0(0)_generation_4(4)", 50 * MS, 10 * MS),
        ("main", "aten::linear", 51 * MS, 5 * MS),
        ("main", "aten::add", 70 * MS, 1 * MS),
    ]
    profile = operation_profile(events)
    assert profile.self_ms == {"aten::linear": pytest.approx(25.0), "aten::add": pytest.approx(1.0)}
    assert profile.steps() == {"count": 2, "total_ms": pytest.approx(40.0), "mean_ms": pytest.approx(20.0)}
    assert profile.left_out_ms["PyTorch Profiler (0)"] == pytest.approx(59.0)  # its self time
    assert profile.left_out_ms["execute_context_4(64)_generation_0(0)"] == pytest.approx(10.0)


def test_xplane_wrappers_and_the_tools_capture_wait_are_left_out():
    track = "/host:CPU ray::HostActor"
    events = [
        (track, "$tracing_helper.py:475 _resume_span", 0, 150 * MS),  # Ray's actor-call wrapper
        (track, "$actor.py:206 run_profiled", 1 * MS, 148 * MS),
        (track, "$gpu_model_runner.py:3939 execute_model", 10 * MS, 20 * MS),
        (track, "$torch._C._nn linear", 12 * MS, 15 * MS),
        (track, "$gpu_model_runner.py:3939 execute_model", 40 * MS, 20 * MS),
        (track, "$tracing_helper.py:475 _resume_span", 151 * MS, 168 * MS),
        (track, "$actor.py:216 finish_capture", 152 * MS, 166 * MS),  # the tool waits for its trace
        (track, "$server.py:261 stop", 152 * MS, 166 * MS),
        (track, "$threading.py:1125 _wait_for_tstate_lock", 153 * MS, 164 * MS),
    ]
    profile = operation_profile(events)
    assert "$threading.py:1125 _wait_for_tstate_lock" not in profile.self_ms
    assert not any("_resume_span" in name or "finish_capture" in name for name in profile.self_ms)
    assert profile.self_ms["$torch._C._nn linear"] == pytest.approx(15.0)
    assert profile.self_ms["$gpu_model_runner.py:3939 execute_model"] == pytest.approx(25.0)  # a function: stays
    assert profile.steps()["count"] == 2
    assert profile.left_out_ms["$actor.py:216 finish_capture"] == pytest.approx(166.0)


def test_the_capture_control_rule_follows_the_actor_methods_it_names():
    """The python tracer names an event `$<file>:<line> <function>`: if the host actor's
    capture-control methods move to another file or are renamed, the tool's own wait would
    silently come back into "top operations". This fails first."""
    import inspect
    from pathlib import Path

    from ray_tpu_profile.analysis.ops import TOOL_CONTROL, TOOL_CONTROL_FILE, TOOL_CONTROL_FUNCTIONS
    from ray_tpu_profile.host.actor import HostActor

    for name in TOOL_CONTROL_FUNCTIONS:
        method = getattr(HostActor, name)
        _, line = inspect.getsourcelines(method)
        assert Path(inspect.getsourcefile(method)).name == TOOL_CONTROL_FILE
        assert TOOL_CONTROL.match(f"${TOOL_CONTROL_FILE}:{line} {name}")


def test_device_tracks_are_never_ranked_with_the_host_s_operations():
    from ray_tpu_profile.analysis.ops import operation_profile

    profile = operation_profile(
        [("/host:CPU python", "$llm.py:1 generate", 0, 10 * MS), ("/device:TPU:0 XLA Ops", "fusion.1", 0, 9 * MS)]
    )
    assert profile.self_ms == {"$llm.py:1 generate": pytest.approx(10.0)}
