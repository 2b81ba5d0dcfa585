"""vLLM's built-in torch profiler (ProfilerConfig), started and stopped around the
profiled iterations. Traces every engine step in between; the time window
(--delay-ms/--duration-ms) belongs to the profiler-server backends."""

from __future__ import annotations

from typing import Any

from ray_tpu_profile.profilers.base import CaptureBackend
from ray_tpu_profile.schedule import StepWindow


class VllmTorchProfiler(CaptureBackend):
    name = "torch"

    def configure(self, engine_args: Any) -> None:
        from vllm.config import ProfilerConfig

        torch_dir = self.torch_dir = self.trace_dir / "torch"
        torch_dir.mkdir(parents=True, exist_ok=True)
        engine_args.profiler_config = ProfilerConfig(
            profiler="torch",
            torch_profiler_dir=str(torch_dir.resolve()),
            # With stacks on, the CPU build intermittently fails to write its text table.
            torch_profiler_with_stack=False,
        )

    @property
    def prefix(self) -> str:
        """In every trace file name: the host, and the shape in a sweep."""
        return f"{self.host_name}-{self.shape_tag}" if self.shape_tag else self.host_name

    def start(self, llm: Any, trace_start_ns: int | None = None, window: StepWindow | None = None) -> None:
        if window is not None:
            llm.start_profile(profile_prefix=self.prefix, delay_iterations=window.delay_iterations,
                              max_iterations=window.max_iterations)
        else:
            llm.start_profile(profile_prefix=self.prefix)

    def stop(self, llm: Any) -> None:
        llm.stop_profile()
        if self.shape_tag:
            # A sweep: each shape's files in a folder of their own, found by their prefix.
            shape_dir = self.torch_dir / self.shape_tag
            shape_dir.mkdir(exist_ok=True)
            for path in self.torch_dir.glob(f"{self.prefix}_*"):
                path.rename(shape_dir / path.name)

    def describe(self) -> dict[str, Any]:
        return {"profiler": self.name, "window": {"kind": "iterations", "what": "every profiled iteration"}}
