"""Code that runs inside the worker processes of an engine that spans hosts, sent there
by the engine's owner with vLLM's LLM.collective_rpc (whose callable gets the worker as its
first argument). Each returns plain data about its worker, in rank order."""

from __future__ import annotations

import os
from typing import Any

_SERVERS: list[Any] = []
"""Profiler servers started in this worker process, kept alive here: a collected server
object yields empty traces."""


def identify(worker: Any) -> dict[str, Any]:
    """Where this worker runs: rank, pid, Ray node."""
    import ray

    return {"rank": int(worker.rank), "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}


def start_profiler_server(worker: Any, profiler: str) -> dict[str, Any]:
    """A profiler server (JAX's, or torch_xla's for profiler "xla") in this worker, on a
    port the OS picks; its identity and port, so that a capture client on the same host
    traces this process."""
    from ray_tpu_profile.profilers.server import free_local_port, start_profiler_server

    port = free_local_port()
    _SERVERS.append(start_profiler_server("xla" if profiler == "xla" else "jax", port))
    return {**identify(worker), "port": port}
