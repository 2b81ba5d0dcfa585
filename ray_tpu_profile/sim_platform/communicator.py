"""The simulated TPU platform's communicator (loaded by vLLM by name, once its platform is set).

A test-only hook, as the clock-shift hook is (core/host_clock.py): a simulated host whose
raylet sets RAY_TPU_PROFILE_SIMULATED_SLOW_MS reaches each tensor-parallel collective that
many ms late, as a host with slower compute would, so a test can check that the straggler
analysis names it. It is read only where the simulated-TPU flag is set; real hosts never
load this platform at all."""

from __future__ import annotations

import os
import time

from vllm.distributed.device_communicators.cpu_communicator import CpuCommunicator

from ray_tpu_profile.sim_platform import SIMULATED_TPU_ENV

SIMULATED_SLOW_ENV = "RAY_TPU_PROFILE_SIMULATED_SLOW_MS"


def simulated_delay_s() -> float:
    """How late this simulated host reaches each collective (0 unless the hook is set)."""
    if os.environ.get(SIMULATED_TPU_ENV) != "1":
        return 0.0
    delay_ms = float(os.environ.get(SIMULATED_SLOW_ENV, "0"))
    if not delay_ms >= 0:  # also refuses nan
        raise ValueError(f"{SIMULATED_SLOW_ENV}={delay_ms}: must be a number of ms >= 0")
    return delay_ms / 1000


class SeparateHostsCommunicator(CpuCommunicator):
    """The CPU communicator without its shared-memory path: simulated hosts share this
    machine's /dev/shm, real hosts do not, so ranks on different hosts talk over gloo as
    they would on real hosts. (vLLM's check only compares group names, not hosts.)"""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._delay_s = simulated_delay_s()

    def _all_group_ranks_share_shm_group_name(self) -> bool:
        return False

    def _arrive(self) -> None:
        # The slow host's extra compute before the collective: it holds no lock and takes
        # no core, as time spent on a slower chip would not on this machine's 2 cores.
        if self._delay_s:
            time.sleep(self._delay_s)

    def all_reduce(self, input_):
        self._arrive()
        return super().all_reduce(input_)

    def all_gather(self, input_, dim: int = -1):
        self._arrive()
        return super().all_gather(input_, dim)

    def gather(self, input_, dst: int = 0, dim: int = -1):
        self._arrive()
        return super().gather(input_, dst, dim)
