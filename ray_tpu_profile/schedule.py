"""When each host captures. Pure: times are integers in nanoseconds since the epoch.

The driver picks one instant T a short lead ahead of now, once every host is warm;
each host starts its iterations at T and its trace at T + delay_ms. Hosts compare
against their own wall clock, so alignment is as good as the hosts' clock sync
(NTP/PTP on TPU VMs; one clock for simulated hosts) plus the wake-up jitter.
"""

from __future__ import annotations

NS_PER_MS = 1_000_000
DEFAULT_LEAD_MS = 300
"""Covers dispatching the call to every host and opening the profiler client."""
CLIENT_SETUP_MS = 20
"""The profiler client's own delay must exceed its channel set-up or the server starts late."""


def capture_instant_ns(now_ns: int, lead_ms: int = DEFAULT_LEAD_MS) -> int:
    return now_ns + lead_ms * NS_PER_MS


def split_trace_delay(trace_start_ns: int, now_ns: int) -> tuple[int, int]:
    """The profiler client takes a whole-millisecond delay counted from when it is called.
    Returns (call_at_ns, delay_ms): call the client at call_at_ns with delay_ms so that
    tracing begins at trace_start_ns to within the wake-up jitter, not to within 1 ms."""
    remaining_ms = (trace_start_ns - now_ns) // NS_PER_MS
    if remaining_ms < CLIENT_SETUP_MS:
        return now_ns, 0  # too late to be exact: start as soon as possible
    return trace_start_ns - remaining_ms * NS_PER_MS, remaining_ms


def spread_ms(starts_ns: dict[str, int]) -> float | None:
    """Largest minus smallest start, in ms; None with no starts."""
    if not starts_ns:
        return None
    return (max(starts_ns.values()) - min(starts_ns.values())) / NS_PER_MS
