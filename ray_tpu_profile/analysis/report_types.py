"""report.json as types (README "Reports"): what report.build_report writes and `report
--json` prints. rundir/schemas/report.schema.json is generated from them
(scripts/schemas.py) and every report the tests produce is validated against it."""

from __future__ import annotations

from typing import Any

from typing_extensions import TypedDict

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
