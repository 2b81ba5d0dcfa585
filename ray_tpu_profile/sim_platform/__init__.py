"""A vLLM platform plugin that lets vLLM's Ray executor run on the simulated TPU hosts of
this machine (entry point group `vllm.platform_plugins`, declared in pyproject.toml).

vLLM's CPU platform has no Ray device key, so its Ray executor refuses to place workers.
Simulated hosts carry a `TPU` resource like real ones: this platform is the CPU platform
with `ray_device_key = "TPU"`. It is active only in processes that run on a simulated
host, whose node environment sets SIMULATED_TPU_ENV (cluster.simulated_host_node_args);
on a real cluster register() returns None and vLLM chooses its platform as always.
In an environment with tpu-inference (vllm-tpu on the JAX CPU backend, tpu_inference_cpu)
it returns None too: there tpu-inference's TPU platform must win.
"""

from __future__ import annotations

import importlib.util
import os

SIMULATED_TPU_ENV = "RAY_TPU_PROFILE_SIMULATED_TPU"


def register() -> str | None:
    """vLLM's platform plugin hook: the platform's class path, or None to stay inactive."""
    if os.environ.get(SIMULATED_TPU_ENV) != "1":
        return None
    if importlib.util.find_spec("tpu_inference") is not None:
        return None
    return "ray_tpu_profile.sim_platform.platform.SimulatedTpuPlatform"
