"""The clock of the host this process runs on: what the driver's clock exchange reads, and
what a host waits on for a scheduled instant. On a real host it is the wall clock.

A simulated host (sim_platform: RAY_TPU_PROFILE_SIMULATED_TPU=1 on its raylet) shares the
machine's one clock with every other, so a clock that disagrees cannot happen for real.
For tests of clock correction only, such a host may be given a view of time shifted by
RAY_TPU_PROFILE_SIMULATED_CLOCK_SHIFT_MS (set on its raylet, as the simulated TPU flag is);
a real host ignores it. The profilers keep stamping traces with the real clock, which is
what lets a test see where a trace really began."""

from __future__ import annotations

import os
import sys
import time

from ray_tpu_profile.core.clocks import NS_PER_MS, NtpState

SIMULATED_CLOCK_SHIFT_ENV = "RAY_TPU_PROFILE_SIMULATED_CLOCK_SHIFT_MS"


def _shift_ns() -> int:
    from ray_tpu_profile.sim_platform import SIMULATED_TPU_ENV

    if os.environ.get(SIMULATED_TPU_ENV) != "1":
        return 0
    return round(float(os.environ.get(SIMULATED_CLOCK_SHIFT_ENV, "0")) * NS_PER_MS)


SHIFT_NS = _shift_ns()


def now_ns() -> int:
    """This host's wall clock, ns since the epoch."""
    return time.time_ns() + SHIFT_NS


def ntp_state() -> NtpState | None:
    """The kernel's view of its clock discipline, read with adjtimex(2) in read-only mode
    (no privilege needed); None where there is no adjtimex (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    class Timex(ctypes.Structure):  # struct timex, <sys/timex.h>
        _fields_ = [
            ("modes", ctypes.c_uint),
            ("offset", ctypes.c_long),
            ("freq", ctypes.c_long),
            ("maxerror", ctypes.c_long),
            ("esterror", ctypes.c_long),
            ("status", ctypes.c_int),
            ("constant", ctypes.c_long),
            ("precision", ctypes.c_long),
            ("tolerance", ctypes.c_long),
            ("time_sec", ctypes.c_long),
            ("time_usec", ctypes.c_long),
            ("tick", ctypes.c_long),
            ("ppsfreq", ctypes.c_long),
            ("jitter", ctypes.c_long),
            ("shift", ctypes.c_int),
            ("stabil", ctypes.c_long),
            ("jitcnt", ctypes.c_long),
            ("calcnt", ctypes.c_long),
            ("errcnt", ctypes.c_long),
            ("stbcnt", ctypes.c_long),
            ("tai", ctypes.c_int),
            ("_reserved", ctypes.c_int * 11),
        ]

    STA_UNSYNC, TIME_ERROR = 0x0040, 5
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    timex = Timex()  # modes 0: read only
    state = libc.adjtimex(ctypes.byref(timex))
    if state < 0:
        raise OSError(ctypes.get_errno(), f"adjtimex: {os.strerror(ctypes.get_errno())}")
    return NtpState(
        synchronised=state != TIME_ERROR and not timex.status & STA_UNSYNC,
        estimated_error_ms=timex.esterror / 1000,
        maximum_error_ms=timex.maxerror / 1000,
    )
