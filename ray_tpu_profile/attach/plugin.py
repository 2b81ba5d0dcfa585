"""A vLLM general plugin (entry point group `vllm.general_plugins`) that makes a live
deployment attachable: with RAY_TPU_PROFILE_ATTACH=1 in a process's environment, it opens a
capture socket in that process (profilers.capture_socket: a Unix socket in a 0700 directory,
answering only this user; JAX's profiler, or torch_xla's on a torch_xla stack) and registers
it (registry.py). No port is opened. Without the variable it does nothing.

vLLM calls general plugins once per process: in the process that parses the engine flags
(`vllm serve`'s API server, or one holding an LLM), in the engine-core process and in every
worker, before the model's first step. Enable it with `RAY_TPU_PROFILE_ATTACH=1 vllm serve
...`, or the variable in a Ray Serve LLM deployment's runtime_env (vLLM's Ray workers inherit
it); RAY_TPU_PROFILE_ATTACH_NAME names the deployment for `attach --name`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from ray_tpu_profile.attach.registry import ENABLE_ENV, NAME_ENV, RegistryEntry

logger = logging.getLogger("ray_tpu_profile.attach.command")

_listener: Any = None
"""This process's capture socket, kept open for its life."""


def register() -> None:
    """The entry point vLLM calls."""
    if os.environ.get(ENABLE_ENV) != "1" or _listener is not None:
        return
    try:
        entry = start_and_register()
    except Exception as e:  # a deployment must not fail to serve because it cannot be profiled
        logger.warning("ray-tpu-profile attach: no capture socket in pid %d: %s: %s", os.getpid(), type(e).__name__, e)
        return
    logger.info("ray-tpu-profile attach: %s capture socket of %s at %s", entry.profiler, entry.label, entry.socket)


def start_and_register() -> RegistryEntry:
    import atexit
    import multiprocessing
    import socket

    from ray_tpu_profile.attach import registry
    from ray_tpu_profile.profilers.capture_socket import CaptureListener
    from ray_tpu_profile.profilers.time_window import profiler_kind_here

    global _listener
    role, rank = registry.role_of(multiprocessing.current_process().name, _initialising_worker_rank())
    kind = profiler_kind_here()
    ray = sys.modules.get("ray")
    in_ray = ray is not None and ray.is_initialized()
    name = os.environ.get(NAME_ENV) or None
    if name is not None and not registry.NAME.match(name):  # attach would refuse the entry
        raise ValueError(f"{NAME_ENV}={name!r}: letters, digits, '.', '_' and '-' only, at most 64")
    if not in_ray:
        registry.private_dir(registry.registry_dir())  # UnsafeRegistry before any socket opens
    listener = CaptureListener(kind)
    entry = RegistryEntry(
        hostname=socket.gethostname(),
        node_id=ray.get_runtime_context().get_node_id() if in_ray else None,
        pid=os.getpid(),
        started_ticks=registry.process_started_ticks(os.getpid()),
        socket=str(listener.path),
        profiler=kind,
        role=role,
        rank=rank,
        name=name,
        registered_at_s=time.time(),
    )
    if in_ray:
        registry.kv_put(entry)
        atexit.register(registry.kv_delete, entry.key)
    else:
        path = registry.write_file_entry(entry)
        atexit.register(path.unlink, missing_ok=True)
    atexit.register(listener.close)
    _listener = listener
    # A child forked from here (vLLM's fork start method) has no listening thread: let vLLM
    # load the plugins again there, so it opens and registers its own.
    os.register_at_fork(after_in_child=_forget_in_child)
    return entry


def _forget_in_child() -> None:
    global _listener
    _listener = None
    plugins = sys.modules.get("vllm.plugins")
    if plugins is not None:
        plugins.plugins_loaded = False


def _initialising_worker_rank() -> int | None:
    """The rank of the vLLM worker being initialised, when vLLM called the plugins from
    WorkerWrapperBase.init_worker (the one place it does in a worker): the `rank` of the
    worker's kwargs there (its global rank; the wrapper's own rpc_rank is 0 on every Ray
    worker, seen with vLLM 0.32), else the wrapper's rpc_rank."""
    frame = sys._getframe(1)
    while frame is not None:
        wrapper = frame.f_locals.get("self") if frame.f_code.co_name == "init_worker" else None
        if wrapper is not None and hasattr(wrapper, "rpc_rank"):
            kwargs = frame.f_locals.get("kwargs")
            rank = kwargs.get("rank") if isinstance(kwargs, dict) else None
            return int(rank if rank is not None else wrapper.rpc_rank)
        frame = frame.f_back
    return None
