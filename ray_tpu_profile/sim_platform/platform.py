"""The simulated TPU platform: vLLM's CPU platform whose Ray workers take `TPU` chips.
(Imported by vLLM while it resolves its platform: nothing here may import vllm.distributed.)"""

from __future__ import annotations

from vllm.platforms.cpu import CpuPlatform


class SimulatedTpuPlatform(CpuPlatform):
    ray_device_key = "TPU"

    @classmethod
    def get_device_communicator_cls(cls) -> str:
        return "ray_tpu_profile.sim_platform.communicator.SeparateHostsCommunicator"
