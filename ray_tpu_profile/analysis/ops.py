"""Which trace events are the workload's operations, which are engine steps, and which are
the profiler's or the tool's own. Pure: events in (traces.py), self times out.

Left out of the operation ranking (report and diff alike), by name:
- the profiler's own spans: torch's `PyTorch Profiler (N)` (its enclosing span) and
  `ProfilerStep#N`; Ray's actor-call wrappers the python tracer records around every
  call of the tool's actor (`tracing_helper.py ... _resume_span`, `_is_tracing_enabled`).
  Only the span itself goes; what ran inside it stays.
- the tool's own capture control and everything under it (`actor.py ... finish_capture` /
  `start_capture`, host/actor.py): the actor waiting for its trace to end is not the
  workload's time. The python tracer names an event by file and function, so the rule names
  them too (TOOL_CONTROL_FILE, TOOL_CONTROL_FUNCTIONS); a test fails if they move.
Engine steps are counted as steps (count, time per step), not ranked as operations:
vLLM's torch annotations `execute_context_<n>(..)_generation_<m>(..)` (left out of the
ops like the profiler's spans), and in an xplane the model runner's `execute_model` calls
(a real function, so it also stays an operation).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from typing_extensions import TypedDict

from ray_tpu_profile.analysis.steps import STEP
from ray_tpu_profile.analysis.summary_stats import self_times

PROFILER_SPAN = re.compile(
    r"^(PyTorch Profiler \(\d+\)|ProfilerStep#\d+"
    r"|\$tracing_helper\.py:\d+ (_resume_span|_is_tracing_enabled))$"
)
TOOL_CONTROL_FILE = "actor.py"
"""The file of the host actor's capture-control methods, as the python tracer names it."""
TOOL_CONTROL_FUNCTIONS = ("finish_capture", "start_capture")
TOOL_CONTROL = re.compile(rf"^\${re.escape(TOOL_CONTROL_FILE)}:\d+ ({'|'.join(TOOL_CONTROL_FUNCTIONS)})$")
DEVICE_TRACK_PREFIX = "/device:"
"""xprof's trace converter names a device plane's tracks `<plane name> <line name>`."""
XPLANE_STEP = re.compile(r"^\$\w*model_runner\.py:\d+ execute_model$")


class StepSummary(TypedDict):
    """Engine steps in one host's traces (report.json's `steps`)."""

    count: int
    total_ms: float
    mean_ms: float | None


@dataclass
class OpProfile:
    """One host's trace as operations.

    Attributes:
        self_ms: self time per operation (ms), the profiler's and tool's own left out.
        step_count, step_ms: engine steps and their summed duration (ms).
        left_out_ms: per left-out event name (ms), so what was dropped is visible: self time
            of a profiler span or step annotation, the whole time of the tool's capture control.
    """

    self_ms: dict[str, float] = field(default_factory=dict)
    step_count: int = 0
    step_ms: float = 0.0
    left_out_ms: dict[str, float] = field(default_factory=dict)

    def steps(self) -> StepSummary:
        return {
            "count": self.step_count,
            "total_ms": self.step_ms,
            "mean_ms": self.step_ms / self.step_count if self.step_count else None,
        }


def operation_profile(events: Iterable[tuple[str, str, int, int]]) -> OpProfile:
    """From (track, name, start ns, duration ns) events of one host's traces. Events of a
    device's tracks (`/device:TPU:0 XLA Ops`, ...) are the devices' (devices.py), never
    ranked with the host's."""
    by_track: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for track, name, start_ns, duration_ns in events:
        if not track.startswith(DEVICE_TRACK_PREFIX):
            by_track[track].append((start_ns, duration_ns, name))
    profile = OpProfile()
    kept: list[tuple[str, str, float, float]] = []
    left_out: dict[str, float] = defaultdict(float)
    for track, track_events in by_track.items():
        track_events.sort(key=lambda e: (e[0], -e[1]))
        control_end_ns = None  # inside the tool's capture control until then
        for start_ns, duration_ns, name in track_events:
            if control_end_ns is not None and start_ns < control_end_ns:
                continue  # under the tool's capture control: counted in its root's time
            control_end_ns = None
            if TOOL_CONTROL.match(name):
                control_end_ns = start_ns + duration_ns
                left_out[name] += duration_ns / 1e6
                continue
            if STEP.match(name) or XPLANE_STEP.match(name):
                profile.step_count += 1
                profile.step_ms += duration_ns / 1e6
            kept.append((track, name, start_ns / 1e6, duration_ns / 1e6))
    for name, value in self_times(kept).items():
        if PROFILER_SPAN.match(name) or STEP.match(name):
            left_out[name] += value
        else:
            profile.self_ms[name] = value
    profile.left_out_ms = dict(left_out)
    return profile
