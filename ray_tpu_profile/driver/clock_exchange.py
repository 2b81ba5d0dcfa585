"""The driver's side of the clock exchange: ROUND_TRIPS calls to each host's clock, one
after another per host and hosts side by side, each timed on the driver's clock; each
host's offset estimated from them (clocks.estimate_offset). Works on the barrier's host
handles (futures), so it runs without a cluster in tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ray_tpu_profile.core.clocks import ClockOffset, ClockSample, estimate_offset

ROUND_TRIPS = 8
"""Per host per measurement: enough that one of them usually meets no queue on the way
(the round-trip floor on this machine is in bench/RESULTS.md, from bench/skew.py)."""
CALL_TIMEOUT_S = 30.0
"""One clock call on a live host answers in milliseconds; a host that does not within this
is not going to."""
PARALLEL_HOSTS = 16
"""Hosts measured at once: more would queue on the driver and lengthen every round trip."""


def sample_clock(
    clock_call: Callable[[], Any], round_trips: int = ROUND_TRIPS, timeout_s: float = CALL_TIMEOUT_S
) -> list[ClockSample]:
    """round_trips exchanges with one host; clock_call() returns a future of its clock (ns)."""
    samples = []
    for _ in range(round_trips):
        sent_ns = time.time_ns()
        host_ns = clock_call().result(timeout=timeout_s)
        samples.append(ClockSample(sent_ns, int(host_ns), time.time_ns()))
    return samples


def measure_offsets(
    clock_calls: dict[str, Callable[[], Any]], round_trips: int = ROUND_TRIPS, timeout_s: float = CALL_TIMEOUT_S
) -> dict[str, ClockOffset | BaseException]:
    """Each host's offset, or the error that kept it from being measured (that host's alone)."""

    def one(name: str) -> ClockOffset | BaseException:
        try:
            return estimate_offset(sample_clock(clock_calls[name], round_trips, timeout_s))
        except Exception as e:  # returned per host: the caller fails that host, the rest go on
            return e

    if not clock_calls:
        return {}
    with ThreadPoolExecutor(max_workers=min(PARALLEL_HOSTS, len(clock_calls))) as pool:
        return dict(zip(clock_calls, pool.map(one, clock_calls)))
