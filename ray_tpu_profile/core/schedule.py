"""When each host captures. Pure: times are integers in nanoseconds since the epoch.

The driver picks one instant T a short lead ahead of now, once every host is warm;
each host starts its iterations at T and its trace at T + delay_ms (with no delay, the
trace opens LEAD_IN_MS before the iterations instead). T is on the driver's clock; each
host is given it on its own (T plus its measured offset, clocks.py), so alignment is as
good as that measurement (+- half the shortest actor-call round trip) plus the wake-up jitter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from ray_tpu_profile.errors import ToolError

NS_PER_MS = 1_000_000
DEFAULT_LEAD_MS = 300
"""Covers dispatching the call to every host and opening the profiler client."""
CLIENT_SETUP_MS = 20
"""The profiler client's own delay must exceed its channel set-up or the server starts late."""


LEAD_IN_MS = 5
"""With --delay-ms 0 the trace opens this long before the iterations begin, so tracing
starts on a quiet host. A trace start that coincides with the first iteration waits for a
core on a busy host: measured with 4 simulated hosts on 2 cores, the profiler thread woke
0.1-5 ms late then, 0.1 ms with the lead-in. The trace also shows the iteration's start."""
CALL_TOLERANCE_NS = 100_000
"""A client call made later than this after its planned instant is planned again."""


def capture_instant_ns(now_ns: int, lead_ms: int = DEFAULT_LEAD_MS) -> int:
    return now_ns + lead_ms * NS_PER_MS


def capture_instants_ns(instant_ns: int, delay_ms: int, lead_in: bool = True) -> tuple[int, int]:
    """(iterations_start_ns, trace_start_ns) of a capture planned at instant_ns: the
    iterations at T and the trace delay_ms later; with no delay (and lead_in: not for a
    phase window, whose delay and duration are measured from the iterations' start), the
    trace at T and the iterations LEAD_IN_MS after it."""
    if delay_ms == 0 and lead_in:
        return instant_ns + LEAD_IN_MS * NS_PER_MS, instant_ns
    return instant_ns, instant_ns + delay_ms * NS_PER_MS


def split_trace_delay(trace_start_ns: int, now_ns: int) -> tuple[int, int]:
    """The profiler client takes a whole-millisecond delay counted from when it is called.
    Returns (call_at_ns, delay_ms): call the client at call_at_ns with delay_ms so that
    tracing begins at trace_start_ns to within the wake-up jitter, not to within 1 ms."""
    remaining_ns = trace_start_ns - now_ns
    remaining_ms = remaining_ns // NS_PER_MS
    if remaining_ms < CLIENT_SETUP_MS:
        # Too close to be exact: call now, rounding up so tracing never begins early (a
        # decode window begun early would hold prefill); its set-up may make it late.
        return now_ns, max(0, -(-remaining_ns // NS_PER_MS))
    return trace_start_ns - remaining_ms * NS_PER_MS, remaining_ms


def plan_again(trace_start_ns: int, call_at_ns: int, called_ns: int) -> bool:
    """Whether a client call about to be made at called_ns, planned for call_at_ns, should
    wait for the next whole millisecond instead. The client counts its delay from when it
    is called, so a late wake-up (a busy core, another thread holding the GIL: 0.1-1.8 ms
    seen) becomes that host's skew. Each new plan costs at most 1 ms of the lead; once a
    new plan would leave the client less than its set-up time, the late call goes ahead
    as planned (late by the wake-up, never early)."""
    late = called_ns - call_at_ns > CALL_TOLERANCE_NS
    return late and (trace_start_ns - called_ns) // NS_PER_MS >= CLIENT_SETUP_MS


def spread_ms(starts_ns: Mapping[str, int]) -> float | None:
    """Largest minus smallest start, in ms; None with no starts."""
    if not starts_ns:
        return None
    return (max(starts_ns.values()) - min(starts_ns.values())) / NS_PER_MS


GUARD_MS = 2
"""Kept clear at each edge of a phase window: trace start jitter (~0.4 ms seen) and a step."""
PREFILL_MARGIN = 2.0
"""A decode window starts this many times the latest prefill end in: the profiled
iteration's prefill ran up to 1.8x that of a traced warmup iteration at the same instant
(7.0 vs 12.5 ms, simulated hosts sharing 2 cores), and a trace that begins inside prefill
slows the rest of it. Costs one more prefill's length of decode."""


END_MARGIN = 0.1
"""A phase window ends this share of the phase's measured end early (the fastest host's
last token for decode, its first for prefill): under load on 2 shared cores a profiled
iteration ran 3.8% faster than every warmup on its host (211.5 vs 219.9 ms), and a trace
stopped 9 ms after its planned end (91.4 ms for 82 planned); a trace that outlasts its
phase holds the next one."""


def traced_cover_ms(prefill_s: tuple[float, ...]) -> int:
    """How long the throwaway trace of a traced warmup iteration lasts: 3x the untraced
    prefill (tracing slowed it up to 2.3x on CPU) + 50 ms. The first warmup iteration
    also warmed up the profiler (and may have compiled): left out."""
    import math

    prefill_ms = max(prefill_s[1:] or prefill_s or (0.0,)) * 1000
    return math.ceil(3 * prefill_ms) + 50


class WindowError(ToolError, ValueError):
    """The requested window cannot hold the phase; the message says what would fit."""


@dataclass(frozen=True)
class TimeWindow:
    """A server backend's trace window that holds one phase: delay and duration from the
    instant the profiled iterations start."""

    phase: str
    delay_ms: int
    duration_ms: int
    chosen_from: str
    """What the window was computed from, for the manifest and progress line."""

    def describe(self) -> str:
        return f"delay {self.delay_ms} ms, duration {self.duration_ms} ms"

    def to_json(self) -> dict:
        return {"kind": "time", **asdict(self)}


@dataclass(frozen=True)
class StepWindow:
    """The torch backend's window that holds one phase: vLLM engine steps to skip and to
    trace (start_profile's delay_iterations, max_iterations)."""

    phase: str
    delay_iterations: int
    max_iterations: int
    chosen_from: str

    def describe(self) -> str:
        return f"vLLM delay_iterations {self.delay_iterations}, max_iterations {self.max_iterations}"

    def to_json(self) -> dict:
        return {"kind": "steps", **asdict(self)}


Window = TimeWindow | StepWindow


def phase_time_window(
    phase: str,
    prefill_s: dict[str, float],
    end_s: dict[str, float],
    requested_duration_ms: int | None,
    guard_ms: int = GUARD_MS,
    measured_in: str = "warmup iterations",
) -> TimeWindow:
    """Delay and duration (from the instant the iterations start) that hold only `phase` on
    every host, from each host's timings (measured_in says which): prefill is over once
    every request has its first token (prefill_s), decode once every request has its last
    (end_s)."""
    import math

    slow_prefill = max(prefill_s, key=prefill_s.__getitem__)
    fast_prefill = min(prefill_s, key=prefill_s.__getitem__)
    fast_end = min(end_s, key=end_s.__getitem__)
    if phase == "decode":
        start_ms = math.ceil(prefill_s[slow_prefill] * 1000 * PREFILL_MARGIN + guard_ms)
        end_ms = math.floor(end_s[fast_end] * 1000 * (1 - END_MARGIN) - guard_ms)
        basis = (
            f"prefill over {prefill_s[slow_prefill] * 1000:.1f} ms into an iteration on the slowest host "
            f"({slow_prefill}; decode from {PREFILL_MARGIN:g}x that), last token at {end_s[fast_end] * 1000:.1f} ms "
            f"on the fastest ({fast_end}; decode until {1 - END_MARGIN:g}x that)"
        )
    elif phase == "prefill":
        start_ms = 0
        end_ms = math.floor(prefill_s[fast_prefill] * 1000 * (1 - END_MARGIN) - guard_ms)
        basis = (
            f"prefill over {prefill_s[fast_prefill] * 1000:.1f} ms into an iteration on the fastest host "
            f"({fast_prefill}; traced until {1 - END_MARGIN:g}x that)"
        )
    else:
        raise ValueError(f"no window for phase {phase!r}")
    available_ms = end_ms - start_ms
    if available_ms < 1:
        raise WindowError(
            f"--phase {phase}: the phase is too short to trace ({basis}; {guard_ms} ms kept clear at each edge)"
        )
    duration_ms = requested_duration_ms if requested_duration_ms is not None else available_ms
    if duration_ms > available_ms:
        raise WindowError(
            f"--duration-ms {duration_ms}: the {phase} phase leaves {available_ms} ms ({basis}); "
            f"use --duration-ms {available_ms} or less, or a longer workload"
        )
    return TimeWindow(phase, start_ms, duration_ms, f"{measured_in}: {basis}")


def phase_step_window(phase: str, prefill_steps: int, output_len: int) -> StepWindow:
    """vLLM engine steps (the torch backend's window): prefill takes prefill_steps steps, the
    last of which samples the first token; then one decode step per further token."""
    if phase == "decode":
        if output_len < 2:
            raise WindowError(f"--phase decode: --output-len {output_len} has no decode step")
        # vLLM 0.32 skips delay_iterations - 1 steps (seen: delay 1 and 0 both capture the
        # prefill step, delay 2 skips it); the trace check after capture catches any drift.
        return StepWindow(
            phase,
            prefill_steps + 1,
            output_len - 1,
            f"{prefill_steps} prefill step(s) for the batch's prompt tokens, then {output_len - 1} decode steps",
        )
    if phase == "prefill":
        return StepWindow(phase, 0, prefill_steps, f"{prefill_steps} prefill step(s) for the batch's prompt tokens")
    raise ValueError(f"no window for phase {phase!r}")
