"""Code that runs inside an engine's workers (the worker processes of an engine that spans
hosts; the in-process worker of one within a host), sent there by the engine's owner with
vLLM's LLM.collective_rpc (whose callable gets the worker as its first argument). Each
returns plain data about its worker, in rank order."""

from __future__ import annotations

import os
from typing import Any

_LISTENERS: list[Any] = []
"""Capture sockets opened in this worker process, kept open for its life."""


def identify(worker: Any) -> dict[str, Any]:
    """Where this worker runs: rank, pid, Ray node, and its process group's file
    (process_group_file: its host's actor removes it, as no one else does)."""
    import ray

    return {
        "rank": int(worker.rank),
        "pid": os.getpid(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "process_group_file": process_group_file(worker),
    }


def process_group_file(worker: Any) -> str | None:
    """The file of the torch FileStore this worker's default process group rendezvoused
    through, or None (a TCP store). Read from the store itself, not from the init method
    vLLM passed: tpu-inference's TPUWorker ignores that one and makes its own file
    (tempfile.mkstemp) for a gloo group."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return None
    store = dist.distributed_c10d._get_default_store()
    while isinstance(store, dist.PrefixStore):  # init_process_group wraps the store it made
        store = store.underlying_store
    return str(store.path) if isinstance(store, dist.FileStore) else None


def open_capture_socket(worker: Any, profiler: str) -> dict[str, Any]:
    """A capture socket in this worker (profilers.capture_socket, for JAX's profiler, or
    torch_xla's for profiler "xla"): its identity and socket path, so that the tool's actor
    on the same host can have this process traced at an instant. Opens no port."""
    from ray_tpu_profile.profilers import in_process
    from ray_tpu_profile.profilers.capture_socket import CaptureListener

    kind = "xla" if profiler == "xla" else "jax"
    in_process.prepare(kind)  # the worker is built: its first capture need not import them
    listener = CaptureListener(kind)
    _LISTENERS.append(listener)
    return {**identify(worker), "socket": str(listener.path)}
