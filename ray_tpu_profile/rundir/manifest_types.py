"""manifest.json as types: what `run` and `attach` write and what reports, diff, timeline
and plot read (README "The run directory"). Readers annotate with these so a type checker
catches a field that is not there; rundir/schemas/manifest.schema.json is generated from
them (scripts/schemas.py) and every manifest the tests produce is validated against it.
Sections whose fields differ by backend or mode (capture, cluster, engine) are typed as
open objects with their common fields listed in the README."""

from __future__ import annotations

from typing import Any, Literal

from typing_extensions import NotRequired, TypedDict

from ray_tpu_profile.core.records import HostStatus, RunStatus, Stage


class FileEntry(TypedDict):
    """A gathered file: its path relative to the run directory, size and sha256."""

    path: str
    bytes: int
    sha256: str
    verified: NotRequired[str]
    """With a result URL: how the upload was checked (`sha256` or `size`)."""


class PhaseJson(TypedDict):
    """One timed stretch of a host's work (records.PhaseTiming); wall-clock seconds."""

    started_at_s: float
    finished_at_s: float
    latencies_s: list[float]
    iteration_starts_s: list[float]
    prefill_s: list[float]
    end_s: list[float]
    in_capture: NotRequired[int]
    """Warmup: its first calls that ran while the throwaway warm-up capture was open."""


class LatencySeconds(TypedDict):
    load: float | None
    warmup: list[float]
    warmup_in_capture: NotRequired[int]
    """How many of the first warmup calls ran while the throwaway warm-up capture was open
    (slowed by it; on top of --num-iters-warmup). Absent in run directories from before."""
    profiled: list[float]


class ShapeLatency(TypedDict):
    warmup: list[float]
    warmup_in_capture: NotRequired[int]
    profiled: list[float]


class HostPhases(TypedDict):
    load: PhaseJson | None
    warmup: PhaseJson | None
    profiled: PhaseJson | None


class ShapePhases(TypedDict):
    warmup: PhaseJson | None
    traced: PhaseJson | None
    profiled: PhaseJson | None


class HostShape(TypedDict):
    """What a host did for one shape: latencies, phases, its capture check and clock."""

    latency_s: ShapeLatency
    phases: ShapePhases
    capture: dict[str, Any] | None
    clock: dict[str, Any] | None


class WorkerJson(TypedDict):
    """The traced worker process of a host of an engine across hosts (records.WorkerIdentity)."""

    rank: int
    pid: int
    node_id: str | None
    socket: str | None
    """jax / xla: the worker's capture socket (a Unix socket on its host)."""
    trace_dir: NotRequired[str]
    """torch: where the worker writes its trace."""


class ClockMeasurement(TypedDict):
    measured: str
    offset_ms: float
    uncertainty_ms: float


class HostClock(TypedDict):
    """A host's clock against the driver's, as last measured."""

    offset_ms: float
    uncertainty_ms: float
    round_trip_ms: float
    round_trips_ms: list[float]
    warning: str | None
    channel: NotRequired[str]
    """How it was measured: "udp" (the host's clock echo), or "actor call (why not udp)"."""
    measured: NotRequired[str]
    ntp: NotRequired[dict[str, Any] | None]
    simulated: NotRequired[bool]
    measurements: NotRequired[list[ClockMeasurement]]


class HostSummaryInfo(TypedDict):
    """What a host's summary of its traces took (hosts/<host>/summary.bin), or why it
    could not be made (the reports then summarise the host's traces themselves)."""

    seconds: NotRequired[float]
    events: NotRequired[int]
    """Trace events read."""
    bytes: NotRequired[int]
    error: NotRequired[str]


class HostEntry(TypedDict):
    """One host of a run (or, for attach, one traced process)."""

    name: str
    node_id: str | None
    node_ip: str | None
    chips: int | None
    slice_name: str | None
    worker_id: int | None
    pid: int | None
    engine: str | None
    ranks: list[int]
    worker: WorkerJson | None
    clock: HostClock | None
    summary: NotRequired[HostSummaryInfo | None]
    """Its summary of its own traces, made on the host once they were gathered (absent in
    run directories from before summaries)."""
    scratch_dir: str | None
    scratch_kept: NotRequired[str | None]
    """Why scratch_dir is still on the host (its removal failed); None once removed."""
    status: HostStatus
    stage: Stage
    error: str | None
    files: list[FileEntry]
    capture: dict[str, Any] | None
    latency_s: LatencySeconds
    phases: HostPhases
    shapes: dict[str, HostShape]
    host: NotRequired[str]
    """attach: the node the traced process runs on."""
    role: NotRequired[str]
    """attach: api-server, engine-core, worker, ..."""
    server: NotRequired[dict[str, Any]]
    """attach: the process's registry entry."""


class Workload(TypedDict):
    shape: str
    shapes: list[str]
    input_len: NotRequired[int]
    output_len: NotRequired[int]
    batch_size: NotRequired[int]
    num_iters_warmup: NotRequired[int]
    num_iters: NotRequired[int]
    seed: NotRequired[int]
    deployment: NotRequired[str | None]
    """attach: the deployment's name (--name), if any."""


class EngineEntry(TypedDict):
    name: str
    hosts: list[str]
    owner: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    ranks: dict[str, list[int]]


class Outputs(TypedDict):
    reports_error: str | None
    publish_error: str | None


class Manifest(TypedDict):
    """manifest.json, schema_version 1."""

    schema_version: Literal[1]
    mode: NotRequired[Literal["attach"]]
    run_id: str
    status: RunStatus
    stage: Stage
    error: str | None
    result_url: str | None
    command: list[str]
    versions: dict[str, str | None]
    workload: Workload
    capture: dict[str, Any]
    cluster: dict[str, Any]
    engine: dict[str, Any]
    timings_s: dict[str, float]
    timings_by_shape_s: dict[str, dict[str, float]]
    engines: list[EngineEntry]
    outputs: Outputs
    hosts: list[HostEntry]
    servers: NotRequired[dict[str, Any]]
    """attach: the servers found, traced and idle."""
    load: NotRequired[dict[str, Any] | None]
    """attach --server-url: the server's load around the window."""
