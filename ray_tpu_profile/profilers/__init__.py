"""Capture backends: one module each, one small interface (base.CaptureBackend)."""

from __future__ import annotations

from pathlib import Path

from ray_tpu_profile.profilers.base import CaptureBackend


def make_backend(name: str, trace_dir: Path, host_name: str) -> CaptureBackend:
    """The backend called `name`, writing under trace_dir. Imports it lazily."""
    if name == "torch":
        from ray_tpu_profile.profilers.torch import VllmTorchProfiler

        return VllmTorchProfiler(trace_dir, host_name)
    raise ValueError(f"unknown profiler {name!r}")
