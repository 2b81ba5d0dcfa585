"""The simulated TPU platform's communicator (loaded by vLLM by name, once its platform is set)."""

from __future__ import annotations

from vllm.distributed.device_communicators.cpu_communicator import CpuCommunicator


class SeparateHostsCommunicator(CpuCommunicator):
    """The CPU communicator without its shared-memory path: simulated hosts share this
    machine's /dev/shm, real hosts do not, so ranks on different hosts talk over gloo as
    they would on real hosts. (vLLM's check only compares group names, not hosts.)"""

    def _all_group_ranks_share_shm_group_name(self) -> bool:
        return False
