"""vLLM's TPU stack (vllm-tpu + tpu-inference) on the JAX CPU backend, for simulated TPU hosts.

tpu-inference assumes TPU devices in a few places; on a simulated host (environment
RAY_TPU_PROFILE_SIMULATED_TPU=1, N fake CPU devices from
XLA_FLAGS=--xla_force_host_platform_device_count=N) those places are adapted here, and
the rest of the stack (model, sharding, collectives, sampler, scheduler) runs as shipped.

`install()` puts an import hook on sys.meta_path that patches each target module right
after it has executed, so nothing here imports JAX or tpu-inference early: vLLM forks its
engine core, and a parent that had started JAX before the fork hung. It runs in every
process of the venv from a .pth file (scripts/setup-tpu-inference.sh writes it) and does
nothing unless the process is on a simulated host and tpu-inference is installed.

Stand-ins (parts that compute what the TPU part computes, another way) are listed in
STAND_INS, for the run manifest.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from ray_tpu_profile.sim_platform import SIMULATED_TPU_ENV

STAND_INS = {
    "attention": (
        "pure-JAX paged attention (ray_tpu_profile.sim_platform.paged_attention_cpu) in place "
        "of tpu-inference's Pallas ragged paged attention kernel (Pallas TPU kernels do not "
        "run on CPU)"
    ),
    "hbm": "each CPU device reports a fixed HBM size (SIMULATED_HBM_BYTES_PER_DEVICE)",
}

STAND_IN_MODULES = {
    "attention": "tpu_inference.kernels.ragged_paged_attention.v3.kernel",
    "hbm": "tpu_inference.utils",
}
"""The module whose patch puts each stand-in in place."""

# What a simulated device reports as its HBM. Small, so that an engine started without
# num_gpu_blocks_override sizes a KV cache that a CPU machine's RAM holds.
SIMULATED_HBM_BYTES_PER_DEVICE = 2 * 1024**3

# Set (with setdefault: a value already there wins) in simulated processes only.
ENV_DEFAULTS = {
    # JAX on its CPU backend, even though libtpu is installed (it must be: vLLM picks its
    # TPU platform by importing libtpu).
    "JAX_PLATFORMS": "cpu",
    # tpu-inference asks GCE's metadata server for these when unset; there is none here.
    "TPU_ACCELERATOR_TYPE": "v6e-1",
    "TPU_NAME": "simulated-tpu",
    "TPU_WORKER_ID": "0",
    # The warm-up precompiles every padded shape: minutes on CPU, for nothing we profile.
    "SKIP_JAX_PRECOMPILE": "1",
}

_TPU_ONLY_XLA_OPTION_PREFIX = "xla_tpu_"


def is_simulated_tpu_inference_process() -> bool:
    """On a simulated TPU host, in an environment that has tpu-inference installed."""
    if os.environ.get(SIMULATED_TPU_ENV) != "1":
        return False
    return importlib.util.find_spec("tpu_inference") is not None


def install() -> bool:
    """Sets the env defaults and installs the import hook; True where it did (or had).

    Cheap and safe to call in any process: it imports neither JAX nor tpu-inference.
    """
    if not is_simulated_tpu_inference_process():
        return False
    for name, value in ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if not any(isinstance(finder, _PatchAfterExec) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterExec(PATCHES))
    # A target imported before install() (not the .pth path) is patched now.
    for module_name, patch in PATCHES.items():
        module = sys.modules.get(module_name)
        if module is not None and not getattr(module, _PATCHED_MARK, False):
            _apply(patch, module)
    return True


def driver_env_defaults() -> bool:
    """The driver of a local simulated cluster loads no model, but parsing engine flags
    imports vLLM, whose TPU platform asks GCE's metadata server for the TPU's type when
    these are unset (a network look-up, and seconds of retries): ENV_DEFAULTS here too,
    without the import hook. True where tpu-inference is installed (and so they were set)."""
    if importlib.util.find_spec("tpu_inference") is None:
        return False
    for name, value in ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return True


def node_env(chips: int) -> dict[str, str]:
    """Env for a simulated host's node where tpu-inference is installed: JAX gives each of
    its processes `chips` fake CPU devices (a TPU host's chips), so tensor parallelism over
    a host's chips runs over them. {} elsewhere."""
    if importlib.util.find_spec("tpu_inference") is None:
        return {}
    return {"XLA_FLAGS": f"--xla_force_host_platform_device_count={chips}"}


JAX_CLUSTER_ENV = "RAY_TPU_PROFILE_JAX_CLUSTER"
"""An engine across simulated hosts: where its workers' JAX cluster is coordinated, and
each host's process id in it (JSON, from share_jax_cluster)."""


def share_jax_cluster(coordinator_ip: str, node_ids: Sequence[str]) -> bool:
    """The owner of an engine across simulated hosts, before it builds the engine: a JAX
    coordinator address on its own node (a port free now) and a process id per host (the
    owner's node first: its worker runs the coordinator), handed to every worker through
    vLLM's Ray executor (VLLM_RAY_EXTRA_ENV_VARS_TO_COPY). False, and nothing set, outside
    a simulated host."""
    import socket

    if not is_simulated_tpu_inference_process():
        return False
    with socket.socket() as probe:
        probe.bind((coordinator_ip, 0))
        port = probe.getsockname()[1]
    os.environ[JAX_CLUSTER_ENV] = json.dumps(
        {"coordinator": f"{coordinator_ip}:{port}", "process_ids": {node: i for i, node in enumerate(node_ids)}}
    )
    copied = [v for v in os.environ.get("VLLM_RAY_EXTRA_ENV_VARS_TO_COPY", "").split(",") if v]
    os.environ["VLLM_RAY_EXTRA_ENV_VARS_TO_COPY"] = ",".join(dict.fromkeys([*copied, JAX_CLUSTER_ENV]))
    return True


def _join_jax_cluster(cluster: dict[str, Any]) -> None:
    """This worker joins its engine's JAX cluster: CPU collectives over gloo (XLA's CPU
    default has none across processes), its process id by the Ray node it runs on; then
    jax.devices("cpu") keeps to this process's devices, as a TPU host's CPU devices are
    its own (tpu-inference stages weights on jax.devices("cpu")[0]: in a CPU cluster that
    is process 0's, and resharding from it across hosts fails)."""
    import jax
    import ray

    process_ids = cluster["process_ids"]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        cluster["coordinator"],
        num_processes=len(process_ids),
        process_id=process_ids[ray.get_runtime_context().get_node_id()],
    )
    all_devices = jax.devices

    @functools.wraps(all_devices)
    def devices(backend: Any = None) -> list[Any]:
        return jax.local_devices(backend=backend) if backend == "cpu" else all_devices(backend)

    jax.devices = devices


def stand_ins_here() -> dict[str, str]:
    """STAND_INS whose patch took effect in this process, by part ({} elsewhere)."""
    patched = set(applied_patches()["patched"])
    return {part: why for part, why in STAND_INS.items() if STAND_IN_MODULES[part] in patched}


def applied_patches() -> dict[str, Any]:
    """This process's pid and the target modules patched in it (for the run manifest)."""
    patched = [name for name in PATCHES if getattr(sys.modules.get(name), _PATCHED_MARK, False)]
    return {"pid": os.getpid(), "patched": patched}


# --- the patches: one function per adaptation ---------------------------------------------


def patch_mesh(utils: Any) -> None:
    """tpu_inference.utils.make_optimized_mesh: CPU devices have no .coords, which it sorts by."""
    original = utils.make_optimized_mesh

    @functools.wraps(original)
    def make_optimized_mesh(
        axis_shapes: Sequence[int], axis_names: Sequence[str], *, devices: Sequence[Any] | None = None
    ) -> Any:
        import jax

        devices = list(jax.devices() if devices is None else devices)
        if not _all_cpu(devices):
            return original(axis_shapes, axis_names, devices=devices)
        # No physical topology to follow: devices in id order.
        axis_types = (jax.sharding.AxisType.Auto,) * len(axis_shapes)
        return jax.make_mesh(tuple(axis_shapes), tuple(axis_names), axis_types, devices=devices)

    utils.make_optimized_mesh = make_optimized_mesh


def patch_memory_stats(utils: Any) -> None:
    """tpu_inference.utils._local_memory_stats: CPU devices report no memory_stats, and the
    fallback looks the HBM size up by a TPU device kind."""
    original = utils._local_memory_stats

    @functools.wraps(original)
    def _local_memory_stats(device: Any) -> tuple[int, int] | None:
        if device.platform != "cpu":
            return original(device)
        return _live_bytes_on(device), SIMULATED_HBM_BYTES_PER_DEVICE

    utils._local_memory_stats = _local_memory_stats


def patch_compiler_options(compiler_options: Any) -> None:
    """tpu_inference.models.common.compiler_options: XLA's CPU compiler rejects the
    TPU-only (xla_tpu_*) options; the sampler reads them when it is imported, hence here."""
    for name in ("get_step_fn_compiler_options", "get_sampling_compiler_options"):
        setattr(compiler_options, name, _without_tpu_options(getattr(compiler_options, name)))


def patch_vmem_size(tpu_info: Any) -> None:
    """tpu_inference.tpu_info.get_tpu_vmem_size_bytes: JAX's TPU info lookup raises for device
    kind "cpu" (caught there, with a warning at every model load); a CPU device has no VMEM."""
    original = tpu_info.get_tpu_vmem_size_bytes

    @functools.wraps(original)
    def get_tpu_vmem_size_bytes() -> int:
        import jax

        # 0 is the function's own "unknown": the step function keeps XLA's default thresholds.
        return 0 if _all_cpu(jax.devices()) else original()

    tpu_info.get_tpu_vmem_size_bytes = get_tpu_vmem_size_bytes


def patch_attention(kernel: Any) -> None:
    """tpu_inference.kernels.ragged_paged_attention.v3.kernel.ragged_paged_attention: a
    Pallas TPU kernel, which does not run on CPU (STAND_INS["attention"])."""
    from ray_tpu_profile.sim_platform import paged_attention_cpu

    kernel.ragged_paged_attention = paged_attention_cpu.ragged_paged_attention


def patch_utils(utils: Any) -> None:
    """tpu_inference.utils holds two of the device assumptions."""
    patch_mesh(utils)
    patch_memory_stats(utils)


def patch_topology_order(distributed_utils: Any) -> None:
    """tpu_inference.distributed.utils.get_device_topology_order_id: a multi-host worker's
    rank among the hosts, from the lowest chip .coords of each process; CPU devices have
    none: the rank of its process index."""
    original = distributed_utils.get_device_topology_order_id

    @functools.wraps(original)
    def get_device_topology_order_id(local_devices: Sequence[Any], global_devices: Sequence[Any]) -> int:
        if not (_all_cpu(local_devices) and _all_cpu(global_devices)):
            return original(local_devices, global_devices)
        processes = sorted({d.process_index for d in global_devices})
        return processes.index(local_devices[0].process_index)

    distributed_utils.get_device_topology_order_id = get_device_topology_order_id


def patch_worker_join(tpu_worker: Any) -> None:
    """tpu_inference.worker.tpu_worker.TPUWorker.init_device: on a TPU slice the TPU runtime
    makes every host's worker one JAX cluster; on simulated hosts the workers of an engine
    across hosts join one over gloo first (share_jax_cluster says where), before the worker
    first touches JAX."""
    worker_class = tpu_worker.TPUWorker
    original = worker_class.init_device

    @functools.wraps(original)
    def init_device(self: Any, *args: Any, **kwargs: Any) -> Any:
        cluster = os.environ.get(JAX_CLUSTER_ENV)
        if cluster:
            _join_jax_cluster(json.loads(cluster))
        return original(self, *args, **kwargs)

    worker_class.init_device = init_device


# The module each patch applies to, patched right after that module has executed.
PATCHES: dict[str, Callable[[ModuleType], None]] = {
    "tpu_inference.utils": patch_utils,
    "tpu_inference.distributed.utils": patch_topology_order,
    "tpu_inference.worker.tpu_worker": patch_worker_join,
    "tpu_inference.tpu_info": patch_vmem_size,
    "tpu_inference.models.common.compiler_options": patch_compiler_options,
    "tpu_inference.kernels.ragged_paged_attention.v3.kernel": patch_attention,
}


# --- helpers of the patches ----------------------------------------------------------------


def _all_cpu(devices: Sequence[Any]) -> bool:
    return bool(devices) and all(device.platform == "cpu" for device in devices)


def _live_bytes_on(device: Any) -> int:
    """Bytes of the live JAX arrays held on device (each buffer once)."""
    import jax

    buffers = {}
    for array in jax.live_arrays():
        for shard in array.addressable_shards:
            if shard.device == device:
                buffers[id(shard.data)] = shard.data.nbytes
    return sum(buffers.values())


def _without_tpu_options(get_options: Callable[[], dict[str, str]]) -> Callable[[], dict[str, str]]:
    @functools.wraps(get_options)
    def options_for_cpu() -> dict[str, str]:
        options = get_options()
        return {k: v for k, v in options.items() if not k.startswith(_TPU_ONLY_XLA_OPTION_PREFIX)}

    return options_for_cpu


# --- the import hook -------------------------------------------------------------------------

_PATCHED_MARK = "__ray_tpu_profile_cpu_patched__"


def _apply(patch: Callable[[ModuleType], None], module: ModuleType) -> None:
    patch(module)
    setattr(module, _PATCHED_MARK, True)


class _PatchAfterExec(importlib.abc.MetaPathFinder):
    """Finds target modules with the finders after it, and wraps their loader so that the
    patch runs right after the module's own code."""

    def __init__(self, patches: dict[str, Callable[[ModuleType], None]]) -> None:
        self._patches = patches

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        patch = self._patches.get(fullname)
        if patch is None:
            return None
        spec = self._spec_from_other_finders(fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _PatchingLoader(spec.loader, patch)
        return spec

    def _spec_from_other_finders(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None
    ) -> importlib.machinery.ModuleSpec | None:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    """The module's own loader, then the patch. Anything else (get_source, resource
    readers) is the original loader's."""

    def __init__(self, loader: importlib.abc.Loader, patch: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._patch = patch

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _apply(self._patch, module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)
