"""Capture backends: one module each, one small interface (base.CaptureBackend)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray_tpu_profile.config import Capture
from ray_tpu_profile.profilers.base import CaptureBackend

if TYPE_CHECKING:
    from ray_tpu_profile.profilers.time_window import TimeWindowBackend


def make_backend(capture: Capture, trace_dir: Path, host_name: str, session_id: str) -> CaptureBackend:
    """The backend capture.profiler names (already resolved), writing under trace_dir."""
    if capture.profiler == "torch":
        from ray_tpu_profile.profilers.torch import VllmTorchProfiler

        return VllmTorchProfiler(trace_dir, host_name)
    return time_window_backend(
        capture.profiler,
        trace_dir,
        host_name,
        session_id=session_id,
        delay_ms=capture.delay_ms,
        duration_ms=capture.duration_ms,
        port=capture.port,
        ready_timeout_s=capture.server_wait_s,
        python_tracer_level=capture.python_tracer_level,
        real_time_start=capture.real_time_start,
    )


def time_window_backend(kind: str, trace_dir: Path, host_name: str, **server_args: Any) -> TimeWindowBackend:
    """The client side of a TSL profiler server of kind "jax" or "xla" (profilers.time_window),
    for `run`'s hosts and `attach`'s registered servers alike."""
    if kind == "jax":
        from ray_tpu_profile.profilers.jax import JaxProfiler

        return JaxProfiler(trace_dir, host_name, **server_args)
    if kind == "xla":
        from ray_tpu_profile.profilers.xla import XlaProfiler

        return XlaProfiler(trace_dir, host_name, **server_args)
    raise ValueError(f"unknown profiler server {kind!r}")
