"""JAX's profiler server (jax.profiler.start_server) in the model's process, traced with
xprof's client. On CPU the python tracer records vLLM's own Python calls."""

from __future__ import annotations

from ray_tpu_profile.profilers.server import ServerBackend


class JaxServerProfiler(ServerBackend):
    name = "jax"

    def _trace(self, service_addr: str, logdir: str, duration_ms: int, delay_ms: int) -> None:
        self._trace_with_xprof(service_addr, logdir, duration_ms, delay_ms)
