"""Faults for tests/e2e/test_faults.py that cannot be had for real on simulated hosts,
loaded at start-up by every model process of a run given --env PYTHONPATH=<this folder>.
Everything after the fault is the tool's own code.

--env PROFILER_SERVER_ON_WORKER=<TPU_WORKER_ID>: a deployment where that worker's model
process runs its own TSL profiler server on a port (as tpu-inference does with
JAX_PROFILER_SERVER_PORT) and the other's runs none. Simulated hosts share one localhost,
so the other host's wait on that port is answered by the first one's server. In that
worker's actor, the backend starts a real JAX server on --profiler-port just before it
looks for one: `run --profiler-port` must trace only a server of the model process.

--env SUMMARY_KILLS_WORKER=<TPU_WORKER_ID>: that worker's actor is killed (SIGKILL) as it
starts to summarise its traces, as the out-of-memory killer would end it on a huge trace.
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

if os.environ.get("SUMMARY_KILLS_WORKER") == os.environ.get("TPU_WORKER_ID", "-"):
    # A tiny model's traces cannot run a host out of memory for real.
    import signal

    from ray_tpu_profile.host import summaries

    def _killed_summarising(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    summaries.HostSummaries.summarise = _killed_summarising
