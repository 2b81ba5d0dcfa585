"""A fault for tests/e2e/test_faults.py that cannot be caused for real on simulated hosts:
one host's model process runs no profiler server. Simulated hosts share one localhost,
so a server any of them runs answers all of them; the only way to have a host without
one is for its process not to start it.

Loaded at start-up by every model process of a run given
--env PYTHONPATH=<this folder> --env NO_PROFILER_SERVER_ON_WORKER=<TPU_WORKER_ID>;
on that worker the one function that starts profiler servers (profilers.server) starts
none. Everything after that is the tool's own code: it waits (bounded) on a port where
nothing listens.
"""

import os

if os.environ.get("NO_PROFILER_SERVER_ON_WORKER") == os.environ.get("TPU_WORKER_ID", "-"):
    from ray_tpu_profile.profilers import server

    server.start_profiler_server = lambda kind, port: None
