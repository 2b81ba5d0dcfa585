"""report.json as types (README "Reports"): what report.build_report writes and `report
--json` prints. rundir/schemas/report.schema.json is generated from them
(scripts/schemas.py) and every report the tests produce is validated against it."""

from __future__ import annotations

from typing import Any, Literal

from typing_extensions import NotRequired, TypedDict

from ray_tpu_profile.analysis.ops import StepSummary
from ray_tpu_profile.analysis.summary_stats import LatencyStats, Operation


class ShapeStats(TypedDict):
    warmup_s: LatencyStats | None
    profiled_s: LatencyStats | None
    kept_n: int
    """The iterations diff would compare (after the first warmup one, plus profiled)."""
    spread: float | None
    """Their median absolute deviation over their median."""


class HostReport(TypedDict):
    name: str
    engine: str | None
    ranks: list[int]
    status: str
    stage: str
    error: str | None
    warmup_s: LatencyStats | None
    profiled_s: LatencyStats | None
    kept_n: int
    spread: float | None
    trace_bytes: int
    traces: list[str]
    unreadable_traces: list[str]
    top_operations: list[Operation]
    steps: StepSummary
    left_out_of_operations_ms: dict[str, float]
    shapes: dict[str, ShapeStats]


class SlowestHost(TypedDict):
    name: str
    profiled_mean_s: float
    median_host_profiled_mean_s: float
    slower_than_median: float | None


class FailedHost(TypedDict):
    name: str
    stage: str
    error: str | None


class HostClockSummary(TypedDict):
    offset_ms: float
    uncertainty_ms: float
    warning: str | None


class ModuleExecutions(TypedDict):
    name: str
    executions: int
    total_ms: float
    mean_ms: float
    max_ms: float


class DeviceReport(TypedDict):
    """One device's part of the capture window (devices.device_summary)."""

    host: str
    device: str
    """The plane name, e.g. /device:TPU:0 (or /device:CPU:N for XLA on CPU)."""
    kind: str
    window_ms: float
    busy_ms: float
    idle_ms: float
    categories_ms: dict[str, float]
    top_ops: list[Operation]
    modules: list[ModuleExecutions]
    steps_ms: list[float]
    """Each execution of the device's most executed module (its step), in order."""
    flops_per_s: float | None
    peak_flops_per_s: float | None
    hbm_bytes_per_s: float | None
    peak_hbm_bytes_per_s: float | None
    collective_wait_ms: float


class CollectiveParticipant(TypedDict):
    host: str
    device: str
    arrive_ns: int
    """On the driver's clock (epoch ns)."""
    start_ns: int
    duration_ms: float
    wait_ms: float


class DeviceName(TypedDict):
    host: str
    device: str


class CollectiveReport(TypedDict):
    """One occurrence of a collective across an engine's devices, or its hosts' processes
    where there are no device planes (collectives.Occurrence)."""

    engine: str
    name: str
    program: str
    occurrence: int
    participants: list[CollectiveParticipant]
    last: DeviceName
    max_wait_ms: float
    start_spread_ms: float
    end_spread_ms: float
    together_at: Literal["start", "end"]
    """Where the ops meet once the last has arrived: device ops start together, host-level
    ops (which hold their wait) end together; that spread checks the clock correction."""
    bound_ms: float | None
    spread_exceeds_bound: bool | None


class LastArrivals(TypedDict):
    host: str
    device: str
    times: int
    waited_ms: float


class StragglerReport(TypedDict):
    engine: str
    occurrences: int
    last: list[LastArrivals]
    straggler: DeviceName | None
    wait_per_step_ms: float | None
    steps_wait_ms: list[float]
    """Per step, the others' wait at its collectives (what diff compares)."""
    wait_share_of_step: float | None
    verdict: str


class Report(TypedDict):
    """report.json."""

    run_id: str
    status: str
    shape: str
    profiler: str | None
    capture_start_skew_ms: float | None
    capture_start_skew_uncertainty_ms: float | None
    capture_start_skew_raw_ms: float | None
    capture_start_skew_ms_by_shape: dict[str, float | None]
    capture_start_skew_by_shape: dict[str, str]
    clocks: dict[str, HostClockSummary]
    slowest_host: SlowestHost | None
    load: dict[str, Any] | None
    failed_hosts: list[FailedHost]
    hosts: list[HostReport]
    summarised_on: NotRequired[dict[str, str]]
    """Per host, where the summary of its traces that the report comes from was made:
    `host` (on the host, beside its traces), else why not and it was made by `report`."""
    devices: list[DeviceReport]
    collectives: list[CollectiveReport]
    collectives_total: int
    """Occurrences matched; collectives lists at most COLLECTIVES_KEPT, longest wait first."""
    stragglers: list[StragglerReport]
    unreadable_device_traces: list[str]
