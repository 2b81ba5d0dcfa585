"""JAX's profiler server (jax.profiler.start_server) in the model's process, traced with
xprof's client. On CPU the python tracer records vLLM's own Python calls."""

from __future__ import annotations

from typing import Any

from ray_tpu_profile.profilers.server import ServerBackend


class JaxServerProfiler(ServerBackend):
    name = "jax"

    def _start_server(self, port: int) -> Any:
        import jax

        return jax.profiler.start_server(port)

    def _trace(self, service_addr: str, logdir: str, duration_ms: int, delay_ms: int) -> None:
        from xprof.convert import _pywrap_profiler_plugin

        _pywrap_profiler_plugin.trace(
            service_addr,
            logdir,
            "",  # worker_list: non-empty answers UNIMPLEMENTED outside Cloud TPU
            True,
            duration_ms,
            1,  # one attempt: a dead server must fail now, not after retries
            {
                "session_id": self.session_id,
                "override_hostnames": self.host_name,
                "host_tracer_level": 2,
                "device_tracer_level": 1,
                "python_tracer_level": 1,
                "delay_ms": delay_ms,
            },
        )
