"""A deployment for tests/e2e/test_faults.py that cannot be had for real on simulated hosts:
the model process of one host runs its own TSL profiler server on a port (as tpu-inference
does with JAX_PROFILER_SERVER_PORT), the other's runs none. Simulated hosts share one
localhost, so the other host's wait on that port is answered by the first one's server.

Loaded at start-up by every model process of a run given --env PYTHONPATH=<this folder>
--env PROFILER_SERVER_ON_WORKER=<TPU_WORKER_ID>; in that worker's actor, the backend starts
a real JAX server on --profiler-port just before it looks for one. Everything after that is
the tool's own code: `run --profiler-port` must trace only a server of the model process.
"""

import os

if os.environ.get("PROFILER_SERVER_ON_WORKER") == os.environ.get("TPU_WORKER_ID", "-"):
    from ray_tpu_profile.profilers import time_window

    _servers = []
    _look_for_server = time_window.TimeWindowBackend.attach

    def _attach_with_own_server(self, llm):
        import jax.profiler

        _servers.append(jax.profiler.start_server(self.port))
        _look_for_server(self, llm)

    time_window.TimeWindowBackend.attach = _attach_with_own_server
