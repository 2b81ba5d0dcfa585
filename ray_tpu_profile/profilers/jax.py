"""JAX's XLA profiler in the model's process (profilers.time_window). On CPU its python
tracer records vLLM's own Python calls."""

from __future__ import annotations

from ray_tpu_profile.profilers.time_window import TimeWindowBackend


class JaxProfiler(TimeWindowBackend):
    name = "jax"

    def _server_client(self, service_addr: str, logdir: str, duration_ms: int, delay_ms: int) -> None:
        self._trace_with_xprof(service_addr, logdir, duration_ms, delay_ms)
