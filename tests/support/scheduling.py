"""Whether this machine lets a process make a thread real-time, for tests of the capture's
real-time start (profilers.in_process.prompt_wake_up)."""

from __future__ import annotations

import os
import threading


def real_time_permitted() -> bool:
    """Whether a thread of this process may become SCHED_FIFO (CAP_SYS_NICE or
    RLIMIT_RTPRIO): tried on a thread of its own, which then ends."""
    from ray_tpu_profile.profilers.in_process import REAL_TIME_PRIORITY

    allowed: list[bool] = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REAL_TIME_PRIORITY))
            allowed.append(True)
        except PermissionError:
            allowed.append(False)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return allowed[0]


def expected_start_wake_up() -> str:
    """How a capture with a wait and --real-time-start wakes on this machine."""
    from ray_tpu_profile.profilers.in_process import REAL_TIME

    if real_time_permitted():
        return REAL_TIME
    return "normal (real-time scheduling not permitted: Operation not permitted)"
