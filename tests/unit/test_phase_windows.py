"""Phase windows from warmup timings and step names (pure)."""

import pytest

from ray_tpu_profile.analysis.steps import check_phase, count_steps
from ray_tpu_profile.core.schedule import WindowError, phase_step_window, phase_time_window


def test_decode_window_starts_after_the_slowest_prefill_and_ends_before_the_first_finish():
    w = phase_time_window("decode", {"a": 0.010, "b": 0.020}, {"a": 0.500, "b": 0.450}, None, guard_ms=2)
    # from PREFILL_MARGIN (2x) the slowest prefill end, plus the guard, to END_MARGIN
    # (0.9x) the fastest last token, less the guard
    assert (w.delay_ms, w.duration_ms) == (42, 403 - 42)
    assert "slowest host (b;" in w.chosen_from and "fastest (b;" in w.chosen_from


def test_decode_window_too_short_for_the_duration_says_what_fits():
    with pytest.raises(WindowError) as e:
        phase_time_window("decode", {"a": 0.010}, {"a": 0.100}, 3000, guard_ms=2)
    assert "--duration-ms 3000" in str(e.value) and "use --duration-ms 66 or less" in str(e.value)


def test_prefill_window_ends_before_the_fastest_host_leaves_prefill():
    w = phase_time_window("prefill", {"a": 0.030, "b": 0.025}, {"a": 0.5, "b": 0.5}, None, guard_ms=2)
    assert (w.delay_ms, w.duration_ms) == (0, 20)  # 0.9x the fastest prefill end, less the guard
    with pytest.raises(WindowError, match="too short"):
        phase_time_window("prefill", {"a": 0.002}, {"a": 0.5}, None, guard_ms=2)


def test_step_windows():
    assert phase_step_window("decode", 2, 16).to_json() == {
        "kind": "steps",
        "phase": "decode",
        "delay_iterations": 3,
        "max_iterations": 15,
        "chosen_from": "2 prefill step(s) for the batch's prompt tokens, then 15 decode steps",
    }
    assert phase_step_window("prefill", 3, 1).max_iterations == 3
    with pytest.raises(WindowError, match="--output-len 1 has no decode step"):
        phase_step_window("decode", 1, 1)


def test_step_names():
    names = [
        "execute_context_4(64)_generation_0(0)",
        "execute_context_0(0)_generation_4(4)",
        "execute_context_1(16)_generation_3(3)",
        "aten::mm",
        None,
    ]
    assert count_steps(names) == {"prefill": 2, "decode": 1}
    assert check_phase("decode", {"prefill": 0, "decode": 5}) is None
    assert "1 prefill" in check_phase("decode", {"prefill": 1, "decode": 5})
    assert check_phase("prefill", {"prefill": 1, "decode": 0}) is None
    assert check_phase("prefill", {"prefill": 0, "decode": 0})
